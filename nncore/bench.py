"""Benchmarks: nncore side by side with NumPy (OpenBLAS) on the same data.

Each family is a function registered with ``@family(name, help)``; it returns
rows (a list of dicts) and ``format_table(rows)`` prints them. The two sides
are timed alternately in one run (so a noisy neighbour hits both), and each
row reports the median, min and max over the repeats. Both sides use the same
thread count: nncore through ``set_num_threads``, NumPy's BLAS through
threadpoolctl when it is installed.

    python -m nncore bench gemm [--quick] [--threads N] [--json FILE]
"""
import contextlib
import math
import platform
import statistics
import time

import numpy as np

FAMILIES = {}


def family(name, help):
    """Register a benchmark family: fn(quick=False, threads=None, **options) -> rows."""
    def register(fn):
        FAMILIES[name] = (fn, help)
        return fn
    return register


def run(name, **options):
    """Run the family `name` and return its rows."""
    if name not in FAMILIES:
        raise ValueError(f"unknown benchmark family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name][0](**options)


@contextlib.contextmanager
def thread_limits(threads):
    """Run both sides with `threads` threads (None: leave the defaults)."""
    import nncore
    if threads is None:
        yield nncore.get_num_threads()
        return
    previous = nncore.get_num_threads()
    nncore.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # NumPy keeps its own default
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(threads, user_api="blas")
    try:
        with limits:
            yield threads
    finally:
        nncore.set_num_threads(previous)


def time_pair(f, g, budget, rounds=4, gap=0.15):
    """Time f and g in alternating blocks; return two lists of seconds.

    Each block is preceded by a pause and an untimed call: both sides keep
    idle worker threads spinning for a while after a call (OpenBLAS for
    ~0.1 s, OpenMP for up to milliseconds), and on a machine with few cores
    those spinning threads would be timed as part of the other side's call.
    The pause lets them go to sleep; medians then compare steady states."""
    f(), g()  # warm caches and buffers
    t0 = time.perf_counter()
    f(), g()
    once = max(time.perf_counter() - t0, 1e-7)
    repeats = int(min(max(budget / rounds / once, 3), 400))
    times = ([], [])
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            fn = (f, g)[side]
            time.sleep(gap)
            fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times[side].append(time.perf_counter() - t0)
    return times


def machine():
    """A one-line description of this machine and build."""
    import nncore
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = nncore.info()
    return f"{cpu}; nncore {info['version']} isa={info['isa']}; numpy {np.__version__}"


# ---- gemm ----

SQUARES = [64, 128, 256, 512, 1024, 2048]
SQUARES_QUICK = [512, 1024]
# Dense layer shapes M x K x N: batch x in_features x out_features.
LAYERS = [(1, 784, 256), (32, 784, 256), (128, 784, 256), (1024, 784, 1024),
          (128, 1024, 1024), (256, 256, 10)]


def gemm_cases(quick=False):
    """(group, label, op, m, k, n): op(A) is m x k, op(B) is k x n."""
    cases = []
    for s in SQUARES_QUICK if quick else SQUARES:
        cases.append(("square", f"{s}", "NN", s, s, s))
    for op in ("NT", "TN", "TT"):
        s = 512 if quick else 1024
        cases.append(("square-T", f"{s}", op, s, s, s))
    for m, k, n in LAYERS:
        cases.append(("layer", f"fwd {m}x{k}x{n}", "NN", m, k, n))
        cases.append(("layer", f"dX  {m}x{k}x{n}", "NT", m, n, k))  # dX = dY W^T
        cases.append(("layer", f"dW  {m}x{k}x{n}", "TN", k, m, n))  # dW = X^T dY
    return cases


def gemm_operands(op, m, k, n, rng):
    a = rng.standard_normal((k, m) if op[0] == "T" else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if op[1] == "T" else (k, n), dtype=np.float32)
    return a, b


@family("gemm", "SGEMM: squares, Dense layer shapes and their backprop transposes")
def bench_gemm(quick=False, threads=2, budget=None, cases=None):
    """nncore.matmul against numpy.matmul (same arrays, transposed views for
    NumPy, both writing into a preallocated out). Rows carry seconds
    (median/min/max), GFLOP/s and ratio = numpy time / nncore time (> 1:
    nncore is faster)."""
    import nncore
    budget = budget if budget is not None else (0.2 if quick else 0.6)
    rng = np.random.default_rng(0)
    rows = []
    with thread_limits(threads) as nthreads:
        for group, label, op, m, k, n in cases or gemm_cases(quick):
            a, b = gemm_operands(op, m, k, n, rng)
            ta, tb = op[0] == "T", op[1] == "T"
            na, nb = (a.T if ta else a), (b.T if tb else b)
            out1 = np.empty((m, n), np.float32)
            out2 = np.empty((m, n), np.float32)

            def ours():
                nncore.matmul(a, b, trans_a=ta, trans_b=tb, out=out1)

            def theirs():
                np.matmul(na, nb, out=out2)

            t_ours, t_theirs = time_pair(ours, theirs, budget)
            flop = 2.0 * m * n * k
            med_ours, med_theirs = statistics.median(t_ours), statistics.median(t_theirs)
            rows.append({
                "family": "gemm", "group": group, "case": label, "op": op,
                "m": m, "k": k, "n": n, "threads": nthreads, "isa": nncore.info()["isa"],
                "repeats": len(t_ours),
                "nncore_s": med_ours, "nncore_min_s": min(t_ours), "nncore_max_s": max(t_ours),
                "numpy_s": med_theirs, "numpy_min_s": min(t_theirs),
                "numpy_max_s": max(t_theirs),
                "nncore_gflops": flop / med_ours / 1e9, "numpy_gflops": flop / med_theirs / 1e9,
                "ratio": med_theirs / med_ours,
            })
    return rows


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def format_table(rows):
    """A plain-text table of rows, with the geometric mean ratio per group."""
    if not rows:
        return "(no rows)"
    lines = [f"{'group':<9} {'case':<22} {'op':<3} {'nncore us':>10} {'numpy us':>10} "
             f"{'nncore GF/s':>11} {'numpy GF/s':>10} {'ratio':>6}"]
    for r in rows:
        lines.append(f"{r['group']:<9} {r['case']:<22} {r['op']:<3} {r['nncore_s'] * 1e6:>10.1f} "
                     f"{r['numpy_s'] * 1e6:>10.1f} {r['nncore_gflops']:>11.1f} "
                     f"{r['numpy_gflops']:>10.1f} {r['ratio']:>6.2f}")
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["ratio"])
    for group, ratios in groups.items():
        lines.append(f"geomean ratio {group}: {geomean(ratios):.2f} ({len(ratios)} cases)")
    lines.append("ratio = numpy time / nncore time (> 1: nncore faster); medians; "
                 f"threads={rows[0]['threads']}, isa={rows[0]['isa']}")
    return "\n".join(lines)
