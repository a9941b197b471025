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
Dense sizes against the tensors actually present in the file (so a hostile
header cannot make nncore allocate absurd arrays), tensor names, shapes and
dtypes, every estimator attribute, the optimizer state (hyperparameters, step
counts, buffers shaped like their parameters). Any problem raises
``nncore.errors.FormatError`` (a ValueError) naming the file; nothing in the
file is ever executed. Loading does not disturb ``nncore.manual_seed``'s
generator. A round trip gives bitwise identical predictions.
"""
import math
import os
import re

import numpy as np

from . import init as _init
from .errors import FormatError
from .io import read_archive, write_archive

__all__ = ["save", "load"]

_MAX_LAYERS = 10000
_TRAINING = "training."         # the prefix of an estimator's optimizer buffers
_OPTIMIZER = "optimizer."       # the prefix of a model file's optimizer buffers
_PARAM_FREE = {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "Dropout"}
_NUMERIC_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64"}


def _optimizer_classes():
    from .optim import SGD, Adam, AdamW, RMSprop
    return {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def _estimator_classes():
    from .estimators import NNClassifier, NNRegressor
    return {"NNClassifier": NNClassifier, "NNRegressor": NNRegressor}


# ---- saving ----------------------------------------------------------------


def _encode_classes(classes):
    dtype = classes.dtype
    if dtype.name in _NUMERIC_DTYPES:
        name = dtype.name
    elif dtype.kind == "U":
        name = "str"
    elif dtype.kind == "O" and all(isinstance(c, str) for c in classes):
        name = "object-str"
    else:
        raise TypeError(f"nncore.save: class labels of dtype {dtype} cannot be saved; "
                        "use numbers or strings")
    return {"dtype": name, "values": classes.tolist()}


def _jsonable_param(name, value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if name == "random_state" and not (value is None or isinstance(value, int)):
        return None        # a RandomState/Generator object: not storable, nor needed
    return value


def _estimator_meta(est):
    est._check_fitted()
    fitted = {"n_features_in_": est.n_features_in_, "n_outputs_": est.n_outputs_,
              "loss_curve_": [float(v) for v in est.loss_curve_],
              "best_loss_": est.best_loss_, "n_iter_": est.n_iter_, "t_": est.t_,
              "validation_scores_": est.validation_scores_,
              "best_validation_score_": est.best_validation_score_,
              "hidden": list(est._hidden)}
    if hasattr(est, "classes_"):
        fitted["classes_"] = _encode_classes(est.classes_)
    if hasattr(est, "_y_1d"):
        fitted["y_1d"] = bool(est._y_1d)
    for key in ("best_loss_", "best_validation_score_"):
        value = fitted[key]
        if value is not None and not math.isfinite(value):
            fitted[key] = str(float(value))     # "inf"/"-inf": JSON has no infinity
    return {"class": type(est).__name__,
            "params": {k: _jsonable_param(k, v) for k, v in est.get_params().items()},
            "fitted": fitted}


def _split_optimizer_state(state, prefix):
    """An Optimizer.state_dict as (its header entry: type, config, steps;
    its buffers as tensors named prefix + "<param index>.<name>")."""
    entry = {key: value for key, value in state.items() if key != "buffers"}
    return entry, {prefix + key: arr for key, arr in state["buffers"].items()}


def save(obj, path, optimizer=None):
    """Save a model (a Sequential) or a fitted NNClassifier/NNRegressor to
    ``path``, atomically: the previous file there survives any failure.

    With a model, ``optimizer`` (an nncore SGD, Adam, AdamW or RMSprop)
    saves its state for ``model.parameters()`` in the same file (see
    ``load``): a checkpoint to resume training from. Estimators always keep
    the state their ``partial_fit`` continues from."""
    from . import __version__ as version
    estimators = _estimator_classes()
    if isinstance(obj, tuple(estimators.values())):
        meta = {"nncore": version, "kind": "estimator", "estimator": _estimator_meta(obj)}
        model = obj.model_
    elif callable(getattr(obj, "get_config", None)) and callable(getattr(obj, "state_dict",
                                                                         None)):
        meta = {"nncore": version, "kind": "model"}
        model = obj
    else:
        raise TypeError(f"nncore.save: expected a Sequential model or a fitted NNClassifier/"
                        f"NNRegressor, got {type(obj).__name__}")
    meta["model"] = model.get_config()
    tensors = model.state_dict()
    if optimizer is not None:
        if meta["kind"] != "model":
            raise TypeError("nncore.save: optimizer= is for models; an estimator saves its "
                            "own optimizer state")
        if type(optimizer) not in _optimizer_classes().values():
            raise TypeError(f"nncore.save: optimizer must be an nncore SGD, Adam, AdamW or "
                            f"RMSprop, got {type(optimizer).__name__}")
        entry, buffers = _split_optimizer_state(optimizer.state_dict(model.parameters()),
                                                _OPTIMIZER)
        meta["optimizer"] = entry
        tensors.update(buffers)
    elif meta["kind"] == "estimator":
        training = obj._training_state()
        if training is not None:
            entries = []
            for g, state in enumerate(training["optimizers"]):
                entry, buffers = _split_optimizer_state(state, f"{_TRAINING}{g}.")
                entries.append(entry)
                tensors.update(buffers)
            meta["estimator"]["training"] = {"optimizers": entries,
                                             "shuffle": training["shuffle"]}
    write_archive(path, meta, tensors)


# ---- loading ---------------------------------------------------------------


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _expected_tensors(config, fail, prefix="", count=None):
    """{name: shape} of the parameters a Sequential config implies, checking
    the structure on the way. Only known layer types are accepted."""
    count = count if count is not None else [0]
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        fail("the model config must be an object with a 'layers' list")
    expected = {}
    for i, layer in enumerate(config["layers"]):
        count[0] += 1
        if count[0] > _MAX_LAYERS:
            fail(f"the model has more than {_MAX_LAYERS} layers")
        if not isinstance(layer, dict):
            fail(f"layer {prefix}{i}: expected an object, got {type(layer).__name__}")
        kind = layer.get("type")
        if kind == "Sequential":
            expected.update(_expected_tensors(layer, fail, f"{prefix}{i}.", count))
        elif kind == "Dense":
            n_in, n_out = layer.get("in_features"), layer.get("out_features")
            if not (_is_size(n_in) and _is_size(n_out)):
                fail(f"layer {prefix}{i} (Dense): in_features and out_features must be "
                     f"positive ints, got {n_in!r} and {n_out!r}")
            expected[f"{prefix}{i}.weight"] = (n_in, n_out)
            if layer.get("bias", True) is not False:
                expected[f"{prefix}{i}.bias"] = (n_out,)
        elif not isinstance(kind, str) or kind not in _PARAM_FREE:
            fail(f"layer {prefix}{i}: unknown layer type {kind!r}")
    return expected


def build_model(config, tensors, fail):
    """A Sequential from its config and state_dict tensors, checked first;
    ``fail(message)`` raises."""
    from .layers import Sequential
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


def _decode_classes(spec, fail):
    if not isinstance(spec, dict) or set(spec) != {"dtype", "values"} \
            or not isinstance(spec["values"], list) or len(spec["values"]) < 2:
        fail("classes_ must be {'dtype': ..., 'values': [at least 2 labels]}")
    name, values = spec["dtype"], spec["values"]
    if name in ("str", "object-str"):
        if not all(isinstance(v, str) for v in values):
            fail("classes_: string labels expected")
        classes = np.array(values, dtype=object if name == "object-str" else str)
    elif name in _NUMERIC_DTYPES:
        if not all(isinstance(v, (int, float)) for v in values):
            fail(f"classes_: {name} labels expected")
        try:
            classes = np.array(values, dtype=name)
        except (OverflowError, ValueError):
            fail(f"classes_: labels do not fit {name}")
    else:
        fail(f"classes_: unsupported label dtype {name!r}")
    if len(np.unique(classes)) != len(classes) or not (
            np.sort(classes, kind="stable") == classes).all():
        fail("classes_ must be sorted and unique")
    return classes


def _number_or_none(value, key, fail):
    if value is None:
        return None
    if isinstance(value, str) and value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{key} must be a number or null, got {value!r}")
    return float(value)


def _number_list(value, key, fail, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        fail(f"{key} must be a list of numbers")
    return [float(v) for v in value]


def _is_uint(value, bits):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits


def _read_optimizer_state(optimizer, params, entry, tensors, prefix, where, fail):
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


def _no_stray_tensors(tensors, prefixes, fail):
    stray = [name for name in tensors if not name.startswith(prefixes)]
    if stray:
        fail(f"unexpected tensors {sorted(stray)[:5]}")


def _read_training(est, spec, tensors, fail):
    """The checked "training" entry (see the module docstring) as
    _BaseNN._training_state gives it: each optimizer's state is loaded into
    a scratch optimizer over the model's parameters, which checks it all."""
    if not isinstance(spec, dict) or set(spec) != {"optimizers", "shuffle"} \
            or not isinstance(spec["optimizers"], list):
        fail("the training entry must hold exactly an 'optimizers' list and 'shuffle'")
    shuffle = spec["shuffle"]
    if not (isinstance(shuffle, dict) and set(shuffle) == {"bit_generator", "state",
                                                           "has_uint32", "uinteger"}
            and shuffle["bit_generator"] == "PCG64" and isinstance(shuffle["state"], dict)
            and set(shuffle["state"]) == {"state", "inc"}
            and all(_is_uint(v, 128) for v in shuffle["state"].values())
            and shuffle["has_uint32"] in (0, 1) and _is_uint(shuffle["uinteger"], 32)):
        fail("training.shuffle must be a PCG64 generator state")
    scratch = est._make_optimizer(1.0).groups
    if len(spec["optimizers"]) != len(scratch):
        fail(f"training.optimizers must list {len(scratch)} optimizers")
    prefixes = tuple(f"{_TRAINING}{g}." for g in range(len(scratch)))
    states = [_read_optimizer_state(optimizer, group, entry, tensors, prefix,
                                    f"training.optimizers[{g}]", fail)
              for g, ((optimizer, group), entry, prefix)
              in enumerate(zip(scratch, spec["optimizers"], prefixes))]
    _no_stray_tensors(tensors, prefixes, fail)
    return {"optimizers": states, "shuffle": shuffle}


