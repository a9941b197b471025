"""``nncore.save`` / ``nncore.load``: models and fitted estimators in one file.

The file is an ``nncore.io`` archive (versioned, SHA-256 checksummed, written
atomically, read without pickle); this module decides what goes in it::

    meta = {"nncore": "0.1.0",                    # the version that wrote it
            "kind": "model" | "estimator",
            "model": {"layers": [...]},           # Sequential.get_config()
            "optimizer": {"type": "Adam",         # models saved with optimizer= only:
                          "config": {...},        # Optimizer.state_dict without buffers
                          "steps": [...]},
            "estimator": {                        # estimators only
                "class": "NNClassifier",
                "params": {...},                  # get_params(), JSON values
                "fitted": {...},                  # classes_, loss_curve_, n_iter_, ...
                "training": {                     # once trained: what partial_fit resumes
                    "optimizers": [{"type": "Adam", "config": {...}, "steps": [...]},
                                   ...],          # Optimizer.state_dict without buffers
                    "shuffle": {...}}}}           # the shuffling PCG64 generator's state
    tensors = model.state_dict()                  # "0.weight", "0.bias", ... float32
            + {"optimizer.<i>.<name>": ...}       # buffer <name> of param i (models)
            + {"training.<g>.<i>.<name>": ...}    # the same, of optimizer g (estimators)

Loading checks everything before building anything: the layer configs, the
tensors each layer's ``param_specs`` implies against the tensors actually
present in the file (so a hostile header cannot make nncore allocate absurd
arrays), tensor names, shapes and dtypes, the optimizer state
(hyperparameters, step counts, buffers shaped like their parameters), and
through the handler registered for its kind (``register_kind``; the
estimators register "estimator") every attribute of other objects. Any problem raises
``nncore.errors.FormatError`` (a ValueError) naming the file; nothing in the
file is ever executed. Loading does not disturb ``nncore.manual_seed``'s
generator. A round trip gives bitwise identical predictions.
"""
import os
import re

import numpy as np

from . import init as _init
from ._version import __version__
from .errors import FormatError
from .io import read_archive, write_archive
from .layers import ROLES, Sequential
from .optim import SGD, Adam, AdamW, RMSprop

__all__ = ["save", "load", "read_checkpoint", "register_kind", "build_model",
           "read_optimizer_state", "split_optimizer_state", "no_stray_tensors", "OPTIMIZERS"]

_MAX_LAYERS = 10000
_OPTIMIZER = "optimizer."       # the prefix of a model file's optimizer buffers
_TRAINING = "training."         # the prefix of a checkpoint's training-position tensors
OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop)}


class _Kind:
    """How objects other than models go in a file (see register_kind)."""

    def __init__(self, name, classes, dump, restore, prefix):
        self.name, self.classes, self.dump, self.restore = name, classes, dump, restore
        self.prefix = prefix


_KINDS = {}


def register_kind(name, classes, dump, restore, prefix):
    """Let ``save``/``load`` handle objects of ``classes`` (a tuple) as files
    of kind ``name``: ``dump(obj) -> (entry, model, tensors)`` gives the
    JSON entry stored under ``meta[name]``, the model whose weights are
    saved, and extra tensors (named with ``prefix``);
    ``restore(entry, model, tensors, fail) -> obj`` checks the entry and the
    extra tensors (``fail(message)`` raises) and rebuilds the object."""
    if name in ("model", "nncore", "kind", "optimizer") or not prefix.endswith("."):
        raise ValueError(f"register_kind: bad kind name {name!r} or prefix {prefix!r}")
    _KINDS[name] = _Kind(name, tuple(classes), dump, restore, prefix)


# ---- saving ----------------------------------------------------------------


def split_optimizer_state(state, prefix):
    """An Optimizer.state_dict as (its header entry: type, config, steps;
    its buffers as tensors named prefix + "<param index>.<name>")."""
    entry = {key: value for key, value in state.items() if key != "buffers"}
    return entry, {prefix + key: arr for key, arr in state["buffers"].items()}


