"""Fitted NNClassifier / NNRegressor in nncore files (``nncore.save`` /
``nncore.load``, kind "estimator"): the parameters, the fitted attributes
and, once trained by a stochastic solver, the optimizer state partial_fit
continues from. Every value is checked on load (see serialize.py).
"""
import math

import numpy as np

from .estimator_base import _weights_and_biases
from .estimators import NNClassifier, NNRegressor
from .serialize import (is_pcg64_state, no_stray_tensors, read_optimizer_state, register_kind,
                        split_optimizer_state)

__all__ = []

_ESTIMATORS = {"NNClassifier": NNClassifier, "NNRegressor": NNRegressor}
_TRAINING = "training."         # the prefix of an estimator's optimizer buffers
_NUMERIC_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                   "uint64", "float16", "float32", "float64"}


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
    if name == "n_iter_no_change" and value == math.inf:
        return "inf"       # JSON has no infinity
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    if name == "random_state" and not (value is None or isinstance(value, int)):
        return None        # a RandomState/Generator object: not storable, nor needed
    return value


def _estimator_entry(est):
    est._check_fitted()
    curve = getattr(est, "loss_curve_", None)      # none after an lbfgs fit
    fitted = {"n_features_in_": est.n_features_in_, "n_outputs_": est.n_outputs_,
              "loss_curve_": None if curve is None else [float(v) for v in curve],
              "best_loss_": getattr(est, "best_loss_", None), "n_iter_": est.n_iter_,
              "t_": est.t_, "validation_scores_": getattr(est, "validation_scores_", None),
              "best_validation_score_": getattr(est, "best_validation_score_", None),
              "hidden": list(est._hidden), "loss_": float(est.loss_), "lr": est._lr}
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        fitted["feature_names_in_"] = [str(v) for v in names]
    if hasattr(est, "classes_"):
        fitted["classes_"] = _encode_classes(est.classes_)
        fitted["multilabel"] = bool(est._multilabel)
    if hasattr(est, "_y_1d"):
        fitted["y_1d"] = bool(est._y_1d)
    for key in ("best_loss_", "best_validation_score_", "loss_"):
        value = fitted[key]
        if value is not None and not math.isfinite(value):
            fitted[key] = str(float(value))     # "inf"/"-inf": JSON has no infinity
    return {"class": type(est).__name__,
            "params": {k: _jsonable_param(k, v) for k, v in est.get_params().items()},
            "fitted": fitted}


def _decode_classes(spec, fail):
    if not isinstance(spec, dict) or set(spec) != {"dtype", "values"} \
            or not isinstance(spec["values"], list) or len(spec["values"]) < 1:
        fail("classes_ must be {'dtype': ..., 'values': [at least 1 label]}")
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


def _read_training(est, spec, tensors, fail):
    """The checked "training" entry (see the module docstring) as
    _BaseNN._training_state gives it: each optimizer's state is loaded into
    a scratch optimizer over the model's parameters, which checks it all."""
    if not isinstance(spec, dict) or set(spec) != {"optimizers", "shuffle"} \
            or not isinstance(spec["optimizers"], list):
        fail("the training entry must hold exactly an 'optimizers' list and 'shuffle'")
    shuffle = spec["shuffle"]
    if not is_pcg64_state(shuffle):
        fail("training.shuffle must be a PCG64 generator state")
    scratch = est._make_optimizer(1.0).groups
    if len(spec["optimizers"]) != len(scratch):
        fail(f"training.optimizers must list {len(scratch)} optimizers")
    prefixes = tuple(f"{_TRAINING}{g}." for g in range(len(scratch)))
    states = [read_optimizer_state(optimizer, group, entry, tensors, prefix,
                                   f"training.optimizers[{g}]", fail)
              for g, ((optimizer, group), entry, prefix)
              in enumerate(zip(scratch, spec["optimizers"], prefixes))]
    no_stray_tensors(tensors, prefixes, fail)
    return {"optimizers": states, "shuffle": shuffle}


