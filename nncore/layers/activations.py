"""Parameter-free activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, GELU,
Softmax. Elementwise on any shape (Softmax over the last axis)."""
import math
import numbers

from .. import _core
from .base import Buffers, Layer, as_input, check_grad, not_ready
from .registry import register_layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "ACTIVATION_LAYERS",
           "RELU_FAMILY"]

_ACT = _core.ACT_CODES
_rows_f32 = _core.rows_f32
_act_forward = _core.act_forward
_act_backward = _core.act_backward

# Activations after which an "auto"-initialised layer draws He-uniform weights.
RELU_FAMILY = ("relu", "leaky_relu", "gelu")


class _Activation(Layer):
    """An activation layer: ``act_name`` is also its C activation code's name."""

    same_shape = True
    _saves_output = True   # backward reads y (else x), see csrc/act.c
    _param = 0.0

    def __init__(self):
        self._code = _ACT[self.act_name]
        self._buf = Buffers(self._name)
        self._shape = None
        self._y = None
        self._dx = None
        self._saved = None

    # The kernels, elementwise on any shape (Softmax's work on rows).
    _kernel_forward = staticmethod(_act_forward)
    _kernel_backward = staticmethod(_act_backward)

    def _resize(self, shape):
        self._shape = shape
        # backward's fast check of a 2-D gradient (rows_f32); N-D ones never pass it
        self._grad_cols, self._grad_rows = (shape[1], shape[0]) if len(shape) == 2 else (-1, -2)
        self._y = self._buf.get("y", shape)
        self._dx = self._buf.get("dx", shape)

    def forward(self, x):
        x = as_input(self, x)
        if x.shape != self._shape:
            self._resize(x.shape)
        self._kernel_forward(self._code, x, self._y, self._param)
        self._saved = self._y if self._saves_output else x
        return self._y

    def forward_fused(self, y):
        """Take the output of the previous layer, whose epilogue already
        applied this activation (see Sequential): only record it. Only
        activations whose backward reads their output can be folded."""
        if y.shape != self._shape:
            self._resize(y.shape)
        self._saved = y
        return y

    def backward(self, grad, input_grad=True):
        saved = self._saved
        if saved is None:
            raise not_ready(self)
        if _rows_f32(grad, self._grad_cols) != self._grad_rows:
            grad = check_grad(self, grad, self._shape)
        self._kernel_backward(self._code, saved, grad, self._dx, self._param)
        return self._dx

    def _infer(self, x, ws):
        x = as_input(self, x)
        y = ws.take(x.shape, x)
        self._kernel_forward(self._code, x, y, self._param)
        return y

    def _forget(self):
        self._saved = None


@register_layer
class ReLU(_Activation):
    """max(x, 0). After a layer whose epilogue applies it (a Dense) in a
    ``Sequential`` it is fused there (same result, one pass fewer)."""

    act_name = "relu"
    predict_traceable = True


@register_layer
class LeakyReLU(_Activation):
    """x where x > 0, else negative_slope * x (PyTorch's default slope 0.01)."""

    act_name = "leaky_relu"
    predict_traceable = True
    _saves_output = False

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if (isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real)
                or not math.isfinite(negative_slope)):
            raise ValueError(f"LeakyReLU: negative_slope must be a finite number, "
                             f"got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self._param = self.negative_slope

    def get_config(self):
        return {"negative_slope": self.negative_slope}


@register_layer
class Sigmoid(_Activation):
    """1 / (1 + exp(-x))."""

    act_name = "sigmoid"
    predict_traceable = True


@register_layer
class Tanh(_Activation):
    """tanh(x)."""

    act_name = "tanh"
    predict_traceable = True


@register_layer
class GELU(_Activation):
    """The exact GELU, x * Phi(x) (PyTorch's default, approximate='none')."""

    act_name = "gelu"
    predict_traceable = True
    _saves_output = False


@register_layer
class Softmax(_Activation):
    """Softmax over the last axis, numerically stable. To train a classifier,
    prefer logits with ``CrossEntropyLoss`` (which fuses the softmax exactly)
    and ``Sequential.predict_proba`` for probabilities."""

    act_name = "softmax"
    predict_traceable = True

    @staticmethod
    def _kernel_forward(code, x, y, param):
        if x.ndim != 2:             # rows of the last axis, as 2-D views
            x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        _act_forward(code, x, y, param)

    @staticmethod
    def _kernel_backward(code, saved, dy, dx, param):
        if saved.ndim != 2:
            saved, dy, dx = (a.reshape(-1, a.shape[-1]) for a in (saved, dy, dx))
        _act_backward(code, saved, dy, dx, param)


ACTIVATION_LAYERS = {cls.act_name: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh, GELU,
                                                   Softmax)}
