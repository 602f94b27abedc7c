"""The user lane (user_lane/: examples, README and docs code) passes under JAX's default
configuration and XLA's default flags, and its quick benchmarks in the same JAX configuration;
tests/conftest.py runs it beside this lane, followed by the files of this lane it hands over
(`HANDED_OVER`), which pass too."""

import re


def test_the_user_lane_passes(user_lane):
    codes, output = user_lane.wait()
    tail = output[-6000:]
    assert codes == [0] * len(user_lane.commands), f"the child process failed ({codes}):\n{tail}"
    passed = [int(n) for n in re.findall(r"(\d+) passed", output)]
    assert len(passed) == 3 and min(passed) >= 9, f"too few tests ran:\n{tail}"
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", output), tail
