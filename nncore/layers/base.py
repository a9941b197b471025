"""The layer protocol: what every layer says about itself, and the buffers
layers work in.

A layer describes itself from its config alone (``get_config()``'s keyword
arguments), before any array exists:

- ``param_specs(config)`` (a classmethod): the tensors it owns, as ``Param``
  records (name, shape, role, trainable, out_axis), in ``state_dict`` order.
  Saving, loading, optimizers, the profiler and the loss landscape read these
  and nothing else; a loader checks a file against them before allocating.
- ``input_shape``: the per-sample shape it takes (batch excluded), or None
  when it takes any; ``output_shape(input_shape)``: the per-sample shape it
  gives, or a ValueError saying what it expects. ``same_shape`` layers
  (activations, Dropout) give what they take.
- Capabilities the speed paths key on, declared, never guessed from a type:
  ``epilogue_acts`` (activations a following activation layer may fold into
  this layer's forward epilogue: it then implements ``forward_act`` and
  ``infer_act``), ``infer_acts`` (activations a following activation layer
  may fold into this layer's predict step only: it implements ``infer_act``;
  its training forward is unchanged), ``act_name`` (an activation layer's
  function, foldable after a layer whose ``epilogue_acts`` holds it), ``folds_sgd`` (its
  ``backward`` takes ``sgd_lr`` and applies plain SGD inside the
  weight-gradient pass), ``absorbs_relu_backward`` (its ``backward`` takes
  ``relu_before=True`` and then returns the gradient through the ReLU that
  precedes it too, whose own backward step is skipped; it must equal the two
  steps bitwise), ``absorbs_act_relu_backward`` (the same for a ReLU folded
  into its own forward epilogue, after it: ``backward`` takes
  ``relu_after=True``), ``identity_in_eval`` (evaluation-mode forward is the
  identity) and ``gemm_link()`` (its evaluation-mode forward is one GEMM with
  an epilogue, so predict may run it inside a C chain), ``supports_bf16``
  (its training forward and backward run their GEMMs in bfloat16 while its
  ``_bf16`` attribute is True: ``Trainer(precision="bf16")`` sets it for the
  length of the training steps, see ``trainer.mixed_precision``),
  ``fuses_after_conv`` (a pooling layer whose training forward a Conv2d's
  ``forward_pool`` may compute, after the ReLU between them or the Conv2d's
  own: it implements
  ``fused_outputs``; see ``sequential.conv_pool_fusions``).
- ``sublayers()``: the layers a container is built of (Sequential's
  layers, Residual's body and shortcut), so whole-model walks (mixed
  precision) reach every layer without knowing container types.

Arrays are float32, C-contiguous, batch first, of any rank; images are NCHW.

Passes (as PyTorch's modules, made explicit): ``forward(x)`` returns the
layer's output buffer, overwritten by its next ``forward``; ``backward(grad)``
returns the input gradient and *overwrites* (never accumulates) the parameter
gradients. A layer keeps a reference to its forward input (not a copy) for
the backward pass: do not modify that array in place between the two.
"""
from typing import NamedTuple

import numpy as np

from .. import _core, _guard
from ..validation import layer_input

__all__ = ["Param", "ROLES", "Layer", "Buffers", "as_input", "check_grad", "not_ready",
           "is_batch"]

_F32 = np.float32
_rows_f32 = _core.rows_f32

# weight / bias: trainable, stepped by optimizers; running: a statistic the
# forward pass updates (BatchNorm's running mean); other: anything else kept.
ROLES = ("weight", "bias", "running", "other")


class Param(NamedTuple):
    """One tensor a layer owns, as its config implies it.

    ``out_axis``: the axis of ``shape`` that indexes the layer's output units
    (Dense weight ``(in, out)``: 1; a conv weight ``(out, in, kh, kw)``: 0),
    what filter-wise normalisation groups by; None when it has none."""
    name: str
    shape: tuple
    role: str = "weight"
    trainable: bool = True
    out_axis: object = None


