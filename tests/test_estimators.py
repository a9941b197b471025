"""NNClassifier / NNRegressor: scikit-learn's own estimator checks, and
behaviour against independent references (NumPy, scikit-learn's metrics)."""
import pickle
import warnings

import numpy as np
import pytest

import nncore as nn
from nncore.estimators import ConvergenceWarning

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::nncore.estimators.ConvergenceWarning")

# max_iter=30: MLPClassifier / MLPRegressor pass every check at it too (scikit-learn's
# own suite runs them at 100).
CHECKED = [nn.NNClassifier(max_iter=30, random_state=0),
           nn.NNRegressor(max_iter=30, random_state=0)]


def expected_failures(estimator):
    return {
        # Weighted and repeated samples give the same model up to float32
        # rounding: nncore computes in float32 and the check compares at
        # rtol=1e-7 (we see relative differences of 1e-7..5e-7, a few float32
        # ulps). MLPClassifier passes because the check's X is float64, for
        # which it computes in float64; given float32 X it differs as much
        # (test_mlp_dropin.py: ..._fails_only_by_float32_rounding).
        # test_sample_weight_equals_repetition below checks the same
        # equivalence at a float32 tolerance.
        "check_sample_weight_equivalence_on_dense_data":
            "float32 results; equal to repetition up to float32 rounding",
        "check_sample_weight_equivalence_on_sparse_data":
            "float32 results; equal to repetition up to float32 rounding",
    }


# scikit-learn warns that the estimators do not inherit from its BaseEstimator
# (when the checks are collected, and when they run): on purpose, nncore does
# not import scikit-learn.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Estimator NN.* does not inherit")
    sklearn_checks = parametrize_with_checks(CHECKED, expected_failed_checks=expected_failures)


@pytest.mark.filterwarnings("ignore:Estimator NN.* does not inherit")
@sklearn_checks
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def blobs(n=300, n_classes=3, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.5, (n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    return centers[y] + rng.normal(0, 1, (n, n_features)), y


def test_string_labels_binary_and_multiclass():
    X, y = blobs(n_classes=2)
    names = np.array(["spam", "ham"])[y]
    clf = nn.NNClassifier(hidden_layer_sizes=(8,), max_iter=60, learning_rate_init=0.01,
                          random_state=0).fit(X, names)
    assert clf.classes_.tolist() == ["ham", "spam"]
    assert clf.model_.layers[-1].out_features == 1           # one sigmoid output
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, names) == accuracy_score(names, clf.predict(X)) > 0.9

    X, y = blobs(n_classes=4)
    labels = np.array(["a", "b", "c", "d"], dtype=object)[y]
    clf = nn.NNClassifier(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01,
                          random_state=0).fit(X, labels)
    assert clf.model_.layers[-1].out_features == 4           # softmax outputs
    assert clf.score(X, labels) > 0.9
    with pytest.raises(ValueError, match="'e'.*not in classes_"):
        clf.partial_fit(X[:3], ["a", "b", "e"])


def test_partial_fit_needs_classes_and_continues():
    X, y = blobs()
    clf = nn.NNClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    first = clf.coefs_[0].copy()
    for _ in range(20):
        clf.partial_fit(X, y)
    # n_iter_ counts the last call's iterations (scikit-learn 1.9: one per
    # partial_fit); the curve and t_ keep growing
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 21 and clf.t_ == 100 + 20 * 300
    assert not np.array_equal(first, clf.coefs_[0])
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="early_stopping"):
        nn.NNClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


RESUME_CASES = {
    "classifier-adam": lambda: nn.NNClassifier(hidden_layer_sizes=(16,), random_state=0,
                                               learning_rate_init=0.01, alpha=0.01),
    "classifier-sgd-nesterov": lambda: nn.NNClassifier(hidden_layer_sizes=(16,), solver="sgd",
                                                       random_state=0, momentum=0.9),
    "regressor-adam": lambda: nn.NNRegressor(hidden_layer_sizes=(8,), random_state=0,
                                             learning_rate_init=0.01, batch_size=16),
}


@pytest.mark.parametrize("name", list(RESUME_CASES))
@pytest.mark.parametrize("how", ["pickle", "nncore.save"])
def test_partial_fit_continues_bitwise_after_a_round_trip(name, how, tmp_path):
    # MLPClassifier pickles its optimizer, so partial_fit after unpickling
    # continues the run; so must ours: optimizer state and shuffling included.
    X, y = blobs()
    y = y if name.startswith("classifier") else X[:, :1] * 2 - X[:, 1:2]
    extra = {"classes": [0, 1, 2]} if name.startswith("classifier") else {}

    def round_trip(est):
        if how == "pickle":
            return pickle.loads(pickle.dumps(est))
        nn.save(est, tmp_path / "est.nnc")
        return nn.load(tmp_path / "est.nnc")

    straight = RESUME_CASES[name]().partial_fit(X, y, **extra)
    resumed = round_trip(RESUME_CASES[name]().partial_fit(X, y, **extra))
    for _ in range(3):
        straight.partial_fit(X, y)
        resumed.partial_fit(X, y)
    for a, b in zip(straight.coefs_ + straight.intercepts_,
                    resumed.coefs_ + resumed.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert resumed.loss_curve_ == straight.loss_curve_
    # a fresh optimizer (what was saved before) gives another run: the test can fail
    fresh = round_trip(RESUME_CASES[name]().partial_fit(X, y, **extra))
    fresh.__dict__.pop("_resume", None)
    for _ in range(3):
        fresh.partial_fit(X, y)
    assert not np.array_equal(fresh.coefs_[0], straight.coefs_[0])
    # fit starts over (a new optimizer), as MLPClassifier's does
    refit = round_trip(straight)
    refit.set_params(max_iter=5).fit(X, y)
    again = RESUME_CASES[name]().set_params(max_iter=5).fit(X, y)
    np.testing.assert_array_equal(refit.coefs_[0], again.coefs_[0])


def test_multi_output_regression_against_r2_score():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    Y = np.column_stack([X[:, 0] - 2 * X[:, 1], np.sin(X[:, 2]) + X[:, 3] ** 2 / 4])
    reg = nn.NNRegressor(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01,
                         random_state=0).fit(X, Y)
    pred = reg.predict(X)
    assert pred.shape == (400, 2) and pred.dtype == np.float64
    assert reg.score(X, Y) == pytest.approx(r2_score(Y, pred), rel=1e-12)
    assert reg.score(X, Y) > 0.9
    w = rng.uniform(0.1, 2, 400)
    assert reg.score(X, Y, sample_weight=w) == pytest.approx(
        r2_score(Y, pred, sample_weight=w), rel=1e-12)
    single = nn.NNRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning):
        single.fit(X, Y[:, 0])
    assert single.predict(X).shape == (400,)


