"""Benchmarks: nncore side by side with NumPy (OpenBLAS) on the same data.

Each family is a function registered with ``@family(name, help)``; it returns
rows (a list of dicts) and ``format_table(rows)`` prints them. The two sides
are timed alternately in one run (so a noisy neighbour hits both), and each
row reports the median, min and max over the repeats. Both sides use the same
thread count: nncore through ``set_num_threads``, NumPy's BLAS through
threadpoolctl when it is installed.

    python -m nncore bench [gemm|layers|train|infer|all] [--quick] [--threads N]
                           [--json FILE] [--plot FILE]

Peers: NumPy (OpenBLAS) always; PyTorch (CPU) and scikit-learn when they
import. Every row reports each side's median, min and max, and its spread
(interquartile range / median); rows whose spread exceeds SPREAD_LIMIT are
flagged as noisy. GEMM rows give % of the FMA peak measured by the C peak
kernel (csrc/peak.c, ``peak_gflops``); elementwise rows give GB/s and % of the
memory bandwidth measured by a triad (``memory_bandwidth``).
"""
import contextlib
import math
import os
import platform
import statistics
import sys
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
    torch = sys.modules.get("torch")   # PyTorch's own pool, when a family imported it
    torch_previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
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
        if torch is not None:
            torch.set_num_threads(torch_previous)


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
    info = nncore.info()
    return f"{cpu_model()}; nncore {info['version']} isa={info['isa']}; numpy {np.__version__}"


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
def bench_gemm(quick=False, threads=2, budget=None, cases=None, peers=None, tiny=False,
               log=None):
    """nncore.matmul against numpy.matmul (same arrays, transposed views for
    NumPy, both writing into a preallocated out) and torch.matmul (views of
    the same memory). Rows carry seconds (median/min/max), GFLOP/s, % of the
    FMA peak at this thread count and ratio = numpy time / nncore time (> 1:
    nncore is faster)."""
    import nncore
    if tiny:
        cases = cases or [("square", "16", "NN", 16, 16, 16), ("square-T", "16", "TT", 16, 16, 16)]
        budget = budget if budget is not None else 0.002
    budget = budget if budget is not None else (0.2 if quick else 0.6)
    peers = available_peers(peers, ("numpy", "torch"))
    torch = sys.modules.get("torch") if "torch" in peers else None
    rng = np.random.default_rng(0)
    rows = []
    with thread_limits(threads) as nthreads:
        peak = peak_gflops(nthreads, quick=quick or tiny)
        for group, label, op, m, k, n in cases or gemm_cases(quick):
            a, b = gemm_operands(op, m, k, n, rng)
            ta, tb = op[0] == "T", op[1] == "T"
            na, nb = (a.T if ta else a), (b.T if tb else b)
            out1 = np.empty((m, n), np.float32)
            out2 = np.empty((m, n), np.float32)
            fns = {"nncore": lambda: nncore.matmul(a, b, trans_a=ta, trans_b=tb, out=out1),
                   "numpy": lambda: np.matmul(na, nb, out=out2)}
            if torch is not None:
                tA, tB = torch.from_numpy(na), torch.from_numpy(nb)  # views of the same memory
                out3 = torch.empty((m, n), dtype=torch.float32)
                fns["torch"] = lambda: torch.matmul(tA, tB, out=out3)
            times = time_many(fns, budget, gap=0.15 if not tiny else 0.0)
            flop = 2.0 * m * n * k
            case = label if group == "layer" else f"{label} {op}"
            row = summarize("gemm", group, case, times, nthreads, work=flop,
                            metric="GFLOP/s", scale=1e-9, limit=peak, limit_name="FMA peak")
            row.update({"op": op, "m": m, "k": k, "n": n})
            for name in fns:   # the names the gemm rows have always had
                row[f"{name}_gflops"] = row[f"{name}_rate"]
            rows.append(row)
            if log:
                log(row)
    return rows


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# ---- measuring ----

# A row is flagged noisy when a side's interquartile range exceeds this
# fraction of its median.
SPREAD_LIMIT = 0.25
PEERS = ("numpy", "torch", "sklearn")


def available_peers(peers=None, relevant=PEERS):
    """The peers to run among `relevant` (default: all that import). NumPy is
    always there; "torch" and "sklearn" are imported here, before any thread
    limits are set, so their thread pools can be limited too."""
    wanted = [p for p in (peers if peers is not None else relevant) if p in relevant]
    out = []
    for name in wanted:
        if name == "numpy":
            out.append(name)
            continue
        try:
            if name == "torch":
                import torch  # noqa: F401
            elif name == "sklearn":
                import sklearn  # noqa: F401
            else:
                raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
        except ImportError:
            continue
        out.append(name)
    return out