def save(obj, path, optimizer=None, training=None):
    """Save a model (a Sequential) or an object of a registered kind (a
    fitted NNClassifier/NNRegressor) to ``path``, atomically: the previous
    file there survives any failure.

    With a model, ``optimizer`` (an nncore SGD, Adam, AdamW or RMSprop)
    saves its state for ``model.parameters()`` in the same file (see
    ``load``): a checkpoint to resume training from. ``training`` (with an
    optimizer): (a JSON entry, tensors named "training.*"), the trainer's
    position that ``ModelCheckpoint`` adds (nncore/resume.py). Estimators
    always keep the state their ``partial_fit`` continues from."""
    kind = next((k for k in _KINDS.values() if isinstance(obj, k.classes)), None)
    if kind is not None:
        entry, model, extra = kind.dump(obj)
        meta = {"nncore": __version__, "kind": kind.name, kind.name: entry}
    elif callable(getattr(obj, "get_config", None)) and callable(getattr(obj, "state_dict",
                                                                         None)):
        meta = {"nncore": __version__, "kind": "model"}
        model, extra = obj, {}
    else:
        raise TypeError(f"nncore.save: expected a Sequential model or a fitted NNClassifier/"
                        f"NNRegressor, got {type(obj).__name__}")
    meta["model"] = model.get_config()
    tensors = model.state_dict()
    if optimizer is not None:
        if kind is not None:
            raise TypeError(f"nncore.save: optimizer= is for models; an {kind.name} saves "
                            "its own optimizer state")
        if type(optimizer) not in OPTIMIZERS.values():
            raise TypeError(f"nncore.save: optimizer must be an nncore SGD, Adam, AdamW or "
                            f"RMSprop, got {type(optimizer).__name__}")
        entry, buffers = split_optimizer_state(optimizer.state_dict(model.parameters()),
                                               _OPTIMIZER)
        meta["optimizer"] = entry
        tensors.update(buffers)
        if training is not None:
            meta["training"], position = training
            if not all(name.startswith(_TRAINING) for name in position):
                raise ValueError(f"nncore.save: training tensors must be named "
                                 f"{_TRAINING}*, got {sorted(position)[:5]}")
            tensors.update(position)
    elif training is not None:
        raise TypeError("nncore.save: training= needs optimizer= (a position without the "
                        "optimizer state cannot resume a run)")
    tensors.update(extra)
    write_archive(path, meta, tensors)


# ---- loading ---------------------------------------------------------------


def _count_layers(config, fail, count):
    """Refuse configs of more than _MAX_LAYERS layers (any nesting)."""
    if isinstance(config, dict):
        count[0] += "type" in config
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return
    if count[0] > _MAX_LAYERS:
        fail(f"the model has more than {_MAX_LAYERS} layers")
    for value in values:
        _count_layers(value, fail, count)


