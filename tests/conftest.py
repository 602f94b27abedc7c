"""The suite's two lanes, and its global test configuration.

**This lane** (tests/): float64 available and strict dtype promotion, set once; oracles are
checked with tolerances, never timed. It is dominated by XLA compiling hundreds of small programs,
so it asks the CPU backend for what compiles fastest: its lowest LLVM optimisation level, its older
loop emitters in place of the MLIR fusion emitters, and each program compiled in one piece rather
than split over threads; and it runs its matrix products on one thread, leaving the second core to
the user lane. Each flag is set where this XLA knows it (XLA aborts on flags it does not know, so a
child process tries it first).

**The user lane** (user_lane/): the README's code, the differential test, the sharded runs and
the examples, run as a user runs them — JAX's default configuration (float32, x64 off, standard
promotion) and XLA's default flags. The files that spend their time compiling many short programs
rather than running them — the docs' code blocks (user_lane/test_docs.py), the benchmarks in quick
mode (user_lane/test_benchmarks.py), which check each script's contenders against jprop and its
report, not its speed, and the examples' quick runs (user_lane/test_examples.py; the multiscale
example, which spends its time training, stays at the default flags) — run in the same JAX
configuration with this lane's compile-speed flags. When tests/test_lanes.py is selected, that lane
starts as a child pytest process as soon as collection ends, so it runs on the second core beside
this one (each lane pinned to its own cores where the system allows: this lane to one, the child
to the others, whose thread pool XLA sizes to them, so that it does not take time from this lane);
`test_the_user_lane_passes`, moved to the end of the run, waits for it and reports its outcome.
The user lane ends sooner than this one, so the same child then runs the files of this lane named
in `HANDED_OVER`, in this lane's configuration (their items are deselected here); the terminal
summary says when each finished.
"""

import gc
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

_USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")  # the lane's own, before this lane's speed flags
_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"  # the other core runs the user lane
_ONE_CODEGEN = "--xla_cpu_parallel_codegen_split_count=1"  # compile each program in one piece


