"""scikit-learn estimators: ``NNClassifier`` and ``NNRegressor``.

They follow scikit-learn's estimator conventions (``__init__`` only stores
its arguments; ``get_params``/``set_params``; ``fit`` returns self; fitted
attributes end in ``_``; tags) without importing scikit-learn: nncore keeps
NumPy as its only run-time dependency, and the estimators work in pipelines,
grid searches and ``clone`` when scikit-learn is there. They take every
parameter of ``sklearn.neural_network.MLPClassifier``/``MLPRegressor``
(solvers 'adam', 'sgd' and 'lbfgs'; the last runs SciPy's L-BFGS-B over
nncore's loss and gradient), plus ``n_threads`` and ``precision``
("float32", the default, or "bf16": ``Trainer(precision="bf16")``, the
training GEMMs in bfloat16 with float32 master weights; solvers 'sgd' and
'adam' only); training runs on nncore's Trainer and C kernels.

They minimise scikit-learn's objective, step for step: the same losses
(log-loss summed over the outputs of a multilabel model, half the squared
error, the Poisson deviance), the L2 penalty ``alpha / (2 B) * ||W||^2`` on
the weights over the B samples of each batch (the sum of their weights), the
same SGD momentum, Nesterov and learning-rate schedules, Adam, and with the
same ``random_state`` the same initial weights. nncore's losses are means
over every output and PyTorch's optimizer formulas; the estimator converts
(a gradient scale folded into the learning rate, weight decay and Adam's
epsilon, exactly). What differs from MLPClassifier:

- computations are float32 (the documented choice of nncore's kernels):
  ``coefs_`` / ``intercepts_`` are float32 for any input, so results agree
  with scikit-learn's to float32 rounding, not bitwise;
- predictions follow the input: float32 for float32 X, else float64;
- the penalty's B is the nominal batch size (the sum of weights of a
  nominal batch with sample_weight), also for an epoch's last, smaller batch;
- the shuffling order and the early-stopping split come from nncore's
  generators (seeded from ``random_state``), not from scikit-learn's;
- Adam's epsilon is added to the bias-corrected root (PyTorch's form);
  scikit-learn adds it before the correction, a relative difference below
  1e-8 of the step;
- negative sample weights and (with loss='poisson') negative targets are
  refused; MLPClassifier / MLPRegressor 1.9 accept both;
- weighted and repeated samples give the same model up to float32 rounding,
  so scikit-learn's check_sample_weight_equivalence_* (rtol=1e-7, float64
  X) fails by a few float32 ulps; MLPClassifier given float32 X differs as
  much.
"""
import math
import warnings

import numpy as np

from .estimator_base import (ConvergenceWarning, DataConversionWarning, NotFittedError,
                             _BaseNN, _flavoured, _StochasticOnly)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .validation import check_targets

__all__ = ["NNClassifier", "NNRegressor", "NotFittedError", "ConvergenceWarning",
           "DataConversionWarning"]


class _PoissonLoss:
    """scikit-learn's Poisson loss on a log link: the model outputs z = log
    of the mean, the loss is mean(y log(y / e^z) - y + e^z) over every output
    (scikit-learn sums it over the outputs), the gradient (e^z - y) / (n k).
    ``per_sample`` gives the Trainer's sample weighting the per-row values."""

    target_kind = "regression"

    def __init__(self):
        self._grad = None

    @staticmethod
    def _terms(pred, target):
        z = np.asarray(pred, dtype=np.float64)
        y = np.asarray(target, dtype=np.float64).reshape(z.shape)
        mu = np.exp(z)
        ylogy = y * np.log(np.where(y > 0, y, 1.0))      # 0 log 0 = 0 (y >= 0 is checked)
        return ylogy - y * z - y + mu, mu, y

    def per_sample(self, pred, target):
        """Each row's loss, averaged over its outputs (float64)."""
        terms, _, _ = self._terms(pred, target)
        return terms.mean(axis=1)

    def forward(self, pred, target):
        terms, mu, y = self._terms(pred, target)
        self._grad = ((mu - y) / terms.size).astype(np.float32)
        return float(np.mean(terms))

    def backward(self):
        return self._grad