def time_many(fns, budget, rounds=4, gap=0.15):
    """Time each of fns (a dict name -> callable) in blocks, taking turns
    (the order rotates each round); return name -> list of seconds per call.

    As in time_pair: each block starts after a pause and an untimed call, so
    one library's spinning idle threads are not timed as another's work."""
    names = list(fns)
    for name in names:     # warm caches and buffers
        fns[name]()
    repeats = {}
    for name in names:
        t0 = time.perf_counter()
        fns[name]()
        once = max(time.perf_counter() - t0, 1e-7)
        repeats[name] = int(min(max(budget / rounds / once, 2), 400))
    times = {name: [] for name in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            fn = fns[name]
            if gap:
                time.sleep(gap)
            fn()
            for _ in range(repeats[name]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def spread(times):
    """Interquartile range over the median: how noisy a set of timings is."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


def summarize(family, group, case, times, threads, *, work=None, metric=None, scale=1.0,
              limit=None, limit_name=None, per_call=None):
    """A row from name -> seconds per call. work: what one call does (FLOPs,
    bytes, samples; per_call[name] overrides it per side), reported as
    `<name>_rate` = work / median * scale in `metric` units, and as
    `<name>_pct` of `limit` (same units). ratio_<peer> = peer time / nncore
    time per unit of work (> 1: nncore faster); `ratio` is the NumPy one."""
    import nncore
    row = {"family": family, "group": group, "case": case, "threads": threads,
           "isa": nncore.info()["isa"], "contenders": list(times), "metric": metric,
           "work": work, "limit": limit, "limit_name": limit_name, "repeats": {}}
    noisy = False
    for name, ts in times.items():
        per = (per_call or {}).get(name, 1)
        ts = [t / per for t in ts]          # seconds per unit (per sample for train)
        med = statistics.median(ts)
        row[f"{name}_s"] = med
        row[f"{name}_min_s"] = min(ts)
        row[f"{name}_max_s"] = max(ts)
        row[f"{name}_spread"] = sp = spread(ts)
        row["repeats"][name] = len(ts)
        noisy = noisy or sp > SPREAD_LIMIT
        if work is not None:
            row[f"{name}_rate"] = work / med * scale if med > 0 else float("inf")
            if limit:
                row[f"{name}_pct"] = 100.0 * row[f"{name}_rate"] / limit
    row["noisy"] = noisy
    if "nncore" in times:
        for name in times:
            if name != "nncore":
                row[f"ratio_{name}"] = row[f"{name}_s"] / row["nncore_s"]
        if "numpy" in times:
            row["ratio"] = row["ratio_numpy"]
    return row


# ---- machine limits ----

_LIMITS = {}


def peak_gflops(threads=None, quick=False):
    """The FMA peak, GFLOP/s, of the ISA in use at `threads` threads: the
    best of several runs of the C peak kernel (csrc/peak.c: independent
    multiply-add chains in registers, no memory traffic). Cached per ISA and
    thread count."""
    import nncore
    from .. import _core
    threads = threads or nncore.get_num_threads()
    key = ("peak", _core.get_isa(), threads)
    if key not in _LIMITS:
        previous = nncore.get_num_threads()
        try:
            # Size the run on one thread (every thread of a team does the
            # same work): a team's start-up, slow when a core is busy with
            # another process, must not shrink the run.
            nncore.set_num_threads(1)
            seconds, repeats = (0.02, 4) if quick else (0.05, 8)
            iters = 1000
            while True:
                t0 = time.perf_counter()
                _core.fma_peak(iters)
                dt = time.perf_counter() - t0
                if dt >= seconds / 4:
                    break
                iters *= 4
            iters = max(1, int(iters * seconds / dt))
            nncore.set_num_threads(threads)
            best = 0.0
            for _ in range(repeats):
                t0 = time.perf_counter()
                flops = _core.fma_peak(iters)
                best = max(best, flops / (time.perf_counter() - t0) / 1e9)
        finally:
            nncore.set_num_threads(previous)
        _LIMITS[key] = best
    return _LIMITS[key]


def memory_bandwidth(threads=None, quick=False):
    """Memory bandwidth, GB/s, at `threads` threads: the best of several
    STREAM triads a = b + s c (12 bytes per element) over three arrays of
    64 MB (16 MB with quick) each, far beyond the L2 caches. Cached."""
    import nncore
    from .. import _core
    threads = threads or nncore.get_num_threads()
    mbytes = 16 if quick else 64
    key = ("bandwidth", threads, mbytes)
    if key not in _LIMITS:
        previous = nncore.get_num_threads()
        nncore.set_num_threads(threads)
        try:
            n = mbytes * (1 << 20) // 4
            a = np.zeros(n, np.float32)
            b = np.ones(n, np.float32)
            c = np.ones(n, np.float32)
            best = 0.0
            for _ in range(4 if quick else 8):
                t0 = time.perf_counter()
                _core.triad(a, b, c, 0.5)
                best = max(best, 12.0 * n / (time.perf_counter() - t0) / 1e9)
        finally:
            nncore.set_num_threads(previous)
        _LIMITS[key] = best
    return _LIMITS[key]


def cpu_model():
    """The CPU's model name (Linux), else what platform knows."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def environment(threads=2, quick=False):
    """What a result depends on: the CPU, ISA, threads, library versions
    (NumPy's BLAS through threadpoolctl), and the measured machine limits."""
    import nncore
    info = nncore.info()
    env = {
        "cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "isa": info["isa"], "isa_available": info["isa_available"], "threads": threads,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"nncore": nncore.__version__, "numpy": np.__version__},
        "compiler": info["compiler"], "openmp": info["openmp"],
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    env["blas"] = None
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        # NumPy's BLAS (SciPy, loaded by scikit-learn, may bring another one).
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        pools.sort(key=lambda p: "numpy" not in (p.get("filepath") or ""))
        if pools:
            pool = pools[0]
            env["versions"][pool["internal_api"]] = pool.get("version")
            keys = ("internal_api", "version", "architecture", "threading_layer",
                    "num_threads", "filepath")
            env["blas"] = {k: pool.get(k) for k in keys}
    for mod, name in (("torch", "torch"), ("sklearn", "scikit-learn")):
        if mod in sys.modules:
            env["versions"][name] = sys.modules[mod].__version__
    env["peak_gflops"] = peak_gflops(threads, quick)
    env["memory_bandwidth_gbs"] = memory_bandwidth(threads, quick)
    return env


# ---- layers ----

def _np_erf(x):
    """erf in NumPy float32 operations (NumPy has none): Abramowitz and
    Stegun 7.1.26, absolute error below 1.5e-7, what a NumPy user would
    write for an exact GELU."""
    t = 1.0 / (1.0 + np.float32(0.3275911) * np.abs(x))
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _torch_views(*arrays):
    import torch
    return [torch.from_numpy(a) for a in arrays]


def _dense_case(m, k, n, phase):
    """Dense(k, n) on a batch of m: forward y = x W + b; backward dW = x^T dy,
    db = sum dy, dx = dy W^T."""
    def make(peers):
        import nncore as nn
        rng = np.random.default_rng(0)
        layer = nn.Dense(k, n)
        x = rng.standard_normal((m, k), dtype=np.float32)
        dy = rng.standard_normal((m, n), dtype=np.float32)
        W, b = layer.weight.copy(), layer.bias.copy()
        y, gw, gb, dx = (np.empty((m, n), np.float32), np.empty((k, n), np.float32),
                         np.empty(n, np.float32), np.empty((m, k), np.float32))
        layer.forward(x)
        if phase == "forward":
            fns = {"nncore": lambda: layer.forward(x),
                   "numpy": lambda: np.add(np.matmul(x, W, out=y), b, out=y)}
        else:
            def np_backward():
                np.matmul(x.T, dy, out=gw)
                np.sum(dy, axis=0, out=gb)
                np.matmul(dy, W.T, out=dx)
            fns = {"nncore": lambda: layer.backward(dy), "numpy": np_backward}
        if "torch" in peers:
            import torch
            tx, tdy, tW, tb, ty, tgw, tgb, tdx = _torch_views(x, dy, W, b, y, gw, gb, dx)
            if phase == "forward":
                fns["torch"] = lambda: torch.addmm(tb, tx, tW, out=ty)
            else:
                def torch_backward():
                    torch.mm(tx.t(), tdy, out=tgw)
                    torch.sum(tdy, 0, out=tgb)
                    torch.mm(tdy, tW.t(), out=tdx)
                fns["torch"] = torch_backward
        return fns
    flop = (2.0 if phase == "forward" else 4.0) * m * k * n
    return {"group": "dense", "case": f"Dense {phase} {m}x{k}->{n}", "work": flop,
            "metric": "GFLOP/s", "limit": "peak", "make": make}


def _activation_case(name, rows, cols, phase):
    """An activation layer on (rows, cols): forward reads x and writes y (8
    bytes per element), backward reads the saved array and dy and writes dx (12)."""
    def make(peers):
        import nncore as nn
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, cols), dtype=np.float32)
        dy = rng.standard_normal((rows, cols), dtype=np.float32)
        y, dx = np.empty_like(x), np.empty_like(x)
        layer = getattr(nn, name)()
        layer.forward(x)
        if phase == "forward":
            fns = {"nncore": lambda: layer.forward(x)}
        else:
            fns = {"nncore": lambda: layer.backward(dy)}
        inv_sqrt2 = np.float32(1 / math.sqrt(2))

        def np_sigmoid():
            np.negative(x, out=y)
            np.exp(y, out=y)
            np.add(y, 1.0, out=y)
            np.reciprocal(y, out=y)

        def np_sigmoid_backward():     # dx = dy y (1 - y), y the forward output
            np.subtract(1.0, y, out=dx)
            np.multiply(dx, y, out=dx)
            np.multiply(dx, dy, out=dx)

        def np_tanh_backward():        # dx = dy (1 - y^2)
            np.multiply(y, y, out=dx)
            np.subtract(1.0, dx, out=dx)
            np.multiply(dx, dy, out=dx)

        def np_gelu():                 # y = x Phi(x)
            np.multiply(x, 0.5, out=y)
            np.multiply(y, 1.0 + _np_erf(x * inv_sqrt2), out=y)

        def np_gelu_backward():        # dx = dy (Phi(x) + x phi(x))
            cdf = 0.5 * (1.0 + _np_erf(x * inv_sqrt2))
            pdf = np.exp(-0.5 * x * x) * np.float32(1 / math.sqrt(2 * math.pi))
            np.multiply(dy, cdf + x * pdf, out=dx)
        numpy_fns = {
            "ReLU": (lambda: np.maximum(x, 0.0, out=y), lambda: np.multiply(dy, x > 0, out=dx)),
            "Sigmoid": (np_sigmoid, np_sigmoid_backward),
            "Tanh": (lambda: np.tanh(x, out=y), np_tanh_backward),
            "GELU": (np_gelu, np_gelu_backward),
        }
        fns["numpy"] = numpy_fns[name][0 if phase == "forward" else 1]
        numpy_fns[name][0]()    # y: a forward output, as the backward passes read
        if "torch" in peers:
            import torch
            tx, tdy, ty, tdx = _torch_views(x, dy, y, dx)
            aten = torch.ops.aten
            torch_fns = {   # what autograd runs for each
                "ReLU": (lambda: torch.clamp_min(tx, 0.0, out=ty),
                         lambda: aten.threshold_backward(tdy, ty, 0.0)),
                "Sigmoid": (lambda: torch.sigmoid(tx, out=ty),
                            lambda: aten.sigmoid_backward(tdy, ty)),
                "Tanh": (lambda: torch.tanh(tx, out=ty), lambda: aten.tanh_backward(tdy, ty)),
                "GELU": (lambda: torch.nn.functional.gelu(tx),
                         lambda: aten.gelu_backward(tdy, tx)),
            }
            fns["torch"] = torch_fns[name][0 if phase == "forward" else 1]
        return fns
    count = rows * cols
    return {"group": "activation", "case": f"{name} {phase} {rows}x{cols}",
            "work": (8 if phase == "forward" else 12) * count, "metric": "GB/s",
            "limit": "bandwidth", "make": make}


def _cross_entropy_case(m, c):
    """Softmax cross-entropy, loss and gradient: nncore computes both in one
    pass; NumPy the usual stable way; PyTorch forward + autograd backward.
    Traffic: logits read, gradient written, labels read."""
    def make(peers):
        import nncore as nn
        rng = np.random.default_rng(0)
        logits = rng.standard_normal((m, c), dtype=np.float32)
        labels = rng.integers(0, c, m)
        loss = nn.CrossEntropyLoss()
        rows_idx = np.arange(m)
        grad = np.empty_like(logits)

        def np_ce():
            z = logits - logits.max(axis=1, keepdims=True)
            np.exp(z, out=grad)
            s = grad.sum(axis=1, keepdims=True)
            value = float(np.mean(np.log(s[:, 0]) - z[rows_idx, labels]))
            np.divide(grad, s * m, out=grad)
            grad[rows_idx, labels] -= 1.0 / m
            return value
        fns = {"nncore": lambda: loss.forward(logits, labels), "numpy": np_ce}
        if "torch" in peers:
            import torch
            tl = torch.from_numpy(logits.copy()).requires_grad_()
            tt = torch.from_numpy(labels)

            def torch_ce():
                tl.grad = None
                value = torch.nn.functional.cross_entropy(tl, tt)
                value.backward()
                return value
            fns["torch"] = torch_ce
        return fns
    return {"group": "loss", "case": f"softmax CE fwd+grad {m}x{c}", "work": 8 * m * c + 8 * m,
            "metric": "GB/s", "limit": "bandwidth", "make": make}


def _optimizer_case(opt_name, arch):
    """One optimizer step over the parameters of an MLP: SGD with momentum
    reads w, g, buf and writes w, buf (20 bytes per parameter); Adam reads w,
    g, m, v and writes w, m, v (28)."""
    shapes = [s for k, n in zip(arch[:-1], arch[1:]) for s in ((k, n), (n,))]
    count = sum(int(np.prod(s)) for s in shapes)

    def make(peers):
        import nncore as nn
        rng = np.random.default_rng(0)
        params = [(rng.standard_normal(s, dtype=np.float32) * 0.01,
                   rng.standard_normal(s, dtype=np.float32) * 0.01) for s in shapes]
        opt = nn.SGD(lr=0.01, momentum=0.9) if opt_name == "SGD" else nn.Adam(lr=1e-3)
        np_params = [(p.copy(), g.copy(), np.zeros_like(p), np.zeros_like(p), np.empty_like(p))
                     for p, g in params]
        state = {"t": 0}

        def np_sgd():
            for w, g, buf, _, tmp in np_params:
                np.multiply(buf, 0.9, out=buf)
                np.add(buf, g, out=buf)
                np.multiply(buf, 0.01, out=tmp)
                np.subtract(w, tmp, out=w)

        def np_adam(b1=0.9, b2=0.999, lr=1e-3, eps=1e-8):
            state["t"] += 1
            t = state["t"]
            step, bc2 = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
            for w, g, m_, v, tmp in np_params:
                np.multiply(m_, b1, out=m_)
                np.multiply(g, 1 - b1, out=tmp)
                np.add(m_, tmp, out=m_)
                np.multiply(v, b2, out=v)
                np.multiply(g, g, out=tmp)
                np.multiply(tmp, 1 - b2, out=tmp)
                np.add(v, tmp, out=v)
                np.sqrt(v, out=tmp)
                np.divide(tmp, bc2, out=tmp)
                np.add(tmp, eps, out=tmp)
                np.divide(m_, tmp, out=tmp)
                np.multiply(tmp, step, out=tmp)
                np.subtract(w, tmp, out=w)
        fns = {"nncore": lambda: opt.step(params),
               "numpy": np_sgd if opt_name == "SGD" else np_adam}
        if "torch" in peers:
            import torch
            tparams = []
            for p, g in params:
                tp = torch.from_numpy(p.copy()).requires_grad_()
                tp.grad = torch.from_numpy(g.copy())
                tparams.append(tp)
            topt = (torch.optim.SGD(tparams, lr=0.01, momentum=0.9) if opt_name == "SGD"
                    else torch.optim.Adam(tparams, lr=1e-3))
            fns["torch"] = topt.step
        return fns
    label = "SGD momentum" if opt_name == "SGD" else opt_name
    return {"group": "optimizer", "case": f"{label} step {_arch_name(arch)} ({count / 1e6:.2f}M)",
            "work": (20 if opt_name == "SGD" else 28) * count, "metric": "GB/s",
            "limit": "bandwidth", "make": make}


def layer_cases(quick=False, tiny=False):
    """The layers family's cases: dicts with group, case, work (FLOPs or
    bytes per call), metric, limit ("peak" or "bandwidth") and make(peers) ->
    {side: fn}, which builds the data (call it just before timing)."""
    if tiny:
        dense, act, ce, arch = [(4, 8, 8)], (4, 8), [(4, 3)], (8, 4)
    elif quick:
        dense, act, ce, arch = [(128, 784, 256)], (256, 1024), [(128, 10)], (784, 256, 128, 10)
    else:
        dense, act = [(128, 784, 256), (128, 1024, 1024)], (1024, 1024)
        ce, arch = [(128, 10), (1024, 1000)], (784, 1024, 1024, 10)
    cases = [_dense_case(m, k, n, phase) for m, k, n in dense for phase in ("forward", "backward")]
    cases += [_activation_case(name, *act, phase) for name in ("ReLU", "Sigmoid", "Tanh", "GELU")
              for phase in ("forward", "backward")]
    cases += [_cross_entropy_case(m, c) for m, c in ce]
    cases += [_optimizer_case(name, arch) for name in ("SGD", "Adam")]
    return cases


@family("layers", "Dense forward/backward, activations, softmax cross-entropy, optimizer steps")
def bench_layers(quick=False, threads=2, budget=None, peers=None, tiny=False, log=None):
    """The building blocks of a training step, through nncore's Python API
    (so each includes its call overhead) against the same work in NumPy and
    PyTorch. Dense rows report GFLOP/s and % of the FMA peak; the
    elementwise ones (activations, loss, optimizers) GB/s (the bytes each call
    must move at least) and % of the triad memory bandwidth; arrays that fit
    in cache can exceed 100%."""
    peers = available_peers(peers, ("numpy", "torch"))
    budget = budget if budget is not None else (0.002 if tiny else 0.1 if quick else 0.4)
    gap = 0.0 if tiny else 0.05
    rows = []
    with thread_limits(threads) as nthreads:
        limits = {"peak": (peak_gflops(nthreads, quick or tiny), "FMA peak"),
                  "bandwidth": (memory_bandwidth(nthreads, quick or tiny), "memory bandwidth")}
        for case in layer_cases(quick, tiny):
            fns = case["make"](peers)
            limit, limit_name = limits[case["limit"]]
            row = summarize("layers", case["group"], case["case"],
                            time_many(fns, budget, gap=gap), nthreads, work=case["work"],
                            metric=case["metric"], scale=1e-9, limit=limit,
                            limit_name=limit_name)
            rows.append(row)
            if log:
                log(row)
    return rows


# ---- train and infer: the same MLPs in each framework ----

ARCHS = [(784, 128, 10), (784, 256, 128, 10), (784, 1024, 1024, 10)]
BATCHES = [1, 32, 128, 1024]
LR = 0.01


def _arch_name(sizes):
    return "-".join(map(str, sizes))


def _data(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)


def _nncore_mlp(sizes):
    import nncore as nn
    nn.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _torch_mlp(sizes, model=None):
    """A torch MLP, with `model`'s (nncore) weights when given."""
    import torch
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers)
    if model is not None:
        dense = [layer for layer in model.layers if hasattr(layer, "weight")]
        linear = [layer for layer in tmodel if isinstance(layer, torch.nn.Linear)]
        with torch.no_grad():
            for d, t in zip(dense, linear):
                t.weight.copy_(torch.from_numpy(d.weight.T.copy()))
                t.bias.copy_(torch.from_numpy(d.bias))
    return tmodel


