"""Pooling on NCHW images: MaxPool2d, AvgPool2d, GlobalAvgPool2d (csrc/pool.c)."""
import numpy as np

from .. import _core
from ..validation import image_input, int_pair
from .base import Buffers, Layer, check_grad, not_ready
from .registry import register_layer

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]


class _Pool2d(Layer):
    """A window pooling layer with PyTorch's kernel_size / stride (default:
    the kernel size) / padding (at most half the kernel)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        owner = type(self).__name__
        self.kernel_size = int_pair(owner, "kernel_size", kernel_size, 1)
        self.stride = (self.kernel_size if stride is None
                       else int_pair(owner, "stride", stride, 1))
        self.padding = int_pair(owner, "padding", padding, 0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{owner}: padding {self.padding} must be at most half the "
                             f"kernel {self.kernel_size}")
        self._buf = Buffers(self._name)
        self._in_shape = None
        self._x = None

    @property
    def _name(self):
        return f"{type(self).__name__}({self.kernel_size[0]}x{self.kernel_size[1]})"

    def _geometry(self):
        return self.kernel_size, self.stride, self.padding

    _last_shapes = None     # (input shape, output shape) of the last _out_shape

    def _out_shape(self, x_shape):
        last = self._last_shapes        # one read: another thread may replace it
        if last is not None and last[0] == x_shape:
            return last[1]
        try:
            out = _core.pool2d_output_shape(x_shape, *self._geometry())
        except ValueError as exc:
            raise ValueError(f"{self._name}: input of shape {x_shape} does not fit ({exc})") \
                from None
        self._last_shapes = (x_shape, out)
        return out

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError("expects samples of shape (C, H, W)")
        try:
            return _core.pool2d_output_shape((1,) + tuple(input_shape), *self._geometry())[1:]
        except ValueError as exc:
            raise ValueError(f"cannot take it ({exc})") from None

    def _prepare(self, x):
        x = image_input(self._name, x)
        if x.shape != self._in_shape:
            self._in_shape = x.shape
            self._resize(self._out_shape(x.shape))
        self._x = x
        return x

    def _forget(self):
        self._x = None

    def get_config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


@register_layer
class MaxPool2d(_Pool2d):
    """The maximum of each window (padding counts as -infinity); the
    gradient goes to the first maximum of the window, as in PyTorch.

    ``backward(grad, relu_before=True)`` also passes the gradient back
    through a ReLU applied just before the pooling (Sequential does this and
    skips the ReLU's own step): each window's gradient goes only to its
    maximum, where the ReLU's derivative is (maximum > 0), so the pooled
    gradient is masked by (y > 0) as it is spread, in the same pass, with
    the bits of the two separate steps."""

    predict_traceable = True

    absorbs_relu_backward = True

    @property
    def fuses_after_conv(self):
        """Whether a Conv2d's forward_pool may compute this layer's forward
        (2x2 windows, stride 2, no padding: MaxPool2d(2))."""
        return self._geometry() == ((2, 2), (2, 2), (0, 0))

    def fused_outputs(self, in_shape, x):
        """The (y, argmax) buffers for an input of ``in_shape``, which the
        layer before fills (Conv2d.forward_pool) in place of this layer's
        forward; ``x`` stands for the input (backward needs only y, argmax
        and the shape)."""
        if in_shape != self._in_shape:
            self._in_shape = in_shape
            self._resize(self._out_shape(in_shape))
        self._x = x
        return self._y, self._argmax

    def _resize(self, out):
        self._y = self._buf.get("y", out)
        self._argmax = self._buf.get("argmax", out, np.int32)
        self._dx = None

    def forward(self, x):
        x = self._prepare(x)
        _core.maxpool2d_forward(x, self._y, self._argmax, *self._geometry())
        return self._y

    def backward(self, grad, input_grad=True, relu_before=False):
        if self._x is None:
            raise not_ready(self)
        grad = check_grad(self, grad, self._y.shape)
        if self._dx is None:
            self._dx = self._buf.get("dx", self._in_shape)
        _core.maxpool2d_backward(grad, self._argmax, self._dx, *self._geometry(),
                                 relu_y=self._y if relu_before else None)
        return self._dx

    def _infer(self, x, ws):
        x = image_input(self._name, x)
        y = ws.take(self._out_shape(x.shape), x)
        _core.maxpool2d_forward(x, y, None, *self._geometry())
        return y


@register_layer
class AvgPool2d(_Pool2d):
    """The mean of each window, padding counted as zeros in the divisor
    (PyTorch's default count_include_pad=True)."""

    predict_traceable = True

    def _resize(self, out):
        self._y = self._buf.get("y", out)
        self._dx = None

    def forward(self, x):
        x = self._prepare(x)
        _core.avgpool2d_forward(x, self._y, *self._geometry())
        return self._y

    def backward(self, grad, input_grad=True):
        if self._x is None:
            raise not_ready(self)
        grad = check_grad(self, grad, self._y.shape)
        if self._dx is None:
            self._dx = self._buf.get("dx", self._in_shape)
        _core.avgpool2d_backward(grad, self._dx, *self._geometry())
        return self._dx

    def _infer(self, x, ws):
        x = image_input(self._name, x)
        y = ws.take(self._out_shape(x.shape), x)
        _core.avgpool2d_forward(x, y, *self._geometry())
        return y


@register_layer
class GlobalAvgPool2d(Layer):
    """The mean of each channel's plane: (N, C, H, W) -> (N, C), as
    PyTorch's AdaptiveAvgPool2d(1) followed by flattening."""

    predict_traceable = True

    def __init__(self):
        self._buf = Buffers(self._name)
        self._in_shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError("expects samples of shape (C, H, W)")
        return (input_shape[0],)

    def forward(self, x):
        x = image_input(self._name, x)
        if x.shape != self._in_shape:
            self._in_shape = x.shape
            self._y = self._buf.get("y", x.shape[:2])
            self._dx = None
        _core.global_avgpool_forward(x, self._y)
        return self._y

    def backward(self, grad, input_grad=True):
        if self._in_shape is None:
            raise not_ready(self)
        grad = check_grad(self, grad, self._y.shape)
        if self._dx is None:
            self._dx = self._buf.get("dx", self._in_shape)
        _core.global_avgpool_backward(grad, self._dx)
        return self._dx

    def _infer(self, x, ws):
        x = image_input(self._name, x)
        y = ws.take(x.shape[:2], x)
        _core.global_avgpool_forward(x, y)
        return y

    def _forget(self):
        self._in_shape = None
