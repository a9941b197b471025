"""Layers: Dense, the parameter-free activations, Dropout and Sequential.

Every layer works on 2-D float32 arrays of shape (batch, features). Layers
own their parameters, gradients and forward/backward buffers as float32
C-contiguous NumPy arrays. Buffers are allocated for the largest batch seen
and reused (smaller batches get views of them), so a steady-state training
step allocates nothing proportional to the batch.

Conventions (as PyTorch's modules, with explicit passes):

- ``forward(x)`` returns the layer's output buffer: it is overwritten by the
  next ``forward`` of the same layer, so copy it to keep it.
- ``backward(grad)`` returns the gradient with respect to the forward input
  and *overwrites* (never accumulates) the parameter gradients.
- A layer keeps a reference to its forward input (not a copy) for the
  backward pass: do not modify that array in place between the two.
- NaN and Inf in the input are not checked (a full pass would cost as much as
  the ReLU that follows): they propagate to the output and gradients as IEEE
  arithmetic says, as in PyTorch.

Input that is not float32 C-contiguous is converted once (a copy); input of the
wrong rank or feature count raises ``ValueError`` naming the layer, e.g.
``Dense(784->256): input has 783 features, expected 784``.
"""
import functools
import math
import numbers
import threading

import numpy as np

from . import _core
from . import _guard
from . import init as _init

__all__ = ["Layer", "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Dropout", "Sequential", "LAYERS", "register_layer", "layer_from_config"]

_F32 = np.float32
_GUARD_FLOATS = _guard.CHECK_ABOVE // 4
_get_ident = threading.get_ident
_ACT = _core.ACT_CODES
_rows_f32 = _core.rows_f32
_act_forward = _core.act_forward
_act_backward = _core.act_backward
_dense_forward = _core.dense_forward
_dense_backward = _core.dense_backward
_sgd_step = _core.sgd_step
_DenseChain = _core.DenseChain

# The active profiler's recorder (nncore.profile sets it), else None: then
# Sequential.forward/backward pay one global lookup.
_PROFILE = None

# Activations after which Dense(init="auto") draws He-uniform weights.
RELU_FAMILY = ("relu", "leaky_relu", "gelu")


