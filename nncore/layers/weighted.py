"""What Dense and Conv2d share: a weight, an optional bias and their
gradients, drawn lazily; an optional activation, ReLU in the GEMM epilogue
and the others as a sub-layer."""
import numpy as np

from .. import _core, _guard
from ..validation import assign_param, check_finite
from .activations import ACTIVATION_LAYERS, RELU_FAMILY
from .base import Layer

__all__ = ["WeightedLayer", "EPILOGUE_ACTS"]

_F32 = np.float32
_ACT = _core.ACT_CODES
# Activations the GEMM epilogue applies (csrc/gemm.c), by name.
EPILOGUE_ACTS = frozenset(name for name, code in _ACT.items()
                          if name is not None and code in _core.EPILOGUE_ACTS)


class WeightedLayer(Layer):
    """Base of layers computing ``activation(x (*) weight + bias)``.

    Subclasses call ``_setup(activation, init, bias, weight_shape, n_out)``
    in their constructor and implement ``_draw(init_name)``, returning the
    initial weights. Weights are drawn from nncore's seeded generator when
    first needed (``.weight``, ``forward``, ``parameters``, ``state_dict``)
    or when the layer is placed in a Sequential, which first says which
    activation follows ("auto" init: He-uniform before a ReLU-family
    activation, Glorot-uniform otherwise). Assigning ``layer.weight = array``
    (or bias, grad_weight, grad_bias) copies into the existing array, so
    optimizers and ``parameters()`` keep referring to it.

    Mixed precision: ``_bf16`` (set by ``Trainer(precision="bf16")`` while it
    trains, see ``trainer.mixed_precision``) runs the forward and backward
    GEMMs in bfloat16; weights, gradients and everything else stay float32,
    and inference (``_infer``, predict) runs in float32."""

    supports_bf16 = True

    def _setup(self, activation, init, bias, weight_shape, n_out):
        if activation in ("none", "linear"):
            activation = None
        if activation is not None and (not isinstance(activation, str)
                                       or activation not in ACTIVATION_LAYERS):
            raise ValueError(f"{self._name}: unknown activation {activation!r}; expected None "
                             f"or one of {sorted(ACTIVATION_LAYERS)}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"{self._name}: bias must be True or False, got {bias!r}")
        self.activation, self.init = activation, init
        # weight and its gradient in float32, plus the float64 draw of the
        # initialiser: refuse up front what cannot fit.
        size = int(np.prod(weight_shape, dtype=object))
        _guard.check_memory(16 * size, lambda: (
            f"{self._name}: its {' x '.join(map(str, weight_shape))} weights"))
        what = f"{self._name}: its parameters"
        self._w = _guard.zeros(weight_shape, _F32, what)
        self._gw = _guard.zeros(weight_shape, _F32, what)
        self._b = _guard.zeros(n_out, _F32, what) if bias else None
        self._gb = _guard.zeros(n_out, _F32, what) if bias else None
        # The arrays never change identity, so the (param, grad) list
        # optimizers step over is built once.
        self._params = ((self._w, self._gw),) + (((self._b, self._gb),) if bias else ())
        self._pending_init = True
        self._followed_by = None    # the next layer's activation (see followed_by)
        self._gemm_act = _ACT["relu"] if activation == "relu" else _ACT[None]
        self._act = (ACTIVATION_LAYERS[activation]()
                     if activation not in (None, "relu") else None)

    # ---- self-description ----

    @property
    def epilogue_acts(self):
        return EPILOGUE_ACTS if self.activation is None else frozenset()

    def followed_by(self, act_name):
        if self._pending_init:
            self._followed_by = act_name

    # ---- parameters ----

    def _initialize(self):
        init = self.init
        if init == "auto":
            act = self.activation or self._followed_by
            init = "he_uniform" if act in RELU_FAMILY else "glorot_uniform"
        w = _guard.as_array(self._draw(init), self._name, "the initialiser's result")
        if w.shape != self._w.shape:
            raise ValueError(f"{self._name}: init returned shape {w.shape}, "
                             f"expected {self._w.shape}")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}: init returned dtype {w.dtype}, expected real numbers")
        check_finite(self._name, "the initialiser's result", w)
        self._w[...] = w
        self._pending_init = False

    def _draw(self, init):
        raise NotImplementedError

    def reset_parameters(self):
        """Draw new weights (as at construction) and zero the bias."""
        self._initialize()
        if self._b is not None:
            self._b[...] = 0.0

    def _set(self, target, value, name):
        if target is None:
            raise ValueError(f"{self._name} has no bias (bias=False)")
        assign_param(self._name, name, target, value)

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

    def _forget(self):
        self._x = None
        if self._act is not None:
            self._act._forget()