def _numpy_weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [(rng.uniform(-1, 1, (a, b)) * math.sqrt(6 / a)).astype(np.float32)
          for a, b in zip(sizes[:-1], sizes[1:])]
    return Ws, [np.zeros(b, np.float32) for b in sizes[1:]]


def train_contender(name, sizes, batch):
    """A function run(X, y) that trains one epoch of `name`'s MLP `sizes`
    (ReLU, softmax cross-entropy, plain SGD lr=0.01) at this batch size."""
    import warnings
    if name == "nncore":
        import nncore as nn
        trainer = nn.Trainer(_nncore_mlp(sizes), nn.CrossEntropyLoss(), nn.SGD(lr=LR),
                             batch_size=batch, seed=0)
        return lambda X, y: trainer.fit(X, y, 1, verbose=0)
    if name == "torch":
        import torch
        model = _torch_mlp(sizes)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss()

        def run(X, y):
            Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
            perm = torch.randperm(len(Xt))
            for i in range(0, len(Xt), batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss_fn(model(Xt[idx]), yt[idx]).backward()
                opt.step()
        return run
    if name == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], solver="sgd", momentum=0.0,
                            alpha=0.0, learning_rate_init=LR, batch_size=batch, shuffle=True,
                            random_state=0)
        classes = np.arange(sizes[-1])

        def run(X, y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(X, y, classes=classes)
        return run
    if name == "numpy":
        Ws, bs = _numpy_weights(sizes)
        lr = np.float32(LR)
        rng = np.random.default_rng(0)

        def run(X, y):
            perm = rng.permutation(len(X))
            for i in range(0, len(X), batch):
                idx = perm[i:i + batch]
                acts = [X[idx]]
                for j, (W, b) in enumerate(zip(Ws, bs)):
                    z = acts[-1] @ W + b
                    acts.append(np.maximum(z, 0, out=z) if j < len(Ws) - 1 else z)
                z = acts.pop()
                t = y[idx]
                z -= z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(t)), t] -= 1
                d = p / np.float32(len(t))
                for j in range(len(Ws) - 1, -1, -1):
                    a = acts[j]
                    d_prev = (d @ Ws[j].T) * (a > 0) if j > 0 else None
                    Ws[j] -= lr * (a.T @ d)
                    bs[j] -= lr * d.sum(axis=0)
                    d = d_prev
        return run
    raise ValueError(f"unknown contender {name!r}")