class NNClassifier(_BaseNN):
    """A multi-layer perceptron classifier on nncore's C kernels, with
    scikit-learn's MLPClassifier interface.

    Two classes (or one) get one sigmoid output (BCEWithLogitsLoss); more get
    a softmax output (CrossEntropyLoss); a 2-D 0/1 indicator y (multilabel)
    gets one sigmoid output per label. Labels may be of any sortable type
    (ints, strings, ...). X may be dense or a SciPy sparse matrix (with sgd
    or adam in float32, below 10% nonzeros, the first layer runs on the CSR
    rows; else a chunk of rows is densified at a time), or a DataFrame (its
    column names become ``feature_names_in_``). Fitted
    attributes: ``classes_``, ``n_features_in_``, ``loss_``, ``loss_curve_``,
    ``best_loss_`` (or ``validation_scores_`` and ``best_validation_score_``
    with ``early_stopping``; none of the three with 'lbfgs', as
    scikit-learn), ``n_iter_`` (of the last fit call), ``t_``, ``coefs_``,
    ``intercepts_`` (float32), ``out_activation_``, ``model_`` (the nncore
    Sequential). See the module docstring for what differs from
    MLPClassifier.
    """

    _estimator_type = "classifier"
    _multi_output = False

    @property
    def _multilabel(self):
        return self.classes_.ndim == 1 and getattr(self, "_label_indicator", False)

    @property
    def _grad_scale(self):
        # scikit-learn sums the log-loss over the sigmoid outputs; nncore's
        # BCEWithLogitsLoss averages it over them
        return float(self._n_model_outputs()) if self._n_model_outputs() == 1 or \
            self._multilabel else 1.0

    _value_scale = _grad_scale

    @property
    def out_activation_(self):
        return "softmax" if self._n_model_outputs() > 1 and not self._multilabel \
            else "logistic"

    def _loss(self):
        return CrossEntropyLoss() if self.out_activation_ == "softmax" else BCEWithLogitsLoss()

    def _n_model_outputs(self):
        if self._multilabel:
            return len(self.classes_)
        return 1 if len(self.classes_) <= 2 else len(self.classes_)

    def _stratify(self, y):
        if self._multilabel:
            return None       # scikit-learn does not stratify multilabel targets
        return y.reshape(len(y), -1)[:, 0]

    def _encode_multilabel(self, y, first):
        name = type(self).__name__
        if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name}: a 2-D y must be a multilabel indicator matrix (0/1 "
                             "per label); multiclass-multioutput targets are not supported")
        if first:
            self._label_indicator = True
            self.classes_ = np.arange(y.shape[1])
        elif not self._multilabel or y.shape[1] != len(self.classes_):
            raise ValueError(f"{name}: y has {y.shape[1]} label columns, but the estimator "
                             f"was fitted on {'1-D labels' if not self._multilabel else ''}"
                             f"{len(self.classes_) if self._multilabel else ''}")
        return np.ascontiguousarray(y, dtype=np.float32)

    def _encode_y(self, y, n, first, classes, sample_weight):
        """Labels -> class indices (int64), or a float (n, 1) 0/1 column for
        two classes (or one), or the float (n, labels) indicator matrix of a
        multilabel y; sets classes_ on the first fit."""
        name = type(self).__name__
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = _column_to_1d(np.asarray(y))
        if y.ndim == 0 or len(y) != n:
            raise ValueError(f"{name}: X has {n} samples but y has "
                             f"{len(y) if y.ndim else 'a scalar'}")
        if y.ndim == 2:
            return self._encode_multilabel(y, first)
        if y.ndim != 1:
            raise ValueError(f"{name}: y must be 1-D (one label per sample) or a 2-D "
                             f"multilabel indicator matrix, got shape {y.shape}")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                raise ValueError(f"{name}: Input y contains NaN or infinity.")
            if not np.array_equal(y, np.round(y)):
                raise ValueError("Unknown label type: continuous. Maybe you are trying to fit "
                                 "a classifier, which expects discrete classes on a regression "
                                 "target with continuous values.")
        elif y.dtype.kind == "c":
            raise ValueError(f"{name}: complex labels are not supported")
        if y.dtype.kind == "O":
            kinds = {type(v) for v in y}
            if len(kinds) > 1:
                raise ValueError(f"{name}: labels mix types {sorted(k.__name__ for k in kinds)}"
                                 "; use labels of one type")
        if not first and self._multilabel:
            raise ValueError(f"{name}: y is 1-D, but the estimator was fitted on a "
                             "multilabel indicator matrix")
        try:
            present = np.unique(np.asarray(classes) if first and classes is not None else y)
        except TypeError as exc:      # labels that cannot be sorted
            raise TypeError(f"{name}: the class labels cannot be sorted ({exc}); use "
                            "numbers or strings") from None
        if first:
            self._label_indicator = False
            self.classes_ = present
        elif self.warm_start and classes is None and not getattr(self, "_partial", False) \
                and not np.array_equal(present, self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as "
                             f"in the previous call to fit. Previously got {self.classes_}, "
                             f"`y` has {present}")
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if unknown.any():
            raise ValueError(f"{name}: y holds the label {y[unknown][0]!r}, which is not "
                             f"in classes_ {self.classes_.tolist()}")
        if len(self.classes_) <= 2:
            return index.astype(np.float32).reshape(-1, 1)
        return index.astype(np.int64)

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to max_iter epochs (iterations with
        'lbfgs'); returns self."""
        self._partial = False
        return self._fit(X, y, sample_weight, incremental=False)

    @_StochasticOnly
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights.
        ``classes`` (every label that will ever appear) is required on the
        first call. Only with solver 'sgd' or 'adam'."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError(f"{type(self).__name__}: classes must be passed on the "
                                 "first call to partial_fit")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                        self.classes_):
            raise ValueError(f"{type(self).__name__}: classes={classes!r} differs from "
                             f"classes_={self.classes_!r} of the earlier partial_fit")
        self._partial = True
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _proba_from_outputs(self, out):
        z = out.astype(np.float64)
        if self.out_activation_ == "logistic":
            p = 1.0 / (1.0 + np.exp(-z))
            return p if self._multilabel else np.column_stack([1.0 - p[:, 0], p[:, 0]])
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def _indices_from_outputs(self, out):
        if self._multilabel:
            return (out > 0).astype(np.int64)
        if self.out_activation_ == "logistic":
            # one class: always it; two: the sigmoid's side of 0.5
            return np.minimum((out[:, 0] > 0).astype(np.int64), len(self.classes_) - 1)
        return np.argmax(out, axis=1)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in classes_ order
        (per label for a multilabel model); float32 for float32 X."""
        self._check_fitted()
        out = self._forward(self._check_X(X, reset=False))
        return self._proba_from_outputs(out).astype(self._out_dtype(), copy=False)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable label of each sample (a 0/1 indicator row per
        sample for a multilabel model)."""
        self._check_fitted()
        out = self._forward(self._check_X(X, reset=False))
        index = self._indices_from_outputs(out)
        return index if self._multilabel else self.classes_[index]

    def _score_encoded(self, X, y, sample_weight=None):
        out = self._forward(X)
        if not np.isfinite(out).all():
            return math.nan          # as scikit-learn's score on non-finite predictions
        pred = self._indices_from_outputs(out)
        if self._multilabel:
            return _weighted_mean((pred == y).all(axis=1), sample_weight)
        truth = y[:, 0].astype(np.int64) if y.ndim == 2 else y
        return _weighted_mean(pred == truth, sample_weight)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y) (subset accuracy for multilabel)."""
        pred = self.predict(X)
        y = np.asarray(y)
        if self._multilabel:
            _check_score_args(type(self).__name__, y, len(pred), sample_weight,
                              len(self.classes_))
            return _weighted_mean((pred == y).all(axis=1), sample_weight)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        _check_score_args(type(self).__name__, y, len(pred), sample_weight, 1)
        return _weighted_mean(pred == y, sample_weight)