def _shape_str(x):
    shape = getattr(x, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"a {type(x).__name__}"


def _to_f32_2d(layer, x, features, what="input"):
    """The slow path of input checking: convert x to a float32 C-contiguous
    2-D array with `features` columns (any if None), or raise naming `layer`."""
    arr = _guard.as_array(x, layer._name, what)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{layer._name}: {what} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = " (use x.reshape(1, -1) for a single sample)" if arr.ndim == 1 else ""
        raise ValueError(f"{layer._name}: {what} must be 2-D (batch, features), got "
                         f"{_shape_str(arr)}{hint}")
    if features is not None and arr.shape[1] != features:
        raise ValueError(f"{layer._name}: {what} has {arr.shape[1]} features, "
                         f"expected {features}")
    if arr.shape[0] == 0:
        raise ValueError(f"{layer._name}: {what} is an empty batch (0 rows)")
    return _guard.c_array(arr, _F32, layer._name, what)


def _check_grad(layer, grad, shape):
    """grad as float32 C-contiguous with the shape of the layer's output."""
    if _rows_f32(grad, shape[1]) == shape[0]:
        return grad
    arr = _to_f32_2d(layer, grad, None, "gradient")
    if arr.shape != shape:
        raise ValueError(f"{layer._name}: gradient has shape {arr.shape}, expected {shape} "
                         f"(the shape of the forward output)")
    return arr


def _not_ready(layer):
    return ValueError(f"{layer._name}: backward() called before forward()")


def _check_finite(owner, name, arr):
    with np.errstate(invalid="ignore"):
        if not np.isfinite(arr).all():
            raise ValueError(f"{owner}: {name} holds NaN or infinity")


class _Buffers:
    """Named float32 work arrays of shape (rows, cols), grown on demand and
    handed out as views for smaller batches (no allocation then). ``owner``
    names the layer in the MemoryError of a buffer too large to allocate."""

    __slots__ = ("_bases", "_owner", "_chain")

    def __init__(self, owner):
        self._bases = {}
        self._owner = owner
        self._chain = None

    def chain_plan(self, chain, rows):
        """The checked C plan (_core.DenseChain) of a predict chain (see
        _dense_chain_plan) for `rows` rows, writing into this workspace's
        buffers; the last one is kept, so repeated predicts of one size
        check only their input."""
        last = self._chain
        if last is not None and last[0] is chain and last[1].rows == rows:
            return last[1]
        outs = tuple(self.get(id(w), rows, w.shape[1]) for w, _, _ in chain)
        plan = _DenseChain(rows, chain[0][0].shape[0], chain, outs)
        self._chain = (chain, plan)
        return plan

    def get(self, name, rows, cols):
        base = self._bases.get(name)
        if base is None or base.shape[1] != cols or base.shape[0] < rows:
            base = _guard.empty((rows, cols), _F32,
                                lambda: f"{self._owner}: a ({rows}, {cols}) float32 buffer")
            self._bases[name] = base
        return base if base.shape[0] == rows else base[:rows]

    def clear(self):
        self._bases.clear()
        self._chain = None


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``; layers
    with parameters also ``named_parameters``; all implement ``get_config``
    (constructor keyword arguments, JSON-serialisable)."""

    training = True

    @property
    def _name(self):
        return type(self).__name__ + "()"

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad, input_grad=True):
        raise NotImplementedError

    def named_parameters(self):
        """A list of ``(name, param, grad)``; empty for parameter-free layers."""
        return []

    def parameters(self):
        """A list of ``(param, grad)`` array pairs, what optimizers step over."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def train(self, mode=True):
        """Set training mode (Dropout active); returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode (Dropout is the identity); returns self."""
        return self.train(False)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _forget(self):
        """Drop forward state: backward then raises."""

    def _infer(self, x, ws):
        """Evaluation-mode forward for ``Sequential.predict``, writing only
        into buffers of the per-call workspace ``ws`` (so concurrent calls
        never share one). Layers without their own fall back to ``forward``,
        which is then not thread-safe."""
        return self.forward(x)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _Activation(Layer):
    """A parameter-free elementwise (or row-wise) activation layer."""

    _code = None
    _saves_output = True   # backward reads y (else x), see csrc/act.c
    _param = 0.0

    def __init__(self):
        self._buf = _Buffers(self._name)
        self._shape = None
        self._y = None
        self._dx = None
        self._saved = None

    def _resize(self, shape):
        self._shape = shape
        self._y = self._buf.get("y", *shape)
        self._dx = self._buf.get("dx", *shape)

    def forward(self, x):
        if _rows_f32(x, -1) < 0:
            x = _to_f32_2d(self, x, None)
        if x.shape != self._shape:
            self._resize(x.shape)
        _act_forward(self._code, x, self._y, self._param)
        self._saved = self._y if self._saves_output else x
        return self._y

    def backward(self, grad, input_grad=True):
        saved = self._saved
        if saved is None:
            raise _not_ready(self)
        if _rows_f32(grad, self._shape[1]) != self._shape[0]:
            grad = _check_grad(self, grad, self._shape)
        _act_backward(self._code, saved, grad, self._dx, self._param)
        return self._dx

    def _infer(self, x, ws):
        if _rows_f32(x, -1) < 0:
            x = _to_f32_2d(self, x, None)
        y = ws.get(id(self), *x.shape)
        _act_forward(self._code, x, y, self._param)
        return y

    def _forget(self):
        self._saved = None


class ReLU(_Activation):
    """max(x, 0). After a ``Dense`` in a ``Sequential`` it is fused into the
    Dense's GEMM epilogue (same result, one pass fewer over memory)."""

    _code = _ACT["relu"]

    def _forward_fused(self, y):
        """Take the output of a Dense whose GEMM already applied the ReLU."""
        if y.shape != self._shape:
            self._resize(y.shape)
        self._saved = y
        return y

    @staticmethod
    def _infer_fused(y, ws):
        return y


class LeakyReLU(_Activation):
    """x where x > 0, else negative_slope * x (PyTorch's default slope 0.01)."""

    _code = _ACT["leaky_relu"]
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


class Sigmoid(_Activation):
    """1 / (1 + exp(-x))."""

    _code = _ACT["sigmoid"]


class Tanh(_Activation):
    """tanh(x)."""

    _code = _ACT["tanh"]


class GELU(_Activation):
    """The exact GELU, x * Phi(x) (PyTorch's default, approximate='none')."""

    _code = _ACT["gelu"]
    _saves_output = False


class Softmax(_Activation):
    """Row-wise softmax, numerically stable. To train a classifier, prefer
    logits with ``CrossEntropyLoss`` (which fuses the softmax exactly) and
    ``Sequential.predict_proba`` for probabilities."""

    _code = _ACT["softmax"]


ACTIVATION_LAYERS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh,
                     "gelu": GELU, "softmax": Softmax}


