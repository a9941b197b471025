"""Sequential: layers applied in order, with the speed paths their declared
capabilities allow (see layers/base.py): an activation folded into the
previous layer's epilogue, plain SGD folded into the backward pass, and
predict through one C chain of GEMMs."""
import concurrent.futures
import copy
import functools
import numbers
import os
import threading

import numpy as np

from .. import _core, _guard
from ..validation import check_finite, layer_input
from .base import Buffers, Layer, as_input
from .registry import layer_config, layer_from_config, param_specs_of, register_layer
from .dense import check_sgd_lr

__all__ = ["Sequential", "fused_activations", "gemm_chain"]

_F32 = np.float32
_GUARD_FLOATS = _guard.CHECK_ABOVE // 4
_get_ident = threading.get_ident
_ACT = _core.ACT_CODES
_act_forward = _core.act_forward

# predict runs conv nets (image input) in sub-batches whose widest stored
# activation takes about a quarter of one core's L2 (read at run time): a
# convolution's input, output and shortcut and its workspace then stay in
# that core's L2 between layers instead of going through L3. Measured on Zen
# 4 (1 MiB L2; docs/measurements.md), 2 threads, frozen: ResNet-20 (50 KB per
# image at its widest: 5 images) 4,376-4,524 img/s in sub-batches of 2-5
# images, 3,832-4,075 of 6-40; the small CNN (25 KB stored per image: 10
# images) flat from 5 to 20, 12% slower at 2 (its Dense weights are read
# once per sub-batch). Outputs do not depend on the sub-batch (see
# _sub_batches).
_SUB_BATCH_BYTES = _core.cache_sizes()[1] // 4
# A batch of images whose widest stored activation takes at most this many
# bytes runs as one call, each layer split between the threads: there the
# parts' own costs (the Python between them, the workers' wake-ups, ~0.1 ms
# here) outweigh what L2 saves. Zen 4, 2 threads, frozen, parts of 5
# (ResNet-20) and 10 (the small CNN) images against one call: ResNet-20 -5%
# to +6% at 8-48 images, the small CNN 6-18% slower at 12-48
# (docs/measurements.md).
_ONE_CALL_BYTES = 2 << 20
# The largest part whose kernel calls predict records and replays
# (_infer_recorded): a plan keeps a copy of its input, worth it for the small
# parts where the Python between kernels counts, not for big batches.
_RECORD_MAX_BYTES = 2 << 20

# The shapes whose predict plans a workspace keeps (see _infer_recorded): a
# batch's sub-batches have at most two sizes, and the last chunk one more.
_PLANS_PER_WORKSPACE = 4
_UNRECORDED = object()

# The active profiler's recorder (nncore.profile sets it), else None: then
# Sequential.forward/backward pay one global lookup.
_PROFILE = None


def fused_activations(layers):
    """Indices i where layers[i] is an activation that folds into the
    epilogue of layers[i - 1] (its ``act_name`` is in their
    ``epilogue_acts``). The one fusion rule: the forward plan, the predict
    plan, the C chain and the loss landscape all use it."""
    return frozenset(i for i in range(1, len(layers))
                     if layers[i].act_name is not None
                     and layers[i].act_name in layers[i - 1].epilogue_acts)


def conv_pool_fusions(layers):
    """{i: j} where the training forward runs layer i (a Conv2d), a ReLU and
    the 2x2 MaxPool2d at j as one C call (Conv2d.forward_pool), the unpooled
    output never stored: j = i + 2 after a ReLU layer fused into the
    epilogue of a Conv2d without an activation of its own, j = i + 1 after
    a Conv2d(activation="relu"). The pooling's backward absorbs that ReLU's
    (relu_before)."""
    fused = fused_activations(layers)
    out = {}
    for i in range(len(layers) - 1):
        if not hasattr(layers[i], "forward_pool"):
            continue
        if layers[i].activation == "relu":
            j = i + 1
        elif (layers[i].activation is None and i + 1 in fused
              and layers[i + 1].act_name == "relu"):
            j = i + 2
        else:
            continue
        if j < len(layers) and layers[j].fuses_after_conv and layers[j].absorbs_relu_backward:
            out[i] = j
    return out


