"""The documentation site's pages (docs/): every Python block on every page runs, as a user
copies it; the site itself is built with `mkdocs build --strict` by .ci/run."""

import pathlib
import re

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


def test_every_public_name_is_in_the_api_reference():
    import jprop

    public = {name for name in dir(jprop) if not name.startswith("_")} - {"version"}
    public -= {"PackageNotFoundError", "annotations"}
    documented = set(re.findall(r"^::: jprop\.(\w+)$", (ROOT / "docs/api.md").read_text(), re.M))
    assert public == documented, (sorted(public - documented), sorted(documented - public))


def test_every_public_name_shows_an_example_that_runs():
    # Their examples run as doctests in the main lane (pytest --doctest-modules over jprop/).
    import inspect

    import jprop

    public = {name for name in dir(jprop) if not name.startswith("_")}
    public -= {"version", "PackageNotFoundError", "annotations"}
    without = [name for name in public if ">>>" not in (inspect.getdoc(getattr(jprop, name)) or "")]
    assert not without, sorted(without)
