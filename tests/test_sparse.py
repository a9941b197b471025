"""The CSR first-layer kernels (csrc/sparse.c: _core.csr_dense_forward,
_core.csr_dense_weight_grad) against NumPy float64 on every ISA path, bitwise
equal for 1 and 2 threads, every CSR argument checked; and the estimators'
sparse-X training and predict through them (nncore/sparse.py) against the
densified path."""
import warnings

import numpy as np
import pytest

import nncore
import nncore.sparse
from nncore import _core
from nncore.estimator_base import ConvergenceWarning

sparse = pytest.importorskip("scipy.sparse")

F32 = np.float32


def random_csr(rng, m, d, density, sort=True):
    """A float32 CSR matrix with int32 offsets, some rows empty, its
    indices sorted or shuffled within each row."""
    X = sparse.random(m, d, density=density, format="csr", dtype=F32,
                      random_state=int(rng.integers(1 << 30)))
    if m > 2:               # an empty row in the middle
        X.data[X.indptr[m // 2]:X.indptr[m // 2 + 1]] = 0
        X.eliminate_zeros()
    X = nncore.sparse.csr_int32(X)
    if not sort:
        for i in range(m):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            p = lo + rng.permutation(hi - lo)
            X.indices[lo:hi], X.data[lo:hi] = X.indices[p].copy(), X.data[p].copy()
    return X


# (rows, features, units, density): a 1-row batch, widths under, at and over
# the 64-wide blocks, an empty batch, a batch with no nonzeros.
SHAPES = [(1, 50, 7, 0.2), (5, 1, 1, 1.0), (17, 63, 65, 0.1), (32, 300, 130, 0.03),
          (200, 1000, 256, 0.02), (0, 9, 5, 0.5), (4, 30, 64, 0.0)]


@pytest.mark.parametrize("m,d,h,density", SHAPES)
@pytest.mark.parametrize("sort", [True, False])
def test_kernels_match_float64(isa, rng, num_threads, m, d, h, density, sort):
    X = random_csr(rng, m, d, density, sort)
    W = rng.standard_normal((d, h)).astype(F32)
    b = rng.standard_normal(h).astype(F32)
    dY = rng.standard_normal((m, h)).astype(F32)
    Xd = X.toarray().astype(np.float64)
    runs = []
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        y = np.full((m, h), np.nan, F32)
        _core.csr_dense_forward(X.indptr, X.indices, X.data, W, b, y)
        y0 = np.full((m, h), np.nan, F32)
        _core.csr_dense_forward(X.indptr, X.indices, X.data, W, None, y0)
        dW = np.full((d, h), np.nan, F32)
        _core.csr_dense_weight_grad(X.indptr, X.indices, X.data, dY, dW)
        runs.append((y, y0, dW))
    for got, want in zip(runs[0], (Xd @ W + b, Xd @ W, Xd.T @ dY)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for one, two in zip(*runs):
        assert np.array_equal(one, two)     # bitwise, NaNs would fail too


def test_a_row_range_of_a_bigger_matrix(rng):
    """indptr may start past 0: rows lo:hi of X used without a copy."""
    X = random_csr(rng, 40, 70, 0.1)
    W = rng.standard_normal((70, 9)).astype(F32)
    dY = rng.standard_normal((15, 9)).astype(F32)
    y = np.empty((15, 9), F32)
    dW = np.empty((70, 9), F32)
    _core.csr_dense_forward(X.indptr[10:26], X.indices, X.data, W, None, y)
    _core.csr_dense_weight_grad(X.indptr[10:26], X.indices, X.data, dY, dW)
    Xd = X[10:25].toarray().astype(np.float64)
    np.testing.assert_allclose(y, Xd @ W, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dW, Xd.T @ dY, rtol=1e-5, atol=1e-5)


def test_duplicates_add_up(rng):
    indptr = np.array([0, 3], np.int32)
    indices = np.array([2, 0, 2], np.int32)
    data = np.array([1.5, 2.0, -0.5], F32)
    W = rng.standard_normal((3, 4)).astype(F32)
    y = np.empty((1, 4), F32)
    _core.csr_dense_forward(indptr, indices, data, W, None, y)
    np.testing.assert_allclose(y[0], 2.0 * W[0] + 1.0 * W[2], rtol=1e-6)


def bad_cases():
    ok = dict(indptr=np.array([0, 2, 3], np.int32), indices=np.array([0, 4, 1], np.int32),
              data=np.ones(3, F32))
    cases = [
        (dict(indptr=np.array([0, 2, 1], np.int32)), ValueError, "indptr decreases at row 1"),
        (dict(indptr=np.array([0, 2, 4], np.int32)), ValueError, "outside the 3 stored"),
        (dict(indptr=np.array([-1, 2, 3], np.int32)), ValueError, "indptr runs from -1"),
        (dict(indptr=np.array([], np.int32)), ValueError, "indptr is empty"),
        (dict(indices=np.array([0, 5, 1], np.int32)), ValueError, "column index 5 at position 1"),
        (dict(indices=np.array([0, -1, 1], np.int32)), ValueError, "column index -1"),
        (dict(indices=np.array([0, 4, 1], np.int64)), TypeError, "indices has dtype int64"),
        (dict(indptr=np.array([0, 2, 3], np.int64)), TypeError, "indptr has dtype int64"),
        (dict(data=np.ones(3, np.float64)), TypeError, "data has dtype float64"),
        (dict(data=np.ones(2, F32)), ValueError, "data has 2 elements, expected 3"),
        (dict(indices=np.array([[0, 4, 1]], np.int32)), ValueError, "indices must be 1-D"),
    ]
    return [({**ok, **change}, exc, msg) for change, exc, msg in cases]


@pytest.mark.parametrize("args,exc,msg", bad_cases())
def test_bad_csr_is_refused(args, exc, msg):
    W = np.ones((5, 3), F32)
    with pytest.raises(exc, match=msg):
        _core.csr_dense_forward(args["indptr"], args["indices"], args["data"], W, None,
                                np.empty((2, 3), F32))
    with pytest.raises(exc, match=msg):
        _core.csr_dense_weight_grad(args["indptr"], args["indices"], args["data"],
                                    np.ones((2, 3), F32), np.empty((5, 3), F32))


def test_bad_shapes_are_refused():
    indptr, indices, data = np.array([0, 1], np.int32), np.array([0], np.int32), np.ones(1, F32)
    with pytest.raises(ValueError, match="y has 4 elements, expected 3"):
        _core.csr_dense_forward(indptr, indices, data, np.ones((2, 3), F32), None,
                                np.empty((2, 2), F32))
    with pytest.raises(ValueError, match="b has 2 elements, expected 3"):
        _core.csr_dense_forward(indptr, indices, data, np.ones((2, 3), F32),
                                np.ones(2, F32), np.empty((1, 3), F32))
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2\), expected \(1, 3\)"):
        _core.csr_dense_weight_grad(indptr, indices, data, np.ones((1, 2), F32),
                                    np.empty((2, 3), F32))


# ---- the estimators ---------------------------------------------------------

def sparse_problem(seed=0, n=300, d=400, density=0.02):
    rng = np.random.default_rng(seed)
    X = sparse.random(n, d, density=density, format="csr", random_state=seed)
    X = sparse.diags((np.arange(n) % 17 != 0).astype(float)) @ X   # some empty rows
    X.eliminate_zeros()
    coef = rng.standard_normal((d, 3))
    score = X @ coef
    return X, score.argmax(axis=1), score[:, 0], rng.uniform(0, 2, n)


def fit_both(monkeypatch, make, X, y, **fit):
    """The same fit through the CSR kernels and through the densified path."""
    assert X.nnz < nncore.sparse.SPARSE_MAX_DENSITY * X.shape[0] * X.shape[1]
    fits = []
    for limit in (nncore.sparse.SPARSE_MAX_DENSITY, 0.0):
        monkeypatch.setattr(nncore.sparse, "SPARSE_MAX_DENSITY", limit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = make().fit(X, y, **fit)
        fits.append((est, est.predict(X), [a.copy() for a in est.coefs_ + est.intercepts_]))
    return fits


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("weighted", [False, True])
def test_classifier_equals_the_densified_path(monkeypatch, solver, weighted):
    X, y, _, w = sparse_problem()
    fits = fit_both(monkeypatch, lambda: nncore.NNClassifier(
        hidden_layer_sizes=(32, 16), solver=solver, max_iter=15, batch_size=64,
        random_state=0), X, y, sample_weight=w if weighted else None)
    (sp_est, sp_pred, sp_params), (de_est, de_pred, de_params) = fits
    for a, b in zip(sp_params, de_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.array_equal(sp_pred, de_pred)
    assert sp_est.n_iter_ == de_est.n_iter_
    np.testing.assert_allclose(sp_est.loss_curve_, de_est.loss_curve_, rtol=1e-5)


def test_sample_weight_changes_the_sparse_fit(monkeypatch):
    """Weights reach the sparse path: zero weight on half the samples is
    the fit on the other half."""
    X, y, t, _ = sparse_problem(1)
    w = np.zeros(X.shape[0])
    w[::2] = 1.0
    params = dict(hidden_layer_sizes=(16,), max_iter=5, batch_size=X.shape[0], shuffle=False,
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = nncore.NNRegressor(**params).fit(X, t, sample_weight=w)
        half = nncore.NNRegressor(**params).fit(X[::2], t[::2])
    for a, b in zip(weighted.coefs_, half.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_regressor_equals_the_densified_path_and_predicts_sparse(monkeypatch):
    X, _, t, _ = sparse_problem(2)
    fits = fit_both(monkeypatch, lambda: nncore.NNRegressor(
        hidden_layer_sizes=(24,), activation="tanh", max_iter=10, random_state=0), X, t)
    (sp_est, sp_pred, sp_params), (_, de_pred, de_params) = fits
    for a, b in zip(sp_params, de_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sp_pred, de_pred, rtol=1e-5, atol=1e-6)
    # predict through the CSR kernels equals predict on the dense array
    np.testing.assert_allclose(sp_est.predict(X), sp_est.predict(X.toarray()), rtol=1e-5,
                               atol=1e-6)


def test_sparse_training_is_bitwise_deterministic_across_threads(num_threads):
    X, y, _, w = sparse_problem(3, n=400, d=2000, density=0.01)
    coefs = []
    for threads in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = nncore.NNClassifier(hidden_layer_sizes=(130,), max_iter=4, random_state=0,
                                      n_threads=threads).fit(X, y, sample_weight=w)
        coefs.append(est.coefs_ + est.intercepts_ + [est.predict_proba(X)])
    for a, b in zip(*coefs):
        assert np.array_equal(a, b)


def test_divergence_ends_as_on_the_densified_path(monkeypatch):
    """A non-finite loss on the CSR path stops the fit as the densified path does."""
    X, _, t, _ = sparse_problem(4)
    outcomes = []
    for limit in (nncore.sparse.SPARSE_MAX_DENSITY, 0.0):
        monkeypatch.setattr(nncore.sparse, "SPARSE_MAX_DENSITY", limit)
        est = nncore.NNRegressor(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0,
                                 learning_rate_init=1e30, max_iter=3, random_state=0)
        with pytest.raises(ValueError) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, t * 1e20)
        outcomes.append(str(info.value))
    assert outcomes[0] == outcomes[1]
