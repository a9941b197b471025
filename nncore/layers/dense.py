"""Dense: the fully connected layer, ``y = activation(x @ weight + bias)``."""
import math
import numbers

import numpy as np

from .. import _core, _guard
from .. import init as _init
from ..validation import check_finite, layer_input
from .activations import ACTIVATION_LAYERS, RELU_FAMILY
from .base import Buffers, Layer, Param, check_grad, not_ready
from .registry import register_layer

__all__ = ["Dense", "check_sgd_lr"]

_F32 = np.float32
_ACT = _core.ACT_CODES
_rows_f32 = _core.rows_f32
_dense_forward = _core.dense_forward
_dense_backward = _core.dense_backward
# Activations the GEMM epilogue applies (csrc/gemm.c), by name.
EPILOGUE_ACTS = frozenset(name for name, code in _ACT.items()
                          if name is not None and code in _core.EPILOGUE_ACTS)


def check_sgd_lr(value):
    if type(value) is float and math.isfinite(value):      # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"backward: sgd_lr must be a finite number, got {value!r}")
    return float(value)


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Dense: {name} must be a positive int, got {value!r}")
    return int(value)


@register_layer
class Dense(Layer):
    """A fully connected layer: ``y = activation(x @ weight + bias)``.

    Parameters
    ----------
    in_features, out_features : int
    activation : None, "relu", "leaky_relu" (slope 0.01), "sigmoid", "tanh",
        "gelu" or "softmax". "relu" is fused into the GEMM epilogue.
    bias : bool
    init : "auto" (default), a name from ``nncore.init.INITIALIZERS``, or a
        callable ``f(fan_in, fan_out, rng) -> array (fan_in, fan_out)``.
        "auto" draws He-uniform weights when the activation is in the ReLU
        family (relu, leaky_relu, gelu) -- its own, or the layer that follows
        it in a ``Sequential`` -- and Glorot-uniform otherwise. Biases start
        at zero.

    Weights are drawn from nncore's seeded generator when the layer is placed
    in a ``Sequential`` or first used (``.weight``, ``forward``,
    ``parameters``, ``state_dict``), whichever comes first.

    Attributes ``weight`` (in, out), ``bias`` (out,) or None, ``grad_weight``,
    ``grad_bias``: float32 C-contiguous arrays, writable in place; assigning
    ``layer.weight = array`` (or any of the four) copies into the existing
    array, so optimizers and ``parameters()`` keep referring to it.
    """

    def __init__(self, in_features, out_features, activation=None, *, bias=True, init="auto"):
        self.in_features = _check_size("in_features", in_features)
        self.out_features = _check_size("out_features", out_features)
        if activation == "none" or activation == "linear":
            activation = None
        if activation is not None and (not isinstance(activation, str)
                                       or activation not in ACTIVATION_LAYERS):
            raise ValueError(f"{self._name}: unknown activation {activation!r}; expected None "
                             f"or one of {sorted(ACTIVATION_LAYERS)}")
        if not (callable(init) or (isinstance(init, str) and (
                init == "auto" or init in _init.INITIALIZERS))):
            raise ValueError(f"{self._name}: unknown init {init!r}; expected 'auto', one of "
                             f"{sorted(_init.INITIALIZERS)} or a callable")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{self._name}: bias must be True or False, got {bias!r}")
        self.activation = activation
        self.init = init
        n_in, n_out = self.in_features, self.out_features
        # weight and its gradient in float32, plus the float64 draw of the
        # initialiser: refuse up front what cannot fit.
        _guard.check_memory(16 * n_in * n_out, f"{self._name}: its {n_in} x {n_out} weights")
        what = f"{self._name}: its parameters"
        self._w = _guard.zeros((n_in, n_out), _F32, what)
        self._b = _guard.zeros(n_out, _F32, what) if bias else None
        self._gw = _guard.zeros((n_in, n_out), _F32, what)
        self._gb = _guard.zeros(n_out, _F32, what) if bias else None
        # The arrays never change identity (setters copy into them), so the
        # (param, grad) list optimizers step over is built once.
        self._params = ((self._w, self._gw),) + (((self._b, self._gb),) if bias else ())
        self._pending_init = True
        self._followed_by = None    # activation name of the next layer (see followed_by)
        # ReLU runs in the GEMM epilogue; other activations as a sub-layer.
        self._gemm_act = _ACT["relu"] if activation == "relu" else _ACT[None]
        self._act = (ACTIVATION_LAYERS[activation]()
                     if activation not in (None, "relu") else None)
        self._buf = Buffers(self._name)
        self._m = 0
        self._z = None    # GEMM output (the layer output unless _act)
        self._dz = None   # gradient at the GEMM output when activation == "relu"
        self._dx = None
        self._x = None
        # Mixed precision: set by Trainer(precision="bf16") while it trains
        # (nncore.trainer.mixed_precision): the forward and backward GEMMs in
        # bfloat16, everything else float32.
        self._bf16 = False

    @property
    def _name(self):
        return f"Dense({self.in_features}->{self.out_features})"

    # ---- self-description ----

    folds_sgd = True

    @property
    def input_shape(self):
        return (self.in_features,)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"expects samples of shape ({self.in_features},)")
        return (self.out_features,)

    @property
    def epilogue_acts(self):
        return EPILOGUE_ACTS if self.activation is None else frozenset()

    @classmethod
    def param_specs(cls, config):
        n_in, n_out = config.get("in_features"), config.get("out_features")
        for name, value in (("in_features", n_in), ("out_features", n_out)):
            _check_size(name, value)
        specs = [Param("weight", (n_in, n_out), "weight", True, 1)]
        if config.get("bias", True):
            specs.append(Param("bias", (n_out,), "bias", True, 0))
        return specs

    def gemm_link(self):
        if self.activation not in (None, "relu"):
            return None
        if self._pending_init:
            self._initialize()
        return (self._w, self._b, self._gemm_act)

    def followed_by(self, act_name):
        if self._pending_init:
            self._followed_by = act_name

    # ---- parameters ----

    def _initialize(self):
        act = self.activation or self._followed_by
        init = self.init
        if init == "auto":
            init = "he_uniform" if act in RELU_FAMILY else "glorot_uniform"
        fn = _init.INITIALIZERS[init] if isinstance(init, str) else init
        w = _guard.as_array(fn(self.in_features, self.out_features, _init.get_generator()),
                            self._name, "the initialiser's result")
        if w.shape != self._w.shape:
            raise ValueError(f"{self._name}: init returned shape {w.shape}, "
                             f"expected {self._w.shape}")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}: init returned dtype {w.dtype}, expected real numbers")
        check_finite(self._name, "the initialiser's result", w)
        self._w[...] = w
        self._pending_init = False

    def reset_parameters(self):
        """Draw new weights (as at construction) and zero the bias."""
        self._initialize()
        if self._b is not None:
            self._b[...] = 0.0

    def _set(self, target, value, name):
        if target is None:
            raise ValueError(f"{self._name} has no bias (bias=False)")
        arr = _guard.as_array(value, self._name, name)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}: {name} must hold real numbers, got {arr.dtype}")
        if arr.shape != target.shape:
            raise ValueError(f"{self._name}: {name} has shape {arr.shape}, "
                             f"expected {target.shape}")
        if not name.startswith("grad"):
            check_finite(self._name, name, arr)
        target[...] = arr

    @property
    def weight(self):
        if self._pending_init:
            self._initialize()
        return self._w

    @weight.setter
    def weight(self, value):
        self._set(self._w, value, "weight")
        self._pending_init = False

    @property
    def bias(self):
        return self._b

    @bias.setter
    def bias(self, value):
        self._set(self._b, value, "bias")

    @property
    def grad_weight(self):
        return self._gw

    @grad_weight.setter
    def grad_weight(self, value):
        self._set(self._gw, value, "grad_weight")

    @property
    def grad_bias(self):
        return self._gb

    @grad_bias.setter
    def grad_bias(self, value):
        self._set(self._gb, value, "grad_bias")

    def named_parameters(self):
        if self._pending_init:
            self._initialize()
        out = [("weight", self._w, self._gw)]
        if self._b is not None:
            out.append(("bias", self._b, self._gb))
        return out

    def parameters(self):
        if self._pending_init:
            self._initialize()
        return list(self._params)

    # ---- passes ----

    def _resize(self, m):
        self._m = m
        self._z = self._buf.get("z", (m, self.out_features))
        if self.activation == "relu":
            self._dz = self._buf.get("dz", (m, self.out_features))
        if self._dx is not None:
            self._dx = self._buf.get("dx", (m, self.in_features))

    def _run(self, x, act):
        if self._pending_init:
            self._initialize()
        m = _rows_f32(x, self.in_features)
        if m < 0:
            x = layer_input(self._name, x, self.input_shape)
            m = x.shape[0]
        if m != self._m:
            self._resize(m)
        _dense_forward(x, self._w, self._b, self._z, act, self._bf16)
        self._x = x

    def forward(self, x):
        self._run(x, self._gemm_act)
        if self._act is not None:
            return self._act.forward(self._z)
        return self._z

    def forward_act(self, x, act_name):
        """forward with the following activation layer (one of
        ``epilogue_acts``) applied in the GEMM epilogue; that layer then only
        records this output (see Sequential)."""
        self._run(x, _ACT[act_name])
        return self._z

    def backward(self, grad, input_grad=True, *, sgd_lr=None):
        """Fill grad_weight and grad_bias from the output gradient; return the
        input gradient (None with ``input_grad=False``).

        With ``sgd_lr``, apply plain SGD instead (what ``Trainer.fit`` does
        for ``SGD`` without momentum or weight decay): the weight update is
        folded into the weight-gradient GEMM, ``weight += -sgd_lr * x^T grad``
        (one pass over the weights instead of three, bitwise the same result
        as the gradient followed by ``SGD.step``), and grad_weight is left
        as it was; grad_bias is filled and the bias stepped. The input
        gradient uses the weights from before the update."""
        x = self._x
        if x is None:
            raise not_ready(self)
        if sgd_lr is not None:
            sgd_lr = check_sgd_lr(sgd_lr)
        if self._act is not None:
            grad = self._act.backward(grad)
        elif _rows_f32(grad, self.out_features) != self._m:
            grad = check_grad(self, grad, self._z.shape)
        # the layer's own ReLU (activation="relu") runs inside the C backward
        z, dz = (self._z, self._dz) if self.activation == "relu" else (None, None)
        dx = None
        if input_grad:
            if self._dx is None:
                self._dx = self._buf.get("dx", (self._m, self.in_features))
            dx = self._dx
        if sgd_lr is None:
            _dense_backward(x, self._w, grad, dx, self._gw, self._gb, None, None, z, dz,
                            self._bf16)
        else:
            _dense_backward(x, self._w, grad, dx, None, self._gb, sgd_lr, self._b, z, dz,
                            self._bf16)
        return dx

    def _infer(self, x, ws, act=None):
        if self._pending_init:
            self._initialize()
        m = _rows_f32(x, self.in_features)
        if m < 0:
            x = layer_input(self._name, x, self.input_shape)
            m = x.shape[0]
        z = ws.get(id(self), (m, self.out_features))
        _dense_forward(x, self._w, self._b, z, self._gemm_act if act is None else act)
        if self._act is not None:
            return self._act._infer(z, ws)
        return z

    def infer_act(self, x, ws, act_name):
        """``_infer`` with the following activation in the epilogue."""
        return self._infer(x, ws, _ACT[act_name])

    def _forget(self):
        self._x = None
        if self._act is not None:
            self._act._forget()

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "bias": self._b is not None,
                "init": self.init if isinstance(self.init, str) else "auto"}

    def __repr__(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        bias = "" if self._b is not None else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{act}{bias})"