@family("train", "Trainer.fit samples/s: three MLPs at batch 1, 32, 128, 1024")
def bench_train(quick=False, threads=2, budget=None, peers=None, tiny=False, archs=None,
                batches=None, log=None):
    """One epoch of training per timed call, each framework on its own
    amount of data (grown until one epoch takes about `budget` seconds), the
    frameworks taking turns with a pause before each epoch; rows report
    seconds per sample and samples/s (medians over the rounds)."""
    peers = available_peers(peers)
    names = ["nncore"] + peers
    if tiny:
        archs, batches = archs or [(16, 8, 4)], batches or [4]
    archs, batches = archs or ARCHS, batches or BATCHES
    target = budget if budget is not None else (0.001 if tiny else 0.03 if quick else 0.25)
    rounds, gap = (2, 0.0) if tiny else (2, 0.05) if quick else (5, 0.15)
    max_n = 4096 if quick or tiny else 1 << 16
    rows = []
    with thread_limits(threads) as nthreads:
        for sizes in archs:
            X_all, y_all = _data(max(max_n, 2 * max(batches)), sizes)
            for batch in batches:
                runs, counts = {}, {}
                for name in names:
                    run = train_contender(name, sizes, batch)
                    n = min(max(2 * batch, 64), len(X_all))
                    while True:       # warm up at this size, then time one epoch
                        run(X_all[:n], y_all[:n])
                        t0 = time.perf_counter()
                        run(X_all[:n], y_all[:n])
                        dt = time.perf_counter() - t0
                        if dt >= target or n >= max_n:
                            break
                        n = min(max_n, int(n * min(16.0, max(2.0, 1.2 * target / max(dt, 1e-6)))))
                    runs[name] = (lambda run=run, n=n: run(X_all[:n], y_all[:n]))
                    counts[name] = n
                times = {name: [] for name in names}
                for r in range(rounds):
                    for j in range(len(names)):
                        name = names[(j + r) % len(names)]
                        if gap:
                            time.sleep(gap)
                        t0 = time.perf_counter()
                        runs[name]()
                        times[name].append(time.perf_counter() - t0)
                row = summarize("train", _arch_name(sizes), f"{_arch_name(sizes)} batch {batch}",
                                times, nthreads, work=1, metric="samples/s", per_call=counts)
                row.update({"arch": list(sizes), "batch": batch, "samples": counts})
                rows.append(row)
                if log:
                    log(row)
    return rows