def _expected_tensors(config, fail):
    """{name: shape} of the tensors a Sequential config implies, from each
    layer's ``param_specs``: nothing is built or allocated. Only registered
    layer types are accepted."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        fail("the model config must be an object with a 'layers' list")
    _count_layers(config, fail, [0])
    try:
        specs = Sequential.param_specs(config)
    except (ValueError, TypeError) as exc:
        fail(f"bad model config: {exc}")
    expected = {}
    for spec in specs:
        shape = spec.shape
        if spec.role not in ROLES or not isinstance(shape, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            fail(f"layer tensor {spec.name!r}: bad description {spec!r}")
        expected[spec.name] = shape
    return expected


def build_model(config, tensors, fail):
    """A Sequential from its config and state_dict tensors, checked first;
    ``fail(message)`` raises."""
    expected = _expected_tensors(config, fail)
    if set(expected) != set(tensors):
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        fail(f"the tensors do not match the architecture: missing {missing[:5]}, "
             f"unexpected {extra[:5]}")
    for name, shape in expected.items():
        arr = tensors[name]
        if arr.dtype != np.float32 or arr.shape != shape:
            fail(f"tensor {name!r} is {arr.dtype} {arr.shape}, expected float32 {shape}")
        if not np.isfinite(arr).all():
            fail(f"tensor {name!r} holds NaN or infinity")
    # Building a Dense draws initial weights from nncore's generator; they
    # are overwritten at once, so keep the user's random stream untouched.
    generator = _init.get_generator()
    state = generator.bit_generator.state
    try:
        model = Sequential.from_config(config)
    except (ValueError, TypeError) as exc:
        fail(f"bad model config: {exc}")
    finally:
        generator.bit_generator.state = state
    model.load_state_dict(tensors)
    model.eval()
    return model


def read_optimizer_state(optimizer, params, entry, tensors, prefix, where, fail):
    """Load a file's optimizer entry (type, config, steps) and its buffers
    (the tensors named prefix + "<param index>.<name>") into ``optimizer``
    for ``params``; load_state_dict checks everything. Returns the state."""
    if not isinstance(entry, dict) or set(entry) != {"type", "config", "steps"}:
        fail(f"{where} must hold exactly 'type', 'config' and 'steps'")
    state = dict(entry, buffers={name[len(prefix):]: arr for name, arr in tensors.items()
                                 if name.startswith(prefix)})
    try:
        optimizer.load_state_dict(state, params)
    except (ValueError, TypeError) as exc:
        fail(f"{where}: {exc}")
    return state


def is_pcg64_state(state):
    """True if `state` is a well-formed numpy PCG64 ``bit_generator.state``
    dict (exact keys, 128-bit state and increment, a 32-bit buffered word):
    what a file may hand to a generator without surprising it."""
    def uint(value, bits):
        return type(value) is int and 0 <= value < 1 << bits
    return (isinstance(state, dict)
            and set(state) == {"bit_generator", "state", "has_uint32", "uinteger"}
            and state["bit_generator"] == "PCG64" and isinstance(state["state"], dict)
            and set(state["state"]) == {"state", "inc"}
            and all(uint(v, 128) for v in state["state"].values())
            and state["has_uint32"] in (0, 1) and uint(state["uinteger"], 32))


def no_stray_tensors(tensors, prefixes, fail):
    stray = [name for name in tensors if not name.startswith(prefixes)]
    if stray:
        fail(f"unexpected tensors {sorted(stray)[:5]}")


def _read_model_optimizer(meta, model, tensors, optimizer, fail):
    """A model file's optimizer entry, loaded into ``optimizer``, or when it
    is None into a scratch optimizer of the saved type: checked either way.
    Returns the optimizer loaded (None when the file holds none)."""
    if "optimizer" not in meta:
        no_stray_tensors(tensors, (), fail)
        if optimizer is not None:
            fail("the file holds no optimizer state (save it with "
                 "nncore.save(model, path, optimizer=...))")
        return None
    entry = meta["optimizer"]
    classes = OPTIMIZERS
    kind = entry.get("type") if isinstance(entry, dict) else None
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        fail(f"optimizer: type must be one of {sorted(classes)}")
    no_stray_tensors(tensors, (_OPTIMIZER,), fail)
    if optimizer is None:
        optimizer = cls(0.0)             # its hyperparameters come from the entry
    elif type(optimizer) is not cls:
        raise TypeError(f"nncore.load: the file holds {kind} state; optimizer is a "
                        f"{type(optimizer).__name__}")
    # load_state_dict changes nothing unless all of the state checks out
    read_optimizer_state(optimizer, model.parameters(), entry, tensors, _OPTIMIZER,
                         "optimizer", fail)
    return optimizer


def read_checkpoint(path):
    """A model file read for resuming: (the model, its optimizer state as
    ``Optimizer.state_dict`` gives it or None, the "training" header entry
    or None, the tensors named "training.*"). The model and the optimizer
    state are checked here; the training entry by its reader
    (nncore/resume.py)."""
    meta, tensors = read_archive(path)
    where = os.fsdecode(path)

    def fail(msg):
        raise FormatError(f"{where}: {msg}")

    if meta.get("kind") != "model" or not {"nncore", "kind", "model"} <= set(meta) \
            <= {"nncore", "kind", "model", "optimizer", "training"}:
        fail("not an nncore model checkpoint")
    position = {name: arr for name, arr in tensors.items() if name.startswith(_TRAINING)}
    extra = {name: arr for name, arr in tensors.items() if name.startswith(_OPTIMIZER)}
    model = build_model(meta["model"], {name: arr for name, arr in tensors.items()
                                        if name not in extra and name not in position}, fail)
    optimizer = _read_model_optimizer(meta, model, extra, None, fail)
    state = None if optimizer is None else optimizer.state_dict(model.parameters())
    return model, state, meta.get("training"), position


def load(path, optimizer=None):
    """Load what ``save`` wrote: a Sequential (in eval mode), or a fitted
    NNClassifier/NNRegressor. Raises FormatError for anything but a valid file
    (OSError when it cannot be read at all).

    ``optimizer`` (a model file saved with one): an optimizer of the saved
    type, whose hyperparameters and state are replaced by the file's, for
    the loaded model's ``parameters()``. Training it from there continues the
    saved run bitwise (given the same batches)."""
    meta, tensors = read_archive(path)
    where = os.fsdecode(path)

    def fail(msg):
        raise FormatError(f"{where}: {msg}")

    kind = meta.get("kind")
    handler = _KINDS.get(kind) if isinstance(kind, str) else None
    keys = {"nncore", "kind", "model"} | ({kind} if handler is not None else set())
    # a checkpoint's training position (nncore/resume.py) is for Trainer.fit(resume_from=)
    optional = {"optimizer", "training"} if kind == "model" else set()
    if (kind != "model" and handler is None) or not keys <= set(meta) <= keys | optional:
        fail("not an nncore model file: its header must hold exactly "
             f"{sorted(keys)} with kind 'model' or one of {sorted(_KINDS)} (and 'optimizer' "
             "for a model saved with one)")
    if optimizer is not None and kind != "model":
        raise TypeError(f"nncore.load: optimizer= is for model files; an {kind} restores "
                        "its own optimizer state")
    if not isinstance(meta["nncore"], str) or not re.fullmatch(r"[0-9A-Za-z.+_-]{1,40}",
                                                               meta["nncore"]):
        fail("bad 'nncore' version entry")
    if "training" in meta and "optimizer" not in meta:
        fail("a training position without optimizer state")
    tensors = {name: arr for name, arr in tensors.items()
               if kind != "model" or "training" not in meta or not name.startswith(_TRAINING)}
    prefix = handler.prefix if handler is not None else _OPTIMIZER
    extra = {name: arr for name, arr in tensors.items() if name.startswith(prefix)}
    model = build_model(meta["model"],
                        {name: arr for name, arr in tensors.items() if name not in extra}, fail)
    if kind == "model":
        _read_model_optimizer(meta, model, extra, optimizer, fail)
        return model
    return handler.restore(meta[kind], model, extra, fail)