def batchnorm_folds(layers):
    """{i: activation name or None} for each layer i that folds the
    BatchNorm at i + 1 into its predict step (``folds_batchnorm`` and
    ``infer_bn``), with the activation at i + 2 when its epilogue takes it."""
    folds = {}
    for i in range(len(layers) - 1):
        fold = getattr(layers[i], "folds_batchnorm", None)
        if fold is None or not fold(layers[i + 1]) or i - 1 in folds or i - 2 in folds:
            continue
        nxt = layers[i + 2] if i + 2 < len(layers) else None
        act = nxt.act_name if nxt is not None else None
        folds[i] = act if act is not None and act in layers[i].epilogue_acts else None
    return folds


def gemm_chain(layers):
    """((weight, bias, epilogue code), ...) when predict can run the layers
    as one chain of GEMMs: each a ``gemm_link``, an identity in evaluation
    mode, or an activation the last link's layer folds into its epilogue
    (the fusion rule above, with the identities in between skipped); else
    None. The arrays are the layers' own: assigning weights copies into
    them, so the chain never goes stale."""
    chain, producer = [], None
    for layer in layers:
        link = layer.gemm_link()
        if link is not None:
            chain.append(list(link))
            producer = layer
        elif layer.identity_in_eval:
            continue
        elif producer is not None and layer.act_name in producer.epilogue_acts:
            chain[-1][2] = _ACT[layer.act_name]
            producer = None
        else:
            return None
    return tuple(tuple(link) for link in chain) or None


