"""The machine a result depends on: the CPU, the build and library versions,
and its limits measured once per run (the FMA peak of the GEMM rows, the
memory bandwidth of the elementwise ones)."""
import os
import platform
import sys
import time

import numpy as np

from .. import _core
from .._version import __version__
from ..runtime import info, set_num_threads


# Each limit is measured once per process: key -> GFLOP/s or GB/s.
_LIMITS = {}


def _measure_peak(probe, threads, quick):
    """The best GFLOP/s of several runs of a C peak probe at `threads`
    threads (0 when the probe does nothing on this CPU)."""
    previous = _core.get_num_threads()
    try:
        # Size the run on one thread (every thread of a team does the
        # same work): a team's start-up, slow when a core is busy with
        # another process, must not shrink the run.
        set_num_threads(1)
        seconds, repeats = (0.02, 4) if quick else (0.05, 8)
        iters = 1000
        while True:
            t0 = time.perf_counter()
            if probe(iters) == 0:
                return 0.0
            dt = time.perf_counter() - t0
            if dt >= seconds / 4:
                break
            iters *= 4
        iters = max(1, int(iters * seconds / dt))
        set_num_threads(threads)
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            flops = probe(iters)
            best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    finally:
        set_num_threads(previous)
    return best


def peak_gflops(threads=None, quick=False):
    """The FMA peak, GFLOP/s, of the ISA in use at `threads` threads: the
    best of several runs of the C peak kernel (csrc/peak.c: independent
    multiply-add chains in registers, no memory traffic). Cached per ISA and
    thread count."""
    threads = threads or _core.get_num_threads()
    key = ("peak", _core.get_isa(), threads)
    if key not in _LIMITS:
        _LIMITS[key] = _measure_peak(_core.fma_peak, threads, quick)
    return _LIMITS[key]


def bf16_peak_gflops(threads=None, quick=False):
    """The bfloat16 multiply-add peak, GFLOP/s, at `threads` threads: the
    best of several runs of the vdpbf16ps probe (csrc/peak_bf16.c), what the
    bf16 GEMM's "% of peak" is measured against; None when the CPU has no
    AVX512_BF16 (the portable bf16 kernel has no peak of its own). Cached
    per thread count."""
    threads = threads or _core.get_num_threads()
    key = ("bf16 peak", threads)
    if key not in _LIMITS:
        _LIMITS[key] = _measure_peak(_core.bf16_peak, threads, quick) or None
    return _LIMITS[key]


def memory_bandwidth(threads=None, quick=False):
    """Memory bandwidth, GB/s, at `threads` threads: the best of several
    STREAM triads a = b + s c (12 bytes per element) over three arrays of
    64 MB (16 MB with quick) each, far beyond the L2 caches. Cached."""
    threads = threads or _core.get_num_threads()
    mbytes = 16 if quick else 64
    key = ("bandwidth", threads, mbytes)
    if key not in _LIMITS:
        previous = _core.get_num_threads()
        set_num_threads(threads)
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
            set_num_threads(previous)
        _LIMITS[key] = best
    return _LIMITS[key]


def core_to_core_ns(threads=None):
    """The one-way latency, ns, of a cache line between the first two
    threads at `threads` threads (None: 1 thread or fewer), the best of five
    runs of the C probe (nn_core_to_core_ns). Not cached: a virtual
    machine's host may move its vCPUs (the development VM's two measured
    25-47 ns apart, or 151-167 ns after minutes of load), and work split
    across the cores pays it on every line they share."""
    threads = threads or _core.get_num_threads()
    if threads < 2:
        return None
    previous = _core.get_num_threads()
    set_num_threads(threads)
    try:
        return min(_core.core_to_core_ns(2000) for _ in range(5))
    finally:
        set_num_threads(previous)


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
    build = info()
    env = {
        "cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "isa": build["isa"], "isa_available": build["isa_available"], "threads": threads,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"nncore": __version__, "numpy": np.__version__},
        "compiler": build["compiler"], "openmp": build["openmp"],
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
    for mod, name in (("torch", "torch"), ("sklearn", "scikit-learn"),
                      ("onnxruntime", "onnxruntime")):
        if mod in sys.modules:
            env["versions"][name] = sys.modules[mod].__version__
    env["peak_gflops"] = peak_gflops(threads, quick)
    env["memory_bandwidth_gbs"] = memory_bandwidth(threads, quick)
    env["core_to_core_ns"] = core_to_core_ns(threads)
    return env


def machine():
    """A one-line description of this machine and build."""
    build = info()
    return f"{cpu_model()}; nncore {build['version']} isa={build['isa']}; numpy {np.__version__}"
