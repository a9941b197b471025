"""The gemm family: SGEMM on squares, Dense layer shapes and their backprop
transposes, nncore.matmul against numpy.matmul and torch.matmul."""
import sys

import numpy as np

from ..linalg import check_precision, matmul
from .harness import available_peers, summarize, thread_limits, time_many
from .machine import bf16_peak_gflops, peak_gflops
from .registry import family


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
               log=None, precision="float32"):
    """nncore.matmul against numpy.matmul (same arrays, transposed views for
    NumPy, both writing into a preallocated out) and torch.matmul (views of
    the same memory). Rows carry seconds (median/min/max), GFLOP/s, % of the
    FMA peak at this thread count and ratio = numpy time / nncore time (> 1:
    nncore is faster). precision="bf16": the nncore side is the bf16 GEMM,
    with nncore's float32 GEMM as side "nncore_f32", and % is of the bf16
    peak (none without AVX512_BF16)."""
    bf16 = check_precision(precision, "bench gemm")
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
        limit_name = "FMA peak"
        if bf16:
            peak, limit_name = bf16_peak_gflops(nthreads, quick=quick or tiny), "bf16 peak"
        for group, label, op, m, k, n in cases or gemm_cases(quick):
            a, b = gemm_operands(op, m, k, n, rng)
            ta, tb = op[0] == "T", op[1] == "T"
            na, nb = (a.T if ta else a), (b.T if tb else b)
            out1 = np.empty((m, n), np.float32)
            out2 = np.empty((m, n), np.float32)
            fns = {"nncore": lambda: matmul(a, b, trans_a=ta, trans_b=tb, out=out1,
                                            precision=precision),
                   "numpy": lambda: np.matmul(na, nb, out=out2)}
            if bf16:
                out4 = np.empty((m, n), np.float32)
                fns["nncore_f32"] = lambda: matmul(a, b, trans_a=ta, trans_b=tb, out=out4)
            if torch is not None:
                tA, tB = torch.from_numpy(na), torch.from_numpy(nb)  # views of the same memory
                out3 = torch.empty((m, n), dtype=torch.float32)
                fns["torch"] = lambda: torch.matmul(tA, tB, out=out3)
            times = time_many(fns, budget, gap=0.15 if not tiny else 0.0)
            flop = 2.0 * m * n * k
            case = label if group == "layer" else f"{label} {op}"
            row = summarize("gemm", group, case, times, nthreads, work=flop,
                            metric="GFLOP/s", scale=1e-9, limit=peak, limit_name=limit_name)
            row.update({"op": op, "m": m, "k": k, "n": n, "precision": precision})
            for name in fns:   # the names the gemm rows have always had
                row[f"{name}_gflops"] = row[f"{name}_rate"]
            rows.append(row)
            if log:
                log(row)
    return rows
