"""nncore.matmul: SGEMM with a fused epilogue; lanczos, the extreme eigenvalues of a
symmetric operator known only by its products."""
import numbers

import numpy as np

from . import _core
from . import _guard


_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)


def _as_float32_matrix(x, name, trans):
    """(x as the float32 C-contiguous matrix the GEMM reads, its trans flag):
    such a matrix as it is; a Fortran-ordered float32 one (a transposed view
    such as ``b.T``) as its C-contiguous transpose with the flag flipped, the
    same op(x) without a copy; anything else converted once."""
    if type(x) is np.ndarray and x.dtype is _F32 and x.ndim == 2:
        flags = x.flags
        if flags.aligned:
            if flags.c_contiguous:
                return x, trans  # the common case, checked cheaply: small products are call-bound
            if flags.f_contiguous:
                return x.T, not trans
    arr = _guard.as_array(x, "matmul", name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"matmul: {name} has dtype {arr.dtype}; expected real numbers")
    if arr.ndim != 2:
        raise ValueError(f"matmul: {name} must be 2-D, got shape {arr.shape}")
    return _guard.c_array(arr, _F32, "matmul", name), trans


def _flag(value, name):
    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"matmul: {name} must be True or False, got {value!r}")


def _scalar(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"matmul: {name} must be a real number, got {value!r}")
    value = float(value)
    if not abs(value) <= _F32_MAX:
        raise ValueError(f"matmul: {name} must be finite in float32, got {value!r}")
    return value


# The precisions matmul computes in: the name users pass -> bf16 or not.
PRECISIONS = {"float32": False, "bf16": True}


