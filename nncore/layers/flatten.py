"""Flatten: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...), as a view."""
import math

from .base import Layer, as_input, check_grad, not_ready
from .registry import register_layer

__all__ = ["Flatten"]


@register_layer
class Flatten(Layer):
    """Flattens every axis but the batch axis (PyTorch's ``nn.Flatten()``).
    Both passes return views: no copy, no buffer."""

    predict_traceable = True

    def __init__(self):
        self._in_shape = None

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x):
        x = as_input(self, x)
        self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad, input_grad=True):
        shape = self._in_shape
        if shape is None:
            raise not_ready(self)
        grad = check_grad(self, grad, (shape[0], math.prod(shape[1:])))
        return grad.reshape(shape)

    def _infer(self, x, ws):
        x = as_input(self, x)
        return x.reshape(x.shape[0], -1)

    def _forget(self):
        self._in_shape = None
