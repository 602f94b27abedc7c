"""The user lane (user_lane/: examples, README code, quick benchmarks) passes under JAX's default
configuration and XLA's default flags; tests/conftest.py runs it beside this lane."""

import re


def test_the_user_lane_passes(user_lane):
    code, output = user_lane.wait()
    tail = output[-6000:]
    assert code == 0, f"the user lane failed (exit {code}):\n{tail}"
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= 15, f"the user lane ran too few tests:\n{tail}"
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", output), tail
