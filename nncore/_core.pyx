# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin bindings to the C core (csrc/nncore.h).

Each function checks what C trusts (shapes, lengths), releases the GIL around
the C call and turns C status codes into Python exceptions. Conversions of
user input (dtype, order) happen in the Python modules, once, before here.
"""
from libc.stdint cimport int64_t

cdef extern from "nncore.h" nogil:
    int NN_OK, NN_EINVAL, NN_ENOMEM, NN_EISA
    int NN_ISA_COUNT
    int NN_ACT_NONE, NN_ACT_RELU
    int nn_init()
    int nn_set_isa(int isa)
    int nn_get_isa()
    int nn_isa_available(int isa)
    const char *nn_isa_name(int isa)
    int nn_isa_from_name(const char *name)
    const char *nn_compiler()
    const char *nn_build_flags()
    int nn_openmp_version()
    void nn_set_num_threads(int n)
    int nn_get_num_threads()
    void nn_relu_forward(int64_t n, const float *x, float *y)
    void nn_relu_backward(int64_t n, const float *x, const float *dy, float *dx)
    int nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc, const float *bias, int activation)


cdef int check(int status, str what) except -1:
    """Raise the Python exception for a C status code."""
    if status == NN_OK:
        return 0
    if status == NN_ENOMEM:
        raise MemoryError(f"{what}: out of memory")
    if status == NN_EINVAL:
        raise ValueError(f"{what}: invalid argument")
    raise RuntimeError(f"{what}: C core failed with status {status}")


ACTIVATIONS = {None: NN_ACT_NONE, "none": NN_ACT_NONE, "relu": NN_ACT_RELU}

_init_status = nn_init()


def init_error():
    """A message if NNCORE_ISA could not be honoured at import, else None."""
    import os
    if _init_status == NN_OK:
        return None
    name = os.environ.get("NNCORE_ISA", "")
    if _init_status == NN_EINVAL:
        return (f"NNCORE_ISA={name!r} is not an ISA nncore knows; "
                f"use one of {isa_names()}")
    return (f"NNCORE_ISA={name!r} is not available on this CPU or build; "
            f"available: {isa_available()}")


def isa_names():
    return [nn_isa_name(i).decode() for i in range(NN_ISA_COUNT)]


def isa_available():
    return [nn_isa_name(i).decode() for i in range(NN_ISA_COUNT) if nn_isa_available(i)]


def get_isa():
    return nn_isa_name(nn_get_isa()).decode()


def set_isa(str name):
    """Switch every kernel to the ISA `name` (for tests and benchmarks)."""
    cdef int isa = nn_isa_from_name(name.encode())
    if isa < 0:
        raise ValueError(f"unknown ISA {name!r}; expected one of {isa_names()}")
    if nn_set_isa(isa) != NN_OK:
        raise ValueError(f"ISA {name!r} is not available here; available: {isa_available()}")


def build_info():
    return {
        "compiler": nn_compiler().decode(),
        "flags": nn_build_flags().decode(),
        "openmp": nn_openmp_version(),
    }


def set_num_threads(int n):
    nn_set_num_threads(n)


def get_num_threads():
    return nn_get_num_threads()


def relu_forward(const float[::1] x, float[::1] y):
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"relu_forward: y has {y.shape[0]} elements, x has {x.shape[0]}")
    with nogil:
        nn_relu_forward(x.shape[0], &x[0] if x.shape[0] else NULL, &y[0] if y.shape[0] else NULL)


def relu_backward(const float[::1] x, const float[::1] dy, float[::1] dx):
    if dy.shape[0] != x.shape[0] or dx.shape[0] != x.shape[0]:
        raise ValueError(f"relu_backward: x, dy, dx have {x.shape[0]}, {dy.shape[0]}, "
                         f"{dx.shape[0]} elements; they must match")
    if x.shape[0] == 0:
        return
    with nogil:
        nn_relu_backward(x.shape[0], &x[0], &dy[0], &dx[0])


cdef int64_t leading_dimension(int64_t rows, int64_t cols, Py_ssize_t row_stride,
                               Py_ssize_t col_stride, str name) except -1:
    """The row stride in floats; the last axis must be contiguous and rows
    must not overlap or run backwards."""
    if cols > 1 and col_stride != 4:
        raise ValueError(f"sgemm: {name} must have a contiguous last axis "
                         f"(stride 4 bytes), got {col_stride}")
    if rows <= 1:
        return cols if cols > 0 else 1
    if row_stride % 4 != 0 or row_stride // 4 < cols:
        raise ValueError(f"sgemm: {name} has a row stride of {row_stride} bytes; "
                         f"rows of {cols} float32 need at least {cols * 4}")
    return row_stride // 4


def sgemm(bint trans_a, bint trans_b, float alpha, const float[:, :] a,
          const float[:, :] b, float beta, float[:, :] c,
          const float[::1] bias=None, int activation=0):
    """c = act(alpha * op(a) op(b) + beta * c + bias). Rows may be strided
    (leading dimension = row stride, e.g. a column slice of a wider array);
    the last axis must be contiguous."""
    cdef int64_t m = a.shape[1] if trans_a else a.shape[0]
    cdef int64_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int64_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef int64_t n = b.shape[0] if trans_b else b.shape[1]
    if kb != k:
        raise ValueError(f"sgemm: op(a) is {m}x{k} but op(b) is {kb}x{n}")
    if c.shape[0] != m or c.shape[1] != n:
        raise ValueError(f"sgemm: out has shape ({c.shape[0]}, {c.shape[1]}), expected ({m}, {n})")
    if bias is not None and bias.shape[0] != n:
        raise ValueError(f"sgemm: bias has {bias.shape[0]} elements, expected {n}")
    if activation < 0 or activation > NN_ACT_RELU:
        raise ValueError(f"sgemm: unknown activation code {activation}")
    if m == 0 or n == 0:
        return
    cdef const float *pa = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
    cdef const float *pb = &b[0, 0] if b.shape[0] and b.shape[1] else NULL
    cdef const float *pbias = &bias[0] if bias is not None else NULL
    cdef int64_t lda = leading_dimension(a.shape[0], a.shape[1], a.strides[0], a.strides[1], "a")
    cdef int64_t ldb = leading_dimension(b.shape[0], b.shape[1], b.strides[0], b.strides[1], "b")
    cdef int64_t ldc = leading_dimension(c.shape[0], c.shape[1], c.strides[0], c.strides[1], "out")
    cdef int status
    with nogil:
        status = nn_sgemm(trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb,
                          beta, &c[0, 0], ldc, pbias, activation)
    check(status, "sgemm")
