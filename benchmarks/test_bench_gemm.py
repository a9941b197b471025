"""SGEMM (python -m nncore bench gemm): nncore.matmul, numpy.matmul, torch.matmul."""
import numpy as np

from nncore import bench

SIDES = ("numpy", "torch")


def cases(quick):
    return bench.gemm_cases(quick=quick)


def case_id(c):
    return f"{c[0]}-{c[2]}-{c[3]}x{c[4]}x{c[5]}"


def test_gemm(benchmark, case, side):
    import nncore
    group, label, op, m, k, n = case
    a, b = bench.gemm_operands(op, m, k, n, np.random.default_rng(0))
    ta, tb = op[0] == "T", op[1] == "T"
    out = np.empty((m, n), np.float32)
    if side == "nncore":
        fn = lambda: nncore.matmul(a, b, trans_a=ta, trans_b=tb, out=out)  # noqa: E731
    elif side == "numpy":
        na, nb = (a.T if ta else a), (b.T if tb else b)
        fn = lambda: np.matmul(na, nb, out=out)  # noqa: E731
    else:
        import torch
        tA, tB = torch.from_numpy(a.T if ta else a), torch.from_numpy(b.T if tb else b)
        tout = torch.from_numpy(out)
        fn = lambda: torch.matmul(tA, tB, out=tout)  # noqa: E731
    benchmark.group = f"gemm {op} {m}x{k}x{n}"
    benchmark.extra_info.update({"flops": 2.0 * m * n * k, "op": op})
    benchmark(fn)
