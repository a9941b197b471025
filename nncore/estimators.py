"""scikit-learn estimators: ``NNClassifier`` and ``NNRegressor``.

They follow scikit-learn's estimator conventions (``__init__`` only stores
its arguments; ``get_params``/``set_params``; ``fit`` returns self; fitted
attributes end in ``_``; tags) without importing scikit-learn: nncore keeps
NumPy as its only run-time dependency, and the estimators work in pipelines,
grid searches and ``clone`` when scikit-learn is there. Their parameters are
those of ``sklearn.neural_network.MLPClassifier``/``MLPRegressor`` (the
'sgd' and 'adam' solvers), plus ``n_threads``; training runs on nncore's
Trainer and C kernels.

Differences from MLPClassifier worth knowing:

- ``alpha`` is the L2 penalty of the objective ``mean loss + alpha / (2 n)
  * ||W||^2`` over the n training samples (the sum of sample weights when
  given), applied to weights, not biases. That is MLPClassifier's objective
  with full batches; with minibatches MLPClassifier scales the penalty by
  1 / batch size instead, so the same alpha regularises more there.
- the regression loss is the mean squared error (MLPRegressor reports half
  of it in ``loss_curve_``).
- computations are float32; predictions are float32 (regression) and the
  probabilities float64, normalised in float64.
"""
import contextlib
import inspect
import math
import sys
import warnings

import numpy as np

from .datasets import train_test_split
from .layers import Dense, ReLU, Sequential, Sigmoid, Tanh
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .optim import SGD, Adam
from .serialize import (build_model, no_stray_tensors, read_optimizer_state, register_kind,
                        split_optimizer_state)
from .runtime import get_num_threads, set_num_threads
from .trainer import Trainer
from .validation import check_features, check_sample_weight, check_targets

