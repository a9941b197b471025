"""Metrics the Trainer reports per epoch, accumulated batch by batch.

Each metric owns buffers sized once for the largest batch, so updating it in
the training loop allocates nothing proportional to the batch. The Trainer
passes the model's output (logits for classification losses) and the batch's
targets, in the form the loss takes them.
"""
import numpy as np

__all__ = ["Accuracy", "BinaryAccuracy", "MeanAbsoluteError", "MeanSquaredError",
           "FunctionMetric", "make_metric"]


class Metric:
    """Accumulates a sample-weighted mean over batches: ``reset(capacity,
    n_outputs)`` before an epoch, ``update(out, target)`` per batch,
    ``result()`` at the end."""

    name = "metric"

    def reset(self, capacity, n_outputs):
        self._total = 0.0
        self._count = 0

    def result(self):
        return float(self._total / self._count) if self._count else float("nan")


class Accuracy(Metric):
    """Fraction of rows whose largest logit is the target class index."""

    name = "accuracy"

    def reset(self, capacity, n_outputs):
        super().reset(capacity, n_outputs)
        if getattr(self, "_pred", None) is None or len(self._pred) < capacity:
            self._pred = np.empty(capacity, dtype=np.int64)
            self._hit = np.empty(capacity, dtype=bool)

    def update(self, out, target):
        m = len(out)
        pred, hit = self._pred[:m], self._hit[:m]
        np.argmax(out, axis=1, out=pred)
        np.equal(pred, target, out=hit)
        self._total += np.count_nonzero(hit)
        self._count += m


class BinaryAccuracy(Metric):
    """Fraction of outputs on the right side: logit > 0 against target > 0.5
    (for one output: the fraction of correctly classified samples)."""

    name = "accuracy"

    def reset(self, capacity, n_outputs):
        super().reset(capacity, n_outputs)
        shape = (capacity, n_outputs)
        if getattr(self, "_a", None) is None or self._a.shape != shape:
            self._a = np.empty(shape, dtype=bool)
            self._b = np.empty(shape, dtype=bool)

    def update(self, out, target):
        m = len(out)
        a, b = self._a[:m], self._b[:m]
        np.greater(out, 0.0, out=a)
        np.greater(target, 0.5, out=b)
        np.equal(a, b, out=a)
        self._total += np.count_nonzero(a) / a.shape[1]
        self._count += m


class _ErrorMetric(Metric):
    def reset(self, capacity, n_outputs):
        super().reset(capacity, n_outputs)
        shape = (capacity, n_outputs)
        if getattr(self, "_diff", None) is None or self._diff.shape != shape:
            self._diff = np.empty(shape, dtype=np.float32)

    def update(self, out, target):
        m = len(out)
        diff = self._diff[:m]
        np.subtract(out, target, out=diff)
        self._reduce(diff)
        self._total += float(diff.sum(dtype=np.float64)) / diff.shape[1]
        self._count += m


class MeanAbsoluteError(_ErrorMetric):
    name = "mae"

    def _reduce(self, diff):
        np.abs(diff, out=diff)


class MeanSquaredError(_ErrorMetric):
    name = "mse"

    def _reduce(self, diff):
        np.multiply(diff, diff, out=diff)


class FunctionMetric(Metric):
    """A user function ``fn(target, out) -> float``, averaged over batches
    weighted by batch size. (It may allocate: that is the function's business.)"""

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")

    def update(self, out, target):
        self._total += float(self.fn(target, out)) * len(out)
        self._count += len(out)


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