class Dropout(Layer):
    """Zero each element with probability ``p`` in training mode and scale the
    rest by 1 / (1 - p); the identity in evaluation mode.

    Masks come from a counter-based generator keyed by a fresh 64-bit draw
    from nncore's seeded generator at every training forward pass, so a run
    is reproducible under ``nncore.manual_seed`` and the masks do not depend
    on the thread count."""

    def __init__(self, p=0.5):
        if (isinstance(p, bool) or not isinstance(p, numbers.Real)
                or not (0.0 <= p < 1.0)):
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self._buf = _Buffers(self._name)
        self._shape = None
        self._y = None
        self._dx = None
        self._key = None      # None: the last forward was the identity
        self._ready = False

    @property
    def _name(self):
        return f"Dropout(p={self.p})"

    def forward(self, x):
        if _rows_f32(x, -1) < 0:
            x = _to_f32_2d(self, x, None)
        self._ready = True
        if not self.training or self.p == 0.0:
            self._key = None
            return x
        if x.shape != self._shape:
            self._shape = x.shape
            self._y = self._buf.get("y", *x.shape)
            self._dx = self._buf.get("dx", *x.shape)
        self._key = _init.next_key()
        _core.dropout_forward(x, self._y, self.p, self._key)
        return self._y

    def backward(self, grad, input_grad=True):
        if not self._ready:
            raise _not_ready(self)
        if self._key is None:
            return grad
        grad = _check_grad(self, grad, self._shape)
        _core.dropout_backward(grad, self._dx, self.p, self._key)
        return self._dx

    def _infer(self, x, ws):
        return _to_f32_2d(self, x, None) if _rows_f32(x, -1) < 0 else x

    def _forget(self):
        self._ready = False

    def get_config(self):
        return {"p": self.p}


def _dense_chain_plan(layers):
    """((weight, bias, epilogue code), ...) when predict can run the model as
    one chain of GEMMs: exactly Dense layers (no activation, or ReLU), each
    optionally followed by a ReLU (fused), and Dropouts (the identity in
    evaluation); else None. The arrays are the layers' own: assigning
    weights copies into them, so the plan never goes stale."""
    chain = []
    for layer in layers:
        kind = type(layer)
        if kind is Dense and layer.activation in (None, "relu"):
            chain.append([layer, _ACT["relu" if layer.activation else None]])
        elif kind is ReLU and chain and chain[-1][1] == _ACT[None]:
            chain[-1][1] = _ACT["relu"]
        elif kind is not Dropout:
            return None
    return tuple((dense._w, dense._b, act) for dense, act in chain) or None


def _no_input_grad(backward, grad):
    return backward(grad, False)