def is_batch(x, shape):
    """True when x needs no conversion: a float32 C-contiguous aligned
    ndarray of exactly ``shape`` (batch first)."""
    if len(shape) == 2:
        return _rows_f32(x, shape[1]) == shape[0]
    return (type(x) is np.ndarray and x.dtype == _F32 and x.shape == shape
            and x.flags.c_contiguous and x.flags.aligned)


def as_input(layer, x):
    """x when it is float32 C-contiguous 2-D (the fast path), else converted
    (any rank >= 2, batch first)."""
    return x if _rows_f32(x, -1) > 0 else layer_input(layer._name, x)


def check_grad(layer, grad, shape):
    """grad as float32 C-contiguous with ``shape``, the layer's output's."""
    if is_batch(grad, shape):
        return grad
    arr = layer_input(layer._name, grad, None, "gradient")
    if arr.shape != shape:
        raise ValueError(f"{layer._name}: gradient has shape {arr.shape}, expected {shape} "
                         f"(the shape of the forward output)")
    return arr


def not_ready(layer):
    return ValueError(f"{layer._name}: backward() called before forward()")


def _owner_of(a):
    """The array that owns a's memory (NumPy collapses a view's ``base`` to
    it; _guard.empty's arrays may themselves be views of an aligned block)."""
    return a if a.base is None else a.base