def check_precision(precision, where):
    """The bf16 flag for a precision name; anything but "float32" or "bf16"
    is refused (bf16 is only ever chosen by name)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {list(PRECISIONS)}, "
                         f"got {precision!r}")
    return PRECISIONS[precision]


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None,
           bias=None, activation=None, precision="float32"):
    """Return ``activation(alpha * op(a) @ op(b) + beta * out + bias)`` in float32.

    ``op(x)`` is ``x.T`` when the matching ``trans_*`` flag is set. ``a`` and
    ``b`` may be any 2-D array-likes of real numbers (int, bool, float64,
    Fortran order, strided or broadcast views): they are converted once to
    float32 C-contiguous arrays (no copy when they already are). ``bias`` has
    one value per output column. ``activation`` is ``None`` or ``"relu"``.
    ``alpha`` and ``beta`` are real numbers within float32's range. NaN and
    infinity in the operands propagate as IEEE arithmetic says.

    ``out``, when given, must be a float32, C-contiguous, writable array of
    shape ``(m, n)`` that does not overlap ``a``, ``b`` or ``bias``; it is
    written in place and returned. With ``beta == 0`` its previous contents
    are never read (they may be NaN). Without ``out`` the result is a new
    array; one too large for the memory available raises MemoryError.

    ``precision="bf16"`` rounds ``op(a)`` and ``op(b)`` to bfloat16 (round to
    nearest even) for the product and accumulates it in float32; alpha, beta,
    bias, activation and the result stay float32. It runs AVX512_BF16's
    ``vdpbf16ps`` where the CPU has it (``nncore.info()["bf16"]``) and a
    portable kernel with the same results elsewhere. The default is
    ``"float32"``; no other value is accepted.
    """
    bf16 = (False if type(precision) is str and precision == "float32"
            else check_precision(precision, "matmul"))
    if activation is not None and (not isinstance(activation, str)
                                   or activation not in _core.ACTIVATIONS):
        raise ValueError(f"matmul: unknown activation {activation!r}; expected one of "
                         f"{[k for k in _core.ACTIVATIONS if k != 'none']}")
    trans_a = trans_a if trans_a is False else _flag(trans_a, "trans_a")
    trans_b = trans_b if trans_b is False else _flag(trans_b, "trans_b")
    alpha = 1.0 if alpha == 1.0 and type(alpha) is float else _scalar(alpha, "alpha")
    beta = 0.0 if beta == 0.0 and type(beta) is float else _scalar(beta, "beta")
    given = (trans_a, trans_b)
    a, trans_a = _as_float32_matrix(a, "a", trans_a)
    b, trans_b = _as_float32_matrix(b, "b", trans_b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:     # named as given: a flipped flag's matrix shown transposed back
        shape_a = a.shape[::-1] if trans_a != given[0] else a.shape
        shape_b = b.shape[::-1] if trans_b != given[1] else b.shape
        raise ValueError(f"matmul: shapes {shape_a}{'.T' if given[0] else ''} and "
                         f"{shape_b}{'.T' if given[1] else ''} do not align: {k} != {kb}")
    if out is None:
        if beta != 0.0:
            raise ValueError("matmul: beta != 0 needs an `out` array to accumulate into")
        out = _guard.empty((m, n), np.float32, lambda: f"matmul: the ({m}, {n}) float32 output")
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError("matmul: out must be a float32 numpy array")
        if out.shape != (m, n):
            raise ValueError(f"matmul: out has shape {out.shape}, expected {(m, n)}")
        flags = out.flags
        if not flags.c_contiguous or not flags.writeable or not flags.aligned:
            raise ValueError("matmul: out must be C-contiguous, aligned and writable")
    if bias is not None:
        if not (type(bias) is np.ndarray and bias.dtype is _F32 and bias.flags.c_contiguous):
            bias = _guard.as_array(bias, "matmul", "bias")
            if bias.dtype.kind not in "biuf":
                raise TypeError(f"matmul: bias has dtype {bias.dtype}; expected real numbers")
            bias = _guard.c_array(bias, _F32, "matmul", "bias")
        if bias.shape != (n,):
            raise ValueError(f"matmul: bias has shape {bias.shape}, expected ({n},)")
    try:
        _core.sgemm(trans_a, trans_b, alpha, a, b, beta, out, bias,
                    _core.ACTIVATIONS[activation], bf16)
    except ValueError as exc:
        raise ValueError(str(exc).replace("sgemm:", "matmul:", 1)) from None
    return out


def lanczos(matvec, n, iters, *, seed=0):
    """The Ritz values (ascending, float64) of a symmetric linear operator on
    R^n known only through ``matvec(v)`` (a float64 vector of n values in,
    one out), after ``iters`` Lanczos steps from a random unit start vector
    of ``numpy.random.default_rng(seed)``.

    Every new vector is re-orthogonalised against all previous ones (twice:
    "twice is enough"), so the Ritz values carry no spurious copies. The
    smallest and largest approach the operator's extreme eigenvalues from
    inside, quickly when they stand apart from the rest of the spectrum;
    with ``iters >= n`` (or once the Krylov space is invariant) they are the
    eigenvalues, up to rounding. Uses ``iters`` vectors of n float64s.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"lanczos: n must be a positive int, got {n!r}")
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
        raise ValueError(f"lanczos: iters must be a positive int, got {iters!r}")
    iters = min(int(iters), int(n))
    q = np.random.default_rng(seed).standard_normal(int(n))
    q /= np.linalg.norm(q)
    basis = np.empty((iters, int(n)))
    alpha, beta = [], []
    scale = 0.0
    for j in range(iters):
        basis[j] = q
        z = np.array(matvec(q), dtype=np.float64).reshape(-1)
        if z.shape != (n,):
            raise ValueError(f"lanczos: matvec returned {z.size} values, expected {n}")
        if not np.isfinite(z).all():
            raise FloatingPointError("lanczos: matvec returned NaN or Inf")
        a = float(q @ z)
        alpha.append(a)
        done = basis[:j + 1]
        for _ in range(2):
            z -= done.T @ (done @ z)
        b = float(np.linalg.norm(z))
        scale = max(scale, abs(a), b)
        if j == iters - 1 or b <= 1e-12 * scale:    # the last step, or an invariant subspace
            break
        beta.append(b)
        q = z / b
    k = len(alpha)
    tri = np.diag(alpha) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
    return np.linalg.eigvalsh(tri)
