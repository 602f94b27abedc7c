"""The README tells the truth: its Python blocks run, and CI runs its Quickstart lines."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_python_blocks_run():
    blocks = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)
    assert blocks, "the README should show runnable Python"
    # As a user runs it: this lane keeps JAX's default configuration and XLA flags.
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_quickstart_has_two_command_lines_and_ci_uses_them():
    block = re.search(r"^## Quickstart.*?^```bash\n(.*?)^```", README, re.S | re.M).group(1)
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("pip install") and "python examples/" in lines[0]
    assert "pytest" in lines[1]
    assert "Quick ?start" in (ROOT / ".ci" / "run").read_text()


# Networks of every shape the roads' rules distinguish: one or several outputs, n below or above
# m, first widths under and over 64, softmax outputs, no hidden layer.
NETS = (
    ((2, 64, 64, 1), "linear"),
    ((3, 16, 16, 2), "linear"),
    ((4, 128, 128, 8), "linear"),
    ((8, 96, 3), "linear"),
    ((1, 10, 1), "linear"),
    ((2, 5, 4), "linear"),
    ((4, 16, 3), "softmax"),
    ((3, 2), "linear"),
)


def _readme_roads():
    """(transforms, excepted) per row of the README's table of what jprop computes."""
    table = re.search(r"^## What it computes\n\n(.*?)\n\n", README, re.S | re.M).group(1)
    rows = [row.split("|")[1:-1] for row in table.splitlines()[2:]]
    assert len(rows) == 5, "the README's table has five rows"
    for _, transforms, road in rows:
        names = re.findall(r"`(\w+)`", transforms)
        claim, _, exceptions = road.strip().partition(", except ")
        assert claim.strip() == "closed", road
        excepted = set(re.findall(r"`(\w+)`", exceptions)) & set(names)
        yield names, excepted


def test_the_readme_table_of_roads_is_what_road_reports():
    import jprop

    nets = [jprop.MLP(sizes, output=output) for sizes, output in NETS]
    for names, excepted in _readme_roads():
        for name in names:
            assert callable(getattr(jprop, name)), name
            if name in (
                "weight_hessian_vector_product",
                "gauss_newton_vector_product",
                "top_eigenpairs",
            ):
                roads = {
                    jprop.road(jprop.SquaredError(net), "weight_curvature").road for net in nets
                }
            else:
                roads = {jprop.road(net, name).road for net in nets}
            if name in excepted:  # the README names when it leaves the closed road
                assert "autodiff" in roads, name
            else:
                assert roads == {"closed"}, name