class Buffers:
    """Named work arrays (float32 unless asked), batch first, grown on demand and handed out
    as views for smaller batches (no allocation then). ``owner`` names the
    layer in the MemoryError of a buffer too large to allocate.

    Predict's layer outputs come from ``take`` instead: a few flat buffers
    reused by liveness, so a deep net's predict holds a few activations, not
    one buffer per layer. An output is live while it is the input of the
    step running (``take``'s ``live``) or while a container ``hold``s it (a
    Residual keeps its input and its shortcut's output across its body);
    ``take`` never hands out a buffer holding a live array."""

    __slots__ = ("_bases", "_owner", "_chain", "_flat", "_held", "plans")

    def __init__(self, owner):
        self._bases = {}
        self._owner = owner
        self._chain = None
        self._flat = []       # take's buffers: 1-D float32, grown in place of the old
        self._held = []       # arrays kept live by hold()
        # predict plans by input shape and Winograd mode (Sequential._infer_recorded)
        self.plans = {}

    def take(self, shape, *live):
        """A float32 array of ``shape`` (a view of one of the flat buffers)
        that shares memory with none of ``live`` and nothing held."""
        size = 1
        for d in shape:
            size *= d
        busy = [_owner_of(a) for a in live + tuple(self._held)]
        flat = self._flat
        for i, buf in enumerate(flat):
            owner = _owner_of(buf)
            if any(owner is b for b in busy):
                continue
            if buf.size < size:       # grow: the old buffer holds nothing live
                buf = flat[i] = self._new_flat(size, shape)
            return buf[:size].reshape(shape)
        buf = self._new_flat(size, shape)
        flat.append(buf)
        return buf[:size].reshape(shape)

    def _new_flat(self, size, shape):
        return _guard.empty((size,), _F32, lambda: (
            f"{self._owner}: a {tuple(shape)} float32 buffer"))

    def hold(self, a):
        """Keep a live (``take`` avoids it) until the matching ``release``."""
        self._held.append(a)

    def release(self, count=1):
        """End the last ``count`` holds."""
        del self._held[len(self._held) - count:]

    def nbytes(self):
        """Bytes of every buffer this workspace holds (take's and get's)."""
        return (sum(b.nbytes for b in self._flat)
                + sum(b.nbytes for b in self._bases.values()))

    def chain_plan(self, chain, rows, producers=()):
        """The checked C plan (_core.DenseChain) of a predict chain (see
        sequential.gemm_chain) for `rows` rows, writing into this workspace's
        buffers; ``producers``, the layers whose weights the links are, give
        their weights regrouped for a one-sample call (Dense._split: a
        frozen model's) for DenseChain's ``splits``. The last plan is kept,
        so repeated predicts of one size on as many threads check only their
        input."""
        last = self._chain
        if (last is not None and last[0] is chain and last[1].rows == rows
                and last[1].threads == _core.get_num_threads()):
            return last[1]
        outs = tuple(self.get(id(w), (rows, w.shape[1])) for w, _, _ in chain)
        splits = tuple(layer._split(rows) for layer in producers)
        if not any(s is not None for s in splits):
            splits = None
        plan = _core.DenseChain(rows, chain[0][0].shape[0], chain, outs, splits)
        self._chain = (chain, plan)
        return plan

    def get(self, name, shape, dtype=_F32):
        base = self._bases.get(name)
        rows = shape[0]
        if base is None or base.shape[1:] != shape[1:] or base.shape[0] < rows:
            base = _guard.empty(shape, dtype, lambda: (
                f"{self._owner}: a {tuple(shape)} {np.dtype(dtype).name} buffer"))
            self._bases[name] = base
        return base if base.shape[0] == rows else base[:rows]

    def clear(self):
        self._bases.clear()
        self._chain = None
        self.plans.clear()
        self._flat.clear()
        self._held.clear()


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``; layers
    with tensors also ``param_specs`` and ``named_parameters`` (and
    ``named_buffers`` for non-trainable state); layers that change the shape
    ``output_shape``; all implement ``get_config`` (constructor keyword
    arguments, JSON-serialisable). See the module docstring."""

    training = True
    input_shape = None
    same_shape = False
    epilogue_acts = frozenset()
    infer_acts = frozenset()
    act_name = None
    folds_sgd = False
    absorbs_relu_backward = False
    fuses_after_conv = False
    absorbs_act_relu_backward = False
    identity_in_eval = False
    supports_bf16 = False
    _bf16 = False
    # Whether the layer's predict steps (_infer, infer_act, ...) compute only
    # through _core bindings that record into a predict plan (see
    # Sequential.predict). A class must say so itself: a subclass that does
    # not set it again is not traceable, since it may compute otherwise.
    predict_traceable = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "predict_traceable" not in cls.__dict__:
            cls.predict_traceable = False

    @property
    def _name(self):
        return type(self).__name__ + "()"

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad, input_grad=True):
        raise NotImplementedError

    # ---- self-description ----

    @classmethod
    def param_specs(cls, config):
        """The tensors a layer of this config owns (a list of Param), in
        ``state_dict`` order; ValueError for a config that cannot be built.
        Must not allocate: loaders call it on untrusted configs."""
        return []

    def output_shape(self, input_shape):
        """The per-sample output shape for a per-sample ``input_shape`` (a
        tuple); ValueError saying what the layer expects when it cannot take
        it. The default: the input shape (override when the shape changes)."""
        if self.input_shape is not None and tuple(input_shape) != tuple(self.input_shape):
            raise ValueError(f"expects samples of shape {tuple(self.input_shape)}")
        return tuple(input_shape)

    def gemm_link(self):
        """``(weight, bias or None, epilogue act code)`` when the layer's
        evaluation-mode forward is exactly ``act(x @ weight + bias)`` on 2-D
        input (predict may then run it in one C chain), else None."""
        return None

    def sublayers(self):
        """The layers this one is built of, in order (containers override);
        () for a leaf layer."""
        return ()

    def followed_by(self, act_name):
        """Told by Sequential which activation follows (None: none), e.g. to
        pick an initialiser. The default ignores it."""

    # ---- tensors ----

    def named_parameters(self):
        """A list of ``(name, param, grad)`` of the trainable tensors."""
        return []

    def named_buffers(self):
        """A list of ``(name, array)`` of the non-trainable tensors (running
        statistics), as PyTorch's ``named_buffers``."""
        return []

    def named_tensors(self):
        """``(name, array)`` of every tensor ``param_specs`` lists, in its order."""
        arrays = {name: p for name, p, _ in self.named_parameters()}
        arrays.update(self.named_buffers())
        specs = type(self).param_specs(self.get_config())
        if {spec.name for spec in specs} != set(arrays):
            raise TypeError(f"{self._name}: param_specs lists {[s.name for s in specs]} but "
                            f"the layer holds {sorted(arrays)}")
        return [(spec.name, arrays[spec.name]) for spec in specs]

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
