"""NNClassifier / NNRegressor as drop-ins for MLPClassifier / MLPRegressor
(issue 20): the same calls give the same outcome class (fitted, warning,
error type) as scikit-learn's, which is the reference throughout."""
import io
import contextlib
import pickle
import warnings

import numpy as np
import pytest

import nncore as nn

sklearn = pytest.importorskip("sklearn")
sparse = pytest.importorskip("scipy.sparse")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_sample_weight_equivalence_on_dense_data)

PAIRS = [(nn.NNClassifier, MLPClassifier), (nn.NNRegressor, MLPRegressor)]


def data(n=120, d=6, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y, X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=n)


def outcome(fn):
    """'fitted', ('warning', category) or ('error', type) of fn()."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except Exception as exc:       # noqa: BLE001 - the class is what we compare
            return ("error", ValueError if isinstance(exc, ValueError) else type(exc))
    kinds = {w.category for w in caught if issubclass(w.category, ConvergenceWarning)}
    return ("warning", ConvergenceWarning) if kinds else "fitted"


def both(ours, theirs, params, call):
    return outcome(lambda: call(ours(**params))), outcome(lambda: call(theirs(**params)))


# ---- 1. solver="lbfgs" ----------------------------------------------------------

@pytest.mark.parametrize("Ours, Theirs", PAIRS)
def test_lbfgs_fits_like_scikit_learn(Ours, Theirs):
    X, y, t = data()
    target = y if Ours is nn.NNClassifier else t
    params = dict(solver="lbfgs", hidden_layer_sizes=(10,), random_state=0, max_iter=500)
    ours, theirs = Ours(**params).fit(X, target), Theirs(**params).fit(X, target)
    assert ours.score(X, target) == pytest.approx(theirs.score(X, target), abs=0.05)
    assert 1 <= ours.n_iter_ <= 500 and np.isfinite(ours.loss_)
    # (MLPRegressor 1.9 shows partial_fit with lbfgs: its available_if passes
    # est._check_solver uncalled, always true -- a scikit-learn bug; MLPClassifier's is right)
    assert not hasattr(ours, "partial_fit")
    assert hasattr(theirs, "partial_fit") == (Theirs is MLPRegressor)
    assert not hasattr(ours, "loss_curve_") and not hasattr(theirs, "loss_curve_")
    # max_iter reached: scikit-learn's ConvergenceWarning, n_iter_ == max_iter
    short = dict(params, max_iter=3)
    assert both(Ours, Theirs, short, lambda e: e.fit(X, target)) == \
        (("warning", ConvergenceWarning),) * 2
    with pytest.warns(ConvergenceWarning):
        assert Ours(**short).fit(X, target).n_iter_ == 3
    # max_fun: few function evaluations stop it as well
    assert both(Ours, Theirs, dict(params, max_fun=5), lambda e: e.fit(X, target)) == \
        (("warning", ConvergenceWarning),) * 2
    # partial_fit comes back with a stochastic solver
    assert hasattr(Ours(solver="sgd"), "partial_fit")


def test_lbfgs_first_loss_is_scikit_learns():
    # the same initial weights and objective: one iteration's loss agrees
    X, y, _ = data()
    params = dict(solver="lbfgs", hidden_layer_sizes=(7,), random_state=3, max_iter=1,
                  alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = nn.NNClassifier(**params).fit(X, y)
        theirs = MLPClassifier(**params).fit(X, y)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-4)


# ---- 2. every parameter ----------------------------------------------------------

@pytest.mark.parametrize("Ours, Theirs", PAIRS)
def test_every_scikit_learn_parameter_is_accepted(Ours, Theirs):
    X, y, t = data()
    target = y if Ours is nn.NNClassifier else t
    est = Ours(**Theirs().get_params())
    assert set(Theirs().get_params()) <= set(est.get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(max_iter=5).fit(X, target)


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
def test_learning_rate_schedules(schedule):
    X, y, _ = data()
    params = dict(solver="sgd", learning_rate=schedule, power_t=0.25, hidden_layer_sizes=(8,),
                  random_state=0, max_iter=40, learning_rate_init=0.05, n_iter_no_change=2,
                  tol=0.05)
    assert both(nn.NNClassifier, MLPClassifier, params, lambda e: e.fit(X, y))[0] in (
        "fitted", ("warning", ConvergenceWarning))
    ours = nn.NNClassifier(**params).fit(X, y)
    if schedule == "invscaling":
        assert ours._lr == pytest.approx(0.05 / (ours.t_ + 1) ** 0.25)
    elif schedule == "adaptive":
        assert ours._lr < 0.05          # divided by 5 on each plateau instead of stopping
        assert ours.n_iter_ > nn.NNClassifier(**dict(params, learning_rate="constant")).fit(
            X, y).n_iter_
    else:
        assert ours._lr == 0.05


def test_invscaling_sgd_follows_scikit_learn_full_batch():
    # full batch, no shuffling effect: the same weights, step for step
    X, y, _ = data(n=60)
    params = dict(solver="sgd", learning_rate="invscaling", power_t=0.5, momentum=0.9,
                  hidden_layer_sizes=(5,), batch_size=60, random_state=1, max_iter=8,
                  learning_rate_init=0.5, alpha=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = nn.NNClassifier(**params).fit(X, y)
        theirs = MLPClassifier(**params).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=2e-4)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_grid_search_over_scikit_learns_parameters():
    X, y, _ = data()
    grid = {"learning_rate": ["constant", "adaptive"], "power_t": [0.5, 0.25],
            "max_fun": [100], "solver": ["sgd", "lbfgs"], "n_iter_no_change": [np.inf, 3]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(nn.NNClassifier(hidden_layer_sizes=(8,), max_iter=20,
                                              random_state=0), grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 16 and search.best_score_ > 0.5


def test_poisson_regression():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0]))
    for solver in ("adam", "lbfgs"):
        params = dict(loss="poisson", solver=solver, hidden_layer_sizes=(8,), random_state=0,
                      max_iter=300)
        ours = nn.NNRegressor(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.fit(X, y)
            theirs = MLPRegressor(**params).fit(X, y)
        assert ours.out_activation_ == theirs.out_activation_ == "exp"
        assert (ours.predict(X) > 0).all()
        assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=0.1)
    # stricter on purpose: MLPRegressor 1.9 fits negative Poisson targets silently
    with pytest.raises(ValueError, match="negative"):
        nn.NNRegressor(loss="poisson", max_iter=5).fit(X, -y - 1)


def test_poisson_regression_with_sample_weight():
    """As MLPRegressor: the weighted mean of the per-sample deviance (summed
    over the outputs) plus alpha / (2 sum(w)) ||W||^2; integer weights equal
    repeated samples, with lbfgs and with adam."""
    rng = np.random.RandomState(1)
    X = rng.normal(size=(60, 3))
    Y = rng.poisson(np.exp(0.4 * X[:, :2]))            # two targets
    w = rng.randint(0, 4, size=60).astype(float)
    params = dict(loss="poisson", solver="lbfgs", hidden_layer_sizes=(5,), random_state=0,
                  max_iter=1, alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = nn.NNRegressor(**params).fit(X, Y, sample_weight=w)
        theirs = MLPRegressor(**params).fit(X, Y, sample_weight=w)
    # the same initial weights: the same objective value after one iteration
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    for solver in ("lbfgs", "adam"):
        kw = dict(params, solver=solver, max_iter=20, batch_size=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            weighted = nn.NNRegressor(**kw).fit(X, Y, sample_weight=w)
            repeated = nn.NNRegressor(**kw).fit(np.repeat(X, w.astype(int), axis=0),
                                                np.repeat(Y, w.astype(int), axis=0))
        np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-4)
        assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-5)


# ---- 3. targets and inputs -------------------------------------------------------

def test_multilabel_like_scikit_learn():
    X, _, _ = data()
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 1]).astype(int)
    params = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=300)
    for solver in ("adam", "lbfgs"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours = nn.NNClassifier(solver=solver, **params).fit(X, Y)
            theirs = MLPClassifier(solver=solver, **params).fit(X, Y)
        assert ours.out_activation_ == theirs.out_activation_ == "logistic"
        assert ours.predict(X).shape == Y.shape and set(np.unique(ours.predict(X))) <= {0, 1}
        assert ours.predict_proba(X).shape == Y.shape
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        assert ours.score(X, Y) == pytest.approx(theirs.score(X, Y), abs=0.1)
    # stricter on purpose: MLPClassifier 1.9 trains sigmoids towards 2 on a 0/2 matrix
    with pytest.raises(ValueError, match="multilabel indicator"):
        nn.NNClassifier(max_iter=5).fit(X, Y * 2)


def test_column_vector_y_is_one_target_as_scikit_learn():
    from sklearn.exceptions import DataConversionWarning
    X, _, t = data()
    for cls in (nn.NNRegressor, MLPRegressor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with pytest.warns(DataConversionWarning, match="column-vector y"):
                est = cls(max_iter=3, random_state=0).fit(X, t[:, None])
        assert est.predict(X).shape == (len(X),) and est.n_outputs_ == 1


def test_multi_output_regression_lbfgs():
    X, _, t = data()
    Y = np.column_stack([t, X[:, 3]])
    reg = nn.NNRegressor(solver="lbfgs", hidden_layer_sizes=(16,), random_state=0,
                         max_iter=500).fit(X, Y)
    assert reg.predict(X).shape == (len(X), 2) and reg.score(X, Y) > 0.9


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_X_gives_the_dense_result(fmt, solver, monkeypatch):
    X, y, _ = data()
    X[np.abs(X) < 0.8] = 0
    Xs = getattr(sparse, f"{fmt}_matrix")(X)
    params = dict(solver=solver, hidden_layer_sizes=(8,), random_state=0, max_iter=20,
                  shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = nn.NNClassifier(**params).fit(X, y)
        # tiny chunks: the sparse rows are densified a few at a time
        monkeypatch.setattr(nn.lbfgs, "_SPARSE_CHUNK_BYTES", 4 * 6 * 16)
        monkeypatch.setattr(nn.estimator_base, "_SPARSE_CHUNK_BYTES", 4 * 6 * 16)
        sp = nn.NNClassifier(**params).fit(Xs, y)
    np.testing.assert_allclose(sp.predict_proba(Xs), dense.predict_proba(X), rtol=1e-4,
                               atol=1e-5)
    ours, theirs = both(nn.NNClassifier, MLPClassifier, dict(max_iter=5),
                        lambda e: e.fit(Xs, y))
    assert ours == theirs


def test_single_class_is_fitted_as_scikit_learn_does():
    X, _, _ = data()
    y = np.full(len(X), 7)
    assert both(nn.NNClassifier, MLPClassifier, dict(max_iter=5),
                lambda e: e.fit(X, y))[0][0] in ("fitted", "warning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = nn.NNClassifier(max_iter=5).fit(X, y)
    assert (clf.predict(X) == 7).all() and clf.classes_.tolist() == [7]


class Frame:
    """What scikit-learn reads of a pandas DataFrame: columns and an array."""

    def __init__(self, values, columns):
        self.values, self.columns = np.asarray(values), list(columns)
        self.shape = self.values.shape

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __len__(self):
        return len(self.values)


def test_feature_names_in_like_scikit_learn():
    X, y, _ = data(d=3)
    cols = ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = nn.NNClassifier(max_iter=5).fit(Frame(X, cols), y)
    assert clf.feature_names_in_.tolist() == cols
    clf.predict(Frame(X, cols))
    for bad in (["a", "c", "b"], ["a", "b", "z"]):
        with pytest.raises(ValueError, match="feature names should match"):
            clf.predict(Frame(X, bad))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)
    assert pickle.loads(pickle.dumps(clf)).feature_names_in_.tolist() == cols
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = nn.NNClassifier(max_iter=5).fit(X, y)
    assert not hasattr(plain, "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):
        plain.predict(Frame(X, cols))


# ---- 4. iteration semantics ------------------------------------------------------

@pytest.mark.parametrize("Ours, Theirs", PAIRS)
def test_n_iter_counts_the_last_call(Ours, Theirs):
    X, y, t = data()
    target = y if Ours is nn.NNClassifier else t
    counts = []
    for cls in (Ours, Theirs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = cls(max_iter=4, warm_start=True, random_state=0).fit(X, target)
            est.fit(X, target)
            first = (est.n_iter_, len(est.loss_curve_), est.t_)
            est.partial_fit(X, target)
            counts.append(first + (est.n_iter_, len(est.loss_curve_), est.t_))
    assert counts[0] == counts[1] == (4, 8, 8 * len(X), 1, 9, 9 * len(X))
    est = Ours(n_iter_no_change=np.inf, max_iter=6, tol=10.0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, target)
    assert est.n_iter_ == 6


def test_warm_start_on_fewer_classes_is_refused():
    X, y, _ = data()
    for cls in (nn.NNClassifier, MLPClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = cls(max_iter=3, warm_start=True).fit(X, y)
        with pytest.raises(ValueError, match="warm_start can only be used"):
            est.fit(X[y < 2], y[y < 2])


# ---- 5. divergence ---------------------------------------------------------------

def test_divergence_ends_as_scikit_learn():
    X, _, t = data()
    params = dict(solver="sgd", learning_rate_init=10.0, momentum=0.9, max_iter=50,
                  random_state=0)
    with np.errstate(all="ignore"):
        ours, theirs = both(nn.NNRegressor, MLPRegressor, params,
                            lambda e: e.fit(X * 100, t * 1e4))
    assert ours == theirs == ("error", ValueError)


@pytest.mark.parametrize("batch_size", ["auto", 10])
def test_divergence_with_early_stopping_ends_as_scikit_learn(batch_size):
    """With early stopping, MLPRegressor trains on after its loss turns
    non-finite (NaN validation scores never count as no improvement), runs to
    max_iter, warns and restores its best weights. Full batch, the first
    epoch scores (huge but finite); at batch 10 no epoch does, and both
    restore the initial weights (the same for the same random_state)."""
    X, _, t = data()
    params = dict(solver="sgd", learning_rate_init=10.0, momentum=0.9, max_iter=20,
                  early_stopping=True, random_state=0, batch_size=batch_size)
    fitted = []
    with np.errstate(all="ignore"):
        outcomes = both(nn.NNRegressor, MLPRegressor, params,
                        lambda e: fitted.append(e.fit(X * 100, t * 1e4)))
    assert outcomes == (("warning", ConvergenceWarning),) * 2
    for est in fitted:
        assert est.n_iter_ == 20 and len(est.validation_scores_) == 20
        assert np.isnan(est.validation_scores_[-1]) and np.isnan(est.loss_curve_[-1])
        assert np.isfinite(est.predict(X)).all()
    ours, theirs = fitted
    assert ours.t_ == theirs.t_
    if batch_size == 10:
        assert np.isnan(ours.validation_scores_).all()
        assert np.isnan(theirs.validation_scores_).all()
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_values_beyond_float32_are_refused():
    X, y, _ = data()
    X[0, 0] = 1e300
    with pytest.raises(ValueError, match="too large for float32"):
        nn.NNClassifier(max_iter=2).fit(X, y)


# ---- 6. early-stopping validation ------------------------------------------------

@pytest.mark.parametrize("case", ["one member", "tiny fraction", "too small"])
def test_early_stopping_split_errors(case):
    X, y, _ = data(n=30)
    params = dict(early_stopping=True, max_iter=5)
    if case == "one member":
        y = np.r_[np.zeros(29, int), 1]
    elif case == "tiny fraction":
        params["validation_fraction"] = 0.01
    else:
        X, y = X[:10], np.arange(10) % 2
        params["validation_fraction"] = 0.1
    assert both(nn.NNClassifier, MLPClassifier, params, lambda e: e.fit(X, y)) == \
        (("error", ValueError),) * 2
    if case == "too small":
        assert both(nn.NNRegressor, MLPRegressor, params, lambda e: e.fit(X, y * 1.0)) == \
            (("error", ValueError),) * 2


# ---- 7. dtypes -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_follow_the_input_dtype(dtype):
    X, y, t = data()
    X = X.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = nn.NNRegressor(max_iter=5, random_state=0).fit(X, t)
        clf = nn.NNClassifier(max_iter=5, random_state=0).fit(X, y)
        ref = MLPRegressor(max_iter=5, random_state=0).fit(X, t)
    assert reg.predict(X).dtype == ref.predict(X).dtype == dtype
    assert clf.predict_proba(X).dtype == dtype
    assert reg.coefs_[0].dtype == np.float32      # documented: float32 parameters


# ---- 8. verbose ------------------------------------------------------------------

def test_verbose_prints_scikit_learns_lines():
    X, y, _ = data()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        nn.NNClassifier(max_iter=3, verbose=True, random_state=0).fit(X, y)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [f"Iteration {i}, loss = {v:.8f}" for i, v in zip(
        (1, 2, 3), [float(s.split("= ")[1]) for s in lines[:3]])]
    assert len(lines) == 3
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        nn.NNClassifier(max_iter=2, verbose="progress", random_state=0).fit(X, y)
    assert "Iteration" not in out.getvalue() and "epoch" in out.getvalue().lower()


# ---- 9. the sample-weight check, as scikit-learn runs it for its MLPs -------------

@pytest.mark.parametrize("est", [
    # scikit-learn's own test suite runs these checks with these parameters
    # (sklearn/utils/_test_common/instance_generator.py, PER_ESTIMATOR_CHECK_PARAMS)
    nn.NNClassifier(solver="lbfgs", max_iter=100),
    nn.NNRegressor(solver="sgd", tol=1e-2, random_state=42, max_iter=100)])
def test_sample_weight_equivalence_as_scikit_learn_runs_it(est):
    try:
        check_sample_weight_equivalence_on_dense_data(type(est).__name__, est)
    except AssertionError as exc:
        # float32: the same model up to float32 rounding (the check asks 1e-7)
        rel = float(str(exc).split("Max relative difference among violations: ")[1]
                    .split()[0])
        assert rel < 1e-4, str(exc)


def _check_data():
    """The data of scikit-learn's _check_sample_weight_equivalence (1.9)."""
    from sklearn.utils import shuffle
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    Xw, yw, sw_shuffled = shuffle(X, y, sw, random_state=0)
    return X, (X.repeat(sw, axis=0), y.repeat(sw)), (Xw, yw, sw_shuffled)