def _sub_batches(n, batch_size, rows, multiple=1):
    """(start, stop) of predict's calls over n rows: the chunks of
    ``batch_size``, each split into parts of about ``rows`` (the cache
    sub-batch; their count rounded up to a multiple of ``multiple``, the
    workers sharing them), of sizes within one of each other and never of
    one row unless the chunk is: a one-row call takes the GEMV path, whose
    sums round differently from the GEMM's, while the GEMM's bits do not
    depend on the rows beside a row, so the split changes no output bit."""
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        parts = -(-size // rows)
        parts = min(-(-parts // multiple) * multiple, max(1, size // 2))
        for k in range(parts):
            yield start + size * k // parts, start + size * (k + 1) // parts


class _Output:
    """predict's result array, allocated at the first part's output shape
    (parts may arrive from several workers)."""

    __slots__ = ("n", "name", "array", "lock")

    def __init__(self, n, name):
        self.n, self.name, self.array, self.lock = n, name, None, threading.Lock()

    def store(self, start, stop, y):
        if self.array is None:
            with self.lock:
                if self.array is None:
                    shape = (self.n,) + y.shape[1:]
                    self.array = _guard.empty(
                        shape, _F32, lambda: f"{self.name}.predict: the {shape} output")
        self.array[start:stop] = y


_POOL = None          # (pool, its size, the process that made it)
_POOL_LOCK = threading.Lock()


def _worker_pool(size):
    """A process-wide pool of at least ``size`` threads for predict's workers
    (its threads only run predict's parts, so they never wait on the pool).
    A forked child makes its own: the parent's threads do not exist there."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[1] < size or _POOL[2] != os.getpid():
            pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="nncore-predict")
            _POOL = (pool, size, os.getpid())
        return _POOL[0]


def _no_input_grad(backward, grad):
    return backward(grad, False)


def _take_grad(grad):
    """The backward step of a ReLU the next layer's backward absorbed."""
    return grad


def _take_output(y, ws):
    """The predict step of an activation fused into the previous layer."""
    return y


def _pass_output(y):
    """The training forward step of a layer an earlier step ran (the ReLU
    and MaxPool2d of Conv2d.forward_pool)."""
    return y


def _check_config(config):
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError("Sequential config must be a dict with a 'layers' list")
    extra = set(config) - {"layers", "type"}
    if extra:
        raise ValueError(f"Sequential config: unexpected keys {sorted(extra)}")
    return config


@register_layer
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
        self._sample_shapes = None        # per-sample shapes through the chain, once known
        self._widest = None               # (input sample shape, its widest stored bytes)
        self._build_plan()
        if self.input_shape is not None:
            self.infer_shapes(self.input_shape)

    def _build_plan(self):
        """The forward and predict steps (activations folded into the
        previous layer's epilogue where declared), initialiser hints, and
        what the backward pass and the SGD fold need."""
        layers = self.layers
        fused = fused_activations(layers)
        # predict: a BatchNorm (and the activation after it) folded into the
        # convolution before it; their own steps pass the output on
        folds = batchnorm_folds(layers)
        folded = {i + 1 for i in folds} | {i + 2 for i, act in folds.items() if act}
        pools = conv_pool_fusions(layers)
        pooled = {k for i, j in pools.items() for k in range(i + 1, j + 1)}
        # the layers whose outputs predict never stores (pooled as written)
        self._unstored = frozenset(k for i, j in pools.items() for k in range(i, j))
        plan, infer = [], []
        infer_fused = set()      # activations only predict folds (infer_acts)
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            layer.followed_by(nxt.act_name if nxt is not None else None)
            if i in infer_fused:
                plan.append(layer.forward)
                infer.append(_take_output)
            elif (i + 1 not in fused and nxt is not None and nxt.act_name is not None
                    and nxt.act_name in layer.infer_acts):
                # e.g. a Residual whose last convolution adds the shortcut
                # and applies this ReLU as it writes its output
                plan.append(layer.forward)
                infer.append(functools.partial(layer.infer_act, act_name=nxt.act_name))
                infer_fused.add(i + 1)
            elif i + 1 in fused:
                plan.append(functools.partial(layer.forward_act, act_name=nxt.act_name))
                infer.append(functools.partial(layer.infer_act, act_name=nxt.act_name))
            elif i in fused:
                plan.append(layer.forward_fused)
                infer.append(_take_output)
            else:
                plan.append(layer.forward)
                infer.append(layer._infer)
            if i in folds:
                infer[-1] = functools.partial(layer.infer_bn, bn=nxt, act_name=folds[i])
            elif i in folded:
                infer[-1] = _take_output
            # a Conv2d's step runs the ReLU and pooling after it
            if i in pools:
                plan[-1] = functools.partial(layer.forward_pool, pool=layers[pools[i]])
                infer[-1] = functools.partial(layer.infer_pool, pool=layers[pools[i]])
            elif i in pooled:
                plan[-1] = _pass_output
                infer[-1] = _take_output
        self._plan = tuple(plan)
        self._infer_plan = tuple(infer)
        self._res_tail = self._residual_tail(folds)
        self._chain = gemm_chain(layers)
        # the layers whose weights the chain's links are (for their one-sample splits)
        self._chain_layers = () if self._chain is None else tuple(
            layer for layer in layers if layer.gemm_link() is not None)
        # predict replays recorded kernel calls (_infer_recorded) when every
        # step records its calls; an MLP chain has its own single C call
        self._recordable = self._chain is None and bool(layers) and self.predict_traceable
        self._chain_predictor = self._new_chain_predictor()
        # Without an input gradient, backward can stop at the first layer
        # that has parameters, and ask it for no input gradient.
        first = next((i for i, layer in enumerate(layers) if layer.parameters()), None)
        self._first_param = first
        # The plain backward passes, keyed by input_grad (see _backward_calls).
        self._backward_steps = {flag: tuple(step for _, step in self._backward_calls(flag))
                                for flag in (False, True)}
        self._params = tuple(pair for layer in layers for pair in layer.parameters())
        self._sgd_calls = None
        self._sgd_foldable = first is not None and all(
            layer.folds_sgd for layer in layers if layer.parameters())

    # (as in __init__ and _build_plan; for models pickled before they existed)
    _widest = None
    _recordable = False
    _chain_layers = ()
    _unstored = frozenset()

    # ---- self-description ----

    is_container = True

    @property
    def same_shape(self):
        return all(layer.same_shape for layer in self.layers)

    @property
    def predict_traceable(self):
        return all(layer.predict_traceable for layer in self.layers)

    @property
    def input_shape(self):
        """The per-sample shape the first layer that declares one takes, when
        only shape-preserving layers come before it; else None (any)."""
        for layer in self.layers:
            if layer.input_shape is not None:
                return layer.input_shape
            if not layer.same_shape:
                return None
        return None

    def infer_shapes(self, input_shape):
        """The per-sample shapes through the chain for a per-sample
        ``input_shape``: [input, after layer 0, after layer 1, ...]. A layer
        that cannot take what the previous one gives raises ValueError
        naming both layers and both shapes."""
        shapes = [tuple(input_shape)]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ValueError as exc:
                source = (f"layer {i - 1} {self.layers[i - 1]._name} outputs" if i
                          else "the input has")
                raise ValueError(f"{self._name}: layer {i} {layer._name} {exc}, but {source} "
                                 f"samples of shape {shapes[-1]}") from None
        self._sample_shapes = shapes
        return shapes

    def output_shape(self, input_shape):
        return self.infer_shapes(input_shape)[-1]

    @classmethod
    def param_specs(cls, config, _depth=0):
        specs = []
        for i, child in enumerate(_check_config(config)["layers"]):
            specs += [spec._replace(name=f"{i}.{spec.name}")
                      for spec in param_specs_of(child, _depth + 1)]
        return specs

    @property
    def _name(self):
        return f"Sequential({len(self.layers)} layers)"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def sublayers(self):
        return self.layers

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
                return as_input(self, x)
            if self._sample_shapes is None:
                self.infer_shapes(as_input(self, x).shape[1:])
            for step in self._plan:
                x = step(x)
            return x
        finally:
            self._busy.release()

    def backward(self, grad, input_grad=True, *, sgd_lr=None):
        """Fill every parameter gradient and return the input gradient (None
        with ``input_grad=False``, which skips the first parameterised
        layer's input-gradient GEMM). With ``sgd_lr`` (every layer with
        parameters must declare ``folds_sgd``), apply plain SGD in the same
        pass instead of filling the weight gradients: see ``Dense.backward``."""
        if sgd_lr is not None:
            sgd_lr = check_sgd_lr(sgd_lr)
            if not self._sgd_foldable:
                raise ValueError(f"{self._name}.backward: sgd_lr needs every layer with "
                                 "parameters to be a Dense (or another layer declaring "
                                 "folds_sgd)")
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
        parameters (asked for no input gradient); layers with parameters get
        ``sgd_lr``. Sequential.backward runs these steps."""
        first = self._first_param
        fused = fused_activations(self.layers)
        # poolings after a Conv2d(activation="relu") fused with it: that ReLU's
        # backward runs in theirs (the convolution's own then skips it)
        own_relu_pools = {j for i, j in conv_pool_fusions(self.layers).items() if j == i + 1}
        calls = []
        absorbed = None      # a ReLU whose backward the next layer's step ran
        relu_owner = None    # the layer whose step runs the backward of its epilogue ReLU
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            last = not input_grad and i == first
            backward = layer.backward
            if i == relu_owner:
                backward = functools.partial(layer.backward, relu_after=True)
            if i == absorbed:
                step = _take_grad
            elif (i in fused and layer.act_name == "relu"
                  and self.layers[i - 1].absorbs_act_relu_backward):
                step = _take_grad
                relu_owner = i - 1
            elif sgd_lr is not None and layer.folds_sgd and layer.parameters():
                step = functools.partial(backward, input_grad=not last, sgd_lr=sgd_lr)
            elif last:
                step = functools.partial(_no_input_grad, backward)
            elif i in own_relu_pools:
                step = functools.partial(backward, relu_before=True)
            elif (layer.absorbs_relu_backward and i > 0 and (first is None or i - 1 >= first)
                  and self.layers[i - 1].act_name == "relu"):
                step = functools.partial(backward, relu_before=True)
                absorbed = i - 1
            else:
                step = backward
            calls.append((i, step))
            if last:
                break
        return calls

    def _residual_tail(self, folds):
        """(k, step) when predict's last working step k may add a residual
        before an activation (``infer_res_step``): layer k is the last layer,
        or the BatchNorm it folds (with no activation) is; else None."""
        layers = self.layers
        for k in range(len(layers) - 1, -1, -1):
            if self._infer_plan[k] is not _take_output:
                break
        else:
            return None
        tail = getattr(layers[k], "infer_res_step", None)
        step = tail() if tail is not None else None
        if step is None:
            return None
        if k == len(layers) - 1 and k not in folds:
            return k, step
        if k == len(layers) - 2 and folds.get(k, "no") is None:
            return k, functools.partial(step, bn=layers[k + 1])
        return None

    def infer_res_step(self):
        """A predict step ``(x, ws, res, act_name)`` giving act(self(x) +
        res) with the sum and activation done by the last layer's kernel
        (see Conv2d.infer_res), or None when the last step cannot take them."""
        return self._infer_res if self._res_tail is not None else None

    def _infer_res(self, x, ws, res, act_name=None):
        k, tail = self._res_tail
        for step in self._infer_plan[:k]:
            x = step(x, ws)
        return tail(x, ws, res, act_name)

    def _infer_recorded(self, x, ws):
        """predict's pass over one part x (float32, C-contiguous): the plan
        of its kernel calls recorded in ``ws`` for x's shape, replayed
        without the Python between them (the same calls on the same arrays:
        the same bits), else the Python steps (README, Threads, has the
        numbers)."""
        if not self._recordable or x.nbytes > _RECORD_MAX_BYTES:
            return self._infer(x, ws)
        plans = ws.plans
        # (a plan's Winograd layers may run in nChw16c, which only the
        # Winograd path reads: a plan per set_winograd mode)
        key = (x.shape, _core.get_winograd())
        plan = plans.get(key, _UNRECORDED)
        if plan is None:        # recorded, but not replayable
            return self._infer(x, ws)
        if plan is not _UNRECORDED:
            return plan.run(x)
        if len(plans) >= _PLANS_PER_WORKSPACE:
            plans.clear()
        plan, y = _core.record_plan(functools.partial(self._infer, ws=ws), x)
        plans[key] = plan
        return y

    def _infer(self, x, ws):
        if not self.layers:
            return as_input(self, x)
        chain = self._chain
        if chain is not None and _core.rows_f32(x, chain[0][0].shape[0]) > 0:
            # One C call for the whole chain (saves the per-layer Python).
            return ws.chain_plan(chain, x.shape[0], self._chain_layers).run(x)
        for step in self._infer_plan:
            x = step(x, ws)
        return x

    # A lock cannot be copied or pickled: copies get their own.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_busy"], state["_workspaces"], state["_owner"], state["_chain_predictor"]
        state["_sgd_calls"] = None       # bound to these layers; rebuilt on use
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._busy = threading.Lock()
        self._owner = None
        self._workspaces = []
        self._chain_predictor = self._new_chain_predictor()
        if self._frozen:
            self._freeze_in_place()

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
        """The model's output for X (n, ...) in evaluation mode (Dropout is
        the identity), computed in chunks of ``batch_size`` rows; a new
        float32 array (n, ...). X may be any array of real numbers, batch
        first: it is converted to float32 C-contiguous once.

        predict neither changes the training mode nor touches the state that
        ``forward`` keeps for ``backward``, and it is safe to call from
        several threads at once on one model (see the class docstring)."""
        fast = self._chain_predictor
        if fast is not None:
            # Feature vectors in one chunk, already float32 C-contiguous with
            # the first layer's width (the latency case): the checks, a pooled
            # plan and the chain in one Cython call; None for anything else.
            y = fast.predict(X, batch_size)
            if y is not None:
                return y
        if type(batch_size) is not int and (
                isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)) \
                or batch_size < 1:
            raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
        X = X if _core.rows_f32(X, -1) > 0 else layer_input(self._name, X, None, "X")
        n = X.shape[0]
        widest = self._widest_stored(X.shape[1:])
        # One workspace per concurrent call: taken from the pool (list.pop and
        # append are atomic), or new when every pooled one is in use.
        try:
            ws = self._workspaces.pop()
        except IndexError:
            ws = Buffers(self._name + ".predict")
        try:
            if n <= batch_size and (widest is None or n * widest <= _ONE_CALL_BYTES):
                # one call: the common case at small batches
                y = self._infer_recorded(X, ws)
                if y.size >= _GUARD_FLOATS:
                    _guard.check_memory(4 * y.size, lambda: f"{self._name}.predict: the output")
                return y.copy()
            # Images: one worker per thread, each running its share of the
            # sub-batches on one thread, when each gets a whole sub-batch
            rows = self._predict_rows(X.shape[1:])
            workers = min(_core.get_num_threads(), n // rows)
            parts = list(_sub_batches(n, batch_size, rows, max(workers, 1)))
            out = _Output(n, self._name)
            if workers < 2:
                self._infer_parts(X, parts, ws, out)
            else:
                self._infer_parts_parallel(X, parts, ws, out, workers)
        finally:
            self._workspaces.append(ws)
        return out.array

    def _new_chain_predictor(self):
        """The _core.ChainPredictor of predict's chain (None without one)."""
        chain = self._chain
        if chain is None:
            return None
        name = self._name + ".predict"
        producers = self._chain_layers

        def make_plan(ws, rows):
            ws = Buffers(name) if ws is None else ws
            return ws, ws.chain_plan(chain, rows, producers)
        return _core.ChainPredictor(chain[0][0].shape[0], chain[-1][0].shape[1],
                                    _GUARD_FLOATS - 1, make_plan)

    def _infer_parts(self, X, parts, ws, out):
        for start, stop in parts:
            out.store(start, stop, self._infer_recorded(X[start:stop], ws))

    def _infer_parts_one_thread(self, X, parts, out):
        """_infer_parts with the kernels of this (worker) thread on one
        OpenMP thread, in a workspace of its own from the pool."""
        try:
            ws = self._workspaces.pop()
        except IndexError:
            ws = Buffers(self._name + ".predict")
        previous = _core.set_local_num_threads(1)
        try:
            self._infer_parts(X, parts, ws, out)
        finally:
            _core.set_local_num_threads(previous)
            self._workspaces.append(ws)

    def _infer_parts_parallel(self, X, parts, ws, out, workers):
        """The parts in ``workers`` contiguous shares, each worker on one
        thread (this thread takes the first share). For conv nets this beats
        splitting every layer over the threads: no barrier per layer, no
        thread idle while another packs weights or runs the Python between
        kernels (ResNet-20 at 2 threads: ~2,300 images/s split by layer,
        ~3,100 by worker). The bits are the same: each part is the same
        call on the same rows, and no kernel's bits depend on its threads."""
        shares = [parts[len(parts) * k // workers:len(parts) * (k + 1) // workers]
                  for k in range(workers)]
        pool = _worker_pool(workers - 1)
        futures = [pool.submit(self._infer_parts_one_thread, X, share, out)
                   for share in shares[1:]]
        try:
            previous = _core.set_local_num_threads(1)
            try:
                self._infer_parts(X, shares[0], ws, out)
            finally:
                _core.set_local_num_threads(previous)
        finally:
            for f in futures:      # every worker done before out is returned
                f.exception()
        for f in futures:
            f.result()

    def _widest_stored(self, sample_shape):
        """Bytes per sample of the widest activation predict stores (not a
        convolution's output pooled as it is written) for images of
        ``sample_shape``; None for feature vectors (an MLP's GEMMs want many
        rows) and for a shape the layers cannot take (the first layer's step
        then names the problem)."""
        if len(sample_shape) < 2:
            return None
        cached = self._widest
        if cached is not None and cached[0] == sample_shape:
            return cached[1]
        try:
            shapes = self.infer_shapes(sample_shape)
        except ValueError:
            return None
        # shapes[k] is the output of layer k - 1 (shapes[0] the input)
        widest = max(1, max(int(np.prod(s, dtype=np.int64)) for k, s in enumerate(shapes)
                            if k - 1 not in self._unstored) * 4)
        self._widest = (sample_shape, widest)
        return widest

    def _predict_rows(self, sample_shape):
        """Rows per sub-batch of a batch of images larger than one call
        takes: the widest stored activation of a sub-batch about
        _SUB_BATCH_BYTES (at least one row); no limit for feature vectors."""
        widest = self._widest_stored(sample_shape)
        return 1 << 62 if widest is None else max(1, _SUB_BATCH_BYTES // widest)

    def _output_is_probability(self):
        last = self.layers[-1] if self.layers else None
        while isinstance(last, Sequential) and last.layers:
            last = last.layers[-1]
        act = last.act_name or getattr(last, "activation", None) if last else None
        return act in ("softmax", "sigmoid")

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

    def freeze(self):
        """A copy of this model for inference, its weights packed once.

        The copy's parameters and running statistics are copied now and
        made read-only (writing one raises ValueError); the copy is in
        evaluation mode. Its convolutions then pack their weights once per
        input size, in the layout their kernels read, and reuse them on
        every ``predict`` (this model packs them on every call: its weights
        may change in place between calls); its Dense layers large enough
        to split a one-sample call between threads keep their weights
        regrouped so that each thread's columns are one run of memory
        (3136-128-10 on 2 threads, one sample: 13.2 -> 8.2 us). The copy's
        ``predict`` and ``predict_proba`` give this model's bits; later
        changes to this model do not reach it (freeze again)."""
        self.named_tensors()        # draws any weights still pending, once
        frozen = copy.deepcopy(self).eval()
        frozen._freeze_in_place()
        return frozen

    _frozen = False

    def _freeze_in_place(self):
        """Make the tensors read-only and let the convolutions keep packs
        (empty: made on first use). Also run when a frozen model is
        unpickled or copied: the arrays come back writable."""
        for _, arr in self.named_tensors():
            arr.flags.writeable = False
        stack = list(self.layers)
        while stack:
            layer = stack.pop()
            stack.extend(layer.sublayers())
            if hasattr(layer, "_packs"):
                layer._packs = {}
        self._frozen = True

    # ---- weights and architecture ----

    def named_tensors(self):
        return [(f"{i}.{name}", arr) for i, layer in enumerate(self.layers)
                for name, arr in layer.named_tensors()]

    def named_buffers(self):
        return [(f"{i}.{name}", arr) for i, layer in enumerate(self.layers)
                for name, arr in layer.named_buffers()]

    def state_dict(self):
        """``{"<index>.<name>": array, ...}``: copies of every tensor the
        layers' ``param_specs`` list (parameters and running statistics)."""
        return {name: arr.copy() for name, arr in self.named_tensors()}

    def load_state_dict(self, state):
        """Copy parameters in place from a mapping like ``state_dict()``'s.
        Keys must match exactly; shapes must match; values must be finite
        real numbers, cast to float32. Nothing is written unless everything
        checks out."""
        if not hasattr(state, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping, got {type(state).__name__}")
        params = dict(self.named_tensors())
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
            check_finite("load_state_dict", name, arr)
            arrays[name] = arr
        for name, p in params.items():
            p[...] = arrays[name]

    def get_config(self):
        return {"layers": [layer_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config, _depth=0):
        return cls(*(layer_from_config(c, _depth + 1) for c in _check_config(config)["layers"]))

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"
