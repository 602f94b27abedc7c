"""The documentation site (docs/): every Python block on every page runs, as a user copies it;
the site builds with `mkdocs build --strict`, and every API entry renders with its signature and a
highlighted example (read from the built HTML). The blocks run in JAX's default configuration;
the full suite gives this file XLA's compile-speed flags (tests/conftest.py, `COMPILE_BOUND`)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The pages that show code (the maths and the generated API reference show none).
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_on_the_page_run(page):
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), {})


def _public_names() -> set[str]:
    """jprop's public names, and those of its public submodule `jprop.layers` as "layers.X"."""
    import inspect

    import jprop

    public = {name for name in dir(jprop) if not name.startswith("_")}
    public -= {"version", "PackageNotFoundError", "annotations"}
    modules = {name for name in public if inspect.ismodule(getattr(jprop, name))}
    for module in modules:
        public |= {f"{module}.{name}" for name in getattr(jprop, module).__all__}
    return public - modules


def _public_object(name: str):
    import jprop

    obj = jprop
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_public_name_is_in_the_api_reference():
    public = _public_names()
    pages = "\n".join(p.read_text() for p in (ROOT / "docs/api").glob("*.md"))
    documented = set(re.findall(r"^::: jprop\.([\w.]+)$", pages, re.M))
    assert public == documented, (sorted(public - documented), sorted(documented - public))


def test_every_public_name_shows_an_example_that_runs():
    # Their examples run as doctests in the main lane (pytest --doctest-modules over jprop/).
    import inspect

    public = _public_names()
    without = [name for name in public if ">>>" not in (inspect.getdoc(_public_object(name)) or "")]
    assert not without, sorted(without)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built as .ci/run builds it."""
    folder = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)]
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "", "HOME": str(folder)}
    built = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-4000:]
    return folder


def _api_entries(site):
    """(page, name, html) for every `::: jprop.name` entry of the API pages."""
    for page in sorted((site / "api").glob("*/index.html")):
        html = page.read_text()
        headings = list(re.finditer(r'<h[23] id="jprop\.([\w.]+)"', html))
        for here, after in zip(headings, headings[1:] + [None]):
            end = after.start() if after else html.index("</article>", here.start())
            yield page.parent.name, here.group(1), html[here.start() : end]


def test_every_api_entry_renders_a_signature_and_a_code_example(site):
    entries = list(_api_entries(site))
    assert {name for _, name, _ in entries} == _public_names()
    for page, name, html in entries:
        assert 'class="doc-signature' in html, f"{page}: jprop.{name} renders no signature"
        code = re.search(r'<div class="[^"]*highlight[^"]*"><pre>.*?&gt;&gt;&gt;', html, re.S)
        assert code, f"{page}: jprop.{name} renders its example outside a code block"
        assert "<blockquote>" not in html, f"{page}: jprop.{name} renders a blockquote"
        assert "= _" not in re.sub(r"<[^>]+>", "", html), (
            f"{page}: jprop.{name} shows a private name"
        )
        prose = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)
        assert not re.search(r"<p>[^<]*(<[^p/][^>]*>[^<]*</[^>]+>[^<]*)*\n- ", prose), (
            f"{page}: jprop.{name} renders a list as one paragraph"
        )


def test_the_mathematics_page_renders_its_formulas(site):
    html = (site / "math" / "index.html").read_text()
    assert html.count('class="arithmatex"') >= 100
    text = re.sub(r'<span class="arithmatex">.*?</span>', "", html, flags=re.S)
    text = re.sub(r'<div class="arithmatex">.*?</div>', "", text, flags=re.S)
    article = text[text.index("<article") : text.index("</article>")]
    raw = re.findall(r"[ˡ⁰¹²³⁴⁵⁶⁷⁸⁹ᵀ₀₁₂₃₄₅₆₇₈₉ₖᵢⱼ]", re.sub(r"<[^>]+>", "", article))
    assert not raw, f"the mathematics page shows {len(raw)} raw sub/superscripts: {raw[:10]}"


def test_every_published_benchmark_result_records_its_machine_and_is_on_the_benchmarks_page():
    import json

    results = ROOT / "benchmarks" / "results"
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    tables = sorted(results.glob("*.md"))
    assert tables
    for table in tables:
        assert table.read_text().startswith("*Measured "), table.name
        machine = json.loads(table.with_suffix(".json").read_text())["machine"]
        assert {"cpu", "cores", "jax", "jaxlib", "date"} <= set(machine), table.name
        assert f'--8<-- "benchmarks/results/{table.name}"' in page, table.name