def _build_estimator(spec, model, training_tensors, fail):
    if not isinstance(spec, dict) or not {"class", "params", "fitted"} <= set(spec) <= {
            "class", "params", "fitted", "training"}:
        fail("the estimator entry must hold exactly 'class', 'params' and 'fitted' "
             "(and 'training' once trained)")
    cls = _ESTIMATORS.get(spec["class"]) if isinstance(spec["class"], str) else None
    if cls is None:
        fail(f"unknown estimator class {spec['class']!r}; expected one of {sorted(_ESTIMATORS)}")
    params, fitted = spec["params"], spec["fitted"]
    if not isinstance(params, dict) or set(params) - set(cls._get_param_names()):
        fail(f"{cls.__name__} params must be an object with keys among "
             f"{cls._get_param_names()}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params = dict(params, hidden_layer_sizes=tuple(params["hidden_layer_sizes"]))
    if params.get("n_iter_no_change") == "inf":
        params = dict(params, n_iter_no_change=math.inf)
    est = cls(**params)
    try:
        hidden = est._validate_params()
    except ValueError as exc:
        fail(f"bad estimator parameters: {exc}")
    required = {"n_features_in_", "n_outputs_", "loss_curve_", "best_loss_", "n_iter_", "t_",
                "validation_scores_", "best_validation_score_", "hidden"}
    required |= {"classes_", "multilabel"} if cls.__name__ == "NNClassifier" else {"y_1d"}
    optional = {"feature_names_in_", "loss_", "lr"}
    if not isinstance(fitted, dict) or not required <= set(fitted) <= required | optional:
        fail(f"{cls.__name__} fitted attributes must be {sorted(required)} (and optionally "
             f"{sorted(optional)})")
    weights = [w for w, _ in _weights_and_biases(model)[0]]
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    if fitted["n_features_in_"] != n_in or fitted["n_outputs_"] != n_out:
        fail("n_features_in_/n_outputs_ do not match the model")
    if not isinstance(fitted["hidden"], list) or tuple(fitted["hidden"]) != hidden \
            or [w.shape[1] for w in weights[:-1]] != list(hidden):
        fail("hidden_layer_sizes does not match the model")
    for key in ("n_iter_", "t_"):
        if not isinstance(fitted[key], int) or isinstance(fitted[key], bool) or fitted[key] < 0:
            fail(f"{key} must be an int >= 0")
    est.n_features_in_ = n_in
    est.n_outputs_ = n_out
    est.n_iter_ = fitted["n_iter_"]
    est.t_ = fitted["t_"]
    stochastic = {"loss_curve_": _number_list(fitted["loss_curve_"], "loss_curve_", fail,
                                              allow_none=True),
                  "validation_scores_": _number_list(fitted["validation_scores_"],
                                                     "validation_scores_", fail,
                                                     allow_none=True),
                  "best_loss_": _number_or_none(fitted["best_loss_"], "best_loss_", fail),
                  "best_validation_score_": _number_or_none(
                      fitted["best_validation_score_"], "best_validation_score_", fail)}
    if stochastic["loss_curve_"] is not None:       # an lbfgs fit sets none of them
        est.__dict__.update(stochastic)
    loss = _number_or_none(fitted.get("loss_"), "loss_", fail)
    if loss is not None:
        est.loss_ = loss
    elif stochastic["loss_curve_"]:
        est.loss_ = stochastic["loss_curve_"][-1]
    lr = _number_or_none(fitted.get("lr", est.learning_rate_init), "lr", fail)
    if not lr > 0:
        fail(f"lr must be a number > 0, got {lr!r}")
    est._lr = lr
    if "feature_names_in_" in fitted:
        names = fitted["feature_names_in_"]
        if not isinstance(names, list) or len(names) != n_in or not all(
                isinstance(v, str) for v in names):
            fail(f"feature_names_in_ must be a list of {n_in} strings")
        est.feature_names_in_ = np.array(names, dtype=object)
    est._hidden = hidden
    est._no_improvement_count = 0
    est._X_float32 = False
    if cls.__name__ == "NNClassifier":
        if not isinstance(fitted["multilabel"], bool):
            fail("multilabel must be a boolean")
        est._label_indicator = fitted["multilabel"]
        est.classes_ = _decode_classes(fitted["classes_"], fail)
        if est._multilabel and not np.array_equal(est.classes_, np.arange(n_out)):
            fail("a multilabel classifier's classes_ must be 0..n_outputs-1")
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
        no_stray_tensors(training_tensors, (), fail)
    return est


def _dump(est):
    """(the file entry, the model, the optimizer buffers) of a fitted estimator."""
    entry = _estimator_entry(est)
    tensors = {}
    training = est._training_state()
    if training is not None:
        entries = []
        for g, state in enumerate(training["optimizers"]):
            optimizer_entry, buffers = split_optimizer_state(state, f"{_TRAINING}{g}.")
            entries.append(optimizer_entry)
            tensors.update(buffers)
        entry["training"] = {"optimizers": entries, "shuffle": training["shuffle"]}
    return entry, est.model_, tensors


register_kind("estimator", tuple(_ESTIMATORS.values()), _dump, _build_estimator, _TRAINING)
