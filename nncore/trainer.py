"""The training loop: ``Trainer(model, loss, optimizer).fit(X, y, epochs)``.

The loop is written for batch-1 speed as much as for big batches: inputs are
validated and converted to float32 once, at entry; each epoch draws one index
permutation from the trainer's own seeded generator, gathers the targets in
that order once, and gathers the rows of X chunk by chunk (several batches
at a time) into one preallocated buffer (``_core.gather_rows``: threaded,
prefetching the random rows ahead), so a batch is a view and costs no copy
of its own; metrics record into buffers sized once; callbacks that do not
define ``on_batch_end`` cost nothing per batch. The same seed gives a
bitwise identical run (for any thread count: the kernels guarantee that
part).
"""
import contextlib
import inspect
import math
import numbers
import signal
import threading
import time

import numpy as np

from . import _core, _guard
from . import init as _init
from . import resume as _resume
from .callbacks import batch_hooks
from .distributed import DataParallel, collective
from .errors import NonFiniteLossError
from .linalg import check_precision
from .metrics import make_metric
from .optim import SGD
from .progress import ProgressBar
from .validation import check_features, check_sample_weight, check_targets

__all__ = ["Trainer", "History", "NonFiniteLossError"]

_CHUNK_BYTES = 256 * 1024
# At batches up to this size the training kernels run on one thread. Each
# kernel is then a memory-bound pass over the weights, and the passes split
# them differently between threads (by columns, by flat halves), so with two
# threads the weights move between the cores' caches on every step
# (docs/measurements.md has the numbers).
_SERIAL_MAX_BATCH = 16


