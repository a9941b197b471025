"""Would a sparse first-layer kernel pay for the estimators' sparse X?

    python benchmarks/sparse_first_layer.py [--threads 1] [--features 10000] [--units 256]
                                            [--fit-samples 2000]

One training batch (200 rows) of a CSR X at densities 1% to 20%, through a
first layer of `--units` units: the densified path (densify the batch, then
nncore's GEMMs for the forward product Y = X W and the weight gradient
dW = X^T dY) against nncore's CSR kernels (csrc/sparse.c, what the
estimators use below nncore.sparse.SPARSE_MAX_DENSITY) and SciPy's
(csr @ W, csr.T @ dY). Every side includes taking the batch's rows of X.
Medians of 9 calls each, a pause before each side.

Then end to end: one epoch of NNClassifier(hidden_layer_sizes=(units,),
solver="adam") on --fit-samples rows of each density, through the CSR kernels
and through the densified path (nncore.sparse.SPARSE_MAX_DENSITY set to 0),
alternating, medians of 3 fits each; the optimizer's pass over the dense
first-layer weights is in both.
"""
import warnings
import argparse
import time

from nncore import _core
from nncore.sparse import csr_int32

import numpy as np
import scipy.sparse as sp

import nncore
import nncore.sparse


def median_ms(fn, repeats=9):
    time.sleep(0.2)     # let the previous side's idle threads settle
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def fit_seconds(X, y, units, limit):
    nncore.sparse.SPARSE_MAX_DENSITY = limit
    est = nncore.NNClassifier(hidden_layer_sizes=(units,), max_iter=1, random_state=0)
    time.sleep(0.2)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", type=int, default=10000)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--fit-samples", type=int, default=2000)
    args = parser.parse_args(argv)
    nncore.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, batch, d, h = 2000, 200, args.features, args.units
    W = rng.standard_normal((d, h)).astype(np.float32)
    dY = rng.standard_normal((batch, h)).astype(np.float32)
    out = np.empty((batch, h), np.float32)
    dW = np.empty((d, h), np.float32)
    print(f"batch {batch} x {d} features -> {h} units, {args.threads} thread(s); ms per batch")
    print("| density | nonzeros | densify | dense Y = XW | dense dW = X^T dY | dense total "
          "| nncore CSR Y | nncore CSR dW | nncore CSR total | SciPy CSR total "
          "| dense / nncore CSR | dense / SciPy |")
    print("|" + "---:|" * 12)
    for density in (0.01, 0.02, 0.05, 0.10, 0.20):
        X = sp.random(n, d, density=density, format="csr", dtype=np.float32, random_state=0)
        rows = rng.permutation(n)[:batch]
        xs = X[rows]
        xd = np.ascontiguousarray(xs.toarray())
        t_densify = median_ms(lambda: np.ascontiguousarray(X[rows].toarray()))
        t_fwd = median_ms(lambda: nncore.matmul(xd, W, out=out))
        t_grad = median_ms(lambda: nncore.matmul(xd, dY, trans_a=True, out=dW))
        t_slice = median_ms(lambda: X[rows])
        t_sfwd = median_ms(lambda: xs @ W)
        t_sgrad = median_ms(lambda: xs.T @ dY)
        xi = csr_int32(xs)
        t_nfwd = median_ms(lambda: _core.csr_dense_forward(xi.indptr, xi.indices, xi.data, W,
                                                           None, out))
        t_ngrad = median_ms(lambda: _core.csr_dense_weight_grad(xi.indptr, xi.indices,
                                                                xi.data, dY, dW))
        dense = t_densify + t_fwd + t_grad
        scipy_total = t_slice + t_sfwd + t_sgrad
        ours = t_slice + t_nfwd + t_ngrad
        print(f"| {density:.0%} | {xs.nnz:,} | {t_densify:.2f} | {t_fwd:.2f} | {t_grad:.2f} | "
              f"{dense:.2f} | {t_nfwd:.2f} | {t_ngrad:.2f} | {ours:.2f} | {scipy_total:.2f} | "
              f"{dense / ours:.2f}x | {dense / scipy_total:.2f}x |")

    limit = nncore.sparse.SPARSE_MAX_DENSITY
    n_fit = args.fit_samples
    print(f"\nNNClassifier(hidden_layer_sizes=({h},), solver='adam'), one epoch of {n_fit} "
          f"samples, batch 200; seconds, median of 3")
    print("| density | CSR first layer | densified | densified / CSR |")
    print("|" + "---:|" * 4)
    for density in (0.01, 0.02, 0.05, 0.10):
        X = sp.random(n_fit, d, density=density, format="csr", dtype=np.float32,
                      random_state=1)
        y = rng.integers(0, 10, n_fit)
        # a density limit of 1 sends every X through the CSR kernels, 0 none
        times = {1.0: [], 0.0: []}
        for _ in range(3):
            for side, runs in times.items():
                runs.append(fit_seconds(X, y, h, side))
        ours, dense = np.median(times[1.0]), np.median(times[0.0])
        print(f"| {density:.0%} | {ours:.3f} | {dense:.3f} | {dense / ours:.2f}x |")
    nncore.sparse.SPARSE_MAX_DENSITY = limit


if __name__ == "__main__":
    main()