def infer_contender(name, sizes, model):
    """A function f(X) computing class scores for X with `model`'s weights:
    nncore predict, NumPy matmuls, torch under inference_mode, scikit-learn's
    MLPClassifier.predict_proba."""
    if name == "nncore":
        return model.predict
    dense = [layer for layer in model.layers if hasattr(layer, "weight")]
    if name == "numpy":
        Ws = [d.weight.copy() for d in dense]
        bs = [d.bias.copy() for d in dense]

        def forward(X):
            h = X
            for j, (W, b) in enumerate(zip(Ws, bs)):
                h = h @ W
                h += b
                if j < len(Ws) - 1:
                    np.maximum(h, 0, out=h)
            return h
        return forward
    if name == "torch":
        import torch
        tmodel = _torch_mlp(sizes, model).eval()

        def forward(X):
            with torch.inference_mode():
                return tmodel(torch.from_numpy(X))
        return forward
    if name == "sklearn":
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        X, y = _data(2 * sizes[-1], sizes)
        y = np.arange(len(X)) % sizes[-1]
        clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], max_iter=1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        clf.coefs_ = [d.weight.astype(clf.coefs_[0].dtype) for d in dense]
        clf.intercepts_ = [d.bias.astype(clf.coefs_[0].dtype) for d in dense]
        return clf.predict_proba
    raise ValueError(f"unknown contender {name!r}")


