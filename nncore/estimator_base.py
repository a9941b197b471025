"""What NNClassifier and NNRegressor (estimators.py) share: scikit-learn's
parameter protocol and checks, the network as MLPClassifier initialises it,
the training loops (nncore's Trainer for 'sgd' and 'adam', SciPy's L-BFGS-B
for 'lbfgs', see lbfgs.py), MLPClassifier's end-of-epoch rules (_Monitor)
and pickling. The estimators' differences from MLPClassifier are listed in
estimators.py's docstring.
"""
import contextlib
import functools
import inspect
import math
import sys
import types
import warnings

import numpy as np

from .datasets import train_test_split
from .layers import Dense, ReLU, Sequential, Sigmoid, Tanh
from .lbfgs import minimize_lbfgs, row_chunks
from .linalg import check_precision
from .optim import SGD, Adam
from .serialize import build_model
from .runtime import get_num_threads, set_num_threads
from .sparse import SparseHead, csr_int32, use_sparse_head
from .trainer import (NonFiniteLossError, Trainer, _weighted_kind, _WeightedLoss,
                      batch_loss)
from .validation import (check_features, check_sample_weight, check_sparse_features,
                         check_targets, dense_rows, is_sparse)

__all__ = ["NotFittedError", "ConvergenceWarning", "DataConversionWarning"]


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
_SOLVERS = ("lbfgs", "sgd", "adam")
_STOCHASTIC = ("sgd", "adam")
_SCHEDULES = ("constant", "invscaling", "adaptive")
_DIVERGED = ("Solver produced non-finite parameter weights. The input data may contain "
             "large values and need to be preprocessed.")
# Rows of a sparse X densified and trained at a time (a whole number of batches).
_SPARSE_CHUNK_BYTES = 8 << 20


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