class History:
    """What ``Trainer.fit`` records, one entry per epoch.

    ``history[key]`` is the list of per-epoch values of ``key``: ``loss``,
    metrics such as ``accuracy``, ``val_loss``/``val_accuracy`` (with
    validation data), ``lr`` (the learning rate the epoch started with),
    ``seconds`` (wall time of the epoch, validation included) and
    ``samples_per_sec`` (training samples / training time). ``history.epoch``
    lists the epoch numbers (from 0), ``history.last`` the final epoch's logs.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epoch)

    def keys(self):
        return self.history.keys()

    @property
    def last(self):
        return {key: values[-1] for key, values in self.history.items()}

    def __repr__(self):
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last.items()) if self.epoch else ""
        return f"History({len(self)} epochs{': ' + last if last else ''})"


def _loss_kind(loss):
    """How the loss wants its targets: 'class_index' (int64 labels),
    'binary' (float 0..1 per output) or 'regression' (float per output)."""
    kind = getattr(loss, "target_kind", None)
    if kind is not None:
        return kind
    name = type(loss).__name__
    if name == "CrossEntropyLoss":
        return "class_index"
    if name == "BCEWithLogitsLoss":
        return "binary"
    return "regression"


def _weighted_kind(loss):
    """The loss formula _WeightedLoss knows for this loss, else None. A loss
    defined elsewhere (e.g. the estimators' Poisson loss) may give its own
    per-sample values: ``loss.per_sample(out, target)``, float64, one per row
    (averaged over the outputs, as its mean reduction), kind "per_sample"."""
    if callable(getattr(loss, "per_sample", None)):
        return "per_sample"
    return {"MSELoss": "mse", "CrossEntropyLoss": "class_index",
            "BCEWithLogitsLoss": "binary"}.get(type(loss).__name__)


def batch_loss(loss, weighted, out, target, w, describe):
    """One batch's loss, its weight and the loss's gradient: (value, size,
    grad), with sample weights ``w`` through ``weighted`` (a _WeightedLoss,
    else None: size is the batch's row count); None when every sample weighs
    0 (nothing to learn). A non-finite loss raises NonFiniteLossError with
    the message ``describe(value)``."""
    value = loss.forward(out, target)
    size = len(out)
    if weighted is not None:
        size = float(w.sum())
        if size == 0.0:
            return None
        value = weighted.value(out, target, w, size)
    if not math.isfinite(value):
        raise NonFiniteLossError(describe(value))
    grad = loss.backward()
    if weighted is not None:
        weighted.scale_gradient(grad, w, size)
    return value, size, grad


def check_model_input(model, X, who):
    """(X checked against the model's per-sample input shape, the model's
    number of outputs or None). The input shape is the model's
    ``input_shape`` when it declares one, else X's own (which the model's
    ``output_shape`` then checks, naming the layer that cannot take it)."""
    X = check_features(X, getattr(model, "input_shape", None), who)
    output_shape = getattr(model, "output_shape", None)
    if not callable(output_shape):
        return X, None
    shape = output_shape(X.shape[1:])
    return X, (shape[0] if len(shape) == 1 else None)


_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_end",
          "set_trainer")


def _check_callbacks(callbacks, who):
    """A new list of the callbacks: objects with at least one hook."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"{who}: callbacks must be a list of callbacks, got "
                        f"{type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, hook, None)) for hook in _HOOKS):
            raise TypeError(f"{who}: callbacks[{i}] ({type(cb).__name__}) is not a callback "
                            "(an object with on_epoch_end, on_batch_end, ... methods)")
    return list(callbacks)


class _EpochOrder:
    """Targets in an epoch's shuffled order without a shuffled copy of them:
    slicing gathers the rows of the slice. What metrics get for wide targets."""

    def __init__(self, y, perm):
        self.y, self.perm = y, perm
        self.shape, self.dtype, self.ndim = y.shape, y.dtype, y.ndim

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return np.take(self.y, self.perm[index], axis=0)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def _forget(model):
    """Drop the layers' references to the last forward input: after fit or
    evaluate they would keep (a view of) the converted data alive."""
    forget = getattr(model, "_forget", None)
    if callable(forget):
        forget()


def _precision_layers(model):
    """The layers of a model that declare ``supports_bf16`` (layer
    protocol, layers/base.py), found through every container's
    ``sublayers()``."""
    found, todo = [], [model]
    while todo:
        layer = todo.pop()
        if getattr(layer, "supports_bf16", False):
            found.append(layer)
        sublayers = getattr(layer, "sublayers", None)
        if callable(sublayers):
            todo.extend(sublayers())
    return found


@contextlib.contextmanager
def mixed_precision(model, bf16):
    """While inside, the model's layers that support it (Dense, Conv2d) run
    their forward and backward GEMMs in bfloat16 (when bf16), with float32
    master weights, gradients, optimizer state, losses, softmax, BatchNorm
    statistics and every other kernel, as PyTorch's CPU autocast does;
    outside, float32 again."""
    layers = _precision_layers(model) if bf16 else []
    for layer in layers:
        layer._bf16 = True
    try:
        yield
    finally:
        for layer in layers:
            layer._bf16 = False


class _SigintFlag:
    """While ``fit`` runs in the main thread under Python's default Ctrl-C
    handling, SIGINT sets ``trainer.stop_training`` (checked after every
    batch) and ``trainer._interrupted`` instead of raising KeyboardInterrupt
    wherever the interpreter happens to be -- e.g. between the updates of two
    layers, which would leave the model half-stepped. The first SIGINT also
    puts the previous handler back, so a second one interrupts at once."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        trainer = self.trainer
        trainer._interrupted = True
        par = trainer._parallel
        if par is None or par.comm is None:
            trainer.stop_training = True
        # else: the flag rides in the next step's exchange and every rank
        # stops after that same step (a rank stopping alone would leave the
        # others waiting in the collective)
        self.restore()

    def restore(self):
        if self.previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self.previous)
        self.previous = None


class _WeightedLoss:
    """Per-sample weights on top of a mean-reduction loss.

    The engine's losses return the batch mean; with weights w the loss is
    sum_i(w_i l_i) / sum_i(w_i). Its gradient is the engine's gradient with row
    i scaled by m w_i / sum(w) (every loss here is a mean over rows), done in
    place; the weighted loss value is computed here in float64 from the
    per-sample losses, into buffers sized once.
    """

    def __init__(self, kind, capacity, n_outputs, loss=None):
        self.kind = kind
        self.loss = loss      # the loss whose per_sample method kind "per_sample" calls
        self.scale = np.empty((capacity, 1), dtype=np.float32)
        self.per_sample = np.empty(capacity, dtype=np.float64)
        self.row_max = np.empty(capacity, dtype=np.float64)
        self.work = np.empty((capacity, n_outputs), dtype=np.float64)
        self.work2 = np.empty((capacity, n_outputs), dtype=np.float64)
        self.row_start = np.arange(capacity, dtype=np.int64) * n_outputs
        self.index = np.empty(capacity, dtype=np.int64)
        self.picked = np.empty(capacity, dtype=np.float32)

    def value(self, out, target, w, w_sum):
        """sum(w_i * l_i) / w_sum for the batch (out: the model's outputs)."""
        m = len(out)
        losses, work, work2 = self.per_sample[:m], self.work[:m], self.work2[:m]
        if self.kind == "class_index":
            # l_i = logsumexp(out_i) - out_i[target_i]
            row_max, index = self.row_max[:m], self.index[:m]
            np.max(out, axis=1, out=row_max)
            np.subtract(out, row_max[:, None], out=work)
            np.exp(work, out=work)
            np.sum(work, axis=1, out=losses)
            np.log(losses, out=losses)
            np.add(losses, row_max, out=losses)
            np.add(self.row_start[:m], target, out=index)
            picked = self.picked[:m]
            np.take(out.reshape(-1), index, out=picked, mode="clip")
            np.subtract(losses, picked, out=losses)
        elif self.kind == "per_sample":
            losses[...] = self.loss.per_sample(out, target)
        elif self.kind == "binary":
            # l = max(x, 0) - x t + log1p(exp(-|x|)), averaged over the outputs
            np.abs(out, out=work)
            np.negative(work, out=work)
            np.exp(work, out=work)
            np.log1p(work, out=work)
            np.maximum(out, 0.0, out=work2)
            np.add(work, work2, out=work)
            np.multiply(out, target, out=work2)
            np.subtract(work, work2, out=work)
            np.mean(work, axis=1, out=losses)
        else:
            # squared error averaged over the outputs
            np.subtract(out, target, out=work)
            np.multiply(work, work, out=work)
            np.mean(work, axis=1, out=losses)
        return float(np.dot(losses, w)) / w_sum

    def scale_gradient(self, grad, w, w_sum):
        m = len(w)
        scale = self.scale[:m]
        np.multiply(w[:, None], m / w_sum, out=scale, casting="same_kind")
        grad = grad.reshape(m, -1)
        np.multiply(grad, scale, out=grad)


class Trainer:
    """Minibatch training of a model with a loss and an optimizer.

    ``Trainer(model, loss, optimizer, batch_size=32, shuffle=True, seed=None,
    metrics="auto")``: ``metrics`` is a list of names ('accuracy', 'mae',
    'mse'), functions ``fn(y_true, y_pred) -> float`` or Metric objects;
    "auto" means accuracy for classification losses (CrossEntropyLoss,
    BCEWithLogitsLoss) and nothing for the others.

    The trainer owns the random generator that shuffles the data
    (``numpy.random.default_rng(seed)``): the same seed, the same initial
    weights and the same data give a bitwise identical run. Weight
    initialisation and Dropout draw from ``nncore.manual_seed``'s generator.

    After ``fit``, ``trainer.history`` is the last History and
    ``trainer.stop_training`` tells whether a callback stopped it.

    Plain SGD (``SGD`` without momentum or weight decay) on a Sequential of
    Dense layers is folded into the backward pass (``backward(...,
    sgd_lr=lr)``): each weight matrix is updated inside its gradient GEMM,
    one pass over it instead of three, with bitwise the same result as
    ``backward`` then ``optimizer.step``; ``grad_weight`` is then not filled.
    A callback with ``on_batch_end`` turns this off (it may read gradients).

    Data-parallel training on MPI: ``comm`` (an mpi4py communicator, e.g.
    ``MPI.COMM_WORLD``; every rank runs the same script with the same data)
    makes every rank start from rank 0's weights, train on its share of each
    global batch and apply the same update, with the history's loss and
    metrics global and the same on every rank; the progress bar and
    ``ModelCheckpoint`` run on rank 0 only. Each global batch is cut into
    ``shards`` pieces (default 4, at most the batch size, at least the number
    of ranks), each one's gradient computed on its own and the shards summed
    in a fixed order: for a given batch size and shard count the weights are
    bitwise the same on 1, 2, 4, ... ranks, and with ``comm=None,
    shards=S`` in one process. ``deterministic=False`` sums over ranks with
    MPI's native Allreduce instead (faster, not reproducible across rank
    counts). Dropout masks are drawn per shard and BatchNorm normalises each
    shard over its own rows (see nncore.distributed). ``sample_weight`` is
    not supported there. ``collective_timeout`` (seconds, with ``comm``):
    abort the MPI job when a rank has waited that long in one of fit's
    collectives (another rank hangs); None (the default) waits forever. It
    must exceed the longest gap between two ranks reaching a collective
    (a slow step, rank 0 writing a checkpoint).

    ``precision="bf16"`` trains with mixed precision: the forward and
    backward GEMMs of the Dense and Conv2d layers (every layer declaring
    ``supports_bf16``) take bfloat16 operands (``nncore.matmul(...,
    precision="bf16")``: float32 accumulation and outputs) while weights,
    gradients, optimizer state, losses, softmax, BatchNorm statistics,
    activations and reductions stay float32, as PyTorch's CPU autocast does
    (it also keeps those in float32). Conv2d's direct depthwise paths (one
    input channel per group) stay float32. Only the training steps change;
    evaluation, validation and ``predict`` run in float32. The default is
    ``"float32"``.

    Threads: at batch sizes up to 16 the training epochs run their kernels
    on one thread (only in the thread calling ``fit``; validation and other
    threads keep the process's count). With so few rows every kernel is a
    memory-bound pass over the weights, and a second thread costs more in
    cache traffic than it adds (see ``_SERIAL_MAX_BATCH``).
    """

    def __init__(self, model, loss, optimizer, *, batch_size=32, shuffle=True, seed=None,
                 metrics="auto", comm=None, shards=None, deterministic=True,
                 precision="float32", collective_timeout=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"Trainer: batch_size must be an int >= 1, got {batch_size!r}")
        for name, obj, method in (("model", model, "forward"), ("loss", loss, "backward"),
                                  ("optimizer", optimizer, "step")):
            if not callable(getattr(obj, method, None)):
                raise TypeError(f"Trainer: {name} must have a {method}() method, got "
                                f"{type(obj).__name__}")
        self.precision = precision
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        try:
            self.rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Trainer: seed must be None or an int >= 0, got {seed!r} "
                            f"({exc})") from None
        self.kind = _loss_kind(loss)
        # Sequential.backward(grad, input_grad=False) skips the first layer's
        # input gradient, the largest GEMM of the step, which training never uses.
        try:
            self._skip_input_grad = "input_grad" in inspect.signature(
                model.backward).parameters
        except (TypeError, ValueError):
            self._skip_input_grad = False
        if isinstance(metrics, str) and metrics == "auto":
            metrics = ["accuracy"] if self.kind in ("class_index", "binary") else []
        elif isinstance(metrics, str) or callable(metrics):
            metrics = [metrics]
        elif not isinstance(metrics, (list, tuple)):
            raise TypeError(f"Trainer: metrics must be 'auto', a list of names, functions or "
                            f"Metric objects, got {type(metrics).__name__}")
        self.metrics = [make_metric(spec, self.kind) for spec in metrics]
        self.stop_training = False
        self.history = None
        self.epochs = 0
        self.n_samples = 0
        # Sharded (and, with comm, data-parallel) training: nncore/distributed.py
        self._parallel = None if comm is shards is collective_timeout is None else \
            DataParallel(comm, shards, deterministic, collective_timeout)
        self.comm = comm

    # ---- validation -------------------------------------------------------
    def _check(self, X, y, who):
        X, n_out = check_model_input(self.model, X, who)
        self._n_outputs = n_out
        y = check_targets(y, len(X), n_out, self.kind, who)
        return X, y

    @property
    def precision(self):
        """"float32" or "bf16" (mixed precision), checked when set."""
        return self._precision

    @precision.setter
    def precision(self, value):
        self._bf16 = check_precision(value, "Trainer")
        self._precision = value

    # ---- training ---------------------------------------------------------
    def fit(self, X, y, epochs=1, *, validation_data=None, validation_split=0.0,
            callbacks=None, verbose=1, sample_weight=None, resume_from=None):
        """Train for ``epochs`` passes over (X, y); return a History.

        ``validation_data=(X_val, y_val)`` is evaluated after every epoch;
        ``validation_split=f`` instead holds out the last fraction f of the
        samples (before any shuffling, as Keras does). ``callbacks`` is a list
        of Callback objects. ``verbose``: 0 silent, 1 a progress bar on a
        terminal and a line per epoch otherwise, 2 a line per epoch.
        ``sample_weight`` (one weight >= 0 per sample) weights each sample's
        loss; each batch's loss is then sum(w l) / sum(w).

        Memory: X is converted to float32 C-contiguous once (no copy when it
        already is); beyond that, fit allocates the targets in epoch order,
        a permutation and buffers proportional to the batch, never another
        copy of X.

        Ctrl-C (SIGINT) while fit runs in the main thread stops training
        after the current batch: the model holds the weights of that step,
        the History the completed epochs (a partial epoch is not logged and
        its callbacks do not run), and fit raises KeyboardInterrupt saying
        where it stopped. A second Ctrl-C interrupts at once. With ``comm``,
        a Ctrl-C on any rank stops every rank after the same step (the next
        one), and each raises that KeyboardInterrupt, naming the rank.

        ``resume_from``: a checkpoint written by ``ModelCheckpoint(...,
        save_optimizer=True)`` of a run with the same data, batch size,
        shard count, optimizer type, metrics and callbacks (the same types,
        in the same order); ``epochs`` counts from that run's start. The
        model gets the file's weights and the optimizer its state, the
        shuffling and Dropout generators, the epoch's permutation, the
        callbacks' state and the History are restored, and training goes on
        from the saved epoch and batch: the weights after every later step
        are bitwise those of the run that was never stopped. Anything that
        does not match is refused with a ValueError naming it. Under MPI,
        rank 0 reads the file and sends it to the others.
        """
        who = "Trainer.fit"
        par = self._parallel
        resume = None
        try:
            checked = self._check_fit(X, y, epochs, validation_data, validation_split,
                                      callbacks, verbose, sample_weight, who)
            if resume_from is not None and (par is None or par.is_root):
                resume = self._read_resume(resume_from, checked, epochs, who)
        except Exception as exc:
            if par is None:
                raise
            par.raise_together(exc)     # raises on every rank
        # the callbacks whose state a checkpoint keeps, rank 0's writers included
        stateful = _resume.stateful(checked[5])
        if par is None:
            return self._fit(*checked, epochs, verbose, resume, stateful)
        # Every rank checked its arguments; none is yet in a collective.
        par.raise_together(None)
        resume = par.share(resume)
        X, y, weights, X_val, y_val, callbacks = checked
        if not par.is_root:
            # one progress display and one writer of checkpoints: rank 0's
            verbose = 0
            callbacks = [cb for cb in callbacks if not getattr(cb, "rank_zero_only", False)]
        with par.guard():
            return self._fit(X, y, weights, X_val, y_val, callbacks, epochs, verbose, resume,
                             stateful)

    def _read_resume(self, path, checked, epochs, who):
        """The checkpoint at ``path`` read and checked against this fit."""
        if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
            raise TypeError(f"{who}: resume_from must be a path, got {type(path).__name__}")
        resume = _resume.read(path, self, len(checked[0]), checked[5], who)
        if (resume["epoch"], resume["batch"]) > (int(epochs), 0):
            raise ValueError(f"{who}: cannot resume from {path}: it is past epoch "
                             f"{resume['epoch']}, batch {resume['batch']}; epochs={epochs} "
                             "(epochs counts from the start of the run)")
        return resume

    def _restore(self, resume):
        """The checkpoint's weights and generators (the optimizer state
        follows on_train_begin)."""
        self.model.load_state_dict(resume["model"])
        self.rng.bit_generator.state = resume["shuffle"]
        _init.get_generator().bit_generator.state = resume["generator"]

    def training_position(self, epoch_end):
        """(header entry, tensors) of where this fit is, for a checkpoint
        (nncore/resume.py): after the current epoch when ``epoch_end`` (None
        when the epoch was cut short), else after the batch whose
        ``on_batch_end`` is running."""
        run = getattr(self, "_run", None)
        if run is None:
            raise RuntimeError("Trainer.training_position: only while fit runs")
        epoch, done = self._position
        if epoch_end:
            # None after an epoch cut short by a stop: the epoch-end callbacks
            # have run as if it were complete, which no position describes
            return None if done is not None else _resume.capture(self, epoch + 1, 0, None)
        total, weight, seen = run["partial"]
        return _resume.capture(self, epoch, done,
                               (total, weight, [m.partial(seen) for m in self.metrics]))

    def _check_fit(self, X, y, epochs, validation_data, validation_split, callbacks, verbose,
                   sample_weight, who):
        """fit's arguments checked: (X, y, weights, X_val, y_val, callbacks)."""
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"{who}: epochs must be an int >= 0, got {epochs!r}")
        if verbose not in (0, 1, 2, True, False):
            raise ValueError(f"{who}: verbose must be 0, 1 or 2, got {verbose!r}")
        par = self._parallel
        X, y = par.check(self, X, y, who) if par is not None else self._check(X, y, who)
        weights = None
        if sample_weight is not None and par is not None:
            raise ValueError(f"{who}: sample_weight is not supported with comm or shards")
        if sample_weight is not None:
            if _weighted_kind(self.loss) is None:
                raise ValueError(f"{who}: sample_weight works with MSELoss, "
                                 f"CrossEntropyLoss, BCEWithLogitsLoss and losses with a "
                                 f"per_sample method, not {type(self.loss).__name__}")
            weights = check_sample_weight(sample_weight, len(X), who)
        if validation_data is not None:
            if validation_split:
                raise ValueError(f"{who}: pass validation_data or validation_split, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"{who}: validation_data must be a pair (X_val, y_val)")
            X_val, y_val = self._check(validation_data[0], validation_data[1],
                                       who + " (validation_data)")
        elif validation_split:
            if (isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real)
                    or not 0.0 < validation_split < 1.0):
                raise ValueError(f"{who}: validation_split must be in (0, 1), got "
                                 f"{validation_split!r}")
            n_val = int(len(X) * validation_split)
            if n_val < 1 or n_val >= len(X):
                raise ValueError(f"{who}: validation_split={validation_split} of {len(X)} "
                                 "samples leaves no training or no validation samples")
            cut = len(X) - n_val
            X, X_val, y, y_val = X[:cut], X[cut:], y[:cut], y[cut:]
            if weights is not None:
                weights = weights[:cut]
        else:
            X_val = y_val = None

        return X, y, weights, X_val, y_val, _check_callbacks(callbacks, who)

    def _fit(self, X, y, weights, X_val, y_val, callbacks, epochs, verbose, resume, stateful):
        """fit after its checks: the epochs, the callbacks, Ctrl-C, resuming."""
        par = self._parallel
        if verbose:
            callbacks.insert(0, ProgressBar(live=None if verbose == 1 else False))
        # checkpoints last: a file holds what the next step starts from
        callbacks.sort(key=lambda cb: bool(getattr(cb, "runs_last", False)))
        for cb in callbacks:
            if hasattr(cb, "set_trainer"):
                cb.set_trainer(self)
            else:
                cb.trainer = self
        self.history = history = History()
        self.stop_training = False
        self.epochs = int(epochs)
        self.n_samples = len(X)

        def call(hook, *args):
            for cb in callbacks:
                fn = getattr(cb, hook, None)
                if fn is not None:
                    fn(*args)

        if resume is not None:
            self._restore(resume)
        if par is not None:
            par.start(self)
        call("on_train_begin", {})
        start_epoch = start_batch = 0
        if resume is not None:
            # after on_train_begin, which resets the callbacks (and a warm-up's lr)
            for cb, state in zip(stateful, resume["callbacks"]):
                cb.load_state_dict(state)
            self.optimizer.load_state_dict(resume["optimizer"], self.model.parameters())
            history.epoch, columns = resume["history"]
            history.history = {key: list(values) for key, values in columns.items()}
            start_epoch, start_batch = resume["epoch"], resume["batch"]
        hooks = batch_hooks(callbacks)
        plan = self._plan(X, y, weights) if par is None else par.plan(self, X, y)
        perm = plan.get("perm") if self.shuffle else None
        if resume is not None and perm is not None:
            perm[...] = resume["perm"]
        self._run = {"perm": perm, "stateful": stateful, "partial": None, "epoch_lr": None}
        self._interrupted = False
        if par is not None:
            par.interrupted_rank = None
        self._position = (start_epoch, start_batch)
        sigint = _SigintFlag(self)
        try:
            for epoch in range(start_epoch, self.epochs):
                at = (start_batch, resume["partial"]) \
                    if epoch == start_epoch and start_batch else None
                call("on_epoch_begin", epoch, {})
                start = time.perf_counter()
                lr = getattr(self.optimizer, "lr", None)
                if at is not None:
                    lr = resume["epoch_lr"]     # the lr the cut epoch started with
                self._run["epoch_lr"] = lr
                serial = plan["bs"] <= _SERIAL_MAX_BATCH
                previous = _core.set_local_num_threads(1) if serial else None
                try:
                    with mixed_precision(self.model, self._bf16):
                        if par is None:
                            logs = self._train_epoch(X, y, weights, epoch, hooks, plan, at)
                        else:
                            logs = par.train_epoch(self, X, y, epoch, hooks, plan, at)
                finally:
                    if serial:
                        _core.set_local_num_threads(previous)
                if self._interrupted and self._position[1] is not None:
                    break       # a partial epoch: no validation, history or callbacks
                train_seconds = time.perf_counter() - start
                if X_val is not None:
                    val = self._evaluate(X_val, y_val)
                    logs.update({"val_" + key: value for key, value in val.items()})
                if lr is not None:
                    logs["lr"] = float(lr)
                logs["seconds"] = time.perf_counter() - start
                logs["samples_per_sec"] = len(X) / train_seconds if train_seconds > 0 \
                    else float("inf")
                if par is not None:
                    par.share_timing(logs)
                history.append(epoch, logs)
                call("on_epoch_end", epoch, logs)
                if par is not None:
                    par.agree_stop(self)
                if self.stop_training:
                    break
        finally:
            sigint.restore()
            self._run = None
            self.model.eval()
            _forget(self.model)
        if self._interrupted:
            epoch, batch = self._position
            where = (f"after batch {batch} of epoch {epoch + 1}" if batch is not None
                     else f"after epoch {epoch + 1}")
            rank = par.interrupted_rank if par is not None and par.comm is not None else None
            on = "" if rank is None else f" on rank {rank} of {par.size}"
            raise collective(KeyboardInterrupt(
                f"Trainer.fit: interrupted (SIGINT{on}) {where}; the model holds the weights "
                f"of that step and trainer.history the {len(history)} completed epoch(s)"))
        call("on_train_end", history.last if len(history) else {})
        return history

    def _plan(self, X, y, weights):
        """What every epoch of one fit reuses, allocated once: the
        permutation, the epoch's targets (and weights) in batch order, and a
        chunk buffer that shuffled rows of X are gathered into, several
        batches at a time. Targets wider than a label per row (multi-output
        regression, autoencoders) are gathered chunk by chunk like X: a
        shuffled copy of them would be as large as the data."""
        n = len(X)
        bs = min(self.batch_size, n)
        wide_y = y.ndim == 2 and y[:1].nbytes > 8
        # Gather about _CHUNK_BYTES of rows at a time (a whole number of
        # batches, at least one): few gather calls per epoch at small batch
        # sizes, and the chunk stays in cache while its batches train.
        per_batch = bs * (X[:1].nbytes + (y[:1].nbytes if wide_y else 0))
        chunk = bs * max(1, _CHUNK_BYTES // per_batch)
        plan = {"bs": bs, "chunk": min(chunk, n), "weighted": None}
        if self.shuffle:
            plan["perm"] = np.arange(n)
            plan["x"] = _guard.empty((min(chunk, n),) + X.shape[1:], np.float32,
                                     "Trainer.fit: the batch rows")
            # gather_rows moves whole samples: both sides as (rows, sample size)
            plan["X_flat"] = X.reshape(n, -1)
            plan["x_flat"] = plan["x"].reshape(len(plan["x"]), -1)
            plan["y"] = None if wide_y else np.empty_like(y)
            plan["y_chunk"] = np.empty((min(chunk, n),) + y.shape[1:], y.dtype) \
                if wide_y else None
            plan["w"] = np.empty_like(weights) if weights is not None else None
        if weights is not None:
            n_out = y.shape[1] if y.ndim == 2 else self._n_outputs
            plan["weighted"] = _WeightedLoss(_weighted_kind(self.loss), bs, n_out or 1,
                                             self.loss)
        return plan

    def _train_epoch(self, X, y, weights, epoch, hooks, plan, at=None):
        """One pass over the data; returns the epoch's loss and metrics.
        ``at`` = (batches already trained, their (loss total, weight total,
        metric totals)): the rest of an epoch a checkpoint stopped in."""
        model, loss, optimizer = self.model, self.loss, self.optimizer
        skip_input_grad = self._skip_input_grad
        # Plain SGD is folded into the backward pass (Sequential.backward's
        # sgd_lr: one pass over the weights instead of three; the same bits),
        # unless a callback runs between batches and might read the gradients.
        fold_sgd = (type(optimizer) is SGD and optimizer.momentum == 0
                    and optimizer.weight_decay == 0 and skip_input_grad and not hooks
                    and getattr(model, "_sgd_foldable", False))
        model.train()
        params = model.parameters()
        n = len(X)
        bs, chunk, weighted = plan["bs"], plan["chunk"], plan["weighted"]
        n_batches = -(-n // bs)
        b0 = 0 if at is None else at[0]
        if self.shuffle:
            # One permutation per epoch (shuffled in place, epoch after
            # epoch); targets and weights gathered for the whole epoch, rows
            # of X one chunk at a time. mode="clip" keeps np.take from
            # buffering its output (the indices are always valid).
            perm = plan["perm"]
            if b0 == 0:         # else: a resumed epoch, its permutation drawn already
                self.rng.shuffle(perm)
            if plan["y"] is not None:
                y = targets = np.take(y, perm, axis=0, out=plan["y"], mode="clip")
            else:
                targets = _EpochOrder(y, perm)
            if weights is not None:
                weights = np.take(weights, perm, out=plan["w"], mode="clip")
        else:
            targets = y
        y_rows, y_start = y, 0      # y_rows[i - y_start] is the target of epoch row i
        metrics = self.metrics
        for metric in metrics:
            metric.begin(targets)

        total = 0.0
        total_weight = 0.0
        b = b0
        if at is not None:
            total, total_weight, metric_totals = at[1]
            for metric, value in zip(metrics, metric_totals):
                metric.resume(value, min(b0 * bs, n))
        for c_lo in range(b0 * bs, n, chunk):
            c_hi = min(c_lo + chunk, n)
            if self.shuffle:
                rows = plan["x"][:c_hi - c_lo]
                _core.gather_rows(plan["X_flat"], perm[c_lo:c_hi], plan["x_flat"][:c_hi - c_lo])
                if plan["y"] is None:
                    y_rows, y_start = plan["y_chunk"][:c_hi - c_lo], c_lo
                    np.take(y, perm[c_lo:c_hi], axis=0, out=y_rows, mode="clip")
            else:
                rows = X[c_lo:c_hi]         # contiguous already: no copy
            for lo in range(c_lo, c_hi, bs):
                hi = min(lo + bs, n)
                yb = y_rows[lo - y_start:hi - y_start]
                out = model.forward(rows[lo - c_lo:hi - c_lo])
                for metric in metrics:
                    metric.update(out, lo, hi)
                step = batch_loss(
                    loss, weighted, out, yb, weights[lo:hi] if weighted is not None else None,
                    lambda value: f"Trainer.fit: the loss became {value} at epoch {epoch + 1}, "
                    f"batch {b + 1} of {n_batches} (counting from 1); the learning rate may be "
                    f"too high (lr={getattr(self.optimizer, 'lr', '?')}) or the inputs badly "
                    "scaled")
                if step is None:
                    b += 1
                    continue
                value, size, grad = step
                if fold_sgd:
                    model.backward(grad, input_grad=False, sgd_lr=optimizer.lr)
                elif skip_input_grad:
                    model.backward(grad, input_grad=False)
                    optimizer.step(params)
                else:
                    model.backward(grad)
                    optimizer.step(params)
                total += value * size
                total_weight += size
                if hooks:
                    # where a checkpoint taken by a hook is (training_position)
                    self._position = (epoch, b + 1)
                    self._run["partial"] = (total, total_weight, hi)
                    logs = {"batch": b, "size": hi - lo, "loss": value}
                    for hook in hooks:
                        hook(b, logs)
                b += 1
                if self.stop_training:
                    # batch None: the epoch ran to its end (see fit)
                    self._position = (epoch, b if hi < n else None)
                    return self._epoch_logs(total, total_weight, metrics, hi)
        self._position = (epoch, None)
        return self._epoch_logs(total, total_weight, metrics, n)

    @staticmethod
    def _epoch_logs(total, total_weight, metrics, seen):
        logs = {"loss": total / total_weight if total_weight else float("nan")}
        for metric in metrics:
            logs[metric.name] = metric.result(seen)
        return logs

    # ---- evaluation -------------------------------------------------------
    def _eval_batch_size(self):
        # Big enough to amortise per-call overhead, small enough to keep the
        # activations in cache; fixed, so evaluation is deterministic.
        return max(self.batch_size, 1024)

    def _evaluate(self, X, y):
        model, loss = self.model, self.loss
        model.eval()
        n = len(X)
        bs = min(self._eval_batch_size(), n)
        for metric in self.metrics:
            metric.begin(y)
        total = 0.0
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            out = model.forward(X[lo:hi])
            total += loss.forward(out, y[lo:hi]) * (hi - lo)
            for metric in self.metrics:
                metric.update(out, lo, hi)
        return self._epoch_logs(total, n, self.metrics, n)

    def evaluate(self, X, y):
        """The mean loss and the metrics on (X, y), as a dict
        (``{"loss": ..., "accuracy": ...}``), with the model in eval mode."""
        X, y = self._check(X, y, "Trainer.evaluate")
        try:
            return self._evaluate(X, y)
        finally:
            _forget(self.model)

    def predict(self, X):
        """The model's predictions for X (``model.predict``), in eval mode."""
        X, _ = check_model_input(self.model, X, "Trainer.predict")
        self.model.eval()
        return self.model.predict(X)