def _check_sgd_lr(value):
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
        self._followed_by = None    # activation name of the next layer (set by Sequential)
        # ReLU runs in the GEMM epilogue; other activations as a sub-layer.
        self._gemm_act = _ACT["relu"] if activation == "relu" else _ACT[None]
        self._act = (ACTIVATION_LAYERS[activation]()
                     if activation not in (None, "relu") else None)
        self._buf = _Buffers(self._name)
        self._m = 0
        self._z = None    # GEMM output (the layer output unless _act)
        self._dz = None   # gradient at the GEMM output when activation == "relu"
        self._dx = None
        self._x = None

    @property
    def _name(self):
        return f"Dense({self.in_features}->{self.out_features})"

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
        _check_finite(self._name, "the initialiser's result", w)
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
            _check_finite(self._name, name, arr)
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
        self._z = self._buf.get("z", m, self.out_features)
        if self.activation == "relu":
            self._dz = self._buf.get("dz", m, self.out_features)
        if self._dx is not None:
            self._dx = self._buf.get("dx", m, self.in_features)

    def _run(self, x, act):
        if self._pending_init:
            self._initialize()
        m = _rows_f32(x, self.in_features)
        if m < 0:
            x = _to_f32_2d(self, x, self.in_features)
            m = x.shape[0]
        if m != self._m:
            self._resize(m)
        _dense_forward(x, self._w, self._b, self._z, act)
        self._x = x

    def forward(self, x):
        self._run(x, self._gemm_act)
        if self._act is not None:
            return self._act.forward(self._z)
        return self._z

    def _forward_relu(self, x):
        """forward with a ReLU fused into the epilogue (the next layer is a
        ReLU that then only records this output): see Sequential."""
        self._run(x, _ACT["relu"])
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
            raise _not_ready(self)
        if sgd_lr is not None:
            sgd_lr = _check_sgd_lr(sgd_lr)
        if self._act is not None:
            grad = self._act.backward(grad)
        else:
            if _rows_f32(grad, self.out_features) != self._m:
                grad = _check_grad(self, grad, self._z.shape)
            if self.activation == "relu":
                _act_backward(_ACT["relu"], self._z, grad, self._dz)
                grad = self._dz
        dx = None
        if input_grad:
            if self._dx is None:
                self._dx = self._buf.get("dx", self._m, self.in_features)
            dx = self._dx
        if sgd_lr is None:
            _dense_backward(x, self._w, grad, dx, self._gw, self._gb)
        else:
            _dense_backward(x, self._w, grad, dx, None, self._gb, sgd_lr)
            if self._b is not None:
                _sgd_step(self._b, self._gb, None, sgd_lr, 0.0, 0.0, 0.0, False, True)
        return dx

    def _infer(self, x, ws, act=None):
        if self._pending_init:
            self._initialize()
        m = _rows_f32(x, self.in_features)
        if m < 0:
            x = _to_f32_2d(self, x, self.in_features)
            m = x.shape[0]
        z = ws.get(id(self), m, self.out_features)
        _dense_forward(x, self._w, self._b, z, self._gemm_act if act is None else act)
        if self._act is not None:
            return self._act._infer(z, ws)
        return z

    def _infer_relu(self, x, ws):
        return self._infer(x, ws, _ACT["relu"])

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


