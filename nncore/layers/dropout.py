"""Dropout: random zeroing in training, the identity in evaluation."""
import numbers

from .. import _core
from .. import init as _init
from .base import Buffers, Layer, as_input, check_grad, not_ready
from .registry import register_layer

__all__ = ["Dropout"]


@register_layer
class Dropout(Layer):
    """Zero each element with probability ``p`` in training mode and scale the
    rest by 1 / (1 - p); the identity in evaluation mode.

    Masks come from a counter-based generator keyed by a fresh 64-bit draw
    from nncore's seeded generator at every training forward pass, so a run
    is reproducible under ``nncore.manual_seed`` and the masks do not depend
    on the thread count."""

    predict_traceable = True

    same_shape = True
    identity_in_eval = True

    def __init__(self, p=0.5):
        if (isinstance(p, bool) or not isinstance(p, numbers.Real)
                or not (0.0 <= p < 1.0)):
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self._buf = Buffers(self._name)
        self._shape = None
        self._y = None
        self._dx = None
        self._key = None      # None: the last forward was the identity
        self._ready = False

    @property
    def _name(self):
        return f"Dropout(p={self.p})"

    def forward(self, x):
        x = as_input(self, x)
        self._ready = True
        if not self.training or self.p == 0.0:
            self._key = None
            return x
        if x.shape != self._shape:
            self._shape = x.shape
            self._y = self._buf.get("y", x.shape)
            self._dx = self._buf.get("dx", x.shape)
        self._key = _init.next_key()
        _core.dropout_forward(x, self._y, self.p, self._key)
        return self._y

    def backward(self, grad, input_grad=True):
        if not self._ready:
            raise not_ready(self)
        if self._key is None:
            return grad
        grad = check_grad(self, grad, self._shape)
        _core.dropout_backward(grad, self._dx, self.p, self._key)
        return self._dx

    def _infer(self, x, ws):
        return as_input(self, x)

    def _forget(self):
        self._ready = False

    def get_config(self):
        return {"p": self.p}