def _read_model_optimizer(meta, model, tensors, optimizer, fail):
    """A model file's optimizer entry, loaded into ``optimizer``, or when it
    is None into a scratch optimizer of the saved type: checked either way."""
    if "optimizer" not in meta:
        _no_stray_tensors(tensors, (), fail)
        if optimizer is not None:
            fail("the file holds no optimizer state (save it with "
                 "nncore.save(model, path, optimizer=...))")
        return
    entry = meta["optimizer"]
    classes = _optimizer_classes()
    kind = entry.get("type") if isinstance(entry, dict) else None
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        fail(f"optimizer: type must be one of {sorted(classes)}")
    _no_stray_tensors(tensors, (_OPTIMIZER,), fail)
    if optimizer is None:
        optimizer = cls(0.0)             # its hyperparameters come from the entry
    elif type(optimizer) is not cls:
        raise TypeError(f"nncore.load: the file holds {kind} state; optimizer is a "
                        f"{type(optimizer).__name__}")
    # load_state_dict changes nothing unless all of the state checks out
    _read_optimizer_state(optimizer, model.parameters(), entry, tensors, _OPTIMIZER,
                          "optimizer", fail)


def _build_estimator(spec, model, training_tensors, fail):
    classes = _estimator_classes()
    if not isinstance(spec, dict) or not {"class", "params", "fitted"} <= set(spec) <= {
            "class", "params", "fitted", "training"}:
        fail("the estimator entry must hold exactly 'class', 'params' and 'fitted' "
             "(and 'training' once trained)")
    cls = classes.get(spec["class"]) if isinstance(spec["class"], str) else None
    if cls is None:
        fail(f"unknown estimator class {spec['class']!r}; expected one of {sorted(classes)}")
    params, fitted = spec["params"], spec["fitted"]
    if not isinstance(params, dict) or set(params) - set(cls._get_param_names()):
        fail(f"{cls.__name__} params must be an object with keys among "
             f"{cls._get_param_names()}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params = dict(params, hidden_layer_sizes=tuple(params["hidden_layer_sizes"]))
    est = cls(**params)
    try:
        hidden = est._validate_params()
    except ValueError as exc:
        fail(f"bad estimator parameters: {exc}")
    required = {"n_features_in_", "n_outputs_", "loss_curve_", "best_loss_", "n_iter_", "t_",
                "validation_scores_", "best_validation_score_", "hidden"}
    required |= {"classes_"} if cls.__name__ == "NNClassifier" else {"y_1d"}
    if not isinstance(fitted, dict) or set(fitted) != required:
        fail(f"{cls.__name__} fitted attributes must be exactly {sorted(required)}")
    denses = dense_layers(model)
    n_in, n_out = denses[0].in_features, denses[-1].out_features
    if fitted["n_features_in_"] != n_in or fitted["n_outputs_"] != n_out:
        fail("n_features_in_/n_outputs_ do not match the model")
    if not isinstance(fitted["hidden"], list) or tuple(fitted["hidden"]) != hidden \
            or [d.out_features for d in denses[:-1]] != list(hidden):
        fail("hidden_layer_sizes does not match the model")
    for key in ("n_iter_", "t_"):
        if not isinstance(fitted[key], int) or isinstance(fitted[key], bool) or fitted[key] < 0:
            fail(f"{key} must be an int >= 0")
    est.n_features_in_ = n_in
    est.n_outputs_ = n_out
    est.n_iter_ = fitted["n_iter_"]
    est.t_ = fitted["t_"]
    est.loss_curve_ = _number_list(fitted["loss_curve_"], "loss_curve_", fail)
    est.validation_scores_ = _number_list(fitted["validation_scores_"], "validation_scores_",
                                          fail, allow_none=True)
    est.best_loss_ = _number_or_none(fitted["best_loss_"], "best_loss_", fail)
    est.best_validation_score_ = _number_or_none(fitted["best_validation_score_"],
                                                 "best_validation_score_", fail)
    est._hidden = hidden
    est._no_improvement_count = 0
    if cls.__name__ == "NNClassifier":
        est.classes_ = _decode_classes(fitted["classes_"], fail)
        if est._n_model_outputs() != n_out:
            fail(f"{len(est.classes_)} classes do not match a model with {n_out} outputs")
    else:
        if not isinstance(fitted["y_1d"], bool) or (fitted["y_1d"] and n_out != 1):
            fail("y_1d must be a boolean (true only with one output)")
        est._y_1d = fitted["y_1d"]
        est._n_targets = n_out
    est._attach_model(model)
    if "training" in spec:
        est._resume = _read_training(est, spec["training"], training_tensors, fail)
    else:
        _no_stray_tensors(training_tensors, (), fail)
    return est


def dense_layers(model):
    """The Dense layers of a (possibly nested) Sequential, in order."""
    from .layers import Dense, Sequential
    out = []
    for layer in model.layers:
        if isinstance(layer, Sequential):
            out += dense_layers(layer)
        elif isinstance(layer, Dense):
            out.append(layer)
    return out


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
    keys = {"nncore", "kind", "model"} | ({"estimator"} if kind == "estimator" else set())
    optional = {"optimizer"} if kind == "model" else set()
    if kind not in ("model", "estimator") or not keys <= set(meta) <= keys | optional:
        fail("not an nncore model file: its header must hold exactly "
             f"{sorted(keys)} with kind 'model' or 'estimator' (and 'optimizer' for a model "
             "saved with one)")
    if optimizer is not None and kind != "model":
        raise TypeError("nncore.load: optimizer= is for model files; an estimator restores "
                        "its own optimizer state")
    if not isinstance(meta["nncore"], str) or not re.fullmatch(r"[0-9A-Za-z.+_-]{1,40}",
                                                               meta["nncore"]):
        fail("bad 'nncore' version entry")
    prefix = _TRAINING if kind == "estimator" else _OPTIMIZER
    extra = {name: arr for name, arr in tensors.items() if name.startswith(prefix)}
    model = build_model(meta["model"],
                        {name: arr for name, arr in tensors.items() if name not in extra}, fail)
    if kind == "model":
        _read_model_optimizer(meta, model, extra, optimizer, fail)
        return model
    return _build_estimator(meta["estimator"], model, extra, fail)