@family("infer", "predict latency at batch 1 and throughput at batch 1024, three MLPs")
def bench_infer(quick=False, threads=2, budget=None, peers=None, tiny=False, archs=None,
                batches=None, log=None):
    """Inference with the same weights in every framework: batch 1 (latency,
    seconds per call) and batch 1024 (throughput, samples/s)."""
    peers = available_peers(peers)
    names = ["nncore"] + peers
    archs = archs or ([(16, 8, 4)] if tiny else ARCHS)
    batches = batches or ([1, 8] if tiny else [1, 1024])
    budget = budget if budget is not None else (0.002 if tiny else 0.1 if quick else 0.5)
    gap = 0.0 if tiny else 0.05
    rows = []
    with thread_limits(threads) as nthreads:
        for sizes in archs:
            model = _nncore_mlp(sizes)
            for batch in batches:
                X = _data(batch, sizes, seed=1)[0]
                fns = {}
                for name in names:
                    f = infer_contender(name, sizes, model)
                    fns[name] = (lambda f=f: f(X))
                kind = "latency" if batch == 1 else "throughput"
                row = summarize("infer", kind, f"{_arch_name(sizes)} batch {batch}",
                                time_many(fns, budget, gap=gap), nthreads, work=batch,
                                metric="samples/s")
                row.update({"arch": list(sizes), "batch": batch})
                rows.append(row)
                if log:
                    log(row)
    return rows