def _random_state(random_state):
    """scikit-learn's check_random_state: None -> NumPy's global RandomState,
    an int -> a new RandomState(int), a RandomState -> itself; also a NumPy
    Generator (a RandomState seeded from it)."""
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2 ** 32:
            raise ValueError(f"random_state must be an int >= 0 (below 2**32), got "
                             f"{random_state!r}")
        return np.random.RandomState(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(int(random_state.integers(2 ** 32)))
    raise ValueError(f"random_state must be None, an int, a numpy RandomState or Generator, "
                     f"got {random_state!r}")


def _feature_names(X):
    """X's column names when it has them and they are all strings (a pandas
    DataFrame's, as scikit-learn's _get_feature_names), else None."""
    columns = getattr(X, "columns", None)
    if columns is None or is_sparse(X):
        return None
    names = np.asarray(columns, dtype=object)
    strings = [isinstance(c, str) for c in names]
    if all(strings) and len(names):
        return names
    if any(strings):
        raise TypeError("Feature names are only supported if all input features have string "
                        f"names, but your input has {sorted({type(c).__name__ for c in names})}"
                        " as feature name / column name types.")
    return None


class _StochasticOnly:
    """A method that exists only with a stochastic solver: with 'lbfgs',
    reading it raises AttributeError, so ``hasattr(est, "partial_fit")`` is
    False (scikit-learn's available_if)."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.fn
        if obj.solver not in _STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{obj.solver} is not stochastic.")
        return types.MethodType(self.fn, obj)


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
    """What MLPClassifier does at the end of each epoch, as a Trainer
    callback: record the loss (scikit-learn's, penalty included), count the
    iteration and samples, print the verbose lines, update the learning
    rate schedule, and stop when the training loss (or, with early stopping,
    the validation score) has not improved by ``tol`` for more than
    ``n_iter_no_change`` epochs -- with learning_rate='adaptive' and sgd,
    divide the rate by 5 instead, until it is 1e-6 or less."""

    def __init__(self, estimator, X_val=None, y_val=None, w_val=None):
        self.est = estimator
        self.X_val, self.y_val, self.w_val = X_val, y_val, w_val
        self.converged = False
        self.trainer = None

    def on_epoch_end(self, epoch, logs):
        est = self.est
        loss = est._sklearn_loss(logs["loss"])
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.n_iter_ += 1
        est.t_ += est._epoch_samples
        if est._verbose_lines:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, loss))
        if self.X_val is not None:
            score = est._score_encoded(self.X_val, self.y_val, self.w_val)
            est.validation_scores_.append(score)
            if est._verbose_lines:
                print("Validation score: %f" % score)
            # scikit-learn's comparisons: a NaN score resets the count, is never the best
            improved = not score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_state = est._copy_state()
        else:
            improved = not loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            est._set_learning_rate(est.learning_rate_init / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.X_val is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if est.solver == "sgd" and est.learning_rate == "adaptive" and est._lr > 1e-6:
                est._set_learning_rate(est._lr / 5.0)
                est._no_improvement_count = 0
                if est._verbose_lines:
                    print(msg + " Setting learning rate to %f" % est._lr)
            else:
                if est._verbose_lines:
                    small = est.solver == "sgd" and est.learning_rate == "adaptive"
                    print(msg + (" Learning rate too small." if small else "") + " Stopping.")
                self.converged = True
                if self.trainer is not None:
                    self.trainer.stop_training = True


class _BaseNN:
    """What NNClassifier and NNRegressor share: parameters, model building,
    the training loops (Trainer, or L-BFGS), validation and persistence hooks."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, precision="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.n_threads = n_threads
        self.precision = precision

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
                    input_tags=InputTags(two_d_array=True, sparse=True, allow_nan=False),
                    classifier_tags=ClassifierTags(multi_class=True, multi_label=True)
                    if classifier else None,
                    regressor_tags=None if classifier else RegressorTags())

    # ---- checks -----------------------------------------------------------
    def _validate_params(self):
        """The parameters, checked as MLPClassifier's _parameter_constraints
        check them (ValueError naming the parameter); returns the hidden
        layer sizes as a tuple of ints."""
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
        for pname, options in (("activation", _ACTIVATIONS), ("solver", _SOLVERS),
                               ("learning_rate", _SCHEDULES)) + self._extra_options:
            if getattr(self, pname) not in options:
                raise ValueError(f"{name}: {pname} must be one of {options}, got "
                                 f"{getattr(self, pname)!r}")
        checks = [("alpha", self.alpha, 0.0, False), ("learning_rate_init",
                  self.learning_rate_init, 0.0, True), ("tol", self.tol, 0.0, False),
                  ("momentum", self.momentum, 0.0, False), ("epsilon", self.epsilon, 0.0, True),
                  ("power_t", self.power_t, 0.0, False)]
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
        for pname in ("max_iter", "max_fun", "n_iter_no_change"):
            value = getattr(self, pname)
            if pname == "n_iter_no_change" and value == math.inf:
                continue        # never stop on no improvement (scikit-learn allows np.inf)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {pname} must be an int >= 1"
                                 f"{' or np.inf' if pname == 'n_iter_no_change' else ''}, "
                                 f"got {value!r}")
        if check_precision(self.precision, name) and self.solver == "lbfgs":
            raise ValueError(f"{name}: precision='bf16' needs solver 'sgd' or 'adam' (L-BFGS "
                             f"trains in float32)")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto") and (
                isinstance(self.batch_size, bool)
                or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError(f"{name}: batch_size must be 'auto' or an int >= 1, got "
                             f"{self.batch_size!r}")
        if (isinstance(self.validation_fraction, bool)
                or not isinstance(self.validation_fraction, (int, float, np.number))
                or not 0 <= self.validation_fraction < 1):
            raise ValueError(f"{name}: validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")
        if not (isinstance(self.verbose, (bool, int, np.integer)) or self.verbose == "progress"):
            raise ValueError(f"{name}: verbose must be a bool, an int or 'progress', got "
                             f"{self.verbose!r}")
        if self.n_threads is not None and (isinstance(self.n_threads, bool) or not isinstance(
                self.n_threads, (int, np.integer)) or self.n_threads < 1):
            raise ValueError(f"{name}: n_threads must be None or an int >= 1, got "
                             f"{self.n_threads!r}")
        return tuple(int(h) for h in hidden)

    _extra_options = ()

    @property
    def _verbose_lines(self):
        """scikit-learn's verbose lines ("Iteration N, loss = ..."): for any
        true verbose but 'progress' (nncore's Trainer lines instead)."""
        return bool(self.verbose) and not (
            isinstance(self.verbose, str) and self.verbose == "progress")

    def _check_X(self, X, reset):
        """X as float32 rows (dense C-contiguous, or CSR for a sparse X), its
        feature names checked against feature_names_in_ as scikit-learn's
        validate_data does. Remembers whether X was float32 (predictions
        follow the input's precision)."""
        name = type(self).__name__
        who = f"{name}.fit" if reset else name
        names = _feature_names(X)
        if reset:
            if names is not None:
                self.feature_names_in_ = names
            else:
                self.__dict__.pop("feature_names_in_", None)
        else:
            self._check_feature_names(names)
        self._X_float32 = getattr(X, "dtype", None) == np.float32
        X = check_sparse_features(X, who) if is_sparse(X) else check_features(X, None, who)
        if not reset:
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input")
        return X

    def _check_feature_names(self, names):
        fitted = getattr(self, "feature_names_in_", None)
        name = type(self).__name__
        if fitted is None and names is None:
            return
        if fitted is None:
            warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                          UserWarning, stacklevel=4)
            return
        if names is None:
            warnings.warn(f"X does not have valid feature names, but {name} was fitted with "
                          "feature names", UserWarning, stacklevel=4)
            return
        if len(names) != len(fitted) or (names != fitted).any():
            unseen = [n for n in names if n not in set(fitted)]
            missing = [n for n in fitted if n not in set(names)]
            detail = ""
            if unseen:
                detail += f"Feature names unseen at fit time:\n- {unseen[:5]}\n"
            if missing:
                detail += f"Feature names seen at fit time, yet now missing:\n- {missing[:5]}\n"
            if not detail:
                detail = "Feature names must be in the same order as they were in fit.\n"
            raise ValueError("The feature names should match those that were passed during "
                             "fit.\n" + detail)

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise _flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    # ---- the network --------------------------------------------------------
    def _build(self, hidden, n_in, n_out, rs):
        """A new Sequential, initialised as MLPClassifier's _init_coef does it:
        for each layer, Glorot-uniform weights then biases drawn from the
        RandomState ``rs`` (in float64, then rounded to float32), so the same
        random_state gives scikit-learn's initial weights. Never touches
        nncore.manual_seed's stream."""
        acts = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
        factor = 2.0 if self.activation == "logistic" else 6.0
        sizes = (n_in,) + hidden + (n_out,)
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = np.sqrt(factor / (fan_in + fan_out))
            # Dense checks the memory the weights need before it calls init
            dense = Dense(fan_in, fan_out,
                          init=lambda a, b, _, bound=bound: rs.uniform(-bound, bound, (a, b)))
            dense.weight          # drawn now: this layer's weights, then its biases
            dense.bias[...] = rs.uniform(-bound, bound, fan_out)
            layers.append(dense)
            if i < len(sizes) - 2 and acts[self.activation] is not None:
                layers.append(acts[self.activation]())
        return Sequential(*layers)

    def _make_optimizer(self, decay_samples):
        """The two optimizer groups (weights with L2 decay alpha / B, B =
        ``decay_samples``; biases without), in nncore's units: the nncore
        loss's gradient is scikit-learn's divided by ``_grad_scale``, so SGD's
        rate is multiplied by it and Adam's epsilon and both decays divided
        by it -- the same updates."""
        c = self._grad_scale
        lr = getattr(self, "_lr", self.learning_rate_init)
        if self.solver == "sgd":
            def make(decay):
                return SGD(lr=lr * c, momentum=self.momentum,
                           nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                           weight_decay=decay)
        else:
            def make(decay):
                return Adam(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon / c,
                            weight_decay=decay)
        return _ParamGroups([(make(float(self.alpha) / decay_samples / c), self._weights),
                             (make(0.0), self._biases)])

    def _set_learning_rate(self, lr):
        """Change the sgd learning rate (scikit-learn's units) between epochs.
        scikit-learn's velocity is -lr * (nncore's momentum buffer) at a
        constant rate; rescaling the buffers by old / new rate keeps the
        velocity, as scikit-learn's SGD does when its rate changes."""
        old = self._lr
        self._lr = float(lr)
        if self._trainer is None or self.solver != "sgd" or lr == old:
            return
        for optimizer, group in self._trainer.optimizer.groups:
            optimizer.lr = self._lr * self._grad_scale
            if optimizer.momentum:
                state = optimizer.state_dict(group)
                for buf in state["buffers"].values():
                    buf *= old / self._lr
                optimizer.load_state_dict(state, group)

    @property
    def coefs_(self):
        """The weight matrices, (n_in, n_out) per layer, as in MLPClassifier
        (float32: nncore computes in float32)."""
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

    def _initialise(self, hidden, X, n_out, rs):
        self._attach_model(self._build(hidden, X.shape[1], n_out, rs))
        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = n_out
        self.t_ = 0
        self._hidden = hidden
        self._lr = float(self.learning_rate_init)
        for attr in ("loss_curve_", "best_loss_", "validation_scores_",
                     "best_validation_score_"):
            self.__dict__.pop(attr, None)
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_ = [], -math.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = self.best_validation_score_ = None
                self.best_loss_ = math.inf

    def _sklearn_loss(self, value):
        """scikit-learn's loss (as its loss_curve_ reports it) from the nncore
        loss value: scaled, plus the L2 penalty over a nominal batch."""
        penalty = sum(float(np.dot(w.reshape(-1), w.reshape(-1))) for w, _ in self._weights)
        return self._value_scale * value + 0.5 * float(self.alpha) * penalty / self._decay_samples

    def _train(self, X, y, sample_weight, epochs, seed, incremental, X_val=None, y_val=None,
               w_val=None):
        """Run the Trainer over (X, y) (encoded targets) for up to ``epochs``.
        fit starts a new optimizer, as MLPClassifier does (also with
        warm_start); partial_fit keeps it (momentum, Adam moments)."""
        n = X.shape[0]
        bs = self._batch_size(n)
        # scikit-learn's penalty is alpha / (2 B) ||W||^2 per batch of B samples
        # (B the batch's sum of weights): here B of a nominal batch.
        self._decay_samples = bs * (float(sample_weight.sum()) / n
                                    if sample_weight is not None else 1.0)
        if self._trainer is None or not incremental:
            if not incremental:
                self._lr = float(self.learning_rate_init)   # a new optimizer, as sklearn
            self._trainer = Trainer(self.model_, self._loss(),
                                    self._make_optimizer(self._decay_samples),
                                    batch_size=bs, shuffle=self.shuffle, seed=seed, metrics=[],
                                    precision=self.precision)
            resume = self.__dict__.pop("_resume", None)
            if incremental and resume is not None:
                self._restore_training(resume)
        if incremental:
            self._trainer.batch_size = bs
            self._trainer.precision = self.precision
            self._trainer.optimizer.groups[0][0].weight_decay = \
                float(self.alpha) / self._decay_samples / self._grad_scale
        self._epoch_samples = n
        monitor = _Monitor(self, X_val, y_val, w_val)
        verbose = 2 if self.verbose == "progress" else 0
        try:
            with _threads(self.n_threads):
                if is_sparse(X):
                    self._train_sparse(X, y, sample_weight, epochs, monitor, verbose)
                else:
                    self._trainer.fit(X, y, epochs, callbacks=[monitor], verbose=verbose,
                                      sample_weight=sample_weight)
        except NonFiniteLossError as exc:
            # MLPClassifier runs on with NaN weights and raises this at the end
            # -- unless early stopping restores its best weights
            if monitor.X_val is None:
                raise ValueError(_DIVERGED) from exc
            self._run_out_diverged(epochs)
            return False
        return monitor.converged

    def _run_out_diverged(self, epochs):
        """What MLPClassifier records for the epochs after its loss became
        non-finite, when early stopping will restore its best weights: a NaN
        loss and validation score per epoch (a NaN score never counts as no
        improvement, so it runs to max_iter); computed, not trained."""
        while self.n_iter_ < epochs:
            self.n_iter_ += 1
            self.t_ += self._epoch_samples
            self.loss_ = math.nan
            self.loss_curve_.append(math.nan)
            self.validation_scores_.append(math.nan)
            if self._verbose_lines:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, math.nan))
                print("Validation score: %f" % math.nan)
        self._no_improvement_count = 0

    def _train_sparse(self, X, y, sample_weight, epochs, monitor, verbose):
        """Epochs over a CSR X: each epoch's shuffled rows are taken a chunk
        (a whole number of batches) at a time and trained in that order,
        through the CSR first layer (_sparse_head_chunk) when X is sparse
        enough and training is float32 without a progress bar, else
        densified and trained by the Trainer (_densified_chunk), so a dense
        copy never exceeds a chunk."""
        trainer = self._trainer
        n, bs = X.shape[0], trainer.batch_size
        chunk = bs * max(1, _SPARSE_CHUNK_BYTES // (4 * X.shape[1] * bs))
        shuffle, trainer.shuffle = trainer.shuffle, False
        monitor.trainer = None
        head = None
        if (use_sparse_head(self.model_, X) and trainer.precision == "float32"
                and not verbose):
            who, n_out = type(self).__name__ + ".fit", self.model_.layers[-1].out_features
            y = check_targets(y, n, n_out, trainer.kind, who)
            weighted = None
            if sample_weight is not None:
                sample_weight = check_sample_weight(sample_weight, n, who)
                weighted = _WeightedLoss(_weighted_kind(trainer.loss), bs, n_out, trainer.loss)
            head = SparseHead(self.model_)
            train_chunk = functools.partial(self._sparse_head_chunk, head, weighted)
            self.model_.train()
        else:
            train_chunk = functools.partial(self._densified_chunk, verbose)
        try:
            for epoch in range(epochs):
                order = trainer.rng.permutation(n) if shuffle else np.arange(n)
                total = seen = 0.0
                for lo in range(0, n, chunk):
                    rows = order[lo:lo + chunk]
                    w = sample_weight[rows] if sample_weight is not None else None
                    chunk_total, chunk_seen = train_chunk(X[rows], y[rows], w, epoch)
                    total += chunk_total
                    seen += chunk_seen
                monitor.on_epoch_end(epoch, {"loss": total / seen})
                if monitor.converged:
                    break
        finally:
            trainer.shuffle = shuffle
            if head is not None:
                self.model_.eval()
                head.forget()

    def _densified_chunk(self, verbose, X, y, w, epoch):
        """Train on the CSR rows X densified: (weighted loss total, weight)."""
        size = float(w.sum()) if w is not None else float(X.shape[0])
        if size == 0.0:
            return 0.0, 0.0         # every sample weighs 0: nothing to learn
        xb = np.ascontiguousarray(X.toarray(), dtype=np.float32)
        history = self._trainer.fit(xb, y, 1, verbose=verbose, sample_weight=w)
        return history["loss"][0] * size, size

    def _sparse_head_chunk(self, head, weighted, X, y, w, epoch):
        """Train on the CSR rows X with the first Dense layer in the CSR
        kernels (nncore/sparse.py): the Trainer's batch step (batch_loss,
        then the optimizer) around the head's own forward and backward, the
        same batches as the Trainer would run. Returns (weighted loss total,
        weight)."""
        trainer, X = self._trainer, csr_int32(X)
        loss, params = trainer.loss, self.model_.parameters()
        n, bs = X.shape[0], trainer.batch_size
        total = seen = 0.0
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            out = head.forward(X, lo, hi)
            wb = w[lo:hi] if weighted is not None else None
            step = batch_loss(loss, weighted, out, y[lo:hi], wb,
                              lambda value: f"{type(self).__name__}.fit: the loss became "
                              f"{value} at epoch {epoch + 1}")
            if step is None:
                continue
            value, size, grad = step
            head.backward(grad)
            trainer.optimizer.step(params)
            total += value * size
            seen += size
        return total, seen

    def _fit_lbfgs(self, X, y, sample_weight):
        """MLPClassifier's _fit_lbfgs: L-BFGS-B over the full objective with
        maxiter=max_iter, maxfun=max_fun, gtol=tol; n_iter_ and the warning
        as scikit-learn's _check_optimize_result gives them."""
        self._decay_samples = float(sample_weight.sum()) if sample_weight is not None \
            else float(X.shape[0])
        self._trainer = None

        def report(iteration, value):
            if self._verbose_lines:
                print("Iteration %d, loss = %.8f" % (iteration, value))

        with _threads(self.n_threads):
            res = minimize_lbfgs(self.model_, self._loss(), X, y, sample_weight=sample_weight,
                                 penalised=[w for w, _ in self._weights], alpha=self.alpha,
                                 scale=self._grad_scale, max_iter=self.max_iter,
                                 max_fun=self.max_fun, tol=self.tol, callback=report,
                                 who=type(self).__name__)
        if res.status != 0:
            warnings.warn(f"lbfgs failed to converge after {res.nit} iteration(s) (status="
                          f"{res.status}):\n{res.message}.\n\nIncrease the number of "
                          "iterations to improve the convergence (max_iter="
                          f"{self.max_iter}).\nYou might also want to scale the data.",
                          _flavoured(ConvergenceWarning), stacklevel=4)
        self.n_iter_ = min(res.nit, self.max_iter)
        self.loss_ = res.fun

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        hidden = self._validate_params()
        name = type(self).__name__
        if incremental and self.early_stopping:
            raise ValueError(f"{name}: partial_fit does not support "
                             "early_stopping=True; use fit, or set early_stopping=False")
        first = not (hasattr(self, "model_") and (incremental or self.warm_start))
        X = self._check_X(X, reset=first)
        n = X.shape[0]
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n, name)
        y = self._encode_y(y, n, first, classes, sample_weight)
        rs = _random_state(self.random_state)
        if first:
            self._initialise(hidden, X, self._n_model_outputs(), rs)
        elif hidden != self._hidden:
            raise ValueError(f"{name}: hidden_layer_sizes changed from "
                             f"{self._hidden} to {hidden} on a fitted estimator")
        seed = int(rs.randint(np.iinfo(np.int32).max))
        self.n_iter_ = 0      # the iterations of this call, as scikit-learn counts them
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, y, sample_weight)
            if not all(np.isfinite(p).all() for p, _ in self.model_.parameters()):
                raise ValueError(_DIVERGED)
            return self
        if getattr(self, "loss_curve_", None) is None:
            # a warm start after an lbfgs fit, which keeps no curve (as scikit-learn)
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = self.best_validation_score_ = None
        X_val = y_val = w_val = None
        if self.early_stopping:
            X, X_val, y, y_val, sample_weight, w_val = self._split(X, y, sample_weight, seed)
            self.validation_scores_ = self.validation_scores_ or []
            if self.best_validation_score_ is None:
                self.best_validation_score_ = -math.inf
            self.best_loss_ = None
            # restored if no epoch scores better: the weights this fit starts
            # from (MLPClassifier's _best_coefs, set at initialisation and by
            # the previous fit's best)
            self._best_state = self._copy_state()
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            if self.best_loss_ is None:
                self.best_loss_ = math.inf
        if not incremental:
            self._no_improvement_count = 0
        converged = self._train(X, y, sample_weight, 1 if incremental else self.max_iter,
                                seed, incremental, X_val, y_val, w_val)
        if self.early_stopping and self._best_state is not None:
            self.model_.load_state_dict(self._best_state)
            self._best_state = None
        if not incremental and not converged and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          _flavoured(ConvergenceWarning), stacklevel=3)
        return self

    def _split(self, X, y, sample_weight, seed):
        """MLPClassifier's early-stopping split: a validation_fraction of
        the samples (rounded up), stratified for a single-output classifier,
        with scikit-learn's errors when that is impossible."""
        n = X.shape[0]
        n_val = int(math.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(f"{type(self).__name__}: early_stopping with "
                             f"validation_fraction={self.validation_fraction} of {n} samples "
                             "leaves no training or no validation samples")
        index = np.arange(n)
        stratify = self._stratify(y)
        if stratify is not None:
            classes, counts = np.unique(stratify, return_counts=True)
            if counts.min() < 2:
                raise ValueError("The least populated class in y has only 1 member, which is "
                                 "too few. The minimum number of groups for any class cannot "
                                 "be less than 2.")
            if n_val < len(classes):
                raise ValueError(f"The test_size = {n_val} should be greater or equal to the "
                                 f"number of classes = {len(classes)}")
            if n - n_val < len(classes):
                raise ValueError(f"The train_size = {n - n_val} should be greater or equal to "
                                 f"the number of classes = {len(classes)}")
        if n_val < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        tr, va, _, _ = train_test_split(index, index, test_size=n_val, seed=seed,
                                        stratify=stratify if stratify is not None else False)
        w_tr = sample_weight[tr] if sample_weight is not None else None
        w_va = sample_weight[va] if sample_weight is not None else None
        return X[tr], X[va], y[tr], y[va], w_tr, w_va

    def _stratify(self, y):
        return None

    def _copy_state(self):
        return {k: np.array(v, copy=True) for k, v in self.model_.state_dict().items()}

    def _forward(self, X):
        """The model's raw outputs for validated X (eval mode; a sparse X
        goes through the CSR first layer when sparse enough, else it is
        densified a chunk of rows at a time)."""
        self.model_.eval()
        with _threads(self.n_threads):
            if not is_sparse(X):
                return self.model_.predict(X)
            if use_sparse_head(self.model_, X):
                return SparseHead(self.model_).predict(csr_int32(X))
            return np.concatenate([self.model_.predict(dense_rows(X, lo, hi))
                                   for lo, hi in row_chunks(X)])

    def _out_dtype(self):
        """Predictions follow the input's precision, as scikit-learn's do."""
        return np.float32 if self._X_float32 else np.float64

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


def _weights_and_biases(model):
    """The model's (param, grad) pairs of role "weight" and of role "bias"
    (see Layer.param_specs), in layer order: the estimator's two optimizer
    groups (weight decay on the first only) and coefs_ / intercepts_."""
    roles = {spec.name: spec.role for spec in model.param_specs(model.get_config())}
    pairs = [(roles[name], (p, g)) for name, p, g in model.named_parameters()]
    return ([pair for role, pair in pairs if role == "weight"],
            [pair for role, pair in pairs if role == "bias"])
