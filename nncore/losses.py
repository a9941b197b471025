"""Losses: ``forward(pred, target) -> float`` and ``backward() -> grad``.

Mean reduction and PyTorch's definitions throughout, so values and gradients
compare with torch.nn step by step:

- ``MSELoss``: mean((pred - target)^2)
- ``HuberLoss(delta=1.0)``: mean of 0.5 d^2 where |d| < delta, else
  delta (|d| - delta / 2), d = pred - target
- ``BCEWithLogitsLoss``: binary cross-entropy on logits (pair with a Dense of
  one output and no activation; ``predict_proba`` applies the sigmoid)
- ``CrossEntropyLoss``: softmax cross-entropy on logits with integer class
  labels in [0, classes) (pair with a Dense of `classes` outputs and no
  activation; ``predict_proba`` applies the softmax)

Cross-entropy and BCE take logits: the softmax / sigmoid is fused into the
loss, exact and stable for logits of any size, and its gradient is the simple
``(probability - target) / n``.

``forward`` computes the loss and its gradient in one pass; ``backward()``
returns that gradient with respect to ``pred``, in a buffer the loss owns and
reuses (copy it to keep it).

pred and targets may be any arrays of real numbers (int, bool, float64,
strided or Fortran order): float32 targets (or int64 labels) that are
C-contiguous are used as is, others are converted once (a copy). For the
elementwise losses a 1-D target of length n also matches a pred of shape
(n, 1). NaN in pred or target propagates to the loss and gradient (not
checked: a pass over the batch per step); so do BCE targets outside [0, 1],
as in PyTorch. Class labels outside [0, classes) raise ValueError.
"""
import numbers

import numpy as np

from . import _core
from . import _guard

__all__ = ["Loss", "MSELoss", "HuberLoss", "BCEWithLogitsLoss", "CrossEntropyLoss"]

_F32 = np.float32
_rows_f32 = _core.rows_f32
_loss_forward = _core.loss_forward
_is_c_array = _core.is_c_array

# The active profiler's recorder (nncore.profile sets it), else None.
_PROFILE = None


class Loss:
    """Base class: subclasses set ``_kind`` and may override ``_target``."""

    _kind = None
    _param = 0.0

    def __init__(self):
        self._pred = None
        self._grad = None

    @property
    def _name(self):
        return type(self).__name__

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def _as_pred(self, pred):
        if _rows_f32(pred, -1) > 0:
            return pred
        arr = _guard.as_array(pred, self._name, "pred")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}: pred must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise ValueError(f"{self._name}: pred must be 2-D (batch, outputs), "
                             f"got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{self._name}: pred is empty (shape {arr.shape})")
        return _guard.c_array(arr, _F32, self._name, "pred")

    def _target(self, target, pred):
        """A float32 C-contiguous target with pred's element count."""
        t = target
        if not _is_c_array(t, False):
            t = _guard.as_array(t, self._name, "target")
            if t.dtype.kind not in "biuf":
                raise TypeError(f"{self._name}: target must hold real numbers, "
                                f"got dtype {t.dtype}")
            t = _guard.c_array(t, _F32, self._name, "target")
        shape = pred.shape
        if t.shape != shape and not (t.ndim == 1 and shape[1] == 1 and t.shape[0] == shape[0]):
            raise ValueError(f"{self._name}: target has shape {t.shape}, expected {shape} "
                             f"(the shape of pred)")
        return t

    def forward(self, pred, target):
        """The mean loss as a Python float. The gradient is computed in the
        same pass (fused; for cross-entropy it costs no extra exp) and kept
        for ``backward``."""
        if _PROFILE is not None and _PROFILE.outer(self):
            return _PROFILE.span("loss", self, "forward", self.forward, pred, target)
        pred = self._as_pred(pred)
        target = self._target(target, pred)
        grad = self._grad
        if grad is None or grad.shape != pred.shape:
            grad = _guard.empty(pred.shape, _F32, lambda: f"{self._name}: the gradient")
        self._pred = None    # a failed forward leaves nothing for backward
        loss = _loss_forward(self._kind, pred, target, self._param, grad)
        self._grad = grad
        self._pred = pred
        return loss

    def backward(self):
        """d(loss)/d(pred) for the last forward call (the loss's own buffer,
        overwritten by the next forward)."""
        if self._pred is None:
            raise ValueError(f"{self._name}: backward() called before forward()")
        return self._grad

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MSELoss(Loss):
    """mean((pred - target)^2); gradient 2 (pred - target) / n."""

    _kind = _core.LOSS_MSE


class HuberLoss(Loss):
    """PyTorch's HuberLoss(delta): quadratic within delta, linear beyond."""

    _kind = _core.LOSS_HUBER

    def __init__(self, delta=1.0):
        super().__init__()
        if (isinstance(delta, bool) or not isinstance(delta, numbers.Real)
                or not (0.0 < delta < float("inf"))):
            raise ValueError(f"HuberLoss: delta must be a positive finite number, got {delta!r}")
        self.delta = float(delta)
        self._param = self.delta

    def get_config(self):
        return {"delta": self.delta}


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy of sigmoid(pred) against targets in [0, 1],
    computed stably from the logits pred."""

    _kind = _core.LOSS_BCE_LOGITS


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy of logits pred (batch, classes) against integer
    class labels (batch,) in [0, classes)."""

    _kind = _core.LOSS_CROSS_ENTROPY

    def _target(self, target, pred):
        t = target
        if not _is_c_array(t, True):
            t = _guard.as_array(t, self._name, "target")
            if t.dtype.kind not in "iu":
                raise TypeError(f"{self._name}: target must hold integer class labels, "
                                f"got dtype {t.dtype}")
            if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{self._name}: label {t.max()} is outside [0, "
                                 f"{pred.shape[1]}) (pred has {pred.shape[1]} classes)")
            t = _guard.c_array(t, np.int64, self._name, "target")
        if t.ndim == 2 and t.shape[1] == 1:
            t = t.reshape(-1)
        m, c = pred.shape
        if c == 0:
            raise ValueError(f"{self._name}: pred has 0 classes (shape {pred.shape})")
        if t.shape != (m,):
            raise ValueError(f"{self._name}: target has shape {t.shape}, expected ({m},) "
                             f"(one class label per row of pred)")
        return t

    def forward(self, pred, target):
        try:
            return super().forward(pred, target)
        except ValueError as exc:
            if "outside" not in str(exc):
                raise
            labels = self._target(target, self._as_pred(pred))
            c = self._as_pred(pred).shape[1]
            bad = np.flatnonzero((labels < 0) | (labels >= c))
            raise ValueError(f"{self._name}: label {labels[bad[0]]} at index {bad[0]} is outside "
                             f"[0, {c}) (pred has {c} classes)") from None