# ---- reporting ----

ORDER = ("gemm", "layers", "train", "infer")


def _fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def format_table(rows):
    """A plain-text table of rows (one family or several): each side's
    median time (or samples/s for train and infer), nncore's rate and % of
    the machine limit, the speed-up over each peer (> 1: nncore faster), a
    '~' on noisy rows; then the geometric mean speed-up per group."""
    if not rows:
        return "(no rows)"
    peers = [p for p in PEERS if any(f"{p}_s" in r for r in rows)]
    names = ["nncore"] + peers
    head = f"{'group':<16} {'case':<34} " + " ".join(f"{n:>11}" for n in names)
    head += f" {'nncore rate':>18} {'%limit':>7} " + " ".join(f"{'x ' + p:>9}" for p in peers)
    lines = ["(per side: median time per call, or samples/s where the rate is samples/s; "
             "rate = GFLOP/s, GB/s or samples/s; %limit = of the FMA peak or memory "
             "bandwidth; x peer = peer time / nncore time)", head, "-" * len(head)]
    for r in rows:
        as_rate = r.get("metric") == "samples/s" and r.get("group") != "latency"
        cells = []
        for n in names:
            if f"{n}_s" not in r:
                cells.append(f"{'-':>11}")
            elif as_rate:
                cells.append(f"{r[f'{n}_rate']:>11,.0f}")
            else:
                cells.append(f"{_fmt_time(r[f'{n}_s']):>11}")
        rate = (f"{_fmt_rate(r['nncore_rate'])} {r['metric']}" if r.get("nncore_rate")
                is not None else "")
        pct = f"{r['nncore_pct']:.0f}%" if r.get("nncore_pct") is not None else ""
        ratios = [f"{r[f'ratio_{p}']:>9.2f}" if f"ratio_{p}" in r else f"{'-':>9}"
                  for p in peers]
        flag = " ~" if r.get("noisy") else ""
        lines.append(f"{r['group'][:16]:<16} {r['case'][:34]:<34} " + " ".join(cells)
                     + f" {rate:>18} {pct:>7} " + " ".join(ratios) + flag)
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["group"]), []).append(r)
    for (fam, group), rs in groups.items():
        parts = [f"x {p} {geomean(r[f'ratio_{p}'] for r in rs if f'ratio_{p}' in r):.2f}"
                 for p in peers if any(f"ratio_{p}" in r for r in rs)]
        lines.append(f"geomean {fam}/{group} ({len(rs)} rows): " + ", ".join(parts))
    noisy = sum(1 for r in rows if r.get("noisy"))
    lines.append(f"threads={rows[0]['threads']}, isa={rows[0]['isa']}; sides measured in turns "
                 "in one process; medians.")
    if noisy:
        lines.append(f"~ {noisy} of {len(rows)} rows have a wide spread (interquartile range > "
                     f"{SPREAD_LIMIT:.0%} of the median): this machine is shared or noisy; "
                     "compare ratios from one run, or rerun.")
    return "\n".join(lines)