__all__ = ["NNClassifier", "NNRegressor", "NotFittedError", "ConvergenceWarning",
           "DataConversionWarning"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (like sklearn.exceptions.NotFittedError,
    a ValueError and an AttributeError)."""


class ConvergenceWarning(UserWarning):
    """Training stopped at ``max_iter`` before the convergence test was met."""


class DataConversionWarning(UserWarning):
    """The input was converted to what the estimator expects (e.g. a column
    vector y to 1-D)."""


_sklearn_flavours = {}


def _flavoured(cls):
    """``cls``, or when scikit-learn is already imported, a subclass that is
    also scikit-learn's class of the same name, so ``except
    sklearn.exceptions.NotFittedError`` and sklearn's warning filters apply
    to nncore's estimators too. (Never imports scikit-learn itself.)"""
    module = sys.modules.get("sklearn.exceptions")
    theirs = getattr(module, cls.__name__, None) if module is not None else None
    if theirs is None:
        return cls
    flavour = _sklearn_flavours.get(cls)
    if flavour is None:
        flavour = _sklearn_flavours[cls] = type(cls.__name__, (cls, theirs),
                                                {"__module__": cls.__module__})
    return flavour


_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


@contextlib.contextmanager
def _threads(n):
    """Run nncore's kernels with n threads inside the block (None: leave as is)."""
    if n is None:
        yield
        return
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


def _seed_from(random_state):
    """An int seed from sklearn's random_state conventions (None, int,
    numpy RandomState or Generator)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2 ** 63))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be an int >= 0, got {random_state!r}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2 ** 63))
    raise ValueError(f"random_state must be None, an int, a numpy RandomState or Generator, "
                     f"got {random_state!r}")


class _ParamGroups:
    """Optimizers over groups of parameters, stepped together: L2 decay on the
    weights, none on the biases. ``lr`` reads and sets every group's."""

    def __init__(self, groups):
        self.groups = groups

    @property
    def lr(self):
        return self.groups[0][0].lr

    @lr.setter
    def lr(self, value):
        for optimizer, _ in self.groups:
            optimizer.lr = value

    def step(self, params=None):
        for optimizer, group in self.groups:
            optimizer.step(group)


class _Monitor:
    """MLPClassifier's convergence rule as a Trainer callback: stop when the
    training loss (or, with early stopping, the validation score) has not
    improved by ``tol`` for more than ``n_iter_no_change`` epochs."""

    def __init__(self, estimator, X_val=None, y_val=None, w_val=None):
        self.est = estimator
        self.X_val, self.y_val, self.w_val = X_val, y_val, w_val
        self.converged = False

    def on_epoch_end(self, epoch, logs):
        est = self.est
        loss = logs["loss"]
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += est._epoch_samples
        if self.X_val is not None:
            score = est._score_encoded(self.X_val, self.y_val, self.w_val)
            est.validation_scores_.append(score)
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_state = {k: np.array(v, copy=True)
                                   for k, v in est.model_.state_dict().items()}
        else:
            improved = loss <= est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if est._no_improvement_count > est.n_iter_no_change:
            self.converged = True
            self.trainer.stop_training = True


class _BaseNN:
    """What NNClassifier and NNRegressor share: parameters, model building,
    the training loop (through Trainer), validation and persistence hooks."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate_init=0.001, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.n_threads = n_threads

    # ---- scikit-learn's parameter protocol ------------------------------
    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator "
                                 f"{type(self).__name__}. Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in
                    inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name)
            same = value is default or (type(value) is type(default) and value == default)
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": self._multi_output, "requires_y": True,
                "non_deterministic": False}

    def __sklearn_tags__(self):  # scikit-learn >= 1.6; only called when it is installed
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)
        classifier = self._estimator_type == "classifier"
        return Tags(estimator_type=self._estimator_type,
                    target_tags=TargetTags(required=True, multi_output=self._multi_output,
                                           single_output=True),
                    input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
                    classifier_tags=ClassifierTags(multi_class=True, multi_label=False)
                    if classifier else None,
                    regressor_tags=None if classifier else RegressorTags())

    # ---- checks -----------------------------------------------------------
    def _validate_params(self):
        name = type(self).__name__
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, (int, np.integer)):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(f"{name}: hidden_layer_sizes must be a sequence of ints, got "
                             f"{self.hidden_layer_sizes!r}") from None
        if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1
               for h in hidden):
            raise ValueError(f"{name}: hidden_layer_sizes must hold ints >= 1, got "
                             f"{self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {_ACTIVATIONS}, got "
                             f"{self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"{name}: solver must be 'sgd' or 'adam', got {self.solver!r}")
        checks = [("alpha", self.alpha, 0.0, False), ("learning_rate_init",
                  self.learning_rate_init, 0.0, True), ("tol", self.tol, 0.0, False),
                  ("momentum", self.momentum, 0.0, False), ("epsilon", self.epsilon, 0.0, True)]
        for pname, value, low, strict in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not math.isfinite(value) or value < low or (strict and value == low):
                raise ValueError(f"{name}: {pname} must be a number {'>' if strict else '>='} "
                                 f"{low}, got {value!r}")
        if self.momentum > 1:
            raise ValueError(f"{name}: momentum must be in [0, 1], got {self.momentum!r}")
        for pname in ("beta_1", "beta_2"):
            value = getattr(self, pname)
            if not isinstance(value, (int, float, np.number)) or not 0 <= value < 1:
                raise ValueError(f"{name}: {pname} must be in [0, 1), got {value!r}")
        for pname in ("max_iter", "n_iter_no_change"):
            value = getattr(self, pname)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {pname} must be an int >= 1, got {value!r}")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto") and (
                isinstance(self.batch_size, bool)
                or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError(f"{name}: batch_size must be 'auto' or an int >= 1, got "
                             f"{self.batch_size!r}")
        if (isinstance(self.validation_fraction, bool)
                or not isinstance(self.validation_fraction, (int, float, np.number))
                or not 0 < self.validation_fraction < 1):
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.n_threads is not None and (isinstance(self.n_threads, bool) or not isinstance(
                self.n_threads, (int, np.integer)) or self.n_threads < 1):
            raise ValueError(f"{name}: n_threads must be None or an int >= 1, got "
                             f"{self.n_threads!r}")
        return tuple(int(h) for h in hidden)

    def _check_X(self, X, reset):
        name = type(self).__name__
        who = f"{name}.fit" if reset else name
        X = check_features(X, None, who)
        if not reset:
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input")
        return X

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise _flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    # ---- the network --------------------------------------------------------
    def _build(self, hidden, n_in, n_out, rng):
        """A new Sequential, initialised like MLPClassifier (Glorot uniform
        weights and biases) from the estimator's own generator, so fitting
        never touches nncore.manual_seed's stream."""
        acts = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
        factor = 2.0 if self.activation == "logistic" else 6.0

        def glorot(fan_in, fan_out, _):
            bound = math.sqrt(factor / (fan_in + fan_out))
            return rng.uniform(-bound, bound, (fan_in, fan_out))

        sizes = (n_in,) + hidden + (n_out,)
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(Dense(sizes[i], sizes[i + 1], init=glorot))
            if i < len(sizes) - 2 and acts[self.activation] is not None:
                layers.append(acts[self.activation]())
        model = Sequential(*layers)      # draws the weights, layer by layer
        weights, biases = _weights_and_biases(model)
        for (w, _), (b, _) in zip(weights, biases):
            bound = math.sqrt(factor / (w.shape[0] + w.shape[1]))
            b[...] = rng.uniform(-bound, bound, len(b))
        return model

    def _make_optimizer(self, n_effective):
        if self.solver == "sgd":
            def make(decay):
                return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                           nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                           weight_decay=decay)
        else:
            def make(decay):
                return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                            eps=self.epsilon, weight_decay=decay)
        weights, biases = self._weights, self._biases
        decay = float(self.alpha) / n_effective
        return _ParamGroups([(make(decay), weights), (make(0.0), biases)])

    @property
    def coefs_(self):
        """The weight matrices, (n_in, n_out) per layer, as in MLPClassifier."""
        self._check_fitted()
        return [w for w, _ in self._weights]

    @property
    def intercepts_(self):
        self._check_fitted()
        return [b for b, _ in self._biases]

    @property
    def n_layers_(self):
        self._check_fitted()
        return len(self._weights) + 1

    def _batch_size(self, n):
        return min(200, n) if isinstance(self.batch_size, str) else min(self.batch_size, n)

    def _initialise(self, hidden, X, n_out, seed):
        rng = np.random.default_rng(seed)
        self._attach_model(self._build(hidden, X.shape[1], n_out, rng))
        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = n_out
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        self.best_loss_ = math.inf
        self._no_improvement_count = 0
        self._hidden = hidden

    def _train(self, X, y, sample_weight, epochs, seed, incremental, X_val=None, y_val=None,
               w_val=None):
        """Run the Trainer over (X, y) (encoded targets) for up to ``epochs``.
        fit starts a new optimizer, as MLPClassifier does (also with
        warm_start); partial_fit keeps it (momentum, Adam moments)."""
        n_effective = float(sample_weight.sum()) if sample_weight is not None else len(X)
        if self._trainer is None or not incremental:
            self._trainer = Trainer(self.model_, self._loss(),
                                    self._make_optimizer(n_effective),
                                    batch_size=self._batch_size(len(X)), shuffle=self.shuffle,
                                    seed=seed, metrics=[])
            resume = self.__dict__.pop("_resume", None)
            if incremental and resume is not None:
                self._restore_training(resume)
        if incremental:
            self._trainer.batch_size = self._batch_size(len(X))
            self._trainer.optimizer.groups[0][0].weight_decay = float(self.alpha) / n_effective
        self._epoch_samples = len(X)
        monitor = _Monitor(self, X_val, y_val, w_val)
        with _threads(self.n_threads):
            self._trainer.fit(X, y, epochs, callbacks=[monitor],
                              verbose=2 if self.verbose else 0, sample_weight=sample_weight)
        return monitor.converged

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        hidden = self._validate_params()
        if incremental and self.early_stopping:
            raise ValueError(f"{type(self).__name__}: partial_fit does not support "
                             "early_stopping=True; use fit, or set early_stopping=False")
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        X = self._check_X(X, reset=first)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, len(X), type(self).__name__)
        y = self._encode_y(y, len(X), first, classes, sample_weight)
        seed = _seed_from(self.random_state)
        if first:
            self._initialise(hidden, X, self._n_model_outputs(), seed)
        elif hidden != self._hidden:
            raise ValueError(f"{type(self).__name__}: hidden_layer_sizes changed from "
                             f"{self._hidden} to {hidden} on a fitted estimator")
        X_val = y_val = w_val = None
        self.validation_scores_ = None
        self.best_validation_score_ = None
        if self.early_stopping:
            X, X_val, y, y_val, sample_weight, w_val = self._split(X, y, sample_weight, seed)
            self.validation_scores_ = []
            self.best_validation_score_ = -math.inf
            self.best_loss_ = None
            self._best_state = None
        elif self.best_loss_ is None:
            self.best_loss_ = math.inf
        if not incremental:
            self._no_improvement_count = 0
        converged = self._train(X, y, sample_weight, 1 if incremental else self.max_iter,
                                seed, incremental, X_val, y_val, w_val)
        if self.early_stopping and self._best_state is not None:
            self.model_.load_state_dict(self._best_state)
            self._best_state = None
        if not incremental and not converged:
            warnings.warn(f"{type(self).__name__}: stochastic optimizer reached max_iter="
                          f"{self.max_iter} and the optimization has not converged yet.",
                          _flavoured(ConvergenceWarning))
        return self

    def _split(self, X, y, sample_weight, seed):
        n = len(X)
        n_val = int(math.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(f"{type(self).__name__}: early_stopping with "
                             f"validation_fraction={self.validation_fraction} needs more "
                             f"than {n} samples")
        index = np.arange(n)
        stratify = self._stratify(y)
        tr, va, _, _ = train_test_split(index, index, test_size=n_val, seed=seed,
                                        stratify=stratify if stratify is not None else False)
        w_tr = sample_weight[tr] if sample_weight is not None else None
        w_va = sample_weight[va] if sample_weight is not None else None
        return X[tr], X[va], y[tr], y[va], w_tr, w_va

    def _stratify(self, y):
        return None

    def _forward(self, X):
        """The model's raw outputs for validated X (eval mode)."""
        self.model_.eval()
        with _threads(self.n_threads):
            return self.model_.predict(X)

    # ---- persistence (pickle: the model as its config and tensors) ---------

    def _training_state(self):
        """What partial_fit continues from, as plain data: each optimizer's
        state_dict (momentum, Adam moments, step counts) and the shuffling
        generator's state; None if the estimator was never trained."""
        if self._trainer is None:
            return getattr(self, "_resume", None)
        return {"optimizers": [opt.state_dict(group)
                               for opt, group in self._trainer.optimizer.groups],
                "shuffle": self._trainer.rng.bit_generator.state}

    def _restore_training(self, resume):
        """Load _training_state's output into a new trainer (checked by each
        optimizer's load_state_dict and by the generator)."""
        groups = self._trainer.optimizer.groups
        if len(resume["optimizers"]) != len(groups):
            raise ValueError(f"{type(self).__name__}: the saved training state has "
                             f"{len(resume['optimizers'])} optimizers, expected {len(groups)}")
        for (optimizer, group), saved in zip(groups, resume["optimizers"]):
            optimizer.load_state_dict(saved, group)
        self._trainer.rng.bit_generator.state = resume["shuffle"]

    def __getstate__(self):
        state = self.__dict__.copy()
        resume = self._training_state() if "_trainer" in state else None
        state.pop("_trainer", None)
        state.pop("_weights", None)
        state.pop("_biases", None)
        state.pop("_resume", None)
        if resume is not None:
            state["_resume"] = resume
        model = state.pop("model_", None)
        if model is not None:
            state["_model_config"] = model.get_config()
            state["_model_state"] = {k: np.array(v, copy=True)
                                     for k, v in model.state_dict().items()}
        return state

    def __setstate__(self, state):
        config = state.pop("_model_config", None)
        tensors = state.pop("_model_state", None)
        self.__dict__.update(state)
        self._trainer = None
        if config is not None:
            def fail(msg):
                raise ValueError(f"unpickling {type(self).__name__}: {msg}")
            self._attach_model(build_model(config, tensors, fail))

    def _attach_model(self, model):
        self.model_ = model
        self._weights, self._biases = _weights_and_biases(model)
        self._trainer = None


class NNClassifier(_BaseNN):
    """A multi-layer perceptron classifier on nncore's C kernels, with
    scikit-learn's MLPClassifier interface.

    Two classes get one sigmoid output (BCEWithLogitsLoss); more get a
    softmax output (CrossEntropyLoss). Labels may be of any sortable type
    (ints, strings, ...). Fitted attributes: ``classes_``, ``n_features_in_``,
    ``loss_curve_``, ``best_loss_`` (or ``validation_scores_`` and
    ``best_validation_score_`` with ``early_stopping``), ``n_iter_``, ``t_``,
    ``coefs_``, ``intercepts_``, ``model_`` (the nncore Sequential).
    """

    _estimator_type = "classifier"
    _multi_output = False

    def _loss(self):
        return BCEWithLogitsLoss() if len(self.classes_) == 2 else CrossEntropyLoss()

    def _n_model_outputs(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _stratify(self, y):
        labels = y.reshape(len(y), -1)[:, 0]
        counts = np.bincount(labels.astype(np.int64))
        return labels if counts[counts > 0].min() >= 2 else None

    def _encode_y(self, y, n, first, classes, sample_weight):
        """Labels -> class indices (int64), or a float (n, 1) 0/1 column for
        two classes; sets classes_ on the first fit."""
        name = type(self).__name__
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples, ), for example "
                          "using ravel().", _flavoured(DataConversionWarning), stacklevel=4)
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{name}: y must be 1-D (one label per sample), got shape "
                             f"{y.shape}; multi-label targets are not supported")
        if len(y) != n:
            raise ValueError(f"{name}: X has {n} samples but y has {len(y)}")
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
        if first:
            try:
                self.classes_ = np.unique(np.asarray(classes) if classes is not None else y)
            except TypeError as exc:      # labels that cannot be sorted
                raise TypeError(f"{name}: the class labels cannot be sorted ({exc}); use "
                                "numbers or strings") from None
            if len(self.classes_) < 2:
                raise ValueError(f"{name}: y has only 1 class ({self.classes_[0]!r}); a "
                                 "classifier needs samples of at least 2 classes")
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if unknown.any():
            raise ValueError(f"{name}: y holds the label {y[unknown][0]!r}, which is not "
                             f"in classes_ {self.classes_.tolist()}")
        if first and classes is None and sample_weight is not None:
            present = np.unique(index[sample_weight > 0])
            if len(present) < 2:
                raise ValueError(f"{name}: only one class ({self.classes_[present[0]]!r}) "
                                 "has a positive sample_weight; a classifier needs at least "
                                 "2 classes")
        if len(self.classes_) == 2:
            return index.astype(np.float32).reshape(-1, 1)
        return index.astype(np.int64)

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to max_iter epochs; returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights.
        ``classes`` (every label that will ever appear) is required on the
        first call."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError(f"{type(self).__name__}: classes must be passed on the "
                                 "first call to partial_fit")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                        self.classes_):
            raise ValueError(f"{type(self).__name__}: classes={classes!r} differs from "
                             f"classes_={self.classes_!r} of the earlier partial_fit")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _proba_from_outputs(self, out):
        z = out.astype(np.float64)
        if len(self.classes_) == 2:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def _indices_from_outputs(self, out):
        if len(self.classes_) == 2:
            return (out[:, 0] > 0).astype(np.int64)
        return np.argmax(out, axis=1)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in classes_ order."""
        self._check_fitted()
        return self._proba_from_outputs(self._forward(self._check_X(X, reset=False)))

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable label of each sample."""
        self._check_fitted()
        out = self._forward(self._check_X(X, reset=False))
        return self.classes_[self._indices_from_outputs(out)]

    def _score_encoded(self, X, y, sample_weight=None):
        pred = self._indices_from_outputs(self._forward(X))
        truth = y[:, 0].astype(np.int64) if y.ndim == 2 else y
        return _weighted_mean(pred == truth, sample_weight)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y)."""
        pred = self.predict(X)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        _check_score_args(type(self).__name__, y, len(pred), sample_weight, 1)
        return _weighted_mean(pred == y, sample_weight)


class NNRegressor(_BaseNN):
    """A multi-layer perceptron regressor on nncore's C kernels, with
    scikit-learn's MLPRegressor interface: identity output, mean squared
    error, one or several targets. Fitted attributes as NNClassifier's."""

    _estimator_type = "regressor"
    _multi_output = True

    def _loss(self):
        return MSELoss()

    def _n_model_outputs(self):
        return self._n_targets

    def _encode_y(self, y, n, first, classes, sample_weight):
        """Targets as float32 (n, n_targets); remembers on the first fit
        whether y was 1-D (then predict returns 1-D)."""
        if y is not None:
            y = np.asarray(y)
            if y.dtype.kind not in "biuf":      # e.g. an object array of numbers
                try:
                    y = y.astype(np.float64)
                except (TypeError, ValueError):
                    raise ValueError(f"{type(self).__name__}: y has dtype {y.dtype}; "
                                     "expected numbers") from None
        out = check_targets(y, n, None if first else self.n_outputs_, "regression",
                            type(self).__name__)
        if first:
            self._n_targets = out.shape[1]
            self._y_1d = y.ndim == 1
        return out

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to max_iter epochs; returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted targets: shape (n_samples,) when fitted on a 1-D y,
        else (n_samples, n_targets)."""
        self._check_fitted()
        out = self._forward(self._check_X(X, reset=False)).astype(np.float64)
        return out[:, 0] if self._y_1d else out

    def _score_encoded(self, X, y, sample_weight=None):
        return _r2(y, self._forward(X), sample_weight)

    def score(self, X, y, sample_weight=None):
        """The coefficient of determination R^2 on (X, y) (averaged uniformly
        over targets)."""
        pred = self.predict(X)
        y = _check_score_args(type(self).__name__, y, len(pred), sample_weight, self.n_outputs_)
        return _r2(y.reshape(len(y), -1), np.asarray(pred).reshape(len(y), -1), sample_weight)


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


def _weights_and_biases(model):
    """The model's (param, grad) pairs of role "weight" and of role "bias"
    (see Layer.param_specs), in layer order: the estimator's two optimizer
    groups (weight decay on the first only) and coefs_ / intercepts_."""
    roles = {spec.name: spec.role for spec in model.param_specs(model.get_config())}
    pairs = [(roles[name], (p, g)) for name, p, g in model.named_parameters()]
    return ([pair for role, pair in pairs if role == "weight"],
            [pair for role, pair in pairs if role == "bias"])


# ---- in nncore files (nncore.save / nncore.load, kind "estimator") -----------

_ESTIMATORS = {"NNClassifier": NNClassifier, "NNRegressor": NNRegressor}
_TRAINING = "training."         # the prefix of an estimator's optimizer buffers
_NUMERIC_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64"}


def _encode_classes(classes):
    dtype = classes.dtype
    if dtype.name in _NUMERIC_DTYPES:
        name = dtype.name
    elif dtype.kind == "U":
        name = "str"
    elif dtype.kind == "O" and all(isinstance(c, str) for c in classes):
        name = "object-str"
    else:
        raise TypeError(f"nncore.save: class labels of dtype {dtype} cannot be saved; "
                        "use numbers or strings")
    return {"dtype": name, "values": classes.tolist()}


def _jsonable_param(name, value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if name == "random_state" and not (value is None or isinstance(value, int)):
        return None        # a RandomState/Generator object: not storable, nor needed
    return value


def _estimator_entry(est):
    est._check_fitted()
    fitted = {"n_features_in_": est.n_features_in_, "n_outputs_": est.n_outputs_,
              "loss_curve_": [float(v) for v in est.loss_curve_],
              "best_loss_": est.best_loss_, "n_iter_": est.n_iter_, "t_": est.t_,
              "validation_scores_": est.validation_scores_,
              "best_validation_score_": est.best_validation_score_,
              "hidden": list(est._hidden)}
    if hasattr(est, "classes_"):
        fitted["classes_"] = _encode_classes(est.classes_)
    if hasattr(est, "_y_1d"):
        fitted["y_1d"] = bool(est._y_1d)
    for key in ("best_loss_", "best_validation_score_"):
        value = fitted[key]
        if value is not None and not math.isfinite(value):
            fitted[key] = str(float(value))     # "inf"/"-inf": JSON has no infinity
    return {"class": type(est).__name__,
            "params": {k: _jsonable_param(k, v) for k, v in est.get_params().items()},
            "fitted": fitted}


def _decode_classes(spec, fail):
    if not isinstance(spec, dict) or set(spec) != {"dtype", "values"} \
            or not isinstance(spec["values"], list) or len(spec["values"]) < 2:
        fail("classes_ must be {'dtype': ..., 'values': [at least 2 labels]}")
    name, values = spec["dtype"], spec["values"]
    if name in ("str", "object-str"):
        if not all(isinstance(v, str) for v in values):
            fail("classes_: string labels expected")
        classes = np.array(values, dtype=object if name == "object-str" else str)
    elif name in _NUMERIC_DTYPES:
        if not all(isinstance(v, (int, float)) for v in values):
            fail(f"classes_: {name} labels expected")
        try:
            classes = np.array(values, dtype=name)
        except (OverflowError, ValueError):
            fail(f"classes_: labels do not fit {name}")
    else:
        fail(f"classes_: unsupported label dtype {name!r}")
    if len(np.unique(classes)) != len(classes) or not (
            np.sort(classes, kind="stable") == classes).all():
        fail("classes_ must be sorted and unique")
    return classes


def _number_or_none(value, key, fail):
    if value is None:
        return None
    if isinstance(value, str) and value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{key} must be a number or null, got {value!r}")
    return float(value)


def _number_list(value, key, fail, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        fail(f"{key} must be a list of numbers")
    return [float(v) for v in value]


def _is_uint(value, bits):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits


def _read_training(est, spec, tensors, fail):
    """The checked "training" entry (see the module docstring) as
    _BaseNN._training_state gives it: each optimizer's state is loaded into
    a scratch optimizer over the model's parameters, which checks it all."""
    if not isinstance(spec, dict) or set(spec) != {"optimizers", "shuffle"} \
            or not isinstance(spec["optimizers"], list):
        fail("the training entry must hold exactly an 'optimizers' list and 'shuffle'")
    shuffle = spec["shuffle"]
    if not (isinstance(shuffle, dict) and set(shuffle) == {"bit_generator", "state",
                                                           "has_uint32", "uinteger"}
            and shuffle["bit_generator"] == "PCG64" and isinstance(shuffle["state"], dict)
            and set(shuffle["state"]) == {"state", "inc"}
            and all(_is_uint(v, 128) for v in shuffle["state"].values())
            and shuffle["has_uint32"] in (0, 1) and _is_uint(shuffle["uinteger"], 32)):
        fail("training.shuffle must be a PCG64 generator state")
    scratch = est._make_optimizer(1.0).groups
    if len(spec["optimizers"]) != len(scratch):
        fail(f"training.optimizers must list {len(scratch)} optimizers")
    prefixes = tuple(f"{_TRAINING}{g}." for g in range(len(scratch)))
    states = [read_optimizer_state(optimizer, group, entry, tensors, prefix,
                                   f"training.optimizers[{g}]", fail)
              for g, ((optimizer, group), entry, prefix)
              in enumerate(zip(scratch, spec["optimizers"], prefixes))]
    no_stray_tensors(tensors, prefixes, fail)
    return {"optimizers": states, "shuffle": shuffle}