@pytest.mark.parametrize("Ours, Theirs", PAIRS)
def test_sample_weight_equivalence_fails_only_by_float32_rounding(Ours, Theirs):
    """Why MLPClassifier passes check_sample_weight_equivalence_on_dense_data
    at max_iter=30 and NN* do not: the check feeds float64 X, for which
    MLPClassifier computes in float64 -- weighted and repeated fits then
    differ by summation order only (~1e-16) -- and compares predictions at
    rtol=1e-7, below float32's resolution (6e-8 per rounding). nncore
    computes in float32; so does MLPClassifier when given float32 X, and then
    its two fits differ by a few float32 roundings too, as much as ours."""
    X, (Xr, yr), (Xw, yw, sw) = _check_data()

    def rel_diff(cls, dtype):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            a = cls(max_iter=30, random_state=0).fit(Xr.astype(dtype), yr)
            b = cls(max_iter=30, random_state=0).fit(Xw.astype(dtype), yw, sample_weight=sw)
        method = "predict_proba" if hasattr(a, "predict_proba") else "predict"
        p, q = (np.asarray(getattr(e, method)(X.astype(dtype)), np.float64) for e in (a, b))
        return float(np.max(np.abs(p - q) / np.abs(p)))

    assert rel_diff(Theirs, np.float64) < 1e-12
    ours, theirs32 = rel_diff(Ours, np.float64), rel_diff(Theirs, np.float32)
    eps32 = float(np.finfo(np.float32).eps)
    assert ours < 4 * max(theirs32, eps32), (ours, theirs32)


# ---- 10. seeds -------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_random_state_gives_scikit_learns_initial_weights(activation):
    X, y, _ = data()
    params = dict(hidden_layer_sizes=(9, 4), activation=activation, random_state=5,
                  max_iter=1, solver="sgd", learning_rate_init=1e-12, momentum=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = nn.NNClassifier(**params).fit(X, y)
        theirs = MLPClassifier(**params).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