def test_alpha_is_l2_on_weights_full_batch_sgd_step():
    """One full-batch SGD step against a NumPy float64 reference of the
    objective mean(CE) + alpha / (2 n) * sum(W^2) (biases not penalised)."""
    X, y = blobs(n=50)
    kw = dict(hidden_layer_sizes=(7,), solver="sgd", momentum=0.0, batch_size=50,
              learning_rate_init=0.1, alpha=3.0, max_iter=1, random_state=0)
    clf = nn.NNClassifier(**kw)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    W0 = [w.astype(np.float64) for w in clf.coefs_]
    b0 = [b.astype(np.float64) for b in clf.intercepts_]
    with pytest.warns(ConvergenceWarning):
        clf.set_params(warm_start=True).fit(X, y)
    h = np.maximum(X @ W0[0] + b0[0], 0)
    z = h @ W0[1] + b0[1]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(3)[y]) / len(X)
    dW1, db1 = h.T @ dz, dz.sum(0)
    dh = dz @ W0[1].T * (h > 0)
    dW0, db0 = X.T @ dh, dh.sum(0)
    decay = 3.0 / len(X)
    expect = [W0[0] - 0.1 * (dW0 + decay * W0[0]), W0[1] - 0.1 * (dW1 + decay * W0[1])]
    for got, want in zip(clf.coefs_, expect):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(clf.intercepts_, [b0[0] - 0.1 * db0, b0[1] - 0.1 * db1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("Estimator", [nn.NNClassifier, nn.NNRegressor])
def test_sample_weight_equals_repetition(Estimator):
    X, y = blobs(n=40)
    if Estimator is nn.NNRegressor:
        y = X[:, 0] + 0.5 * X[:, 1]
    w = np.random.default_rng(0).integers(0, 3, len(X))
    kw = dict(hidden_layer_sizes=(8,), max_iter=30, random_state=0, batch_size=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = Estimator(**kw).fit(X, y, sample_weight=w)
        repeated = Estimator(**kw).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    method = "predict_proba" if Estimator is nn.NNClassifier else "predict"
    np.testing.assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)


def test_early_stopping_keeps_best_validation_weights():
    X, y = blobs(n=400, seed=3)
    clf = nn.NNClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3,
                          max_iter=200, learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.n_iter_ < 200
    # the validation split is reproducible: same random_state, same curve
    again = clone(clf).fit(X, y)
    assert again.validation_scores_ == clf.validation_scores_


def test_convergence_on_training_loss():
    X, y = blobs()
    clf = nn.NNClassifier(hidden_layer_sizes=(16,), tol=1e-2, n_iter_no_change=2,
                          max_iter=500, random_state=0).fit(X, y)
    curve = clf.loss_curve_
    assert clf.n_iter_ == len(curve) < 500
    assert clf.best_loss_ == min(curve)
    assert clf.validation_scores_ is None


def test_not_fitted_pickle_and_threads(num_threads):
    X, y = blobs()
    clf = nn.NNClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        one = clone(clf).set_params(n_threads=1).fit(X, y)
        two = clone(clf).set_params(n_threads=2).fit(X, y)
    np.testing.assert_array_equal(one.predict_proba(X), two.predict_proba(X))
    np.testing.assert_array_equal(one.coefs_[0], clf.coefs_[0])
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.get_params() == clf.get_params()


def test_works_in_pipelines_and_cross_validation():
    X, y = blobs()
    pipe = make_pipeline(StandardScaler(),
                         nn.NNClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0,
                                         learning_rate_init=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.min() > 0.9
    assert ("NNClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=50, "
            "random_state=0)") in repr(pipe)


def test_bad_parameters_raise_at_fit():
    X, y = blobs(n=20)
    for params, match in [({"solver": "newton"}, "solver"), ({"activation": "swish"},
                          "activation"), ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
                          ({"batch_size": 0}, "batch_size"), ({"max_iter": 0}, "max_iter"),
                          ({"learning_rate_init": -1.0}, "learning_rate_init")]:
        est = nn.NNClassifier(**params)          # __init__ only stores
        with pytest.raises(ValueError, match=match):
            est.fit(X, y)
    with pytest.raises(ValueError, match="Invalid parameter 'foo'"):
        nn.NNRegressor().set_params(foo=1)