def format_markdown(rows):
    """The rows as a Markdown table (the README's): per side the median time
    per call, or samples/s for training and inference throughput; nncore's
    rate and % of the machine limit; nncore's speed-up over each peer."""
    if not rows:
        return ""
    peers = [p for p in PEERS if any(f"{p}_s" in r for r in rows)]
    titles = {"nncore": "nncore", "numpy": "NumPy", "torch": "PyTorch", "sklearn": "scikit-learn"}
    names = ["nncore"] + peers

    def as_rate(r):
        return r.get("metric") == "samples/s" and r.get("group") != "latency"
    show_rate = not all(as_rate(r) for r in rows)    # else the nncore column says it
    show_pct = any(r.get("nncore_pct") is not None for r in rows)
    head = ["case"] + [titles[n] for n in names] + ["nncore rate"] * show_rate + \
        ["% limit"] * show_pct + [f"x {titles[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [r["case"] + (" ~" if r.get("noisy") else "")]
        for n in names:
            if f"{n}_s" not in r:
                cells.append("-")
            elif as_rate(r):
                cells.append(f"{r[f'{n}_rate']:,.0f}/s")
            else:
                cells.append(_fmt_time(r[f"{n}_s"]))
        if show_rate:
            cells.append(f"{_fmt_rate(r['nncore_rate'])} {r['metric']}"
                         if r.get("nncore_rate") is not None else "")
        if show_pct:
            cells.append(f"{r['nncore_pct']:.0f}%" if r.get("nncore_pct") is not None else "")
        cells += [f"{r[f'ratio_{p}']:.2f}" if f"ratio_{p}" in r else "-" for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path):
    """Bar charts of nncore's speed-up over each peer (log scale), one panel
    per family, saved to `path`. Needs matplotlib (the `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'nncore[plot]'") from None
    families = [f for f in ORDER if results.get(f)] + \
        [f for f in results if f not in ORDER and results[f]]
    fig, axes = plt.subplots(len(families), 1, squeeze=False,
                             figsize=(10, sum(1.2 + 0.22 * len(results[f]) for f in families)))
    colors = {"numpy": "tab:blue", "torch": "tab:orange", "sklearn": "tab:green"}
    for ax, fam in zip(axes[:, 0], families):
        rows = results[fam]
        peers = [p for p in PEERS if any(f"ratio_{p}" in r for r in rows)]
        height = 0.8 / max(len(peers), 1)
        for j, p in enumerate(peers):
            ys = [i + j * height for i in range(len(rows))]
            xs = [r.get(f"ratio_{p}", float("nan")) for r in rows]
            # Bars from 1 to the ratio: right of the line nncore is faster.
            ax.barh(ys, [x - 1.0 for x in xs], left=1.0, height=height, color=colors[p],
                    label=f"vs {p}")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
        ax.set_yticklabels([r["case"] + (" ~" if r.get("noisy") else "") for r in rows],
                           fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{fam}: nncore speed-up (peer time / nncore time; > 1 = nncore faster)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