class NNRegressor(_BaseNN):
    """A multi-layer perceptron regressor on nncore's C kernels, with
    scikit-learn's MLPRegressor interface: one or several targets; ``loss``
    'squared_error' (identity output, half the squared error) or 'poisson'
    (exponential output, the Poisson deviance; targets >= 0). Predictions
    are float32 for float32 X, else float64. Fitted attributes as
    NNClassifier's."""

    _estimator_type = "regressor"
    _multi_output = True
    _extra_options = (("loss", ("squared_error", "poisson")),)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, precision="float32"):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            n_threads=n_threads, precision=precision)
        self.loss = loss

    @property
    def out_activation_(self):
        return "exp" if self.loss == "poisson" else "identity"

    @property
    def _grad_scale(self):
        # scikit-learn's gradient is (pred - y) / n for each output; nncore's
        # MSELoss gives 2 (pred - y) / (n k), the Poisson loss (e^z - y) / (n k)
        k = self._n_targets
        return k / 2.0 if self.loss == "squared_error" else float(k)

    @property
    def _value_scale(self):
        # scikit-learn reports half the mean squared error, and the Poisson
        # deviance summed over the outputs
        return 0.5 if self.loss == "squared_error" else float(self._n_targets)

    def _loss(self):
        return _PoissonLoss() if self.loss == "poisson" else MSELoss()

    def _n_model_outputs(self):
        return self._n_targets

    def _encode_y(self, y, n, first, classes, sample_weight):
        """Targets as float32 (n, n_targets); remembers on the first fit
        whether y was 1-D (then predict returns 1-D)."""
        if y is not None:
            y = _column_to_1d(np.asarray(y))
            if y.dtype.kind not in "biuf":      # e.g. an object array of numbers
                try:
                    y = y.astype(np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"{type(self).__name__}: y has dtype {y.dtype}; "
                                     "expected numbers") from None
        out = check_targets(y, n, None if first else self.n_outputs_, "regression",
                            type(self).__name__)
        if self.loss == "poisson":
            if (out < 0).any():
                raise ValueError("Some value(s) of y are negative which is not allowed for "
                                 "Poisson regression.")
        if first:
            self._n_targets = out.shape[1]
            self._y_1d = y.ndim == 1
        return out

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to max_iter epochs (iterations with
        'lbfgs'); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @_StochasticOnly
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights. Only
        with solver 'sgd' or 'adam'."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict_outputs(self, X):
        out = self._forward(X)
        return np.exp(out.astype(np.float64)) if self.loss == "poisson" else out

    def predict(self, X):
        """Predicted targets: shape (n_samples,) when fitted on a 1-D y,
        else (n_samples, n_targets); float32 for float32 X, else float64."""
        self._check_fitted()
        out = self._predict_outputs(self._check_X(X, reset=False))
        out = out.astype(self._out_dtype(), copy=False)
        return out[:, 0] if self._y_1d else out

    def _score_encoded(self, X, y, sample_weight=None):
        out = self._predict_outputs(X)
        if not np.isfinite(out).all():
            return math.nan          # as scikit-learn's score on non-finite predictions
        return _r2(y, out, sample_weight)

    def score(self, X, y, sample_weight=None):
        """The coefficient of determination R^2 on (X, y) (averaged uniformly
        over targets)."""
        pred = self.predict(X)
        y = _check_score_args(type(self).__name__, y, len(pred), sample_weight, self.n_outputs_)
        return _r2(y.reshape(len(y), -1), np.asarray(pred).reshape(len(y), -1), sample_weight)