class Sequential(Layer):
    """Layers applied in order.

    ``forward(x)`` returns the last layer's output buffer; ``backward(grad)``
    overwrites every parameter gradient and returns the gradient with respect
    to the input (``backward(grad, input_grad=False)`` skips that last, and
    largest, GEMM when only the parameter gradients are needed, as in
    training). ``layers`` is a tuple: build a new Sequential to change it.

    Threads: ``predict`` and ``predict_proba`` may be called on one model
    from several threads at once (the kernels release the GIL, so the calls
    run in parallel): they read the parameters and write only into
    per-call buffers. ``forward``, ``backward`` and training (``Trainer.fit``,
    an optimizer step) use the layers' own buffers and change the parameters:
    one thread at a time per model. A second thread entering ``forward`` or
    ``backward`` while another is inside raises RuntimeError, and so does a
    ``backward`` in another thread than the last ``forward``. Calling
    ``predict`` while another thread trains the same model is memory-safe but
    may read weights in the middle of an update.

    Config format (``get_config()``, JSON-serialisable; ``from_config`` and
    ``layer_from_config`` rebuild a model from it)::

        {"type": "Sequential",
         "layers": [{"type": "Dense", "in_features": 784, "out_features": 256,
                     "activation": null, "bias": true, "init": "auto"},
                    {"type": "ReLU"},
                    {"type": "Dropout", "p": 0.5},
                    {"type": "LeakyReLU", "negative_slope": 0.01},
                    ...]}

    Each layer's entry is its ``type`` (a name in ``LAYERS``, extended by
    ``register_layer``) plus its constructor's keyword arguments. The config
    holds the architecture only: weights travel through
    ``state_dict()`` / ``load_state_dict()``, whose keys are
    ``"<layer index>.<weight|bias>"`` (nested Sequentials: ``"1.0.weight"``).
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                hint = (" (pass the layers as separate arguments: Sequential(*layers))"
                        if isinstance(layer, (list, tuple)) else "")
                raise TypeError(f"Sequential: argument {i} is a {type(layer).__name__}, "
                                f"not an nncore layer{hint}")
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("Sequential: the same layer object appears twice; each "
                             "position needs its own layer (they hold per-batch state)")
        self.layers = tuple(layers)
        self._busy = threading.Lock()     # held by forward/backward: one thread at a time
        self._owner = None                # the thread of the last forward
        self._workspaces = []             # predict buffers, one per concurrent call
        self._build_plan()
        for layer in self.layers:
            if isinstance(layer, Dense) and layer._pending_init:
                layer._initialize()

    def _build_plan(self):
        """Forward steps with Dense + ReLU fused, and He-init hints."""
        layers = self.layers
        # plan: the forward steps; infer: the same for predict (evaluation
        # mode, per-call buffers).
        plan, infer = [], []
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, Dense) and layer.activation is None and nxt is not None:
                kind = next((k for k, cls in ACTIVATION_LAYERS.items()
                             if type(nxt) is cls), None)
                if layer._pending_init:
                    layer._followed_by = kind
            if (i > 0 and type(layer) is ReLU and type(layers[i - 1]) is Dense
                    and layers[i - 1].activation is None):
                plan[-1] = layers[i - 1]._forward_relu
                plan.append(layer._forward_fused)
                infer[-1] = layers[i - 1]._infer_relu
                infer.append(ReLU._infer_fused)
            else:
                plan.append(layer.forward)
                infer.append(layer._infer)
        self._plan = tuple(plan)
        self._infer_plan = tuple(infer)
        self._chain = _dense_chain_plan(layers)
        # Without an input gradient, backward can stop at the first layer
        # that has parameters, and ask it for no input gradient.
        first = next((i for i, layer in enumerate(layers) if layer.parameters()), None)
        self._first_param = first
        # The plain backward passes, keyed by input_grad (see _backward_calls).
        self._backward_steps = {flag: tuple(step for _, step in self._backward_calls(flag))
                                for flag in (False, True)}
        self._params = tuple(pair for layer in layers for pair in layer.parameters())
        self._sgd_calls = None
        # Exactly Dense: a subclass may override backward without sgd_lr.
        self._sgd_foldable = first is not None and all(
            type(layer) is Dense for layer in layers if layer.parameters())

    @property
    def _name(self):
        return f"Sequential({len(self.layers)} layers)"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def _in_use(self):
        return RuntimeError(f"{self._name}: forward/backward called from two threads at "
                            "once; a model trains in one thread at a time (predict may be "
                            "shared)")

    def forward(self, x):
        if not self._busy.acquire(False):
            raise self._in_use()
        try:
            self._owner = _get_ident()
            if _PROFILE is not None:
                return _PROFILE.sequential_forward(self, x)
            if not self.layers:
                return _to_f32_2d(self, x, None) if _rows_f32(x, -1) < 0 else x
            for step in self._plan:
                x = step(x)
            return x
        finally:
            self._busy.release()

    def backward(self, grad, input_grad=True, *, sgd_lr=None):
        """Fill every parameter gradient and return the input gradient (None
        with ``input_grad=False``, which skips the first parameterised
        layer's input-gradient GEMM). With ``sgd_lr`` (every layer with
        parameters must be a Dense), apply plain SGD in the same pass instead
        of filling grad_weight: see ``Dense.backward``."""
        if sgd_lr is not None:
            sgd_lr = _check_sgd_lr(sgd_lr)
            if not self._sgd_foldable:
                raise ValueError(f"{self._name}.backward: sgd_lr needs every layer with "
                                 "parameters to be a Dense")
        if not self._busy.acquire(False):
            raise self._in_use()
        try:
            if self._owner is not None and self._owner != _get_ident():
                raise RuntimeError(f"{self._name}: backward() in another thread than the last "
                                   "forward(), which may have replaced what it needs; a model "
                                   "trains in one thread at a time")
            if _PROFILE is not None:
                return _PROFILE.sequential_backward(self, grad, input_grad, sgd_lr)
            if sgd_lr is None:
                steps = self._backward_steps[bool(input_grad)]
            else:
                # The calls for the last (input_grad, sgd_lr) are kept: the
                # rate changes at most once an epoch in training.
                cached = self._sgd_calls
                if cached is None or cached[0] != (input_grad, sgd_lr):
                    cached = self._sgd_calls = ((input_grad, sgd_lr), tuple(
                        step for _, step in self._backward_calls(input_grad, sgd_lr)))
                steps = cached[1]
            for step in steps:
                grad = step(grad)
            return grad if input_grad or self._first_param is None else None
        finally:
            self._busy.release()

    def _backward_calls(self, input_grad, sgd_lr=None):
        """[(layer index, grad -> grad)] in the order backward runs them:
        every layer, or without ``input_grad`` down to the first layer with
        parameters (asked for no input gradient); Dense layers get
        ``sgd_lr``. Sequential.backward runs these steps."""
        first = self._first_param
        calls = []
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            last = not input_grad and i == first
            if sgd_lr is not None and isinstance(layer, Dense):
                step = functools.partial(layer.backward, input_grad=not last, sgd_lr=sgd_lr)
            elif last:
                step = functools.partial(_no_input_grad, layer.backward)
            else:
                step = layer.backward
            calls.append((i, step))
            if last:
                break
        return calls

    def _infer(self, x, ws):
        if not self.layers:
            return _to_f32_2d(self, x, None) if _rows_f32(x, -1) < 0 else x
        chain = self._chain
        if chain is not None and _rows_f32(x, chain[0][0].shape[0]) > 0:
            # One C call for the whole chain (saves the per-layer Python).
            return ws.chain_plan(chain, x.shape[0]).run(x)
        for step in self._infer_plan:
            x = step(x, ws)
        return x

    # A lock cannot be copied or pickled: copies get their own.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_busy"], state["_workspaces"], state["_owner"]
        state["_sgd_calls"] = None       # bound to these layers; rebuilt on use
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._busy = threading.Lock()
        self._owner = None
        self._workspaces = []

    def parameters(self):
        return list(self._params)

    def named_parameters(self):
        out = []
        for i, layer in enumerate(self.layers):
            out += [(f"{i}.{name}", p, g) for name, p, g in layer.named_parameters()]
        return out

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def _forget(self):
        # Never while another thread is inside, nor another thread's pending state.
        if not self._busy.acquire(False):
            return
        try:
            if self._owner in (None, _get_ident()):
                for layer in self.layers:
                    layer._forget()
        finally:
            self._busy.release()

    # ---- inference ----

    def predict(self, X, batch_size=1024):
        """The model's output for X (n, features) in evaluation mode (Dropout
        is the identity), computed in chunks of ``batch_size`` rows; a new
        float32 array (n, outputs). X may be any 2-D array of real numbers:
        it is converted to float32 C-contiguous once.

        predict neither changes the training mode nor touches the state that
        ``forward`` keeps for ``backward``, and it is safe to call from
        several threads at once on one model (see the class docstring)."""
        if type(batch_size) is not int and (
                isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)) \
                or batch_size < 1:
            raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
        X = _to_f32_2d(self, X, None, "X") if _rows_f32(X, -1) < 0 else X
        n = X.shape[0]
        # One workspace per concurrent call: taken from the pool (list.pop and
        # append are atomic), or new when every pooled one is in use.
        try:
            ws = self._workspaces.pop()
        except IndexError:
            ws = _Buffers(self._name + ".predict")
        try:
            if n <= batch_size:           # one chunk: the common case at small batches
                y = self._infer(X, ws)
                if y.size >= _GUARD_FLOATS:
                    _guard.check_memory(4 * y.size, lambda: f"{self._name}.predict: the output")
                return y.copy()
            out = None
            for start in range(0, n, batch_size):
                y = self._infer(X[start:start + batch_size], ws)
                if out is None:
                    if n * y.shape[1] >= _GUARD_FLOATS:
                        _guard.check_memory(4 * n * y.shape[1], lambda: (
                            f"{self._name}.predict: the ({n}, {y.shape[1]}) output"))
                    out = np.empty((n, y.shape[1]), _F32)
                out[start:start + y.shape[0]] = y
        finally:
            self._workspaces.append(ws)
        return out

    def _output_is_probability(self):
        last = self.layers[-1] if self.layers else None
        while isinstance(last, Sequential) and last.layers:
            last = last.layers[-1]
        return isinstance(last, (Softmax, Sigmoid)) or (
            isinstance(last, Dense) and last.activation in ("softmax", "sigmoid"))

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities: ``predict`` followed by a row-wise softmax when
        the model has more than one output, a sigmoid when it has one (the
        probability of the positive class, shape (n, 1)). When the model
        already ends in Softmax or Sigmoid its output is returned as is."""
        out = self.predict(X, batch_size)
        if self._output_is_probability():
            return out
        _act_forward(_ACT["softmax"] if out.shape[1] > 1 else _ACT["sigmoid"], out, out)
        return out

    # ---- weights and architecture ----

    def state_dict(self):
        """``{"<index>.weight": array, ...}``: copies of every parameter."""
        return {name: p.copy() for name, p, _ in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy parameters in place from a mapping like ``state_dict()``'s.
        Keys must match exactly; shapes must match; values must be finite
        real numbers, cast to float32. Nothing is written unless everything
        checks out."""
        if not hasattr(state, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping, got {type(state).__name__}")
        params = {name: p for name, p, _ in self.named_parameters()}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys "
                             f"{unexpected}")
        arrays = {}
        for name, p in params.items():
            arr = _guard.as_array(state[name], "load_state_dict", name)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name} has dtype {arr.dtype}; "
                                f"expected real numbers")
            if arr.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {arr.shape}, "
                                 f"expected {p.shape}")
            _check_finite("load_state_dict", name, arr)
            arrays[name] = arr
        for name, p in params.items():
            p[...] = arrays[name]

    def get_config(self):
        return {"layers": [layer_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config, _depth=0):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("Sequential config must be a dict with a 'layers' list")
        extra = set(config) - {"layers", "type"}
        if extra:
            raise ValueError(f"Sequential config: unexpected keys {sorted(extra)}")
        return cls(*(layer_from_config(c, _depth + 1) for c in config["layers"]))

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"


# ---- the layer registry ----

LAYERS = {cls.__name__: cls for cls in (Dense, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax,
                                        Dropout, Sequential)}

_MAX_DEPTH = 32


def register_layer(cls):
    """Register a Layer subclass under its class name so ``layer_from_config``
    can rebuild it (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer: expected a Layer subclass, got {cls!r}")
    LAYERS[cls.__name__] = cls
    return cls


def layer_config(layer):
    """``{"type": <class name>, **layer.get_config()}``."""
    return {"type": type(layer).__name__, **layer.get_config()}


def layer_from_config(config, _depth=0):
    """Rebuild a layer (or a whole Sequential) from ``layer_config`` output.
    Raises ValueError for unknown types, unexpected keys or bad values."""
    if _depth > _MAX_DEPTH:
        raise ValueError(f"layer config nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(config, dict):
        raise ValueError(f"a layer config must be a dict, got {type(config).__name__}")
    kind = config.get("type")
    cls = LAYERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYERS)}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    if cls is Sequential:
        return Sequential.from_config(kwargs, _depth)
    try:
        return cls.from_config(kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {kind}: {exc}") from None
