"""The timing harness every benchmark shares: compile apart, race in interleaved rounds, one
markdown table writer, and the JAX compositions jprop is raced against.

A race compiles each contender (its compile time measured on its own, `lower(...).compile()`),
then times the compiled functions in interleaved rounds with `jax.block_until_ready`. The order
rotates, and each timed call follows an untimed call of the same function, so no contender pays
for re-touching memory that another has just freed (a small program timed right after a
memory-hungry one can otherwise look several times slower). Medians are reported.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

import folx
import jax
import jax.numpy as jnp

import jprop
from jprop.models._activations import activation_function, primitive_activations


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def peak_bytes(compiled) -> int | None:
    """XLA's own account of the compiled program's memory: its peak, or at least arguments +
    outputs + temporaries (None where the backend gives no account)."""
    try:
        stats = compiled.memory_analysis()
        total = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
        return max(int(getattr(stats, "peak_memory_in_bytes", 0)), int(total)) or None
    except (AttributeError, NotImplementedError, TypeError):  # pragma: no cover - backend-specific
        return None


def flops(compiled) -> float | None:
    """XLA's count of the compiled program's floating-point operations (None where the backend
    gives no count): the work the program does, which another CPU runs at its own speed."""
    try:
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        return float(analysis["flops"]) if analysis and "flops" in analysis else None
    except (AttributeError, NotImplementedError, TypeError):  # pragma: no cover - backend-specific
        return None


def race(contenders: dict[str, Callable], args: tuple, repeats: int) -> dict[str, dict]:
    """Compile each contender, then time them in interleaved rounds; medians in milliseconds."""
    compiled, results = {}, {}
    for name, fn in contenders.items():
        compiled[name], compile_s = compile_timed(fn, *args)
        out = jax.block_until_ready(compiled[name](*args))  # warm-up, kept for the oracle check
        results[name] = {
            "compile_s": compile_s,
            "times": [],
            "out": out,
            "peak_bytes": peak_bytes(compiled[name]),
            "compiled": compiled[name],  # for a caller that reads more of XLA's account
        }
    names = list(compiled)
    for round_ in range(repeats):  # rotate who goes first, so no contender always follows another
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn = compiled[name]
            jax.block_until_ready(fn(*args))  # untimed: re-touch its memory after the others ran
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            results[name]["times"].append(time.perf_counter() - start)
    for r in results.values():
        r["ms"] = 1e3 * statistics.median(r["times"])
    return results


_INSTRUCTION = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]")
_DOT = re.compile(r"dot\(%([\w.\-]+), %([\w.\-]+)\)(.*)")


def products_alone(compiled) -> tuple[Callable, list[jax.Array]]:
    """The matrix products of a compiled program, read from XLA's optimized HLO (what runs, dead
    code gone), as a program of their own: a function of a list of operands (returned beside
    it, random arrays of the products' operand shapes) that forms each product from its own
    operands, independent of the others, and nothing else. What those products take by
    themselves on this machine, beside the whole program. Their operands come from memory, not
    from a cache the operation before warmed, so a program whose work is almost all products
    can take less. Its output, one entry of each product summed, keeps every product live."""
    text = compiled.as_text()
    if re.search(r"\bwhile\(", text):
        raise ValueError("products_alone: the program has a loop; its products' count is unknown")
    shapes = {}
    for name, dtype, dims in _INSTRUCTION.findall(text):
        shapes[name] = (dtype, tuple(int(d) for d in dims.split(",") if d))
    specs = []
    for line in text.splitlines():
        match = _DOT.search(line)
        if match and re.search(r"= \w+\[[\d,]*\]\S* dot\(", line):
            lhs, rhs, rest = match.groups()
            dims = {
                key: tuple(int(d) for d in value.split(",") if d)
                for key, value in re.findall(r"(\w+_dims)=\{([\d,]*)\}", rest)
            }
            numbers = (
                (dims.get("lhs_contracting_dims", ()), dims.get("rhs_contracting_dims", ())),
                (dims.get("lhs_batch_dims", ()), dims.get("rhs_batch_dims", ())),
            )
            specs.append((shapes[lhs], shapes[rhs], numbers))
    known = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64"}
    unknown = {dtype for lhs, rhs, _ in specs for dtype, _ in (lhs, rhs)} - set(known)
    if unknown:
        raise ValueError(
            f"products_alone: products of {sorted(unknown)}; it forms floating-point products "
            f"({sorted(known)}) only"
        )
    keys = iter(jax.random.split(jax.random.key(0), 2 * len(specs)))
    operands = [
        jax.random.normal(next(keys), shape, jnp.dtype(known[dtype]))
        for lhs, rhs, _ in specs
        for dtype, shape in (lhs, rhs)
    ]

    def run(operands):
        total = 0.0
        for i, (_, _, numbers) in enumerate(specs):
            product = jax.lax.dot_general(operands[2 * i], operands[2 * i + 1], numbers)
            total = total + product.reshape(-1)[0]
        return total

    return run, operands


def agree(outputs: dict, reference: str, names, label: str, tolerance: float) -> dict[str, float]:
    """Assert that each of `names` computed what `reference` did: the relative error of their
    flattened outputs (any pytrees) under `tolerance`, float32 rounding only. Every benchmark
    checks its contenders with this before it reports a time; returns the errors."""
    flat = lambda tree: jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])  # noqa: E731
    errors = {}
    for name in names:
        errors[name] = float(jprop.relative_error(flat(outputs[name]), flat(outputs[reference])))
        assert errors[name] < tolerance, (
            f"{label}: {name} differs from {reference} by {errors[name]:.1e} (tolerance "
            f"{tolerance:.0e})"
        )
    return errors


def outputs(results: dict) -> dict:
    """name -> output, from a `race`."""
    return {name: r["out"] for name, r in results.items()}


def summary_row(results: dict, baselines, quantity: str, sizes, batch: int) -> dict:
    """One table row from a race: jprop against the fastest of `baselines` (speed-up > 1: jprop
    faster), with compile times and XLA's memory and operation accounts of both."""
    best = min(baselines, key=lambda name: results[name]["ms"])
    ours, theirs = results["jprop"], results[best]
    gflop = [(flops(r["compiled"]) or 0) / 1e9 for r in (ours, theirs)]
    return {
        "quantity": quantity,
        "sizes": sizes,
        "batch": batch,
        "jprop_ms": ours["ms"],
        "baseline": best,
        "baseline_ms": theirs["ms"],
        "speedup": theirs["ms"] / ours["ms"],
        "jprop_compile_s": ours["compile_s"],
        "baseline_compile_s": theirs["compile_s"],
        "jprop_peak_mib": (ours["peak_bytes"] or 0) / 2**20,
        "baseline_peak_mib": (theirs["peak_bytes"] or 0) / 2**20,
        "jprop_gflop": gflop[0],
        "baseline_gflop": gflop[1],
    }


def net_and_data(sizes, batch, seed=0):
    net = jprop.MLP(sizes)
    params = net.init(jax.random.key(seed), jnp.float32)
    x = jax.random.normal(jax.random.key(seed + 1), (batch, sizes[0]), jnp.float32)
    return net, params, x


def per_example(fn_of_x: Callable) -> Callable:
    return lambda params, x: jax.vmap(lambda xi: fn_of_x(params, xi))(x)


def jax_hessian(net):
    return per_example(lambda p, xi: jax.hessian(lambda v: net(p, v))(xi))


def composition_baselines(net, quantity):
    """The JAX compositions (and folx) that compute `quantity` for `net`: name -> fn(params, x)."""
    h = jax_hessian(net)
    if quantity == "hessian":
        return {"vmap(jax.hessian)": h}
    if quantity == "hessian_diagonal":
        return {"diag(vmap(jax.hessian))": lambda p, x: jnp.diagonal(h(p, x), axis1=-2, axis2=-1)}
    if quantity == "jacobian":
        return {
            "vmap(jax.jacrev)": per_example(lambda p, xi: jax.jacrev(lambda v: net(p, v))(xi)),
            "vmap(jax.jacfwd)": per_example(lambda p, xi: jax.jacfwd(lambda v: net(p, v))(xi)),
        }
    return {
        "trace(vmap(jax.hessian))": lambda p, x: jnp.trace(h(p, x), axis1=-2, axis2=-1),
        **folx_forms(net, "folx.forward_laplacian"),
    }


def written_mlp(net: jprop.MLP) -> Callable:
    """A `jprop.MLP` as its equations, a plain function of one example x (n,): each layer
    σ(W h + b) with the product written W h, where the MLP's own evaluation writes h Wᵀ. Which
    form folx runs faster differs (its training step on this one, its forward Laplacian alone
    often on the other), so folx's contenders race both (`folx_forms`, `faster_forms`)."""

    def f(params, x):
        h = x
        for layer, name in zip(params, net.activations()):
            h = activation_function(name)(layer["W"] @ h + layer["b"])
        return h

    return f


def folx_laplacian(model: Callable) -> Callable:
    """The Laplacian of `model(params, x)` over a batch x (B, n) by folx's forward Laplacian, as a
    folx user writes it: a jprop network traced with JAX's primitive activations, as that user
    would write its units (folx reads them as elementwise; jprop's own, each a custom_jvp call,
    it would take for general functions)."""

    def laplacian(p, x):
        one = folx.forward_laplacian(lambda v: model(p, v), sparsity_threshold=0)
        with primitive_activations():
            return jax.vmap(lambda xi: one(xi).laplacian)(x)

    return laplacian


FORMS = {"h Wᵀ": "the network's own evaluation", "W h": "its equations, `written_mlp`"}


def folx_forms(net: jprop.MLP, name: str = "folx") -> dict[str, Callable]:
    """folx's Laplacian of an MLP in both forms of one example's products, named
    "<name>, <form>" (`FORMS`): each a contender, of which a table shows the faster."""
    return {
        f"{name}, h Wᵀ": folx_laplacian(net),
        f"{name}, W h": folx_laplacian(written_mlp(net)),
    }


def faster_forms(ms: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Times keyed "<name>, <form>" (`folx_forms`) collapsed to "<name>", the faster form's time,
    with the form each took; other keys pass as they are."""
    collapsed: dict[str, float] = {}
    taken: dict[str, str] = {}
    for key, value in ms.items():
        name, _, form = key.rpartition(", ")
        if form not in FORMS:
            collapsed[key] = value
            continue
        if name not in collapsed or value < collapsed[name]:
            collapsed[name], taken[name] = value, form
    return collapsed, taken


def markdown_table(header: list[str], lines: list[list[str]], footer: str) -> str:
    """A markdown table (one header, its rule, the rows) followed by a footnote paragraph."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + f"\n\n{footer}\n"


def summary_cells(row: dict) -> list[str]:
    """The cells every speed table starts with, from a `summary_row`."""
    return [
        row["quantity"],
        "-".join(map(str, row["sizes"])),
        str(row["batch"]),
        f"{row['jprop_ms']:.2f}",
        f"{row['baseline']}: {row['baseline_ms']:.2f}",
        f"**{row['speedup']:.2f}×**",
        f"{row['jprop_compile_s']:.2f} / {row['baseline_compile_s']:.2f}",
    ]


# glibc's tunables that keep a step's large temporaries mapped from one call to the next, on huge
# pages: large blocks come from the heap rather than fresh mappings (mmap_max), freed memory stays
# there (trim_threshold), every thread allocates from the main heap, which may grow past the 64 MiB
# a thread's own heap is limited to (arena_max), and that heap sits on transparent huge pages
# (hugetlb, glibc 2.35 or later).
TUNED_MALLOC = (
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=1099511627776",
    "glibc.malloc.arena_max=1",
    "glibc.malloc.hugetlb=1",
)


# On a CPU, JAX runs its factorizations and triangular solves (`jnp.linalg.cholesky`,
# `jax.scipy.linalg.solve_triangular`, ...) in the OpenBLAS that SciPy bundles, whose worker
# threads keep spinning for a while after each call and take cores from the XLA matrix products
# that follow; sized to one thread, it starts none.
ONE_BLAS_THREAD = ("OPENBLAS_NUM_THREADS", "1")


def one_blas_thread() -> bool:
    """Whether this process started with OpenBLAS sized to one thread (`--one-blas-thread`;
    OpenBLAS reads the setting only when it loads)."""
    import os

    name, value = ONE_BLAS_THREAD
    return os.environ.get(name) == value


def tuned_malloc() -> bool:
    """Whether this process started with every tunable of `TUNED_MALLOC` (`--tuned-malloc`;
    glibc reads them only when a process starts)."""
    import os

    return set(TUNED_MALLOC) <= set(os.environ.get("GLIBC_TUNABLES", "").split(":"))


def glibc_is_recent() -> bool:
    """Whether this is Linux with glibc 2.35 or later, which knows every tunable of
    `TUNED_MALLOC`."""
    import platform
    import sys

    library, version = platform.libc_ver()
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return sys.platform == "linux" and library == "glibc" and numbers >= (2, 35)


def machine() -> dict:
    """What a result was measured on: CPU model, cores, devices, JAX and jaxlib versions, date,
    and glibc's tunables when set."""
    import datetime
    import importlib.metadata
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": f"{len(jax.devices())} × {device.device_kind} ({jax.default_backend()})",
        "jax": importlib.metadata.version("jax"),
        "jaxlib": importlib.metadata.version("jaxlib"),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "openblas_num_threads": os.environ.get(ONE_BLAS_THREAD[0]),
    }


def publish(out_dir, name: str, markdown: str, data) -> None:
    """Write `<name>.md` (the table, under a line saying what it was measured on) and `<name>.json`
    (the rows and the machine) to `out_dir`; `<name>_tuned_malloc` when run with `--tuned-malloc`,
    `<name>_one_blas_thread` with `--one-blas-thread`."""
    import json
    import pathlib

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = machine()
    if tuned_malloc():
        name += "_tuned_malloc"
    if one_blas_thread():
        name += "_one_blas_thread"
    tunables = f", GLIBC_TUNABLES={where['glibc_tunables']}" if where["glibc_tunables"] else ""
    if where["openblas_num_threads"]:
        tunables += f", {ONE_BLAS_THREAD[0]}={where['openblas_num_threads']}"
    said = (
        f"*Measured {where['date']} on {where['cpu']} ({where['cores']} cores; "
        f"{where['devices']}), jax {where['jax']}, jaxlib {where['jaxlib']}, "
        f"Python {where['python']}{tunables}.*\n\n"
    )
    (out_dir / f"{name}.md").write_text(said + markdown.rstrip() + "\n")
    (out_dir / f"{name}.json").write_text(
        json.dumps({"machine": where, "data": data}, indent=1, default=str) + "\n"
    )


def command_line(doc: str, **extra) -> dict:
    """The benchmark scripts' shared options (`--quick`, `--repeats`, `--out`, `--tuned-malloc`,
    `--one-blas-thread`) plus `extra` (name -> (default, help)), parsed from the command line into
    keyword arguments for `main`. `--tuned-malloc` and `--one-blas-thread` start the script again
    with glibc's tunables `TUNED_MALLOC` added to the environment, or `ONE_BLAS_THREAD` set in it,
    unless they already are there."""
    import argparse
    import os
    import platform
    import sys

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--out", default=None, help="folder for the results (default: benchmarks/out, untracked)"
    )
    parser.add_argument(
        "--tuned-malloc",
        action="store_true",
        help=f"run with GLIBC_TUNABLES={':'.join(TUNED_MALLOC)} (glibc 2.35 or later): large "
        "temporaries kept mapped from call to call, on huge pages; results go to "
        "<name>_tuned_malloc",
    )
    parser.add_argument(
        "--one-blas-thread",
        action="store_true",
        help=f"run with {'='.join(ONE_BLAS_THREAD)}: the OpenBLAS that runs JAX's factorizations "
        "on a CPU starts no threads to spin beside XLA's; results go to <name>_one_blas_thread",
    )
    for name, (default, text) in extra.items():
        parser.add_argument(f"--{name}", default=default, help=text)
    options = vars(parser.parse_args())
    if options["tuned_malloc"] and not glibc_is_recent():
        library, version = platform.libc_ver()
        parser.error(
            "--tuned-malloc needs Linux with glibc 2.35 or later (its tunables "
            f"{', '.join(TUNED_MALLOC)}); this is {sys.platform} with "
            f"{library or 'no glibc'} {version}".rstrip()
        )
    env = dict(os.environ)
    if options.pop("tuned_malloc") and not tuned_malloc():
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), *TUNED_MALLOC]))
    if options.pop("one_blas_thread") and not one_blas_thread():
        env[ONE_BLAS_THREAD[0]] = ONE_BLAS_THREAD[1]
    if env != dict(os.environ):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    return options
