"""Input validation, in one place: what user arrays must be before they
reach the C core, and the errors that name what was wrong.

- ``layer_input``: a layer's forward input (or gradient) as float32
  C-contiguous, batch first, with the per-sample shape the layer takes.
- ``check_features`` / ``check_targets`` / ``check_sample_weight``: the
  data given to ``Trainer.fit`` and the estimators, checked once at entry
  (finite values, matching lengths, labels in range).
- ``is_sparse`` / ``check_sparse_features`` / ``dense_rows``: SciPy sparse
  X for the estimators, kept sparse (CSR float32) and densified a chunk of
  rows at a time.
"""
import math

import numpy as np

from . import _core, _guard

__all__ = ["shape_str", "layer_input", "image_input", "int_pair", "check_finite",
           "assign_param", "all_finite",
           "check_features",
           "check_targets", "check_sample_weight", "is_sparse", "check_sparse_features",
           "dense_rows"]

_F32 = np.float32


def shape_str(x):
    shape = getattr(x, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"a {type(x).__name__}"


def layer_input(name, x, sample_shape=None, what="input"):
    """The slow path of a layer's input check: x as a float32 C-contiguous
    array, batch first, whose samples have ``sample_shape`` (any shape of rank
    >= 1 when None), or a ValueError/TypeError naming the layer ``name``."""
    arr = _guard.as_array(x, name, what)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: {what} must hold real numbers, got dtype {arr.dtype}")
    if sample_shape is not None and len(sample_shape) == 1:
        if arr.ndim != 2:
            hint = " (use x.reshape(1, -1) for a single sample)" if arr.ndim == 1 else ""
            raise ValueError(f"{name}: {what} must be 2-D (batch, features), got "
                             f"{shape_str(arr)}{hint}")
        if arr.shape[1] != sample_shape[0]:
            raise ValueError(f"{name}: {what} has {arr.shape[1]} features, "
                             f"expected {sample_shape[0]}")
    elif sample_shape is not None:
        if arr.shape[1:] != tuple(sample_shape):
            raise ValueError(f"{name}: {what} must have shape (batch, "
                             f"{', '.join(map(str, sample_shape))}), got {shape_str(arr)}")
    elif arr.ndim < 2:
        hint = " (use x.reshape(1, -1) for a single sample)" if arr.ndim == 1 else ""
        raise ValueError(f"{name}: {what} must be 2-D or more (batch first), got "
                         f"{shape_str(arr)}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: {what} is an empty batch (0 rows)")
    return _guard.c_array(arr, _F32, name, what)


def check_finite(owner, name, arr):
    with np.errstate(invalid="ignore"):
        if not np.isfinite(arr).all():
            raise ValueError(f"{owner}: {name} holds NaN or infinity")


def assign_param(owner, name, target, value):
    """Copy ``value`` into a layer's own array ``target`` (a parameter, its
    gradient or a statistic, which keeps its identity: optimizers and
    predict plans hold it): real numbers of target's shape, finite unless
    it is a gradient (``name`` starting with "grad")."""
    arr = _guard.as_array(value, owner, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: {name} must hold real numbers, got {arr.dtype}")
    if arr.shape != target.shape:
        raise ValueError(f"{owner}: {name} has shape {arr.shape}, expected {target.shape}")
    if not name.startswith("grad"):
        check_finite(owner, name, arr)
    target[...] = arr


def all_finite(a):
    """True when no element of the float array is NaN or infinite. float32
    C-contiguous arrays (what fit trains on) go to the C check, one threaded
    pass. Otherwise a finite sum proves it in one pass without a temporary
    the size of the data (NaN and infinities propagate into the sum); only a
    non-finite sum, which finite values may also give by overflowing, needs
    the elementwise test."""
    if a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned:
        return _core.all_finite(a)
    with np.errstate(all="ignore"):
        return math.isfinite(float(a.sum())) or bool(np.isfinite(a).all())


def check_features(X, sample_shape, who, name="X"):
    """X as a float32 C-contiguous array of finite values (one conversion),
    batch first. ``sample_shape``: the per-sample shape the model takes (a
    tuple, e.g. ``(784,)`` or ``(1, 28, 28)``), or None when any shape of
    rank >= 1 is taken; a bare int means ``(n,)``."""
    if is_sparse(X):
        raise TypeError(f"{who}: {name} is a sparse matrix; nncore needs dense input "
                        "(call X.toarray() if it fits in memory)")
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    arr = _guard.as_array(X, who, name)
    if arr.dtype.kind == "c":
        raise ValueError(f"{who}: {name} is complex. Complex data not supported")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{who}: {name} has dtype {arr.dtype} and cannot be converted "
                            f"to numbers ({exc})") from None
    rank = 2 if sample_shape is None or len(sample_shape) == 1 else 1 + len(sample_shape)
    if arr.ndim != rank and not (sample_shape is None and arr.ndim > 2):
        if rank == 2:
            raise ValueError(f"{who}: {name} must be 2-D (samples x features), got shape "
                             f"{arr.shape}. Reshape your data with x.reshape(-1, 1) if it "
                             "has one feature or x.reshape(1, -1) if it is one sample")
        raise ValueError(f"{who}: {name} must be {rank}-D (samples, *{sample_shape}), got "
                         f"shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{who}: {name} has 0 samples (shape={arr.shape}); at least 1 "
                         "is required")
    if arr.size == 0:
        raise ValueError(f"{who}: {name} has 0 feature(s) (shape={arr.shape}) while a "
                         "minimum of 1 is required.")
    if sample_shape is not None and arr.shape[1:] != tuple(sample_shape):
        if rank == 2:
            raise ValueError(f"{who}: {name} has {arr.shape[1]} features, but the model "
                             f"expects {sample_shape[0]}")
        raise ValueError(f"{who}: {name} has samples of shape {arr.shape[1:]}, but the "
                         f"model expects {tuple(sample_shape)}")
    with np.errstate(over="ignore"):      # reported below, as an error
        out = _guard.c_array(arr, np.float32, who, name)
    if not all_finite(out):
        what = "NaN" if np.isnan(out).any() else "infinity or a value too large for float32"
        raise ValueError(f"{who}: input {name} contains {what}")
    return out


def is_sparse(X):
    """True for a SciPy sparse matrix or array (without importing SciPy)."""
    return hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse")


def check_sparse_features(X, who, name="X"):
    """A SciPy sparse X (n, features) as a float32 CSR matrix of finite values;
    a sparse copy at most, never a dense one. CSR because batches are slices
    of rows."""
    if not hasattr(X, "tocsr") or getattr(X, "ndim", 2) != 2:
        raise TypeError(f"{who}: {name} is a sparse object of type {type(X).__name__} "
                        "that is not a 2-D SciPy sparse matrix")
    if X.dtype.kind == "c":
        raise ValueError(f"{who}: {name} is complex. Complex data not supported")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{who}: {name} has dtype {X.dtype}; expected numbers")
    n, d = X.shape
    if n == 0:
        raise ValueError(f"{who}: {name} has 0 samples (shape=({n}, {d})); at least 1 "
                         "is required")
    if d == 0:
        raise ValueError(f"{who}: {name} has 0 feature(s) (shape=({n}, {d})) while a "
                         "minimum of 1 is required.")
    with np.errstate(over="ignore"):      # reported below, as an error
        X = X.tocsr().astype(np.float32)
    X.sum_duplicates()
    if not all_finite(X.data):
        what = "NaN" if np.isnan(X.data).any() else "infinity or a value too large for float32"
        raise ValueError(f"{who}: input {name} contains {what}")
    return X


def dense_rows(X, lo, hi):
    """Rows lo:hi of X (a float32 array, or a float32 CSR matrix from
    check_sparse_features, of which only those rows are densified) as a
    float32 C-contiguous array."""
    if isinstance(X, np.ndarray):
        return X[lo:hi]
    return np.ascontiguousarray(X[lo:hi].toarray(), dtype=np.float32)


def check_targets(y, n_samples, n_outputs, kind, who, name="y"):
    """Targets in the form the loss takes: int64 class indices (1-D), or a
    float32 (n, n_outputs) array; validated against the model's outputs."""
    if y is None:
        raise ValueError(f"{who}: requires y to be passed, but the target y is None")
    arr = _guard.as_array(y, who, name)
    if arr.ndim == 0 or len(arr) != n_samples:
        got = len(arr) if arr.ndim else "a scalar"
        raise ValueError(f"{who}: X has {n_samples} samples but {name} has {got}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{who}: {name} has dtype {arr.dtype}; expected numbers "
                        "(encode labels as class indices 0..n_classes-1)")
    if arr.dtype.kind == "f" and not all_finite(arr):
        raise ValueError(f"{who}: input {name} contains NaN or infinity")
    if kind == "class_index":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{who}: {name} must hold one class index per sample (1-D), "
                             f"got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{who}: {name} must hold integer class indices, got "
                             "non-integer values")
        # in the labels' own dtype: a cast first could wrap huge values into range
        if n_outputs is not None and (arr.min() < 0 or arr.max() >= n_outputs):
            bad = arr[(arr < 0) | (arr >= n_outputs)][0]
            raise ValueError(f"{who}: {name} holds the class index {bad}, outside "
                             f"[0, {n_outputs}) for a model with {n_outputs} outputs")
        if arr.dtype.kind in "uf" and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{who}: {name} holds the class index {arr.max()}, too large "
                             "for int64")
        return arr.astype(np.int64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{who}: {name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{who}: {name} has 0 target columns (shape {arr.shape})")
    if n_outputs is not None and arr.shape[1] != n_outputs:
        raise ValueError(f"{who}: {name} has {arr.shape[1]} target column(s), but the "
                         f"model has {n_outputs} outputs")
    with np.errstate(over="ignore"):      # reported below, as an error
        out = _guard.c_array(arr, np.float32, who, name)
    if not all_finite(out):
        raise ValueError(f"{who}: input {name} contains a value too large for float32")
    if kind == "binary" and (out.min() < 0.0 or out.max() > 1.0):
        raise ValueError(f"{who}: {name} must be in [0, 1] for BCEWithLogitsLoss, got "
                         f"values in [{out.min()}, {out.max()}]")
    return out


def check_sample_weight(sample_weight, n, who):
    """One finite weight >= 0 per sample (a scalar applies to all), not all
    zero, as float64."""
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise ValueError(f"{who}: sample_weight must hold numbers, got dtype {w.dtype}")
    w = np.broadcast_to(w, (n,)).astype(np.float64) if w.ndim == 0 else w.astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"{who}: sample_weight has shape {w.shape}, expected ({n},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{who}: sample_weight must be finite and >= 0")
    if not w.sum() > 0:
        raise ValueError(f"{who}: sample_weight is zero for every sample; at least one "
                         "sample needs a positive weight")
    return w


def int_pair(owner, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as a pair (kernel sizes,
    strides, padding of 2-D layers); ValueError naming ``owner`` otherwise."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise ValueError(f"{owner}: {name} must be an int >= {minimum} or a pair of them, got "
                         f"{value!r}")
    return (int(pair[0]), int(pair[1]))


def image_input(name, x, channels=None, what="input"):
    """x as a float32 C-contiguous (batch, channels, height, width) array
    (NCHW), with ``channels`` channels when given; else a ValueError naming
    the layer ``name``."""
    if not (type(x) is np.ndarray and x.ndim == 4 and x.dtype == _F32
            and x.flags.c_contiguous and x.flags.aligned and x.shape[0] > 0):
        x = layer_input(name, x, None, what)
        if x.ndim != 4:
            raise ValueError(f"{name}: {what} must be 4-D (batch, channels, height, width), "
                             f"got {shape_str(x)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: {what} has {x.shape[1]} channels, expected {channels} "
                         f"(shape {x.shape}, NCHW)")
    return x
