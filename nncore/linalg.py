"""nncore.matmul: SGEMM with a fused epilogue."""
import numpy as np

from . import _core


_F32 = np.dtype(np.float32)


def _as_float32_matrix(x, name):
    if type(x) is np.ndarray and x.dtype is _F32 and x.ndim == 2 and x.flags.c_contiguous:
        return x  # the common case, checked cheaply: small products are call-bound
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"matmul: {name} has dtype {arr.dtype}; expected real numbers")
    if arr.ndim != 2:
        raise ValueError(f"matmul: {name} must be 2-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None,
           bias=None, activation=None):
    """Return ``activation(alpha * op(a) @ op(b) + beta * out + bias)`` in float32.

    ``op(x)`` is ``x.T`` when the matching ``trans_*`` flag is set. ``a`` and
    ``b`` may be any 2-D array-likes of real numbers: they are converted once
    to float32 C-contiguous arrays (no copy when they already are). ``bias``
    has one value per output column. ``activation`` is ``None`` or ``"relu"``.

    ``out``, when given, must be a float32, C-contiguous, writable array of
    shape ``(m, n)``; it is written in place and returned. With ``beta == 0``
    its previous contents are never read (they may be NaN).
    """
    if activation not in _core.ACTIVATIONS:
        raise ValueError(f"matmul: unknown activation {activation!r}; expected one of "
                         f"{[k for k in _core.ACTIVATIONS if k != 'none']}")
    a = _as_float32_matrix(a, "a")
    b = _as_float32_matrix(b, "b")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"matmul: shapes {a.shape}{'.T' if trans_a else ''} and "
                         f"{b.shape}{'.T' if trans_b else ''} do not align: {k} != {kb}")
    if out is None:
        if beta != 0.0:
            raise ValueError("matmul: beta != 0 needs an `out` array to accumulate into")
        out = np.empty((m, n), dtype=np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError("matmul: out must be a float32 numpy array")
        if out.shape != (m, n):
            raise ValueError(f"matmul: out has shape {out.shape}, expected {(m, n)}")
        flags = out.flags
        if not flags.c_contiguous or not flags.writeable:
            raise ValueError("matmul: out must be C-contiguous and writable")
    if bias is not None:
        if not (type(bias) is np.ndarray and bias.dtype is _F32 and bias.flags.c_contiguous):
            bias = np.ascontiguousarray(bias, dtype=np.float32)
        if bias.shape != (n,):
            raise ValueError(f"matmul: bias has shape {bias.shape}, expected ({n},)")
    _core.sgemm(trans_a, trans_b, float(alpha), a, b, float(beta), out, bias,
                _core.ACTIVATIONS[activation])
    return out
