"""The user lane (user_lane/: examples, README code, the differential test) passes under JAX's
default configuration and XLA's default flags, and its docs blocks and quick benchmarks in the same
JAX configuration (tests/conftest.py, `COMPILE_BOUND`);
tests/conftest.py runs it beside this lane, followed by the files of this lane it hands over
(`HANDED_OVER`), which pass too."""

import ast
import pathlib
import re


def test_the_user_lane_passes(user_lane):
    codes, output = user_lane.wait()
    tail = output[-6000:]
    assert codes == [0] * len(user_lane.commands), f"the child process failed ({codes}):\n{tail}"
    passed = [int(n) for n in re.findall(r"(\d+) passed", output)]
    assert len(passed) == 3 and min(passed) >= 9, f"too few tests ran:\n{tail}"
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", output), tail


def test_no_test_module_defines_a_module_setup_or_teardown():
    """pytest at this project's floor (8.0) calls a test module's own `setup()`/`teardown()`
    before and after its tests, as nose did: a helper so named runs with no arguments and fails
    every test of its module there."""
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted((root / "tests").glob("test_*.py")) + sorted((root / "user_lane").glob("*.py"))
    assert len(files) > 20
    reserved = {"setup", "teardown", "setup_module", "teardown_module"}
    found = [
        f"{path.name}: {node.name}"
        for path in files
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name in reserved
    ]
    assert not found, f"rename these module-level functions: {found}"
