"""Dense: the fully connected layer, ``y = activation(x @ weight + bias)``."""
import math
import numbers

from .. import _core
from .. import init as _init
from ..validation import layer_input
from .base import Buffers, Param, check_grad, not_ready
from .registry import register_layer
from .weighted import WeightedLayer

__all__ = ["Dense", "check_sgd_lr"]

_ACT = _core.ACT_CODES
_rows_f32 = _core.rows_f32
_dense_forward = _core.dense_forward
_dense_backward = _core.dense_backward


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
class Dense(WeightedLayer):
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

    predict_traceable = True

    def __init__(self, in_features, out_features, activation=None, *, bias=True, init="auto"):
        self.in_features = _check_size("in_features", in_features)
        self.out_features = _check_size("out_features", out_features)
        if not (callable(init) or (isinstance(init, str) and (
                init == "auto" or init in _init.INITIALIZERS))):
            raise ValueError(f"{self._name}: unknown init {init!r}; expected 'auto', one of "
                             f"{sorted(_init.INITIALIZERS)} or a callable")
        self._setup(activation, init, bias, (self.in_features, self.out_features),
                    self.out_features)
        self._buf = Buffers(self._name)
        self._m = 0
        self._z = None    # GEMM output (the layer output unless _act)
        self._dz = None   # gradient at the GEMM output when activation == "relu"
        self._dx = None
        self._x = None

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

    # ---- parameters ----

    def _draw(self, init):
        fn = _init.INITIALIZERS[init] if isinstance(init, str) else init
        return fn(self.in_features, self.out_features, _init.get_generator())

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

    # A frozen model's weights regrouped for one-sample calls, once per split:
    # {parts: dense_split_weights' array}; None (unfrozen): the weights may
    # change, so w is read as it is.
    _packs = None

    def _split(self, m):
        """(regrouped weights, parts) for an m-row call, or None: unfrozen,
        more than one row, or a layer the chain does not split. Each
        thread's part of w is then one run of memory (one sample through
        3136 -> 128 on 2 threads: 16.4 -> 9.6 us, docs/measurements.md)."""
        packs = self._packs
        if packs is None or m != 1:
            return None
        parts = _core.dense_chain_parts(self.in_features, self.out_features,
                                        _core.get_num_threads())
        if parts < 2:
            return None
        if parts not in packs:
            packs[parts] = _core.dense_split_weights(self._w, parts)
        return packs[parts], parts

    def _infer(self, x, ws, act=None):
        if self._pending_init:
            self._initialize()
        m = _rows_f32(x, self.in_features)
        if m < 0:
            x = layer_input(self._name, x, self.input_shape)
            m = x.shape[0]
        z = ws.take((m, self.out_features), x)
        _dense_forward(x, self._w, self._b, z, self._gemm_act if act is None else act,
                       split=self._split(m))
        if self._act is not None:
            return self._act._infer(z, ws)
        return z

    def infer_act(self, x, ws, act_name):
        """``_infer`` with the following activation in the epilogue."""
        return self._infer(x, ws, _ACT[act_name])

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "bias": self._b is not None,
                "init": self.init if isinstance(self.init, str) else "auto"}

    def __repr__(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        bias = "" if self._b is not None else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{act}{bias})"