def _column_to_1d(y):
    """A column vector y (n, 1) as 1-D, with scikit-learn's warning (its
    column_or_1d, as both MLPs call it); any other y unchanged."""
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. "
                      "Please change the shape of y to (n_samples, ), for example "
                      "using ravel().", _flavoured(DataConversionWarning), stacklevel=5)
        return y[:, 0]
    return y


def _check_score_args(who, y, n, sample_weight, n_outputs):
    """score()'s y (n labels, or n x n_outputs numbers for a regressor) and
    sample_weight (n numbers); a regressor's y comes back as float64."""
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != n:
        raise ValueError(f"{who}.score: X has {n} samples but y has "
                         f"{len(y) if y.ndim else 'a scalar'}")
    if n_outputs > 1 or who == "NNRegressor":
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{who}.score: y has dtype {y.dtype}; expected numbers")
        if y.reshape(n, -1).shape[1] != n_outputs:
            raise ValueError(f"{who}.score: y has shape {y.shape}, expected {n_outputs} "
                             "target(s) per sample")
        y = y.astype(np.float64)
    if sample_weight is not None:
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "biuf" or w.shape != (n,):
            raise ValueError(f"{who}.score: sample_weight must be {n} numbers, got dtype "
                             f"{w.dtype} and shape {w.shape}")
    return y


def _weighted_mean(values, weights):
    values = np.asarray(values, dtype=np.float64)
    if weights is None:
        return float(values.mean())
    weights = np.asarray(weights, dtype=np.float64)
    return float(np.dot(values, weights) / weights.sum())


def _r2(y, pred, sample_weight=None):
    """R^2 as sklearn.metrics.r2_score (uniform average over outputs; an
    output with constant truth scores 1 when predicted exactly, else 0)."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = w[:, None]
    mean = (w * y).sum(axis=0) / w.sum()
    numerator = (w * (y - pred) ** 2).sum(axis=0)
    denominator = (w * (y - mean) ** 2).sum(axis=0)
    scores = np.ones(y.shape[1])
    nonzero = denominator != 0
    scores[nonzero] = 1.0 - numerator[nonzero] / denominator[nonzero]
    scores[~nonzero & (numerator != 0)] = 0.0
    return float(scores.mean())
