"""BatchNorm1d and BatchNorm2d, exactly PyTorch's (csrc/batchnorm.c)."""
import math
import numbers

import numpy as np

from .. import _core, _guard
from ..validation import assign_param, layer_input
from .base import Buffers, Layer, Param, check_grad, is_batch, not_ready
from .registry import register_layer

__all__ = ["BatchNorm1d", "BatchNorm2d"]

_F32 = np.float32
_ACT = _core.ACT_CODES


def _ones(n, what):
    arr = _guard.empty(n, _F32, what)
    arr.fill(1.0)
    return arr


class _OwnArray:
    """A per-channel array attribute that keeps its identity for the layer's
    life (optimizers and predict's recorded plans hold the array): the
    constructor sets it (an array, or None when the layer has none), and
    later assignments copy into it, as Dense's ``weight`` does."""

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, layer, owner=None):
        return self if layer is None else layer.__dict__[self.slot]

    def __set__(self, layer, value):
        if self.slot not in layer.__dict__:         # the constructor's
            layer.__dict__[self.slot] = value
            return
        target = layer.__dict__[self.slot]
        if target is None:
            raise ValueError(f"{layer._name} has no {self.name} (see affine and "
                             f"track_running_stats)")
        assign_param(layer._name, self.name, target, value)


class _BatchNorm(Layer):
    """Normalises each channel (axis 1) over the batch and the other axes.

    Training mode uses the batch's mean and biased variance and updates the
    running statistics, ``running = (1 - momentum) * running + momentum *
    batch`` with the unbiased variance; evaluation mode uses the running
    statistics (with ``track_running_stats=False``, always the batch's).
    ``affine``: a learned per-channel scale ``weight`` (starts at 1) and
    shift ``bias`` (starts at 0). ``momentum`` must be a number (PyTorch's
    cumulative average, momentum=None, is not offered)."""

    same_shape = True
    _ranks = ()        # accepted input ranks, batch included

    weight = _OwnArray()
    bias = _OwnArray()
    grad_weight = _OwnArray()
    grad_bias = _OwnArray()
    running_mean = _OwnArray()
    running_var = _OwnArray()

    @property
    def eps(self):
        """Fixed at construction (predict's recorded plans hold it)."""
        return self._eps

    @property
    def eval_affine(self):
        """Whether predict applies a fixed per-channel affine map (running
        statistics), which a convolution before it may fold in."""
        return self.track_running_stats

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        owner = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) \
                or num_features < 1:
            raise ValueError(f"{owner}: num_features must be a positive int, got "
                             f"{num_features!r}")
        for name, value in (("eps", eps), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
        for name, value in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
        self.num_features = c = int(num_features)
        self._eps, self.momentum = float(eps), float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        what = f"{self._name}: its parameters"
        # arrays of their own, updated in place (see _OwnArray)
        self.weight = _ones(c, what) if affine else None
        self.bias = _guard.zeros(c, _F32, what) if affine else None
        self.grad_weight = _guard.zeros(c, _F32, what) if affine else None
        self.grad_bias = _guard.zeros(c, _F32, what) if affine else None
        self.running_mean = _guard.zeros(c, _F32, what) if track_running_stats else None
        self.running_var = _ones(c, what) if track_running_stats else None
        self._mean = _guard.zeros(c, _F32, what)       # the statistics the backward uses
        self._invstd = _guard.zeros(c, _F32, what)
        self._buf = Buffers(self._name)
        self._x = None
        self._shape = None
        self._batch_stats = True

    @property
    def _name(self):
        return f"{type(self).__name__}({self.num_features})"

    # ---- self-description ----

    @classmethod
    def param_specs(cls, config):
        c = config.get("num_features")
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"{cls.__name__}: num_features must be a positive int, got {c!r}")
        specs = []
        if config.get("affine", True):
            # a normalisation's scale and shift: not the weights of a linear
            # map (filter normalisation and weight decay groups leave them out)
            specs += [Param("weight", (c,), "other", True, 0),
                      Param("bias", (c,), "bias", True, 0)]
        if config.get("track_running_stats", True):
            specs += [Param("running_mean", (c,), "running", False, 0),
                      Param("running_var", (c,), "running", False, 0)]
        return specs

    def output_shape(self, input_shape):
        if len(input_shape) + 1 not in self._ranks or input_shape[0] != self.num_features:
            raise ValueError(f"expects samples of {self._sample_desc}")
        return tuple(input_shape)

    def named_parameters(self):
        if not self.affine:
            return []
        return [("weight", self.weight, self.grad_weight), ("bias", self.bias, self.grad_bias)]

    def named_buffers(self):
        if not self.track_running_stats:
            return []
        return [("running_mean", self.running_mean), ("running_var", self.running_var)]

    # ---- passes ----

    def _input(self, x):
        if not (type(x) is np.ndarray and x.ndim in self._ranks and is_batch(x, x.shape)):
            x = layer_input(self._name, x)
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            raise ValueError(f"{self._name}: input must be (batch, {self._sample_desc}), got "
                             f"shape {x.shape}")
        return x

    # A ReLU after it folds into its forward pass (Sequential's epilogue
    # rule), and its backward takes that ReLU's gradient too: two passes over
    # the activations fewer per step in training.
    epilogue_acts = frozenset({"relu"})
    absorbs_act_relu_backward = True

    def forward(self, x):
        return self._forward(x, _ACT[None])

    def forward_act(self, x, act_name):
        """forward with the following ReLU applied in the same pass; that
        layer then only records this output (see Sequential)."""
        return self._forward(x, _ACT[act_name])

    def _forward(self, x, act):
        x = self._input(x)
        if x.shape != self._shape:
            self._shape = x.shape
            self._y = self._buf.get("y", x.shape)
            self._dx = None
        self._batch_stats = self.training or not self.track_running_stats
        if self._batch_stats:
            if x.size // self.num_features <= 1:
                raise ValueError(f"{self._name}: expected more than 1 value per channel when "
                                 f"training, got input of shape {x.shape}")
            _core.batchnorm_forward_train(x, self.weight, self.bias,
                                          self.running_mean if self.training else None,
                                          self.running_var if self.training else None,
                                          self._y, self._mean, self._invstd, self.momentum,
                                          self.eps, act)
        else:
            _core.batchnorm_forward_eval(x, self.weight, self.bias, self.running_mean,
                                         self.running_var, self._y, self.eps)
            if act != _ACT[None]:
                _core.act_forward(act, self._y, self._y)
            np.copyto(self._mean, self.running_mean)
            np.divide(1.0, np.sqrt(self.running_var.astype(np.float64) + self.eps),
                      out=self._invstd, casting="same_kind")
        self._x = x
        return self._y

    def backward(self, grad, input_grad=True, relu_after=False):
        """The gradients for ``grad``; with ``relu_after``, ``grad`` is that of
        the ReLU folded into the last ``forward_act`` (its output y), and
        counts only where y > 0: the ReLU's backward in the same passes."""
        x = self._x
        if x is None:
            raise not_ready(self)
        grad = check_grad(self, grad, x.shape)
        if self._dx is None:
            self._dx = self._buf.get("dx", x.shape)
        _core.batchnorm_backward(x, grad, self.weight, self._mean, self._invstd,
                                 self._dx if input_grad else None, self.grad_weight,
                                 self.grad_bias, self._batch_stats,
                                 self._y if relu_after else None)
        return self._dx if input_grad else None

    def _infer(self, x, ws):
        x = self._input(x)
        y = ws.take(x.shape, x)
        if self.track_running_stats:
            _core.batchnorm_forward_eval(x, self.weight, self.bias, self.running_mean,
                                         self.running_var, y, self.eps)
        else:       # PyTorch: without running statistics, eval uses the batch's
            c = (self.num_features,)
            _core.batchnorm_forward_train(x, self.weight, self.bias, None, None, y,
                                          ws.get((id(self), "mean"), c),
                                          ws.get((id(self), "invstd"), c), self.momentum,
                                          self.eps)
        return y

    def infer_act(self, x, ws, act_name):
        """The predict step with the following activation folded in (the
        epilogue rule): here a second pass, in place."""
        y = self._infer(x, ws)
        _core.act_forward(_ACT[act_name], y, y)
        return y

    def _forget(self):
        self._x = None

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats}


@register_layer
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs (PyTorch's BatchNorm1d)."""

    # predict's steps are recorded kernel calls when it uses the running statistics
    predict_traceable = _BatchNorm.eval_affine

    _ranks = (2, 3)
    _sample_desc = "shape (C,) or (C, L) with C = num_features"


@register_layer
class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs (PyTorch's BatchNorm2d)."""

    # predict's steps are recorded kernel calls when it uses the running statistics
    predict_traceable = _BatchNorm.eval_affine

    _ranks = (4,)
    _sample_desc = "shape (C, H, W) with C = num_features"
