"""The user lane (user_lane/: README code, the differential test, examples) passes under JAX's
default configuration and XLA's default flags, and its compile-bound files (docs blocks, quick
benchmarks, the examples' quick runs) in the same JAX configuration (tests/conftest.py,
`COMPILE_BOUND`);
tests/conftest.py runs it beside this lane, followed by the files of this lane it hands over
(`HANDED_OVER`), which pass too."""

import ast
import collections
import os
import pathlib
import re

from conftest import _USER_XLA_FLAGS, USER_LANE, child_commands


def test_the_user_lane_passes(user_lane):
    codes, output = user_lane.wait()
    tail = output[-6000:]
    assert codes == [0] * len(user_lane.commands), f"the child process failed ({codes}):\n{tail}"
    passed = [int(n) for n in re.findall(r"(\d+) passed", output)]
    assert len(passed) == 3 and min(passed) >= 5, f"too few tests ran:\n{tail}"
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


def test_the_child_runs_every_user_lane_file_once_and_the_user_lane_at_default_flags():
    """Each user_lane/test_*.py runs in exactly one of the child's pytest runs (a file moved
    between them is neither lost nor run twice), and the user lane's own run has the user's XLA
    flags, not this lane's."""
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted(p.relative_to(root).as_posix() for p in (root / USER_LANE).glob("test_*.py"))
    runs = collections.Counter()
    commands = child_commands()
    for command, _ in commands:
        args = command[command.index("pytest") + 1 :]
        ignored = {a.removeprefix("--ignore=") for a in args if a.startswith("--ignore=")}
        for arg in args:
            if arg == USER_LANE:
                runs.update(f for f in files if f not in ignored)
            elif arg.startswith(f"{USER_LANE}/"):
                runs[arg] += 1
    assert len(files) >= 6 and runs == collections.Counter(files), runs
    user_env = commands[0][1]
    assert user_env.get("XLA_FLAGS") == _USER_XLA_FLAGS
    assert commands[1][1]["XLA_FLAGS"] == os.environ["XLA_FLAGS"]  # the compile-speed flags


def test_the_stated_python_floor_is_one_the_dependencies_install_on():
    """pyproject's requires-python, the README and the install page state one Python floor, and
    it is no lower than the floor of the JAX installed here (the newest in one lane, the declared
    minimum in the other): a Python JAX does not support could not install jprop at all."""
    import importlib.metadata
    import tomllib

    root = pathlib.Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", declared)
    assert floor, declared
    minor = int(floor.group(1))
    jax_needs = importlib.metadata.metadata("jax")["Requires-Python"]
    jax_minor = int(re.search(r">=\s*3\.(\d+)", jax_needs).group(1))
    assert minor >= jax_minor, f"requires-python {declared}, but jax needs {jax_needs}"
    assert f"Python ≥ 3.{minor} " in (root / "README.md").read_text()
    assert f"Python 3.{minor} or later" in (root / "docs" / "install.md").read_text()