def _build_estimator(spec, model, training_tensors, fail):
    if not isinstance(spec, dict) or not {"class", "params", "fitted"} <= set(spec) <= {
            "class", "params", "fitted", "training"}:
        fail("the estimator entry must hold exactly 'class', 'params' and 'fitted' "
             "(and 'training' once trained)")
    cls = _ESTIMATORS.get(spec["class"]) if isinstance(spec["class"], str) else None
    if cls is None:
        fail(f"unknown estimator class {spec['class']!r}; expected one of {sorted(_ESTIMATORS)}")
    params, fitted = spec["params"], spec["fitted"]
    if not isinstance(params, dict) or set(params) - set(cls._get_param_names()):
        fail(f"{cls.__name__} params must be an object with keys among "
             f"{cls._get_param_names()}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params = dict(params, hidden_layer_sizes=tuple(params["hidden_layer_sizes"]))
    est = cls(**params)
    try:
        hidden = est._validate_params()
    except ValueError as exc:
        fail(f"bad estimator parameters: {exc}")
    required = {"n_features_in_", "n_outputs_", "loss_curve_", "best_loss_", "n_iter_", "t_",
                "validation_scores_", "best_validation_score_", "hidden"}
    required |= {"classes_"} if cls.__name__ == "NNClassifier" else {"y_1d"}
    if not isinstance(fitted, dict) or set(fitted) != required:
        fail(f"{cls.__name__} fitted attributes must be exactly {sorted(required)}")
    weights = [w for w, _ in _weights_and_biases(model)[0]]
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    if fitted["n_features_in_"] != n_in or fitted["n_outputs_"] != n_out:
        fail("n_features_in_/n_outputs_ do not match the model")
    if not isinstance(fitted["hidden"], list) or tuple(fitted["hidden"]) != hidden \
            or [w.shape[1] for w in weights[:-1]] != list(hidden):
        fail("hidden_layer_sizes does not match the model")
    for key in ("n_iter_", "t_"):
        if not isinstance(fitted[key], int) or isinstance(fitted[key], bool) or fitted[key] < 0:
            fail(f"{key} must be an int >= 0")
    est.n_features_in_ = n_in
    est.n_outputs_ = n_out
    est.n_iter_ = fitted["n_iter_"]
    est.t_ = fitted["t_"]
    est.loss_curve_ = _number_list(fitted["loss_curve_"], "loss_curve_", fail)
    est.validation_scores_ = _number_list(fitted["validation_scores_"], "validation_scores_",
                                          fail, allow_none=True)
    est.best_loss_ = _number_or_none(fitted["best_loss_"], "best_loss_", fail)
    est.best_validation_score_ = _number_or_none(fitted["best_validation_score_"],
                                                 "best_validation_score_", fail)
    est._hidden = hidden
    est._no_improvement_count = 0
    if cls.__name__ == "NNClassifier":
        est.classes_ = _decode_classes(fitted["classes_"], fail)
        if est._n_model_outputs() != n_out:
            fail(f"{len(est.classes_)} classes do not match a model with {n_out} outputs")
    else:
        if not isinstance(fitted["y_1d"], bool) or (fitted["y_1d"] and n_out != 1):
            fail("y_1d must be a boolean (true only with one output)")
        est._y_1d = fitted["y_1d"]
        est._n_targets = n_out
    est._attach_model(model)
    if "training" in spec:
        est._resume = _read_training(est, spec["training"], training_tensors, fail)
    else:
        no_stray_tensors(training_tensors, (), fail)
    return est


def _dump(est):
    """(the file entry, the model, the optimizer buffers) of a fitted estimator."""
    entry = _estimator_entry(est)
    tensors = {}
    training = est._training_state()
    if training is not None:
        entries = []
        for g, state in enumerate(training["optimizers"]):
            optimizer_entry, buffers = split_optimizer_state(state, f"{_TRAINING}{g}.")
            entries.append(optimizer_entry)
            tensors.update(buffers)
        entry["training"] = {"optimizers": entries, "shuffle": training["shuffle"]}
    return entry, est.model_, tensors


register_kind("estimator", tuple(_ESTIMATORS.values()), _dump, _build_estimator, _TRAINING)
