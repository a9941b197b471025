"""Metrics the Trainer reports per epoch.

A metric sees one pass over the data (a training epoch or an evaluation):
``begin(targets)`` with every target of the pass in the order the batches
come, ``update(out, lo, hi)`` with the model's output for rows lo..hi of the
pass, ``result(n)`` at the end, over the first n rows (all of them unless
training was stopped mid-epoch). ``targets`` supports ``len``, ``.shape``
and slicing (with wide targets and shuffling it gathers the rows of a slice
on demand rather than holding a shuffled copy of them). Built-in metrics copy
what they need from each batch into a bounded buffer and compare it with the
targets, vectorised, whenever it fills: one cheap NumPy call per batch, which
matters at batch size 1.
The Trainer passes the model's raw output (logits for the classification
losses) and targets in the form the loss takes them. ``partial(upto)`` and
``resume(total, upto)`` carry a pass's running total over a checkpoint taken
mid-epoch (``ModelCheckpoint(save_freq=k, save_optimizer=True)``).
"""
import numpy as np

__all__ = ["Metric", "Accuracy", "BinaryAccuracy", "MeanAbsoluteError", "MeanSquaredError",
           "FunctionMetric", "make_metric"]


class Metric:
    """Base class (see the module docstring for the protocol)."""

    name = "metric"

    def begin(self, targets):
        self._targets = targets

    def update(self, out, lo, hi):
        raise NotImplementedError

    def result(self, n):
        raise NotImplementedError

    def partial(self, upto):
        """The running total over the pass's first ``upto`` rows (all its
        updates so far), as a float."""
        raise NotImplementedError(f"metric {self.name!r} has no partial()/resume(): a "
                                  "checkpoint mid-epoch cannot keep its running total")

    def resume(self, total, upto):
        """Continue a pass from row ``upto`` with ``partial``'s total (after
        ``begin``)."""
        raise NotImplementedError(f"metric {self.name!r} has no partial()/resume()")


def _buffer(old, shape, dtype):
    """old if it can hold `shape`, else a new array (grown, never shrunk)."""
    if old is not None and old.shape[0] >= shape[0] and old.shape[1:] == shape[1:]:
        return old
    return np.empty(shape, dtype=dtype)


class _Buffered(Metric):
    """A metric that copies what it needs from each batch (one cheap NumPy
    call) into a buffer of about ``CHUNK_VALUES`` values, and reduces the
    buffer against the targets into a running total whenever it fills and at
    the end: memory stays bounded whatever the number of samples (a buffer
    for the whole pass would grow with the data, as large as every output of
    the epoch for wide regression targets)."""

    CHUNK_VALUES = 1 << 14
    _buf = None
    _dtype = np.float32

    def _row_shape(self, targets):
        return targets.shape[1:]

    def begin(self, targets):
        self._targets = targets
        shape = self._row_shape(targets)
        self._width = max(1, int(np.prod(shape, dtype=np.int64)))
        rows = max(1, min(len(targets), self.CHUNK_VALUES // self._width))
        self._buf = _buffer(self._buf, (rows,) + shape, self._dtype)
        self._base = 0        # the pass row held in the buffer's first row
        self._total = 0.0

    def update(self, out, lo, hi):
        buf = self._buf
        if hi - self._base > len(buf):
            self._flush(lo)
            if hi - lo > len(buf):            # a batch larger than the buffer
                rows = np.empty((hi - lo,) + buf.shape[1:], buf.dtype)
                self._store(out, rows)
                self._total += self._reduce(rows, self._targets[lo:hi])
                self._base = hi
                return
        self._store(out, buf[lo - self._base:hi - self._base])

    def _flush(self, upto):
        if upto > self._base:
            self._total += self._reduce(self._buf[:upto - self._base],
                                        self._targets[self._base:upto])
        self._base = upto

    def result(self, n):
        self._flush(n)
        return self._total / (n * self._width)

    def partial(self, upto):
        self._flush(upto)
        return float(self._total)

    def resume(self, total, upto):
        self._total, self._base = total, upto


class Accuracy(_Buffered):
    """Fraction of rows whose largest logit is the target class index."""

    name = "accuracy"
    _dtype = np.int64

    def _row_shape(self, targets):
        return ()

    def _store(self, out, rows):
        out.argmax(axis=1, out=rows)      # the method: 4x less overhead

    def _reduce(self, pred, targets):
        return np.count_nonzero(pred == targets)


class BinaryAccuracy(_Buffered):
    """Fraction of outputs on the right side: logit > 0 against target > 0.5
    (for one output: the fraction of correctly classified samples)."""

    name = "accuracy"
    _dtype = bool

    def _store(self, out, rows):
        np.greater(out, 0.0, out=rows)

    def _reduce(self, positive, targets):
        return np.count_nonzero(positive == (targets > 0.5))


class _ErrorMetric(_Buffered):
    def _store(self, out, rows):
        rows[...] = out

    def _reduce(self, out, targets):
        return float(self._error(out.astype(np.float64) - targets).sum())


class MeanAbsoluteError(_ErrorMetric):
    name = "mae"

    def _error(self, diff):
        return np.abs(diff)


class MeanSquaredError(_ErrorMetric):
    name = "mse"

    def _error(self, diff):
        return diff * diff


class FunctionMetric(Metric):
    """A user function ``fn(y_true, y_pred) -> float`` called per batch and
    averaged over batches weighted by their size."""

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")

    def begin(self, targets):
        self._targets = targets
        self._total = 0.0

    def update(self, out, lo, hi):
        self._total += float(self.fn(self._targets[lo:hi], out)) * (hi - lo)

    def result(self, n):
        return self._total / n

    def partial(self, upto):
        return self._total

    def resume(self, total, upto):
        self._total = total


_NAMED = {"mae": MeanAbsoluteError, "mse": MeanSquaredError}


def make_metric(spec, target_kind):
    """A Metric from a name ('accuracy', 'mae', 'mse'), a Metric or a function.

    'accuracy' means argmax accuracy for class-index targets and thresholded
    accuracy for binary (0/1) targets.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec in ("accuracy", "acc"):
            if target_kind == "class_index":
                return Accuracy()
            if target_kind == "binary":
                return BinaryAccuracy()
            raise ValueError("metrics: 'accuracy' needs a classification loss "
                             "(CrossEntropyLoss or BCEWithLogitsLoss)")
        if spec in _NAMED:
            if target_kind == "class_index":
                raise ValueError(f"metrics: {spec!r} needs real-valued targets, not class "
                                 "indices")
            return _NAMED[spec]()
        raise ValueError(f"metrics: unknown metric {spec!r}; expected 'accuracy', 'mae', "
                         "'mse', a callable or a Metric")
    if callable(spec):
        return FunctionMetric(spec)
    raise TypeError(f"metrics: expected a name, a callable or a Metric, got "
                    f"{type(spec).__name__}")
