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