def _xla_accepted(flags: tuple[str, ...]) -> list[str]:
    """The flags this XLA knows: all of them if a child process starts with them together, else
    each tried in its own child process, in parallel."""

    def start(tried: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "import jax; jax.devices()"],
            env=dict(os.environ, XLA_FLAGS=tried, JAX_PLATFORMS="cpu"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    if start(" ".join(flags)).wait() == 0:
        return list(flags)
    runs = {flag: start(flag) for flag in flags}
    return [flag for flag, run in runs.items() if run.wait() == 0]


# the child process that runs `HANDED_OVER` is told the flags, rather than trying them again
_SPEED_FLAGS = os.environ.get("JPROP_TEST_SPEED_FLAGS") or " --xla_backend_optimization_level=0" + (
    "".join(" " + flag for flag in _xla_accepted((_FAST_COMPILE, _ONE_THREAD, _ONE_CODEGEN)))
)
os.environ["XLA_FLAGS"] = ((_USER_XLA_FLAGS or "") + _SPEED_FLAGS).strip()

import jax  # noqa: E402  (after XLA_FLAGS, which XLA reads when its backend starts)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import pytest  # noqa: E402

from jprop import _program  # noqa: E402

# Tracing builds many short-lived Python objects: at the collector's default thresholds a test
# file runs thousands of collections, and each full one scans every live object (JAX's caches,
# the imported modules). The modules imported so far are frozen out of its reach, and collections
# run less often. (A user's process keeps Python's defaults; this is the test runner's economy.)
gc.freeze()
gc.set_threshold(200_000, 50, 100)

ROOT = pathlib.Path(__file__).resolve().parent.parent
USER_LANE = "user_lane"
# the user lane's files run in JAX's default configuration with this lane's compile-speed flags
COMPILE_BOUND = (
    "user_lane/test_docs.py",
    "user_lane/test_benchmarks.py",
    "user_lane/test_examples.py",
)


# Files of this lane that the child process runs after the user lane, in this lane's configuration
# (tests/conftest.py sets it up there too): the user lane ends sooner, and its core would idle.
# A package of jprop stands for its modules' docstring examples.
HANDED_OVER = (
    "tests/test_layers.py",
    "tests/test_given_drift.py",
    "tests/test_fourier.py",
    "tests/test_whole_jacobian.py",
    "jprop/curvature",
)


def child_commands() -> list[tuple[list[str], dict[str, str]]]:
    """The child process's pytest runs, each (command, environment): the user lane at XLA's
    default flags, its `COMPILE_BOUND` files with this lane's, then the files `HANDED_OVER`."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if _USER_XLA_FLAGS is not None:
        env["XLA_FLAGS"] = _USER_XLA_FLAGS
    # the flags, for the files handed over and the user lane's own child process (sharding)
    env["JPROP_TEST_SPEED_FLAGS"] = _SPEED_FLAGS
    quick = dict(env, XLA_FLAGS=os.environ["XLA_FLAGS"])
    run = [sys.executable, "-m", "pytest"]
    options = ["-p", "no:cacheprovider"]
    ignored = [f"--ignore={path}" for path in COMPILE_BOUND]
    return [
        ([*run, USER_LANE, *ignored, *options], env),
        ([*run, *COMPILE_BOUND, *options], quick),
        ([*run, *HANDED_OVER, *options], env),
    ]


class UserLane:
    """The user lane as a child pytest process, then its `COMPILE_BOUND` files (docs blocks, quick
    benchmarks) with this lane's compile-speed flags, then the files `HANDED_OVER`; their output
    in one temporary file."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.commands = child_commands()
        self.cores = _split_cores()
        self.started, self.seconds, self.codes = time.monotonic(), [], []
        self.waited_from = None
        self.process, self.closed = None, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for command, env in self.commands:
            if self.closed:
                return
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if self.cores is not None:  # before its XLA starts and sizes its thread pool
                os.sched_setaffinity(self.process.pid, self.cores[1])
            self.codes.append(self.process.wait())
            self.seconds.append(time.monotonic() - self.started)

    def wait(self) -> tuple[list[int], str]:
        """Each run's exit code, and their output."""
        self.waited_from = time.monotonic() - self.started  # this lane's own tests are done
        self.thread.join()
        self.log.seek(0)
        return self.codes, self.log.read()

    def close(self):
        self.closed = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.thread.join()
        self.log.close()
        os.unlink(self.log.name)


_lane: list[UserLane] = []


def _split_cores() -> tuple[int, set[int]] | None:
    """A core for this lane and the rest for the child (None: fewer than two, or no way to pin).
    Each lane then keeps its own: the child's thread pool, which XLA sizes to the cores it may
    use, does not compete with this lane for its core."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return None
    if len(cores) < 2:
        return None
    # every thread of this process, XLA's pools (started before collection ends) included
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
    for thread in threads:
        try:
            os.sched_setaffinity(int(thread), {cores[0]})
        except OSError:  # a thread that ended meanwhile
            pass
    return cores[0], set(cores[1:])


def pytest_collection_modifyitems(config, items):
    lane = [item for item in items if item.nodeid.endswith("test_the_user_lane_passes")]
    if lane:
        _lane.append(UserLane())
        handed = [item for item in items if item.nodeid.startswith(HANDED_OVER)]
        if handed:
            config.hook.pytest_deselected(items=handed)
        # waited for last, so this lane keeps its core busy while the child runs on the other
        items[:] = [item for item in items if item not in lane and item not in handed] + lane


_timings: list[str] = []


def pytest_terminal_summary(terminalreporter):
    """How long each lane ran, so whoever balances the two lanes sees which one the run waits on."""
    for line in _timings:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    for lane in _lane:
        if lane.seconds:
            mine = time.monotonic() - lane.started
            ends = ", then ".join(f"{s:.0f} s" for s in lane.seconds)
            own = (
                ""
                if lane.waited_from is None
                else f"its own tests done at {lane.waited_from:.0f} s, "
            )
            _timings.append(f"child process: done at {ends}; this lane: {own}{mine:.0f} s in all")
    while _lane:
        _lane.pop().close()


@pytest.fixture
def user_lane():
    """The running user lane (started at collection; started now if it was not)."""
    if not _lane:
        _lane.append(UserLane())
    return _lane[0]


@pytest.fixture(autouse=True)
def _fresh_transforms(request):
    """Transforms are cached by construction, and tests share them (a transform built again is
    not compiled again, as for a user). A test that swaps an internal rule (any test using
    `monkeypatch`) or counts traces (asks for `empty_caches`) starts and ends with empty caches,
    so it neither gets nor leaves a transform built with the other rule or traced before."""
    patched = {"monkeypatch", "empty_caches"} & set(request.fixturenames)
    if patched:
        _program.clear_caches()
    yield
    if patched:
        _program.clear_caches()


@pytest.fixture
def empty_caches():
    """Ask for this to start from no built transforms (see `_fresh_transforms`)."""


class CompileCounter:
    """Counts XLA compilations through JAX's public monitoring events, so a test proves that a
    second call reuses a compiled program without any counter inside jprop. One listener is
    registered for the whole run (older JAX cannot unregister one); each test reads its own
    difference."""

    EVENT = "/jax/core/compile/backend_compile_duration"
    total = 0

    def __init__(self):
        self.start = CompileCounter.total

    @property
    def count(self) -> int:
        """Compilations since this counter was made."""
        return CompileCounter.total - self.start

    @staticmethod
    def listen(event: str, duration: float, **kwargs) -> None:
        if event == CompileCounter.EVENT:
            CompileCounter.total += 1


jax.monitoring.register_event_duration_secs_listener(CompileCounter.listen)


@pytest.fixture
def compiles(empty_caches):
    """A live count of XLA compilations during the test (starting from no built transforms)."""
    return CompileCounter()
