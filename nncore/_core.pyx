# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin bindings to the C core (csrc/nncore.h, declared for Cython in _core.pxd).

Each function checks what C trusts (shapes, lengths), releases the GIL around
the C call and turns C status codes into Python exceptions. Conversions of
user input (dtype, order) happen in the Python modules, once, before here.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.pythread cimport PyThread_get_thread_ident
from libc.string cimport memcpy, memset
from libc.math cimport isfinite
from libc.string cimport memcpy
cimport numpy as cnp
import threading

from . import _guard

cnp.import_array()

cdef int check(int status, str what) except -1:
    """Raise the Python exception for a C status code."""
    if status == NN_OK:
        return 0
    if status == NN_ENOMEM:
        raise MemoryError(f"{what}: out of memory")
    if status == NN_EINVAL:
        raise ValueError(f"{what}: invalid argument")
    raise RuntimeError(f"{what}: C core failed with status {status}")


_init_status = nn_init()


# Predict plans: a model's kernel calls recorded once, replayed in one call.
include "_predict_plan.pxi"


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


def core_to_core_ns(int64_t rounds=2000):
    """The one-way latency, ns, of a cache line between the first two of the
    kernels' threads (half a round trip, the mean over `rounds`); 0.0 on one
    thread."""
    if rounds < 1:
        raise ValueError(f"core_to_core_ns: rounds must be >= 1, got {rounds}")
    cdef double ns
    with nogil:
        ns = nn_core_to_core_ns(rounds)
    return ns


def cache_sizes():
    """(L1 data, L2) cache sizes in bytes of one core, as the kernels block
    for them: read from the system once (the smaller known machine's when
    it does not say)."""
    cdef int64_t l1d, l2
    nn_cache_sizes(&l1d, &l2)
    return l1d, l2


def bf16_info():
    """The bfloat16 GEMM's hardware: whether the CPU runs its AVX512_BF16
    kernel, the kernel in use now, and whether AMX-BF16 is present."""
    return {
        "native": bool(nn_bf16_native()),
        "kernel": nn_bf16_kernel().decode(),
        "amx": bool(nn_amx_available()),
    }


MAX_THREADS = NN_MAX_THREADS


def set_num_threads(int n):
    nn_set_num_threads(n)


def set_local_num_threads(int n):
    """Cap the threads of the kernels this Python thread calls (other
    threads unaffected); returns the previous cap, to restore it with."""
    return nn_set_local_num_threads(n)


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


cdef inline bint overlaps(const char *p, int64_t p_bytes, const void *q, int64_t q_bytes):
    """Whether [p, p + p_bytes) and [q, q + q_bytes) share a byte (q may be NULL)."""
    cdef const char *qc = <const char *>q
    return qc != NULL and p_bytes > 0 and q_bytes > 0 and p < qc + q_bytes and qc < p + p_bytes


def sgemm(bint trans_a, bint trans_b, float alpha, const float[:, :] a,
          const float[:, :] b, float beta, float[:, :] c,
          const float[::1] bias=None, int activation=0, bint bf16=False):
    """c = act(alpha * op(a) op(b) + beta * c + bias). Rows may be strided
    (leading dimension = row stride, e.g. a column slice of a wider array);
    the last axis must be contiguous. bf16: the product of a and b rounded
    to bfloat16, accumulated in float32 (nn_gemm_bf16)."""
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
    if not nn_epilogue_supports(activation):
        raise ValueError(f"sgemm: activation code {activation} is not an epilogue activation "
                         f"(one of {sorted(EPILOGUE_ACTS)})")
    if m == 0 or n == 0:
        return
    cdef const float *pa = &a[0, 0] if a.shape[0] and a.shape[1] else NULL
    cdef const float *pb = &b[0, 0] if b.shape[0] and b.shape[1] else NULL
    cdef const float *pbias = &bias[0] if bias is not None else NULL
    cdef int64_t lda = leading_dimension(a.shape[0], a.shape[1], a.strides[0], a.strides[1], "a")
    cdef int64_t ldb = leading_dimension(b.shape[0], b.shape[1], b.strides[0], b.strides[1], "b")
    cdef int64_t ldc = leading_dimension(c.shape[0], c.shape[1], c.strides[0], c.strides[1], "out")
    # The kernels read a, b and bias while they write c: overlap gives garbage.
    cdef const char *pc = <const char *>&c[0, 0]
    cdef int64_t c_bytes = ((c.shape[0] - 1) * ldc + c.shape[1]) * 4
    if overlaps(pc, c_bytes, pa, ((a.shape[0] - 1) * lda + a.shape[1]) * 4):
        raise ValueError("sgemm: out overlaps a in memory; pass a separate out array")
    if overlaps(pc, c_bytes, pb, ((b.shape[0] - 1) * ldb + b.shape[1]) * 4):
        raise ValueError("sgemm: out overlaps b in memory; pass a separate out array")
    if overlaps(pc, c_bytes, pbias, n * 4):
        raise ValueError("sgemm: out overlaps bias in memory; pass a separate out array")
    cdef int status
    with nogil:
        if bf16:
            status = nn_gemm_bf16(trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb,
                                  beta, &c[0, 0], ldc, pbias, activation)
        else:
            status = nn_sgemm(trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb,
                              beta, &c[0, 0], ldc, pbias, activation)
    check(status, "sgemm")


# ---------------------------------------------------------------------------
# Network kernels. These take NumPy arrays and check them with the NumPy C API
# (type, dtype, contiguity, alignment, writability, sizes): a few nanoseconds,
# where acquiring a typed memoryview costs ~0.5 us per argument. The layers
# call them on every training step, so this keeps the per-step Python
# overhead small while a bad argument still raises instead of crashing.

ACT_CODES = {
    None: NN_ACT_NONE, "relu": NN_ACT_RELU, "leaky_relu": NN_ACT_LEAKY_RELU,
    "sigmoid": NN_ACT_SIGMOID, "tanh": NN_ACT_TANH, "gelu": NN_ACT_GELU,
    "softmax": NN_ACT_SOFTMAX,
}

# The activation codes the GEMM epilogue fuses, from the C list
# (nn_epilogue_supports), and matmul's names for them.
EPILOGUE_ACTS = frozenset(code for code in ACT_CODES.values() if nn_epilogue_supports(code))
ACTIVATIONS = {None: NN_ACT_NONE, "none": NN_ACT_NONE}
ACTIVATIONS.update((name, code) for name, code in ACT_CODES.items()
                   if name is not None and code in EPILOGUE_ACTS)

cdef enum:
    C_LOSS_MSE = 0
    C_LOSS_HUBER = 1
    C_LOSS_BCE_LOGITS = 2
    C_LOSS_CROSS_ENTROPY = 3

LOSS_MSE = C_LOSS_MSE
LOSS_HUBER = C_LOSS_HUBER
LOSS_BCE_LOGITS = C_LOSS_BCE_LOGITS
LOSS_CROSS_ENTROPY = C_LOSS_CROSS_ENTROPY


cdef inline int _check_array(cnp.ndarray a, int typenum, bint writable, str fn,
                             str name) except -1:
    if cnp.PyArray_TYPE(a) != typenum:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected "
                        f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'int64'}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{fn}: {name} must be writable")
    return 0


cdef inline float *_fin(cnp.ndarray a, int64_t n, str fn, str name) except NULL:
    """The data of a float32 C-contiguous array of n elements (read only)."""
    _check_array(a, cnp.NPY_FLOAT32, False, fn, name)
    if cnp.PyArray_SIZE(a) != n:
        raise ValueError(f"{fn}: {name} has {cnp.PyArray_SIZE(a)} elements, expected {n}")
    return <float *>cnp.PyArray_DATA(a)


cdef inline float *_fout(cnp.ndarray a, int64_t n, str fn, str name) except NULL:
    """The data of a writable float32 C-contiguous array of n elements."""
    _check_array(a, cnp.NPY_FLOAT32, True, fn, name)
    if cnp.PyArray_SIZE(a) != n:
        raise ValueError(f"{fn}: {name} has {cnp.PyArray_SIZE(a)} elements, expected {n}")
    return <float *>cnp.PyArray_DATA(a)


cdef inline int _matrix(cnp.ndarray a, int64_t *rows, int64_t *cols, str fn,
                        str name) except -1:
    if cnp.PyArray_NDIM(a) != 2:
        raise ValueError(f"{fn}: {name} must be 2-D, got {cnp.PyArray_NDIM(a)}-D")
    rows[0] = cnp.PyArray_DIM(a, 0)
    cols[0] = cnp.PyArray_DIM(a, 1)
    return 0


def act_forward(int act, cnp.ndarray x not None, cnp.ndarray y not None, float param=0.0):
    """y = act(x) elementwise (softmax: row-wise over the last axis of a 2-D x);
    param is LeakyReLU's slope. x and y may be the same array."""
    cdef int64_t n = cnp.PyArray_SIZE(x), rows = 1, cols = n
    if act == NN_ACT_SOFTMAX and cnp.PyArray_NDIM(x) == 2:
        _matrix(x, &rows, &cols, "act_forward", "x")
    cdef const float *px = _fin(x, n, "act_forward", "x")
    cdef float *py = _fout(y, n, "act_forward", "y")
    if n == 0:
        return
    cdef int status
    with nogil:
        status = _act_run(act, rows, cols, px, py, param)
    if status != 0:
        raise ValueError(f"act_forward: unknown activation code {act}")
    cdef _plan_op *op = _record(_OP_ACT, (x, y))
    if op != NULL:
        op.act, op.a, op.b, op.x, op.y, op.param = act, rows, cols, px, py, param


def act_backward(int act, cnp.ndarray saved not None, cnp.ndarray dy not None,
                 cnp.ndarray dx not None, float param=0.0):
    """dx = dy * act'(...). `saved` is the forward output y for ReLU, Sigmoid,
    Tanh and Softmax, the forward input x for LeakyReLU and GELU. dx may be dy."""
    cdef int64_t n = cnp.PyArray_SIZE(saved), rows = 1, cols = n
    if act == NN_ACT_SOFTMAX and cnp.PyArray_NDIM(saved) == 2:
        _matrix(saved, &rows, &cols, "act_backward", "saved")
    cdef const float *ps = _fin(saved, n, "act_backward", "saved")
    cdef const float *pdy = _fin(dy, n, "act_backward", "dy")
    cdef float *pdx = _fout(dx, n, "act_backward", "dx")
    if n == 0:
        return
    with nogil:
        if act == NN_ACT_RELU:
            nn_relu_backward(n, ps, pdy, pdx)
        elif act == NN_ACT_LEAKY_RELU:
            nn_leaky_relu_backward(n, ps, pdy, pdx, param)
        elif act == NN_ACT_SIGMOID:
            nn_sigmoid_backward(n, ps, pdy, pdx)
        elif act == NN_ACT_TANH:
            nn_tanh_backward(n, ps, pdy, pdx)
        elif act == NN_ACT_GELU:
            nn_gelu_backward(n, ps, pdy, pdx)
        elif act == NN_ACT_SOFTMAX:
            nn_softmax_backward(rows, cols, ps, pdy, pdx)
        else:
            with gil:
                raise ValueError(f"act_backward: unknown activation code {act}")


def add_relu_backward(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray y not None,
                      cnp.ndarray dx not None):
    """dx = act_backward(RELU, y, a + b) in one pass (float32 arrays of one
    shape; dx may be a or b): a residual block's two input gradients summed
    and passed back through the ReLU before the block, whose output y is the
    block's input."""
    cdef str fn = "add_relu_backward"
    shape = (<object>a).shape
    if (<object>b).shape != shape or (<object>y).shape != shape or (<object>dx).shape != shape:
        raise ValueError(f"{fn}: shapes {shape}, {(<object>b).shape}, {(<object>y).shape} "
                         f"and {(<object>dx).shape} must match")
    cdef int64_t n = cnp.PyArray_SIZE(a)
    cdef const float *pa = _fin(a, n, fn, "a")
    cdef const float *pb = _fin(b, n, fn, "b")
    cdef const float *py = _fin(y, n, fn, "y")
    cdef float *pdx = _fout(dx, n, fn, "dx")
    if n:
        with nogil:
            nn_add_relu_backward(n, pa, pb, py, pdx)


cdef int _dense_layer(int64_t m, int64_t k, cnp.ndarray w, object b, cnp.ndarray y, int act,
                      str fn, nn_dense_layer *layer) except -1:
    """Check y = act(x @ w + b) for an input x of shape (m, k) (act: NONE or
    RELU, the GEMM epilogue's) and describe it in *layer. `fn` names the
    caller in errors."""
    if w is None or y is None:
        raise TypeError(f"{fn}: w and y must be arrays")
    cdef int64_t kw, n, my, ny
    _matrix(w, &kw, &n, fn, "w")
    _matrix(y, &my, &ny, fn, "y")
    if kw != k or my != m or ny != n:
        raise ValueError(f"{fn}: x ({m}, {k}) @ w ({kw}, {n}) -> y ({my}, {ny}) do not match")
    if not nn_epilogue_supports(act):
        raise ValueError(f"{fn}: activation code {act} is not an epilogue activation "
                         f"(one of {sorted(EPILOGUE_ACTS)})")
    layer.w = _fin(w, k * n, fn, "w")
    layer.out = _fout(y, m * n, fn, "y")
    layer.b = NULL if b is None else _fin(b, n, fn, "b")
    layer.n_in = k
    layer.n_out = n
    layer.act = act
    layer.w_split = NULL
    layer.split_team = 0
    return 0


cdef int _dense_split(object w, object split, str fn, nn_dense_layer *layer) except -1:
    """Point *layer at split, None or (dense_split_weights(w, team), team):
    the weights a one-sample call on team threads reads instead of w."""
    if split is None:
        return 0
    ws, team = split
    if not isinstance(ws, cnp.ndarray) or ws.shape != w.shape or team < 1:
        raise ValueError(f"{fn}: split must be (an array of w's shape {w.shape}, team >= 1)")
    layer.w_split = _fin(ws, layer.n_in * layer.n_out, fn, "split")
    layer.split_team = team
    return 0


def dense_chain_parts(int64_t n_in, int64_t n_out, int team):
    """The parts a one-sample call on `team` threads splits a Dense of n_in
    x n_out weights into (nn_dense_chain_parts; 1: not split): the team
    to regroup its weights for with dense_split_weights."""
    if n_in < 0 or n_out < 0 or team < 1 or team > NN_MAX_THREADS:
        raise ValueError(f"dense_chain_parts: sizes must be >= 0 and team in "
                         f"[1, {NN_MAX_THREADS}], got {n_in}, {n_out}, {team}")
    return nn_dense_chain_parts(n_in, n_out, team)


def dense_split_weights(cnp.ndarray w not None, int team):
    """w (n_in, n_out) regrouped for a one-sample Dense on `team` threads
    (nn_dense_split_weights): a new array, for dense_forward's ``split``."""
    cdef int64_t k, n
    _matrix(w, &k, &n, "dense_split_weights", "w")
    if team < 1 or team > NN_MAX_THREADS:
        raise ValueError(f"dense_split_weights: team must be in [1, {NN_MAX_THREADS}], "
                         f"got {team}")
    cdef const float *pw = _fin(w, k * n, "dense_split_weights", "w")
    cdef cnp.ndarray out = _guard.empty((k, n), "float32",
                                        "dense_split_weights: the regrouped weights")
    with nogil:
        nn_dense_split_weights(k, n, pw, team, <float *>cnp.PyArray_DATA(out))
    return out


def dense_forward(cnp.ndarray x not None, cnp.ndarray w not None, object b,
                  cnp.ndarray y not None, int act=0, bint bf16=False, object split=None):
    """y = act(x @ w + b) through nn_sgemm's epilogue (act: NONE or RELU);
    bf16: the product in bfloat16 (nn_dense_forward_bf16). split: None or
    (dense_split_weights(w, team), team), read instead of w by a one-sample
    call split into team parts (the same bits)."""
    cdef int64_t m, k
    _matrix(x, &m, &k, "dense_forward", "x")
    cdef const float *px = _fin(x, m * k, "dense_forward", "x")
    cdef nn_dense_layer layer
    _dense_layer(m, k, w, b, y, act, "dense_forward", &layer)
    _dense_split(w, split, "dense_forward", &layer)
    cdef int status
    with nogil:
        if bf16:
            status = nn_dense_forward_bf16(m, px, &layer)
        else:
            status = nn_dense_chain(m, px, 1, &layer)
    check(status, "dense_forward")
    cdef _plan_op *op = NULL if bf16 else _record(_OP_DENSE, (x, w, b, y, split))
    if op != NULL:
        op.a, op.x, op.dense, op.count, op.y = m, px, layer, 1, layer.out


cdef class DenseChain:
    """Evaluation-mode forward through a chain of Dense layers in one C call
    (Sequential.predict's fast path) for inputs of shape (rows, features):
    outs[i] = act_i(in_i @ w_i + b_i) with in_0 = x and in_i = outs[i - 1],
    for layers[i] = (w_i, b_i or None, act_i), act_i a GEMM epilogue code;
    splits[i] (optional): None or layer i's weights regrouped for one-sample
    calls, as dense_forward's ``split``. Every layer is checked here, once;
    ``run(x)`` then checks only x. The plan keeps the arrays alive; their
    contents may change between runs (Dense copies new weights in place)."""
    cdef nn_dense_layer *layers
    cdef int count
    cdef readonly int64_t rows, features
    # the thread count when made (the splits are for it)
    cdef readonly int threads
    cdef tuple arrays
    cdef cnp.ndarray last        # the last layer's output array

    def __cinit__(self, int64_t rows, int64_t features, tuple layers not None,
                  tuple outs not None, tuple splits=None):
        cdef Py_ssize_t i, count = len(layers)
        if count == 0 or len(outs) != count or count > 1 << 20:
            raise ValueError(f"dense_chain: {count} layers and {len(outs)} outputs")
        if splits is not None and len(splits) != count:
            raise ValueError(f"dense_chain: {count} layers and {len(splits)} splits")
        if rows < 0 or features < 0:
            raise ValueError(f"dense_chain: negative input shape ({rows}, {features})")
        self.layers = <nn_dense_layer *>PyMem_Malloc(count * sizeof(nn_dense_layer))
        if self.layers == NULL:
            raise MemoryError("dense_chain: the layer list")
        self.count = <int>count
        self.rows, self.features = rows, features
        self.threads = nn_get_num_threads()
        cdef int64_t k = features
        for i in range(count):
            w, b, act = layers[i]
            _dense_layer(rows, k, w, b, outs[i], act, "dense_chain", &self.layers[i])
            if splits is not None:
                _dense_split(w, splits[i], "dense_chain", &self.layers[i])
            k = self.layers[i].n_out
        self.arrays = (layers, outs, splits)
        self.last = outs[count - 1]

    def __dealloc__(self):
        PyMem_Free(self.layers)

    cdef int _run(self, cnp.ndarray x) except -1:
        cdef int64_t m, k
        _matrix(x, &m, &k, "dense_chain", "x")
        if m != self.rows or k != self.features:
            raise ValueError(f"dense_chain: x has shape ({m}, {k}), expected "
                             f"({self.rows}, {self.features})")
        cdef const float *px = _fin(x, m * k, "dense_chain", "x")
        cdef int status
        with nogil:
            status = nn_dense_chain(m, px, self.count, self.layers)
        check(status, "dense_chain")
        cdef _plan_op *op = _record(_OP_DENSE, (x, self))
        if op != NULL:
            op.a, op.x, op.layers, op.count = m, px, self.layers, self.count
            op.y = self.layers[self.count - 1].out
        return 0

    def run(self, cnp.ndarray x not None):
        """The chain on x, float32 C-contiguous (rows, features); returns the
        last output array (the plan's own, overwritten by the next run)."""
        self._run(x)
        return self.last

    cdef cnp.ndarray _predict(self, cnp.ndarray x):
        """run(x), returning a new array with the last output (the caller's
        to keep)."""
        self._run(x)
        # A new C-order array and memcpy: a third of the time of
        # PyArray_NewCopy (its general copy machinery) for a one-row result.
        cdef cnp.ndarray last = self.last
        cdef cnp.ndarray y = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(last), cnp.NPY_FLOAT32, 0)
        memcpy(cnp.PyArray_DATA(y), cnp.PyArray_DATA(last), cnp.PyArray_NBYTES(last))
        return y


cdef class ChainPredictor:
    """Sequential.predict's path for one chunk of feature vectors through a
    chain of Dense layers: ``predict(x, batch_size)`` returns the chain's
    output for x in a new array when x is a float32 C-contiguous aligned
    (n, features) ndarray with 1 <= n <= batch_size (an int) and an output
    of at most ``max_floats`` floats; else None, and the caller's general
    path converts, chunks, checks the memory or names the problem.

    Each call runs a DenseChain plan of n rows, which writes into the
    buffers of a workspace: a (workspace, plan) pair taken from a list of
    free ones and put back after the call, so concurrent calls never share
    one (the list operations run under the GIL, the chain without it).
    ``make_plan(workspace, n)`` gives the pair for n rows when the plan
    taken has other rows or was made for another thread count (in that
    workspace, whose buffers it reuses) or none is free (workspace None: a
    new one)."""
    cdef readonly int64_t features
    cdef int64_t max_rows
    cdef readonly list free      # (workspace, plan) pairs not in use
    cdef object make_plan

    def __cinit__(self, int64_t features, int64_t width, int64_t max_floats,
                  object make_plan not None):
        self.features = features
        self.max_rows = max_floats // width if width > 0 else max_floats
        self.free = []
        self.make_plan = make_plan

    def predict(self, object x, object batch_size):
        if type(batch_size) is not int:
            return None
        cdef Py_ssize_t n = _rows_f32(x, self.features)
        if n <= 0 or n > self.max_rows or n > batch_size:
            return None
        cdef tuple pair
        try:
            pair = self.free.pop()
        except IndexError:
            pair = self.make_plan(None, n)
        cdef DenseChain plan = pair[1]
        if plan.rows != n or plan.threads != nn_get_num_threads():
            pair = self.make_plan(pair[0], n)
            plan = pair[1]
        try:
            return plan._predict(x)
        finally:
            self.free.append(pair)



cdef inline int _shape(cnp.ndarray a, int64_t rows, int64_t cols, int ndim, str fn,
                       str name) except -1:
    """Check that a has shape (rows, cols) (ndim 2) or (cols,) (ndim 1)."""
    if cnp.PyArray_NDIM(a) != ndim or (ndim == 2 and cnp.PyArray_DIM(a, 0) != rows) or \
            cnp.PyArray_DIM(a, ndim - 1) != cols:
        want = f"({rows}, {cols})" if ndim == 2 else f"({cols},)"
        raise ValueError(f"{fn}: {name} has shape {(<object>a).shape}, expected {want}")
    return 0


# dense_backward's arrays, in the order of their names in _DENSE_NAMES.
cdef enum:
    D_X, D_W, D_DY, D_Z, D_DX, D_DW, D_DB, D_B, D_DZ, D_COUNT

_DENSE_NAMES = ("x", "w", "dy", "z", "dx", "dw", "db", "b", "dz")

cdef struct _span:
    const char *p
    int64_t bytes
    bint written


cdef int _check_disjoint(_span *s) except -1:
    """No array dense_backward writes may share memory with another of its
    arrays (the kernels would read half-written values), except that dz may
    be dy itself (the ReLU backward runs elementwise in place)."""
    cdef int i, j
    for i in range(D_COUNT):
        if not s[i].written:
            continue
        for j in range(D_COUNT):
            if j == i or not overlaps(s[i].p, s[i].bytes, s[j].p, s[j].bytes):
                continue
            if {i, j} == {D_DZ, D_DY} and s[i].p == s[j].p and s[i].bytes == s[j].bytes:
                continue
            raise ValueError(f"dense_backward: {_DENSE_NAMES[i]} overlaps {_DENSE_NAMES[j]} "
                             f"in memory; pass separate arrays")
    return 0


cdef int _dense_array_error(int slot, object a, int64_t rows, int64_t cols, int ndim,
                            bint written, str fn) except -1:
    """Raise the error for one of dense_backward's arrays that failed the fast
    check of _dense_array."""
    name = _DENSE_NAMES[slot]
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{fn}: {name} must be a NumPy array or None, got {type(a).__name__}")
    _shape(<cnp.ndarray>a, rows, cols, ndim, fn, name)
    _check_array(<cnp.ndarray>a, cnp.NPY_FLOAT32, written, fn, name)
    raise AssertionError(f"{fn}: {name} failed a check but no error was found")


cdef inline float *_dense_array(_span *s, int slot, object a, int64_t rows, int64_t cols,
                                int ndim, bint written) except? NULL:
    """Check one of dense_backward's arrays (None: absent, NULL) and record its
    memory in s[slot]. The checks run on the NumPy C API; the names and
    messages are made only on failure (dense_backward runs every step)."""
    s[slot].p = NULL
    s[slot].bytes = 0
    s[slot].written = False
    if a is None:
        return NULL
    if not cnp.PyArray_Check(a):
        _dense_array_error(slot, a, rows, cols, ndim, written, "dense_backward")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_NDIM(arr) != ndim or cnp.PyArray_DIM(arr, ndim - 1) != cols
            or (ndim == 2 and cnp.PyArray_DIM(arr, 0) != rows)
            or cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)
            or (written and not cnp.PyArray_ISWRITEABLE(arr))):
        _dense_array_error(slot, a, rows, cols, ndim, written, "dense_backward")
    s[slot].p = <const char *>cnp.PyArray_DATA(arr)
    s[slot].bytes = rows * cols * 4
    s[slot].written = written
    return <float *>cnp.PyArray_DATA(arr)


def dense_backward(cnp.ndarray x not None, cnp.ndarray w not None, cnp.ndarray dy not None,
                   object dx, object dw, object db, object sgd_lr=None, object b=None,
                   object z=None, object dz=None, bint bf16=False):
    """The backward pass of y = x @ w + b in one C call (nn_dense_backward;
    with bf16, nn_dense_backward_bf16: every GEMM in bfloat16):
    dw = x^T dy, db = column sums of dy, dx = dy w^T (each overwritten; dx
    and db may be None to skip them). x (m, k), w (k, n), dy (m, n).

    With z and dz (both (m, n)): the layer's ReLU first, dz = dy where z > 0
    else 0 (z: the ReLU's output), and dz stands for dy. dz may be dy.

    With sgd_lr instead of dw, the weight gradient is not stored: w -= sgd_lr
    * x^T dy in place, after dx is computed from the old w. That is plain SGD
    folded into the GEMM (alpha = -sgd_lr, beta = 1), bitwise the same as dw
    followed by sgd_step; with b (n,), b is then stepped by sgd_step too,
    b -= sgd_lr * db (db required)."""
    cdef str fn = "dense_backward"
    cdef int64_t m, k, kw, n, md, nd
    _matrix(x, &m, &k, fn, "x")
    _matrix(w, &kw, &n, fn, "w")
    _matrix(dy, &md, &nd, fn, "dy")
    if kw != k or md != m or nd != n:
        raise ValueError(f"{fn}: x ({m}, {k}), w ({kw}, {n}) and dy ({md}, {nd}) "
                         f"do not match")
    cdef bint sgd = sgd_lr is not None
    if sgd == (dw is not None):
        raise ValueError(f"{fn}: pass either dw or sgd_lr")
    cdef float lr = sgd_lr if sgd else 0.0
    if sgd and not isfinite(lr):
        raise ValueError(f"{fn}: sgd_lr must be a finite float32, got {sgd_lr!r}")
    if b is not None and not sgd:
        raise ValueError(f"{fn}: b is stepped only with sgd_lr (pass b=None)")
    if b is not None and db is None:
        raise ValueError(f"{fn}: stepping b needs db")
    if (z is None) != (dz is None):
        raise ValueError(f"{fn}: pass z and dz together (the ReLU backward), or neither")
    cdef _span s[D_COUNT]
    cdef const float *px = _dense_array(s, D_X, x, m, k, 2, False)
    cdef float *pw = _dense_array(s, D_W, w, k, n, 2, sgd)
    cdef const float *pdy = _dense_array(s, D_DY, dy, m, n, 2, False)
    cdef const float *pz = _dense_array(s, D_Z, z, m, n, 2, False)
    cdef float *pdx = _dense_array(s, D_DX, dx, m, k, 2, True)
    cdef float *pdw = _dense_array(s, D_DW, dw, k, n, 2, True)
    cdef float *pdb = _dense_array(s, D_DB, db, 1, n, 1, True)
    cdef float *pb = _dense_array(s, D_B, b, 1, n, 1, True)
    cdef float *pdz = _dense_array(s, D_DZ, dz, m, n, 2, True)
    _check_disjoint(s)
    cdef int status
    with nogil:
        if bf16:
            status = nn_dense_backward_bf16(m, k, n, px, pw, pdy, pz, pdz, pdx, pdw, pdb, sgd,
                                            lr, pb)
        else:
            status = nn_dense_backward(m, k, n, px, pw, pdy, pz, pdz, pdx, pdw, pdb, sgd, lr,
                                       pb)
    check(status, fn)


def bias_backward(cnp.ndarray dy not None, cnp.ndarray db not None):
    """db = column sums of the 2-D dy, in a fixed order."""
    cdef int64_t m, n
    _matrix(dy, &m, &n, "bias_backward", "dy")
    cdef const float *pdy = _fin(dy, m * n, "bias_backward", "dy")
    cdef float *pdb = _fout(db, n, "bias_backward", "db")
    if n == 0:
        return
    with nogil:
        nn_bias_backward(m, n, pdy, n, pdb)


def all_finite(cnp.ndarray a not None):
    """True when no element of the float32 C-contiguous array is NaN or
    infinite (one pass, on the process's threads for large arrays)."""
    cdef int64_t n = cnp.PyArray_SIZE(a)
    cdef const float *p = _fin(a, n, "all_finite", "a")
    cdef int ok
    with nogil:
        ok = nn_all_finite(n, p)
    return ok != 0


def gather_rows(cnp.ndarray src not None, cnp.ndarray index not None,
                cnp.ndarray dst not None):
    """dst[i] = src[index[i]] for the rows of 2-D float32 arrays (int64
    index); like np.take(src, index, axis=0, out=dst), on the process's
    threads. IndexError when an index is outside [0, len(src))."""
    cdef int64_t rows, n, m, cols
    _matrix(src, &rows, &n, "gather_rows", "src")
    _matrix(dst, &m, &cols, "gather_rows", "dst")
    if cols != n:
        raise ValueError(f"gather_rows: dst has {cols} columns, src {n}")
    cdef const float *ps = _fin(src, rows * n, "gather_rows", "src")
    cdef float *pd = _fout(dst, m * n, "gather_rows", "dst")
    _check_array(index, cnp.NPY_INT64, False, "gather_rows", "index")
    if cnp.PyArray_NDIM(index) != 1 or cnp.PyArray_DIM(index, 0) != m:
        raise ValueError(f"gather_rows: index must be 1-D with {m} elements (dst's rows)")
    cdef const int64_t *pi = <const int64_t *>cnp.PyArray_DATA(index)
    if overlaps(<const char *>pd, m * n * 4, ps, rows * n * 4) or \
            overlaps(<const char *>pd, m * n * 4, pi, m * 8):
        raise ValueError("gather_rows: dst overlaps src or index")
    cdef int status
    with nogil:
        status = nn_gather_rows(m, n, ps, rows, pi, pd)
    if status == NN_EINVAL:
        raise IndexError(f"gather_rows: an index is outside [0, {rows})")
    check(status, "gather_rows")


cdef inline uint32_t _dropout_threshold(double p) except? 0:
    if not (0.0 <= p < 1.0):
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    return <uint32_t>(p * 16777216.0 + 0.5)


def dropout_forward(cnp.ndarray x not None, cnp.ndarray y not None, double p, uint64_t key):
    """y = x * mask / (1 - p), the mask a function of (key, index) only."""
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef const float *px = _fin(x, n, "dropout_forward", "x")
    cdef float *py = _fout(y, n, "dropout_forward", "y")
    cdef uint32_t threshold = _dropout_threshold(p)
    cdef float scale = <float>(1.0 / (1.0 - p))
    if n:
        with nogil:
            nn_dropout_forward(n, px, py, threshold, scale, key)


def dropout_backward(cnp.ndarray dy not None, cnp.ndarray dx not None, double p, uint64_t key):
    """dx = dy * mask / (1 - p) with the mask dropout_forward used for `key`."""
    cdef int64_t n = cnp.PyArray_SIZE(dy)
    cdef const float *pdy = _fin(dy, n, "dropout_backward", "dy")
    cdef float *pdx = _fout(dx, n, "dropout_backward", "dx")
    cdef uint32_t threshold = _dropout_threshold(p)
    cdef float scale = <float>(1.0 / (1.0 - p))
    if n:
        with nogil:
            nn_dropout_backward(n, pdy, pdx, threshold, scale, key)


cdef int _loss_args(int kind, cnp.ndarray pred, cnp.ndarray target, str fn, int64_t *n,
                    int64_t *c, const float **px, const void **pt) except -1:
    """Check (pred, target) for a loss; n = rows (cross-entropy) or elements."""
    cdef int64_t rows
    if kind == C_LOSS_CROSS_ENTROPY:
        _matrix(pred, &rows, c, fn, "pred")
        if cnp.PyArray_NDIM(target) != 1 or cnp.PyArray_DIM(target, 0) != rows:
            raise ValueError(f"{fn}: target must have shape ({rows},), "
                             f"got {(<object>target).shape}")
        if rows > 0 and c[0] == 0:
            raise ValueError(f"{fn}: pred has no classes")
        _check_array(target, cnp.NPY_INT64, False, fn, "target")
        n[0] = rows
        px[0] = _fin(pred, rows * c[0], fn, "pred")
        pt[0] = cnp.PyArray_DATA(target)
    elif kind == C_LOSS_MSE or kind == C_LOSS_HUBER or kind == C_LOSS_BCE_LOGITS:
        n[0] = cnp.PyArray_SIZE(pred)
        c[0] = 1
        px[0] = _fin(pred, n[0], fn, "pred")
        pt[0] = _fin(target, n[0], fn, "target")
    else:
        raise ValueError(f"{fn}: unknown loss code {kind}")
    if n[0] == 0:
        raise ValueError(f"{fn}: empty batch")
    return 0


def loss_forward(int kind, cnp.ndarray pred not None, cnp.ndarray target not None,
                 float param=0.0, object grad=None):
    """The mean loss (a Python float). pred: float32; target: float32 of the
    same size, or int64 class labels (pred rows,) for cross-entropy.
    param: Huber's delta. When `grad` (pred's size) is given, the gradient is
    written into it too (fused in one pass for cross-entropy)."""
    cdef int64_t n, c
    cdef const float *px
    cdef const void *pt
    _loss_args(kind, pred, target, "loss_forward", &n, &c, &px, &pt)
    cdef float *pg = NULL
    if grad is not None:
        pg = _fout(grad, n * c, "loss_forward", "grad")
    cdef double loss = 0.0
    cdef int status = NN_OK
    with nogil:
        if kind == C_LOSS_MSE:
            status = nn_mse_forward(n, px, <const float *>pt, &loss)
            if pg != NULL:
                nn_mse_backward(n, px, <const float *>pt, pg)
        elif kind == C_LOSS_HUBER:
            status = nn_huber_forward(n, px, <const float *>pt, param, &loss)
            if pg != NULL:
                nn_huber_backward(n, px, <const float *>pt, param, pg)
        elif kind == C_LOSS_BCE_LOGITS:
            status = nn_bce_logits_forward(n, px, <const float *>pt, &loss)
            if pg != NULL:
                nn_bce_logits_backward(n, px, <const float *>pt, pg)
        else:
            status = nn_cross_entropy_forward(n, c, px, <const int64_t *>pt, &loss, pg)
    if status == NN_EINVAL:
        raise ValueError(f"loss_forward: a class label is outside [0, {c})")
    check(status, "loss_forward")
    return loss


def loss_backward(int kind, cnp.ndarray pred not None, cnp.ndarray target not None,
                  cnp.ndarray grad not None, float param=0.0):
    """grad = d(mean loss)/d(pred), written into grad (pred's size)."""
    cdef int64_t n, c
    cdef const float *px
    cdef const void *pt
    _loss_args(kind, pred, target, "loss_backward", &n, &c, &px, &pt)
    cdef float *pg = _fout(grad, n * c, "loss_backward", "grad")
    cdef int status = NN_OK
    with nogil:
        if kind == C_LOSS_MSE:
            status = nn_mse_backward(n, px, <const float *>pt, pg)
        elif kind == C_LOSS_HUBER:
            status = nn_huber_backward(n, px, <const float *>pt, param, pg)
        elif kind == C_LOSS_BCE_LOGITS:
            status = nn_bce_logits_backward(n, px, <const float *>pt, pg)
        else:
            status = nn_cross_entropy_backward(n, c, px, <const int64_t *>pt, pg)
    if status == NN_EINVAL:
        raise ValueError(f"loss_backward: a class label is outside [0, {c})")
    check(status, "loss_backward")


def sgd_step(cnp.ndarray w not None, cnp.ndarray g not None, object buf, float lr,
             float momentum, float dampening, float weight_decay, bint nesterov, bint first):
    """One torch.optim.SGD step in place (buf: the momentum buffer, or None
    when momentum == 0; first: this is the buffer's first step)."""
    cdef int64_t n = cnp.PyArray_SIZE(w)
    cdef float *pw = _fout(w, n, "sgd_step", "param")
    cdef const float *pg = _fin(g, n, "sgd_step", "grad")
    cdef float *pbuf = NULL
    if momentum != 0.0:
        if buf is None:
            raise ValueError("sgd_step: momentum needs a buffer")
        pbuf = _fout(buf, n, "sgd_step", "buf")
    if n:
        with nogil:
            nn_sgd_step(n, pw, pg, pbuf, lr, momentum, dampening, weight_decay, nesterov, first)


def adam_step(cnp.ndarray w not None, cnp.ndarray g not None, cnp.ndarray m not None,
              cnp.ndarray v not None, float beta1, float beta2, float eps, float weight_decay,
              float decay, float step_size, float bc2_sqrt):
    """One torch.optim.Adam / AdamW step in place (see csrc/optim.c)."""
    cdef int64_t n = cnp.PyArray_SIZE(w)
    cdef float *pw = _fout(w, n, "adam_step", "param")
    cdef const float *pg = _fin(g, n, "adam_step", "grad")
    cdef float *pm = _fout(m, n, "adam_step", "exp_avg")
    cdef float *pv = _fout(v, n, "adam_step", "exp_avg_sq")
    if n:
        with nogil:
            nn_adam_step(n, pw, pg, pm, pv, beta1, beta2, eps, weight_decay, decay, step_size,
                         bc2_sqrt)


def rmsprop_step(cnp.ndarray w not None, cnp.ndarray g not None, cnp.ndarray sq not None,
                 object gavg, object buf, float lr, float alpha, float eps,
                 float weight_decay, float momentum):
    """One torch.optim.RMSprop step in place; gavg (centered) and buf
    (momentum > 0) may be None."""
    cdef int64_t n = cnp.PyArray_SIZE(w)
    cdef float *pw = _fout(w, n, "rmsprop_step", "param")
    cdef const float *pg = _fin(g, n, "rmsprop_step", "grad")
    cdef float *psq = _fout(sq, n, "rmsprop_step", "square_avg")
    cdef float *pa = NULL
    cdef float *pbuf = NULL
    if gavg is not None:
        pa = _fout(gavg, n, "rmsprop_step", "grad_avg")
    if momentum > 0.0:
        if buf is None:
            raise ValueError("rmsprop_step: momentum needs a buffer")
        pbuf = _fout(buf, n, "rmsprop_step", "momentum_buffer")
    if n:
        with nogil:
            nn_rmsprop_step(n, pw, pg, psq, pa, pbuf, lr, alpha, eps, weight_decay, momentum)


def rows_f32(object x, Py_ssize_t cols):
    """The number of rows of x when it is a float32, C-contiguous, aligned 2-D
    ndarray with at least one row and `cols` columns (any number if cols < 0),
    else -1. The layers' fast path: when it says yes, x needs no conversion."""
    return _rows_f32(x, cols)


cdef inline Py_ssize_t _rows_f32(object x, Py_ssize_t cols):
    if not cnp.PyArray_Check(x):
        return -1
    cdef cnp.ndarray a = <cnp.ndarray>x
    if (cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(a) != 2
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a)):
        return -1
    if cnp.PyArray_DIM(a, 0) == 0 or (cols >= 0 and cnp.PyArray_DIM(a, 1) != cols):
        return -1
    return cnp.PyArray_DIM(a, 0)


def is_c_array(object x, bint int64):
    """True when x is a C-contiguous, aligned ndarray of float32 (or int64
    when `int64`): usable by the kernels without conversion."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    return (cnp.PyArray_TYPE(a) == (cnp.NPY_INT64 if int64 else cnp.NPY_FLOAT32)
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a))


# ---------------------------------------------------------------------------
# Machine limits (peak.c) and the profiler (profile.c).

def fma_peak(int64_t iters):
    """Run the FMA peak kernel: `iters` rounds on every thread. Returns the
    floating-point operations done (time the call to get FLOP/s)."""
    cdef float sink = 0.0
    cdef double flops = 0.0
    if iters < 1:
        raise ValueError(f"fma_peak: iters must be >= 1, got {iters}")
    with nogil:
        nn_fma_peak(iters, &sink, &flops)
    return flops


def bf16_peak(int64_t iters):
    """Run the bf16 peak kernel (vdpbf16ps chains): `iters` rounds on every
    thread. Returns the floating-point operations done, 0 when the CPU has
    no AVX512_BF16."""
    cdef float sink = 0.0
    cdef double flops = 0.0
    if iters < 1:
        raise ValueError(f"bf16_peak: iters must be >= 1, got {iters}")
    with nogil:
        nn_bf16_peak(iters, &sink, &flops)
    return flops


def triad(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray c not None, float s):
    """a = b + s * c over the threads (the STREAM triad)."""
    cdef int64_t n = cnp.PyArray_SIZE(a)
    cdef float *pa = _fout(a, n, "triad", "a")
    cdef const float *pb = _fin(b, n, "triad", "b")
    cdef const float *pc = _fin(c, n, "triad", "c")
    if n:
        with nogil:
            nn_triad(n, pa, pb, pc, s)


# The layout of nn_profile_event (nncore.h), for profile_events().
PROFILE_EVENT_DTYPE = [("kernel", "<i4"), ("thread", "<i4"), ("start_ns", "<i8"),
                       ("dur_ns", "<i8"), ("flops", "<f8"), ("m", "<i8"), ("n", "<i8"),
                       ("k", "<i8")]


def profile_start(int64_t capacity):
    cdef int status = nn_profile_start(capacity)
    if status == NN_EINVAL:
        raise RuntimeError("profile: already profiling (profiles do not nest)"
                           if nn_profile_enabled() else
                           f"profile: max_events must be >= 1, got {capacity}")
    check(status, "profile")


def profile_stop():
    nn_profile_stop()


def profile_enabled():
    return bool(nn_profile_enabled())


def profile_dropped():
    return nn_profile_dropped()


def profile_now_ns():
    """CLOCK_MONOTONIC in nanoseconds: the clock the C events use."""
    return nn_profile_now_ns()


def profile_kernel_names():
    return [nn_profile_kernel_name(i).decode() for i in range(nn_profile_kernel_count())]


def profile_events():
    """The recorded events as a NumPy structured array (PROFILE_EVENT_DTYPE)."""
    import numpy as np
    dtype = np.dtype(PROFILE_EVENT_DTYPE)
    if dtype.itemsize != sizeof(nn_profile_event):
        raise RuntimeError("profile: event layout mismatch between C and Python")
    cdef int64_t count = nn_profile_count()
    cdef cnp.ndarray out = np.empty(count, dtype)
    cdef int64_t got = 0
    if count:
        with nogil:
            got = nn_profile_read(count, <nn_profile_event *>cnp.PyArray_DATA(out))
    return out[:got]


# ---------------------------------------------------------------------------
# Conv-net kernels: Conv2d (conv.c), pooling (pool.c), batch norm
# (batchnorm.c). NCHW float32 C-contiguous arrays; outputs are caller-owned
# and overwritten. Every shape, dtype, layout and parameter is checked here.

# Bound on every size and parameter, so that no product the C core forms overflows.
cdef int64_t _PARAM_MAX = 1 << 31


cdef int _pair(object v, str fn, str name, int64_t lowest, int64_t *a, int64_t *b) except -1:
    """An int or a pair of ints, each >= lowest and < 2**31, into a, b."""
    import operator
    try:
        if isinstance(v, (tuple, list)):
            if len(v) != 2:
                raise ValueError
            first, second = operator.index(v[0]), operator.index(v[1])
        else:
            first = second = operator.index(v)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}") from None
    if not (lowest <= first < _PARAM_MAX and lowest <= second < _PARAM_MAX):
        raise ValueError(f"{fn}: {name} must be >= {lowest} (and < 2**31), got {v!r}")
    a[0] = first
    b[0] = second
    return 0


cdef int _dims(cnp.ndarray a, int ndim, str fn, str name, int64_t *d) except -1:
    """Check a float32 C-contiguous aligned array of rank ndim; dims into d."""
    if a is None:
        raise TypeError(f"{fn}: {name} must be a NumPy array, got None")
    if cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {(<object>a).shape}")
    _check_array(a, cnp.NPY_FLOAT32, False, fn, name)
    cdef int i
    for i in range(ndim):
        d[i] = cnp.PyArray_DIM(a, i)
    return 0


cdef float *_fshape(object a, tuple shape, bint writable, str fn, str name) except NULL:
    """The data of a float32 C-contiguous aligned array of exactly `shape`."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{fn}: {name} must be a NumPy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    _check_array(arr, cnp.NPY_FLOAT32, writable, fn, name)
    if (<object>arr).shape != shape:
        raise ValueError(f"{fn}: {name} has shape {(<object>arr).shape}, expected {shape}")
    return <float *>cnp.PyArray_DATA(arr)


cdef int _no_overlap(str fn, list outs, list ins) except -1:
    """Each (name, pointer, bytes) output overlaps no input and no other output."""
    cdef Py_ssize_t i, j
    cdef const char *p
    cdef const void *q
    allv = outs + ins
    for i in range(len(outs)):
        p = <const char *><size_t>outs[i][1]
        for j in range(len(allv)):
            if j == i:
                continue
            q = <const void *><size_t>allv[j][1]
            if overlaps(p, outs[i][2], q, allv[j][2]):
                raise ValueError(f"{fn}: {outs[i][0]} overlaps {allv[j][0]} in memory; "
                                 f"pass separate arrays")
    return 0


cdef int _conv_params(str fn, tuple xs, tuple ws, object stride, object padding,
                      object dilation, object groups, nn_conv2d_params *p,
                      int64_t *oh, int64_t *ow) except -1:
    """Check a Conv2d of x of shape xs (n, c, h, w) with weight of shape ws (o,
    c/groups, kh, kw); fill p and the output size."""
    import operator
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"{fn}: x and weight must be 4-D, got shapes {xs} and {ws}")
    try:
        g = operator.index(groups)
    except TypeError:
        raise TypeError(f"{fn}: groups must be an int, got {groups!r}") from None
    if not (1 <= g < _PARAM_MAX):
        raise ValueError(f"{fn}: groups must be >= 1, got {g}")
    if min(xs) < 0 or min(ws) < 0:
        raise ValueError(f"{fn}: negative size in {xs} or {ws}")
    if xs[1] == 0 or xs[2] == 0 or xs[3] == 0:
        raise ValueError(f"{fn}: x has shape {xs}; channels, height and width must be >= 1")
    if min(ws) == 0:
        raise ValueError(f"{fn}: weight has shape {ws}; every size must be >= 1")
    if max(max(xs), max(ws)) >= _PARAM_MAX:
        raise ValueError(f"{fn}: sizes too large in {xs} or {ws}")
    p.n, p.c, p.h, p.w = xs
    p.o, p.kh, p.kw = ws[0], ws[2], ws[3]
    p.groups = g
    p.bf16 = 0
    _pair(stride, fn, "stride", 1, &p.sh, &p.sw)
    _pair(padding, fn, "padding", 0, &p.ph, &p.pw)
    _pair(dilation, fn, "dilation", 1, &p.dh, &p.dw)
    if p.c % g != 0 or p.o % g != 0:
        raise ValueError(f"{fn}: groups={g} must divide the input channels ({p.c}) and the "
                         f"output channels ({p.o})")
    if ws[1] * g != p.c:
        raise ValueError(f"{fn}: weight has shape {ws}: {ws[1]} input channels per group, "
                         f"but x has {p.c} channels in {g} group(s) (expected {p.c // g})")
    cdef object eh = p.h + 2 * p.ph - p.dh * (p.kh - 1) - 1
    cdef object ew = p.w + 2 * p.pw - p.dw * (p.kw - 1) - 1
    if eh < 0 or ew < 0:
        raise ValueError(f"{fn}: the kernel ({p.kh}x{p.kw}, dilation ({p.dh}, {p.dw})) is "
                         f"larger than the padded input ({p.h + 2 * p.ph}x{p.w + 2 * p.pw})")
    if max(eh, ew, p.kh * p.kw * ws[1]) >= _PARAM_MAX:
        raise ValueError(f"{fn}: sizes too large")
    oh[0] = eh // p.sh + 1
    ow[0] = ew // p.sw + 1
    return 0


cdef int _conv_arrays(str fn, cnp.ndarray x, cnp.ndarray w, object stride, object padding,
                      object dilation, object groups, nn_conv2d_params *p,
                      int64_t *oh, int64_t *ow, bint bf16=False, int act=-1) except -1:
    """A conv binding's checks of x, w and the geometry into *p (p.bf16 =
    bf16), and of act unless it is -1 (the backward pass has none)."""
    cdef int64_t d[4]
    _dims(x, 4, fn, "x", d)
    _dims(w, 4, fn, "weight", d)
    _conv_params(fn, (<object>x).shape, (<object>w).shape, stride, padding, dilation, groups,
                 p, oh, ow)
    p.bf16 = bf16
    if act != -1:
        _conv_act(fn, act)
    return 0


_WINOGRAD_MODES = {"auto": NN_WINOGRAD_AUTO, "always": NN_WINOGRAD_ALWAYS,
                   "never": NN_WINOGRAD_NEVER}
_WINOGRAD_NAMES = {code: name for name, code in _WINOGRAD_MODES.items()}


cdef int _winograd_code(str mode) except -1:
    if mode not in _WINOGRAD_MODES:
        raise ValueError(f"unknown Winograd mode {mode!r}; expected one of "
                         f"{sorted(_WINOGRAD_MODES)}")
    return _WINOGRAD_MODES[mode]


def set_winograd(str mode):
    """Where 3x3 stride-1 convolutions run Winograd F(2x2, 3x3) for the
    forward pass and the input gradient: "auto" (the default: where the
    layer's shape says it pays), "always" (every such layer) or "never" (for
    tests and benchmarks). Returns the previous mode."""
    return _WINOGRAD_NAMES[nn_conv_set_winograd(_winograd_code(mode))]


def get_winograd():
    """The current set_winograd mode."""
    return _WINOGRAD_NAMES[nn_conv_winograd_mode()]


def set_winograd_dw(str mode):
    """The same switch for their weight gradient (images within a size
    bound). Returns the previous mode."""
    return _WINOGRAD_NAMES[nn_conv_set_winograd_dw(_winograd_code(mode))]


def conv2d_output_shape(tuple x_shape, tuple w_shape, stride=1, padding=0, dilation=1,
                        groups=1):
    """(n, o, oh, ow) of a Conv2d of x (n, c, h, w) with weight (o, c/groups,
    kh, kw), checked as conv2d_forward checks it."""
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_params("conv2d", x_shape, w_shape, stride, padding, dilation, groups, &p, &oh, &ow)
    return (x_shape[0], w_shape[0], oh, ow)


cdef _conv_act(str fn, int act):
    if not nn_epilogue_supports(act):
        raise ValueError(f"{fn}: act must be an activation the GEMM epilogue fuses "
                         f"(one of {sorted(EPILOGUE_ACTS)}), got {act}")


def conv2d_forward(cnp.ndarray x, cnp.ndarray w, object b, object y, stride=1, padding=0,
                   dilation=1, groups=1, int act=0, bint bf16=False, object res=None,
                   object packed=None):
    """y = act(conv2d(x, w) + b), PyTorch's Conv2d: x (n, c, h, w), w (o,
    c/groups, kh, kw), b (o,) or None, y (n, o, oh, ow) overwritten; act is
    an activation code the GEMM epilogue fuses (EPILOGUE_ACTS). stride, padding,
    dilation: an int or a pair. bf16: the GEMMs' operands rounded to
    bfloat16 (float32 accumulation and output). res: None, or an array of
    y's shape (not overlapping y) added before act: y = act(conv2d(x, w) + b
    + res), the bits of the sum and activation done after the call (float32
    only). packed: None, or conv2d_pack's array for this w and b (the
    weights are then not packed again where its layout fits the call: the
    same bits)."""
    cdef str fn = "conv2d_forward"
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_arrays(fn, x, w, stride, padding, dilation, groups, &p, &oh, &ow, bf16, act)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef const float *pb = NULL
    if b is not None:
        pb = _fshape(b, (p.o,), False, fn, "bias")
    cdef float *py = _fshape(y, (p.n, p.o, oh, ow), True, fn, "y")
    cdef int64_t ny = p.n * p.o * oh * ow * 4
    cdef const float *pr = _residual(res, y, bf16, fn)
    _no_overlap(fn, [("y", <size_t>py, ny)],
                _conv_ins(x, w, pb, p.o) + [("res", <size_t>pr, ny if pr else 0)])
    cdef int64_t npk = 0
    cdef const float *ppk = _packed_arg(packed, bf16, fn, &npk)
    cdef int status
    with nogil:
        status = nn_conv2d_forward_packed(&p, ppk, npk, px, pw, pb, NULL, NULL, NULL, NULL, 0.0,
                                          pr, py, act, NULL, NULL)
    check(status, fn)
    cdef _plan_op *op = _record(_OP_CONV, (x, w, b, y, res, packed))
    if op != NULL:
        op.conv, op.x, op.w, op.bias, op.x2, op.y, op.act = p, px, pw, pb, pr, py, act
        op.packed, op.packed_floats = ppk, npk


def conv2d_forward_pool(cnp.ndarray x, cnp.ndarray w, object b, object z, object y,
                        object argmax, stride=1, padding=0, dilation=1, groups=1, int act=0,
                        bint bf16=False, object packed=None):
    """conv2d_forward into z followed by maxpool2d_forward(z, y, argmax, 2):
    y and argmax (n, o, oh // 2, ow // 2; None: not kept, as inference needs
    none) get the bits those two calls give.
    z (n, o, oh, ow) is scratch: where the direct or Winograd convolution
    runs (float32) the windows are pooled as the rows are computed and z is
    left untouched; elsewhere it gets the convolution's output. oh and ow
    must be >= 2. packed: as conv2d_forward's."""
    cdef str fn = "conv2d_forward_pool"
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_arrays(fn, x, w, stride, padding, dilation, groups, &p, &oh, &ow, bf16, act)
    if oh < 2 or ow < 2:
        raise ValueError(f"{fn}: the convolution's output is {oh}x{ow}; 2x2 pooling needs "
                         "at least 2x2")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef const float *pb = _opt_vec(b, p.o, fn, "bias")
    cdef float *pz = _fshape(z, (p.n, p.o, oh, ow), True, fn, "z")
    pooled = (p.n, p.o, oh // 2, ow // 2)
    cdef float *py = _fshape(y, pooled, True, fn, "y")
    cdef int32_t *pa = NULL if argmax is None else _ishape(argmax, pooled, True, fn, "argmax")
    cdef int64_t nz = p.n * p.o * oh * ow * 4, ny = p.n * p.o * (oh // 2) * (ow // 2) * 4
    _no_overlap(fn, [("z", <size_t>pz, nz), ("y", <size_t>py, ny),
                     ("argmax", <size_t>pa, ny if pa else 0)], _conv_ins(x, w, pb, p.o))
    cdef int64_t npk = 0
    cdef const float *ppk = _packed_arg(packed, bf16, fn, &npk)
    cdef int status
    with nogil:
        status = nn_conv2d_forward_packed(&p, ppk, npk, px, pw, pb, NULL, NULL, NULL, NULL, 0.0,
                                          NULL, pz, act, py, pa)
    check(status, fn)
    cdef _plan_op *op = _record(_OP_CONV_POOL, (x, w, b, z, y, argmax, packed))
    if op != NULL:
        op.conv, op.x, op.w, op.bias, op.z, op.y, op.arg, op.act = p, px, pw, pb, pz, py, pa, act
        op.packed, op.packed_floats = ppk, npk


cdef list _conv_ins(cnp.ndarray x, cnp.ndarray w, const float *pb, int64_t o):
    """A conv binding's inputs for _no_overlap: x, the weight and the bias
    (o floats, or none when pb is NULL)."""
    return [("x", <size_t>cnp.PyArray_DATA(x), cnp.PyArray_NBYTES(x)),
            ("weight", <size_t>cnp.PyArray_DATA(w), cnp.PyArray_NBYTES(w)),
            ("bias", <size_t>pb, o * 4 if pb else 0)]


cdef const float *_residual(object res, object y, bint bf16, str fn) except? NULL:
    """The data of res (y's shape, read only), or NULL for None."""
    if res is None:
        return NULL
    if bf16:
        raise ValueError(f"{fn}: res is for the float32 forward pass, not bf16")
    return _fshape(res, (<object>y).shape, False, fn, "res")


cdef const float *_packed_arg(object packed, bint bf16, str fn, int64_t *floats) except? NULL:
    """The data and size (*floats) of conv2d_pack's array, or NULL for None."""
    if packed is None:
        return NULL
    if bf16:
        raise ValueError(f"{fn}: packed is for the float32 forward pass, not bf16")
    if not isinstance(packed, cnp.ndarray) or (<cnp.ndarray>packed).ndim != 1:
        raise TypeError(f"{fn}: packed must be a 1-D array from conv2d_pack")
    _check_array(<cnp.ndarray>packed, cnp.NPY_FLOAT32, False, fn, "packed")
    floats[0] = cnp.PyArray_SIZE(<cnp.ndarray>packed)
    return <const float *>cnp.PyArray_DATA(<cnp.ndarray>packed)


def conv2d_pack(tuple x_shape, cnp.ndarray w, object b=None, object bn_weight=None,
                object bn_bias=None, object running_mean=None, object running_var=None,
                double eps=1e-5, stride=1, padding=0, dilation=1, groups=1):
    """The weights w, the bias b and (running_mean not None) an
    evaluation-mode BatchNorm2d folded in, packed once in the layout the
    forward pass of inputs of shape x_shape (any batch) reads: a float32
    array for conv2d_forward's, conv2d_forward_pool's or conv2d_forward_bn's
    ``packed`` (with the same w, b and BatchNorm: the values are not
    checked, the layout is), or None where that path packs nothing ahead."""
    cdef str fn = "conv2d_pack"
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    cdef int64_t d[4]
    _dims(w, 4, fn, "weight", d)
    _conv_params(fn, x_shape, (<object>w).shape, stride, padding, dilation, groups, &p, &oh, &ow)
    cdef const float *pw = _fshape(w, (<object>w).shape, False, fn, "weight")
    cdef const float *pb = _opt_vec(b, p.o, fn, "bias")
    cdef const float *pg = NULL
    cdef const float *pbb = NULL
    cdef const float *prm = NULL
    cdef const float *prv = NULL
    if running_mean is not None:
        if not eps >= 0.0:
            raise ValueError(f"{fn}: eps must be >= 0, got {eps}")
        pg = _opt_vec(bn_weight, p.o, fn, "bn_weight")
        pbb = _opt_vec(bn_bias, p.o, fn, "bn_bias")
        prm = _fshape(running_mean, (p.o,), False, fn, "running_mean")
        prv = _fshape(running_var, (p.o,), False, fn, "running_var")
    cdef int64_t need = 0
    cdef int status
    with nogil:
        status = nn_conv2d_pack_forward(&p, pw, pb, pg, pbb, prm, prv, <float>eps, NULL, 0,
                                        &need)
    check(status, fn)
    if need == 0:
        return None
    # on a cache line (NumPy's large arrays start 16 bytes past one here, and
    # every vector load of the weights would touch two lines)
    cdef cnp.ndarray out = _guard.empty((need,), "float32", f"{fn}: the packed weights")
    cdef float *po = <float *>cnp.PyArray_DATA(out)
    with nogil:
        status = nn_conv2d_pack_forward(&p, pw, pb, pg, pbb, prm, prv, <float>eps, po, need,
                                        &need)
    check(status, fn)
    out.flags.writeable = False
    return out


def conv2d_forward_bn(cnp.ndarray x, cnp.ndarray w, object b, object bn_weight,
                      object bn_bias, object running_mean, object running_var, double eps,
                      object y, stride=1, padding=0, dilation=1, groups=1, int act=0,
                      object res=None, object packed=None):
    """conv2d_forward followed by an evaluation-mode BatchNorm2d and act in one
    pass: y = act(batchnorm_eval(conv2d(x, w) + b)), the BatchNorm's scale
    folded into the convolution (bn_weight, bn_bias, b may be None). res: as
    conv2d_forward's, added after the BatchNorm, before act. packed: as
    conv2d_forward's (conv2d_pack with this BatchNorm)."""
    cdef str fn = "conv2d_forward_bn"
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_arrays(fn, x, w, stride, padding, dilation, groups, &p, &oh, &ow, False, act)
    if not eps >= 0.0:
        raise ValueError(f"{fn}: eps must be >= 0, got {eps}")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef const float *pb = _opt_vec(b, p.o, fn, "bias")
    cdef const float *pg = _opt_vec(bn_weight, p.o, fn, "bn_weight")
    cdef const float *pbb = _opt_vec(bn_bias, p.o, fn, "bn_bias")
    cdef const float *prm = _fshape(running_mean, (p.o,), False, fn, "running_mean")
    cdef const float *prv = _fshape(running_var, (p.o,), False, fn, "running_var")
    cdef float *py = _fshape(y, (p.n, p.o, oh, ow), True, fn, "y")
    cdef int64_t ny = p.n * p.o * oh * ow * 4
    cdef const float *pr = _residual(res, y, False, fn)
    _no_overlap(fn, [("y", <size_t>py, ny)],
                _conv_ins(x, w, pb, p.o) + [
                 ("bn_weight", <size_t>pg, p.o * 4 if pg else 0),
                 ("bn_bias", <size_t>pbb, p.o * 4 if pbb else 0),
                 ("running_mean", <size_t>prm, p.o * 4), ("running_var", <size_t>prv, p.o * 4),
                 ("res", <size_t>pr, ny if pr else 0)])
    cdef int64_t npk = 0
    cdef const float *ppk = _packed_arg(packed, False, fn, &npk)
    cdef int status
    with nogil:
        status = nn_conv2d_forward_packed(&p, ppk, npk, px, pw, pb, pg, pbb, prm, prv,
                                          <float>eps, pr, py, act, NULL, NULL)
    check(status, fn)
    cdef _plan_op *op = _record(_OP_CONV, (x, w, b, bn_weight, bn_bias, running_mean,
                                           running_var, y, res, packed))
    if op != NULL:
        op.conv, op.x, op.w, op.bias, op.x2, op.y, op.act = p, px, pw, pb, pr, py, act
        op.packed, op.packed_floats = ppk, npk
        op.bn_weight, op.bn_bias, op.mean, op.var, op.param = pg, pbb, prm, prv, <float>eps


def conv2d_forward_nchw16c(cnp.ndarray x not None, cnp.ndarray w not None, object b,
                           cnp.ndarray y not None, stride=1, padding=0, int act=0,
                           object res=None, object packed=None):
    """conv2d_forward (ungrouped, dilation 1) with any of x, y and res in
    blocks of 16 channels (nChw16c, see to_nchw16c): a 5-D x is (n, c // 16,
    h, w, 16), a 5-D y or res (n, o // 16, oh, ow, 16); res is 5-D when y is.
    The values conv2d_forward gives in NCHW, bit for bit. Only where
    nn_conv2d_nchw16c_supported: the Winograd path runs (3x3, stride 1, a
    shape the current set_winograd mode takes), or the direct one
    (ungrouped, not 1x1 stride 1); ValueError elsewhere. The predict plans use
    it."""
    cdef str fn = "conv2d_forward_nchw16c"
    cdef bint res5 = isinstance(res, cnp.ndarray) and (<cnp.ndarray>res).ndim == 5
    cdef int layout = ((NN_NCHW16C_X if x.ndim == 5 else 0) |
                       (NN_NCHW16C_Y if y.ndim == 5 else 0) | (NN_NCHW16C_RES if res5 else 0))
    if layout == 0 or x.ndim not in (4, 5) or y.ndim not in (4, 5) or (
            y.ndim == 5 and res is not None and not res5):
        raise ValueError(f"{fn}: x, y or res must be 5-D (nChw16c; res 5-D with y), the others "
                         f"4-D; got shapes {(<object>x).shape}, {(<object>y).shape} and "
                         f"{getattr(res, 'shape', None)}")
    xs = (<object>x).shape
    if x.ndim == 5:
        if xs[4] != 16:
            raise ValueError(f"{fn}: x must be (n, c // 16, h, w, 16), got shape {xs}")
        xs = (xs[0], 16 * xs[1], xs[2], xs[3])
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_params(fn, tuple(xs), (<object>w).shape, stride, padding, 1, 1, &p, &oh, &ow)
    _conv_act(fn, act)
    cdef const float *pw = _fshape(w, (<object>w).shape, False, fn, "weight")
    cdef const float *px = _fshape(x, (<object>x).shape, False, fn, "x")
    if not nn_conv2d_nchw16c_supported(&p, layout):
        raise ValueError(f"{fn}: a {p.kh}x{p.kw} layer {p.c} -> {p.o} channels on {p.h}x{p.w} "
                         f"(stride {p.sh}) runs on no path that reads or writes nChw16c "
                         f"there (channels multiples of 16; Winograd or the direct path)")
    cdef const float *pb = _opt_vec(b, p.o, fn, "bias")
    cdef tuple nchw = (p.n, p.o, oh, ow), blocks = (p.n, p.o // 16, oh, ow, 16)
    cdef float *py = _fshape(y, blocks if y.ndim == 5 else nchw, True, fn, "y")
    cdef int64_t ny = p.n * p.o * oh * ow * 4
    cdef const float *pr = NULL
    if res is not None:
        pr = _fshape(res, blocks if res5 else nchw, False, fn, "res")
    _no_overlap(fn, [("y", <size_t>py, ny)],
                _conv_ins(x, w, pb, p.o) + [("res", <size_t>pr, ny if pr else 0)])
    cdef int64_t npk = 0
    cdef const float *ppk = _packed_arg(packed, False, fn, &npk)
    cdef int status
    with nogil:
        status = nn_conv2d_forward_nchw16c(&p, layout, ppk, npk, px, pw, pb, NULL, NULL, NULL,
                                           NULL, 0.0, pr, py, act)
    check(status, fn)


cdef _convert_layout(str fn, object x, object y, bint to_blocked):
    """Check an NCHW array and its nChw16c twin (which is which: to_blocked),
    then convert x into y."""
    nchw, blocked = (x, y) if to_blocked else (y, x)
    if not isinstance(nchw, cnp.ndarray) or (<cnp.ndarray>nchw).ndim != 4:
        raise ValueError(f"{fn}: the NCHW array must be 4-D, got "
                         f"{getattr(nchw, 'shape', type(nchw).__name__)}")
    n, c, h, w = (<object>nchw).shape
    if c % 16 != 0:
        raise ValueError(f"{fn}: the channels ({c}) must be a multiple of 16")
    _fshape(nchw, (n, c, h, w), not to_blocked, fn, "x" if to_blocked else "y")
    _fshape(blocked, (n, c // 16, h, w, 16), to_blocked, fn, "y" if to_blocked else "x")
    cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef float *py = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    _no_overlap(fn, [("y", <size_t>py, cnp.PyArray_NBYTES(<cnp.ndarray>y))],
                [("x", <size_t>px, cnp.PyArray_NBYTES(<cnp.ndarray>x))])
    cdef int64_t d0 = n, d1 = c, d2 = h * w
    cdef int status
    with nogil:
        if to_blocked:
            status = nn_to_nchw16c(d0, d1, d2, px, py)
        else:
            status = nn_from_nchw16c(d0, d1, d2, px, py)
    check(status, fn)


def to_nchw16c(object x, object y):
    """y[i, b, r, q, l] = x[i, 16 b + l, r, q]: x (n, c, h, w) float32, c a
    multiple of 16, into y (n, c // 16, h, w, 16) (nChw16c: runs of 16
    channels per pixel; see conv2d_forward_nchw16c)."""
    _convert_layout("to_nchw16c", x, y, True)


def from_nchw16c(object x, object y):
    """to_nchw16c's inverse: x (n, c // 16, h, w, 16) into y (n, c, h, w)."""
    _convert_layout("from_nchw16c", x, y, False)


def conv2d_backward(cnp.ndarray x, cnp.ndarray w, object dy, object dx, object dw,
                    object db, stride=1, padding=0, dilation=1, groups=1, bint bf16=False):
    """The gradients of conv2d_forward (without its activation) for dy (n, o,
    oh, ow): dx (x's shape), dw (w's shape), db (o,), each overwritten, each
    skipped when None. The bits do not depend on the thread count. bf16: the
    GEMMs of dx and dw in bfloat16, as in conv2d_forward."""
    cdef str fn = "conv2d_backward"
    cdef nn_conv2d_params p
    cdef int64_t oh, ow
    _conv_arrays(fn, x, w, stride, padding, dilation, groups, &p, &oh, &ow, bf16)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = <const float *>cnp.PyArray_DATA(w)
    cdef const float *pdy = _fshape(dy, (p.n, p.o, oh, ow), False, fn, "dy")
    cdef float *pdx = NULL
    cdef float *pdw = NULL
    cdef float *pdb = NULL
    outs = []
    if dx is not None:
        pdx = _fshape(dx, (<object>x).shape, True, fn, "dx")
        outs.append(("dx", <size_t>pdx, cnp.PyArray_NBYTES(x)))
    if dw is not None:
        pdw = _fshape(dw, (<object>w).shape, True, fn, "dw")
        outs.append(("dw", <size_t>pdw, cnp.PyArray_NBYTES(w)))
    if db is not None:
        pdb = _fshape(db, (p.o,), True, fn, "db")
        outs.append(("db", <size_t>pdb, p.o * 4))
    _no_overlap(fn, outs, [("x", <size_t>px, cnp.PyArray_NBYTES(x)),
                           ("weight", <size_t>pw, cnp.PyArray_NBYTES(w)),
                           ("dy", <size_t>pdy, p.n * p.o * oh * ow * 4)])
    if not outs:
        return
    cdef int status
    with nogil:
        status = nn_conv2d_backward(&p, px, pw, pdy, pdx, pdw, pdb)
    check(status, fn)


cdef int _pool_params(str fn, cnp.ndarray x, object kernel, object stride, object padding,
                      nn_pool2d_params *p, int64_t *planes) except -1:
    cdef int64_t d[4]
    _dims(x, 4, fn, "x", d)
    _pair(kernel, fn, "kernel_size", 1, &p.kh, &p.kw)
    _pair(kernel if stride is None else stride, fn, "stride", 1, &p.sh, &p.sw)
    _pair(padding, fn, "padding", 0, &p.ph, &p.pw)
    if p.ph > p.kh // 2 or p.pw > p.kw // 2:
        raise ValueError(f"{fn}: padding ({p.ph}, {p.pw}) must be at most half the kernel "
                         f"({p.kh}, {p.kw})")
    if d[2] == 0 or d[3] == 0:
        raise ValueError(f"{fn}: x has shape {(<object>x).shape}; height and width must be >= 1")
    if d[2] + 2 * p.ph < p.kh or d[3] + 2 * p.pw < p.kw:
        raise ValueError(f"{fn}: the kernel ({p.kh}x{p.kw}) is larger than the padded input "
                         f"({d[2] + 2 * p.ph}x{d[3] + 2 * p.pw})")
    if d[2] * d[3] >= _PARAM_MAX:
        raise ValueError(f"{fn}: planes of {d[2]}x{d[3]} are too large (2**31 elements at most)")
    p.h, p.w = d[2], d[3]
    p.oh = (p.h + 2 * p.ph - p.kh) // p.sh + 1
    p.ow = (p.w + 2 * p.pw - p.kw) // p.sw + 1
    planes[0] = d[0] * d[1]
    return 0


def pool2d_output_shape(tuple x_shape, kernel_size, stride=None, padding=0):
    """(n, c, oh, ow) of MaxPool2d / AvgPool2d (stride None: the kernel size)."""
    import numpy as np
    if len(x_shape) != 4:
        raise ValueError(f"pool2d: x must be 4-D, got shape {x_shape}")
    cdef nn_pool2d_params p
    cdef int64_t planes
    _pool_params("pool2d", np.empty((0, 0) + tuple(x_shape[2:]), np.float32), kernel_size,
                 stride, padding, &p, &planes)
    return (x_shape[0], x_shape[1], p.oh, p.ow)


def maxpool2d_forward(cnp.ndarray x, object y, object argmax, kernel_size, stride=None,
                      padding=0):
    """y = MaxPool2d(kernel_size, stride (None: kernel_size), padding)(x);
    argmax (int32, y's shape, or None) gets each window's first maximum's
    index ih * w + iw within its plane, for maxpool2d_backward."""
    cdef str fn = "maxpool2d_forward"
    cdef nn_pool2d_params p
    cdef int64_t planes
    _pool_params(fn, x, kernel_size, stride, padding, &p, &planes)
    shape = ((<object>x).shape[0], (<object>x).shape[1], p.oh, p.ow)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef float *py = _fshape(y, shape, True, fn, "y")
    cdef int32_t *pa = NULL
    outs = [("y", <size_t>py, planes * p.oh * p.ow * 4)]
    if argmax is not None:
        pa = _ishape(argmax, shape, True, fn, "argmax")
        outs.append(("argmax", <size_t>pa, planes * p.oh * p.ow * 4))
    _no_overlap(fn, outs, [("x", <size_t>px, cnp.PyArray_NBYTES(x))])
    if planes == 0:
        return
    with nogil:
        nn_maxpool2d_forward(planes, &p, px, py, pa)
    cdef _plan_op *op = NULL if pa != NULL else _record(_OP_MAXPOOL, (x, y))
    if op != NULL:
        op.a, op.pool, op.x, op.y = planes, p, px, py


cdef int32_t *_ishape(object a, tuple shape, bint writable, str fn, str name) except NULL:
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{fn}: {name} must be a NumPy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_INT32:
        raise TypeError(f"{fn}: {name} has dtype {arr.dtype}, expected int32")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{fn}: {name} must be writable")
    if (<object>arr).shape != shape:
        raise ValueError(f"{fn}: {name} has shape {(<object>arr).shape}, expected {shape}")
    return <int32_t *>cnp.PyArray_DATA(arr)


def maxpool2d_backward(object dy, object argmax, object dx, kernel_size, stride=None,
                       padding=0, relu_y=None):
    """dx (the input's shape) = the gradient of maxpool2d_forward: dy added at
    argmax (from the forward pass), zero elsewhere. relu_y (dy's shape, or
    None): the pooled output of a ReLU's output; dy then counts only where
    relu_y > 0 (the gradient through that ReLU too, in the same pass)."""
    cdef str fn = "maxpool2d_backward"
    if not isinstance(dx, cnp.ndarray):
        raise TypeError(f"{fn}: dx must be a NumPy array, got {type(dx).__name__}")
    cdef nn_pool2d_params p
    cdef int64_t planes
    _pool_params(fn, dx, kernel_size, stride, padding, &p, &planes)
    shape = ((<object>dx).shape[0], (<object>dx).shape[1], p.oh, p.ow)
    cdef float *pdx = _fshape(dx, (<object>dx).shape, True, fn, "dx")
    cdef const float *pdy = _fshape(dy, shape, False, fn, "dy")
    cdef const int32_t *pa = _ishape(argmax, shape, False, fn, "argmax")
    cdef const float *pry = NULL
    if relu_y is not None:
        pry = _fshape(relu_y, shape, False, fn, "relu_y")
    cdef int64_t nout = planes * p.oh * p.ow, plane = p.h * p.w
    _no_overlap(fn, [("dx", <size_t>pdx, planes * plane * 4)],
                [("dy", <size_t>pdy, nout * 4), ("argmax", <size_t>pa, nout * 4)]
                + ([("relu_y", <size_t>pry, nout * 4)] if pry != NULL else []))
    # the kernel checks the indices as it reads them, in its parallel pass
    # (a separate serial pass here: (32, 32, 28, 28) with relu_y 112 -> 93 us
    # on one thread) and never writes outside dx
    cdef int bad = 0
    if planes > 0:
        with nogil:
            nn_maxpool2d_backward(planes, &p, pdy, pa, pry, pdx, &bad)
    if bad:
        raise ValueError(f"{fn}: argmax holds an index outside its pooling window; pass the "
                         f"argmax maxpool2d_forward wrote (dx is not the gradient)")


def avgpool2d_forward(cnp.ndarray x, object y, kernel_size, stride=None, padding=0):
    """y = AvgPool2d(kernel_size, stride (None: kernel_size), padding)(x),
    count_include_pad=True: window sums / (kh * kw)."""
    cdef str fn = "avgpool2d_forward"
    cdef nn_pool2d_params p
    cdef int64_t planes
    _pool_params(fn, x, kernel_size, stride, padding, &p, &planes)
    shape = ((<object>x).shape[0], (<object>x).shape[1], p.oh, p.ow)
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef float *py = _fshape(y, shape, True, fn, "y")
    _no_overlap(fn, [("y", <size_t>py, planes * p.oh * p.ow * 4)],
                [("x", <size_t>px, cnp.PyArray_NBYTES(x))])
    if planes == 0:
        return
    with nogil:
        nn_avgpool2d_forward(planes, &p, px, py)
    cdef _plan_op *op = _record(_OP_AVGPOOL, (x, y))
    if op != NULL:
        op.a, op.pool, op.x, op.y = planes, p, px, py


def avgpool2d_backward(object dy, object dx, kernel_size, stride=None, padding=0):
    """dx (the input's shape) = the gradient of avgpool2d_forward."""
    cdef str fn = "avgpool2d_backward"
    if not isinstance(dx, cnp.ndarray):
        raise TypeError(f"{fn}: dx must be a NumPy array, got {type(dx).__name__}")
    cdef nn_pool2d_params p
    cdef int64_t planes
    _pool_params(fn, dx, kernel_size, stride, padding, &p, &planes)
    shape = ((<object>dx).shape[0], (<object>dx).shape[1], p.oh, p.ow)
    cdef float *pdx = _fshape(dx, (<object>dx).shape, True, fn, "dx")
    cdef const float *pdy = _fshape(dy, shape, False, fn, "dy")
    _no_overlap(fn, [("dx", <size_t>pdx, cnp.PyArray_NBYTES(<cnp.ndarray>dx))],
                [("dy", <size_t>pdy, planes * p.oh * p.ow * 4)])
    if planes == 0:
        return
    with nogil:
        nn_avgpool2d_backward(planes, &p, pdy, pdx)


def global_avgpool_forward(cnp.ndarray x, object y):
    """y (n, c) = the mean of each h x w plane of x (n, c, h, w)."""
    cdef str fn = "global_avgpool_forward"
    cdef int64_t d[4]
    _dims(x, 4, fn, "x", d)
    if d[2] == 0 or d[3] == 0:
        raise ValueError(f"{fn}: x has shape {(<object>x).shape}; height and width must be >= 1")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef float *py = _fshape(y, (d[0], d[1]), True, fn, "y")
    _no_overlap(fn, [("y", <size_t>py, d[0] * d[1] * 4)],
                [("x", <size_t>px, cnp.PyArray_NBYTES(x))])
    if d[0] * d[1] == 0:
        return
    with nogil:
        nn_global_avgpool_forward(d[0] * d[1], d[2] * d[3], px, py)
    cdef _plan_op *op = _record(_OP_GLOBAL_AVGPOOL, (x, y))
    if op != NULL:
        op.a, op.b, op.x, op.y = d[0] * d[1], d[2] * d[3], px, py


def global_avgpool_backward(object dy, cnp.ndarray dx):
    """dx (n, c, h, w) = dy (n, c) / (h * w), broadcast over each plane."""
    cdef str fn = "global_avgpool_backward"
    cdef int64_t d[4]
    _dims(dx, 4, fn, "dx", d)
    if d[2] == 0 or d[3] == 0:
        raise ValueError(f"{fn}: dx has shape {(<object>dx).shape}; height and width must be >= 1")
    cdef float *pdx = _fshape(dx, (<object>dx).shape, True, fn, "dx")
    cdef const float *pdy = _fshape(dy, (d[0], d[1]), False, fn, "dy")
    _no_overlap(fn, [("dx", <size_t>pdx, cnp.PyArray_NBYTES(dx))],
                [("dy", <size_t>pdy, d[0] * d[1] * 4)])
    if d[0] * d[1] == 0:
        return
    with nogil:
        nn_global_avgpool_backward(d[0] * d[1], d[2] * d[3], pdy, pdx)


cdef int _bn_shape(str fn, object x, int64_t *n, int64_t *c, int64_t *hw) except -1:
    """x is (n, c), (n, c, l) or (n, c, h, w): n, c and hw = the rest."""
    if not isinstance(x, cnp.ndarray):
        raise TypeError(f"{fn}: x must be a NumPy array, got {type(x).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(a), i
    if nd < 2 or nd > 4:
        raise ValueError(f"{fn}: x must be 2-D, 3-D or 4-D (n, c, ...), got shape "
                         f"{(<object>a).shape}")
    _check_array(a, cnp.NPY_FLOAT32, False, fn, "x")
    n[0] = cnp.PyArray_DIM(a, 0)
    c[0] = cnp.PyArray_DIM(a, 1)
    hw[0] = 1
    for i in range(2, nd):
        hw[0] *= cnp.PyArray_DIM(a, i)
    if c[0] == 0:
        raise ValueError(f"{fn}: x has no channels (shape {(<object>a).shape})")
    return 0


cdef const float *_opt_vec(object v, int64_t c, str fn, str name) except? NULL:
    if v is None:
        return NULL
    return _fshape(v, (c,), False, fn, name)


def batchnorm_forward_train(cnp.ndarray x, object weight, object bias, object running_mean,
                            object running_var, object y, object save_mean,
                            object save_invstd, double momentum=0.1, double eps=1e-5,
                            int act=NN_ACT_NONE):
    """Training-mode BatchNorm1d/2d over x (n, c[, l | h, w]): y normalised
    with the batch mean and biased variance, times weight plus bias (either
    may be None); save_mean, save_invstd (c,) written for the backward pass;
    running_mean / running_var (c,) updated in place with `momentum` (the
    unbiased variance), or None to skip. act: ACT_CODES["relu"] applies a
    ReLU to y in the same pass (the bits of act_forward after it)."""
    cdef str fn = "batchnorm_forward_train"
    if act != NN_ACT_NONE and act != NN_ACT_RELU:
        raise ValueError(f"{fn}: act must be none or relu, got code {act}")
    cdef int64_t n, c, hw
    _bn_shape(fn, x, &n, &c, &hw)
    if n * hw <= 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, got "
                         f"input shape {(<object>x).shape}")
    if not eps >= 0.0:
        raise ValueError(f"{fn}: eps must be >= 0, got {eps}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: pass both running_mean and running_var, or neither")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = _opt_vec(weight, c, fn, "weight")
    cdef const float *pb = _opt_vec(bias, c, fn, "bias")
    cdef float *prm = NULL
    cdef float *prv = NULL
    outs = []
    if running_mean is not None:
        prm = _fshape(running_mean, (c,), True, fn, "running_mean")
        prv = _fshape(running_var, (c,), True, fn, "running_var")
        outs += [("running_mean", <size_t>prm, c * 4), ("running_var", <size_t>prv, c * 4)]
    cdef float *py = _fshape(y, (<object>x).shape, True, fn, "y")
    cdef float *psm = _fshape(save_mean, (c,), True, fn, "save_mean")
    cdef float *psi = _fshape(save_invstd, (c,), True, fn, "save_invstd")
    outs += [("y", <size_t>py, cnp.PyArray_NBYTES(x)), ("save_mean", <size_t>psm, c * 4),
             ("save_invstd", <size_t>psi, c * 4)]
    _no_overlap(fn, outs, [("x", <size_t>px, cnp.PyArray_NBYTES(x)),
                           ("weight", <size_t>pw, c * 4 if pw else 0),
                           ("bias", <size_t>pb, c * 4 if pb else 0)])
    with nogil:
        nn_batchnorm_forward_train(n, c, hw, px, pw, pb, <float>eps, <float>momentum, prm, prv,
                                   py, psm, psi, act)


def batchnorm_forward_eval(cnp.ndarray x, object weight, object bias, object running_mean,
                           object running_var, object y, double eps=1e-5):
    """Evaluation-mode BatchNorm: y = (x - running_mean) / sqrt(running_var +
    eps) * weight + bias (weight, bias may be None)."""
    cdef str fn = "batchnorm_forward_eval"
    cdef int64_t n, c, hw
    _bn_shape(fn, x, &n, &c, &hw)
    if not eps >= 0.0:
        raise ValueError(f"{fn}: eps must be >= 0, got {eps}")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pw = _opt_vec(weight, c, fn, "weight")
    cdef const float *pb = _opt_vec(bias, c, fn, "bias")
    cdef const float *prm = _fshape(running_mean, (c,), False, fn, "running_mean")
    cdef const float *prv = _fshape(running_var, (c,), False, fn, "running_var")
    cdef float *py = _fshape(y, (<object>x).shape, True, fn, "y")
    _no_overlap(fn, [("y", <size_t>py, cnp.PyArray_NBYTES(x))],
                [("x", <size_t>px, cnp.PyArray_NBYTES(x)),
                 ("weight", <size_t>pw, c * 4 if pw else 0),
                 ("bias", <size_t>pb, c * 4 if pb else 0),
                 ("running_mean", <size_t>prm, c * 4), ("running_var", <size_t>prv, c * 4)])
    if n * hw == 0:
        return
    with nogil:
        nn_batchnorm_forward_eval(n, c, hw, px, pw, pb, prm, prv, <float>eps, py)
    cdef _plan_op *op = _record(_OP_BATCHNORM_EVAL, (x, weight, bias, running_mean,
                                                      running_var, y))
    if op != NULL:
        op.a, op.b, op.c, op.x, op.y, op.param = n, c, hw, px, py, <float>eps
        op.bn_weight, op.bn_bias, op.mean, op.var = pw, pb, prm, prv


def batchnorm_backward(cnp.ndarray x, object dy, object weight, object mean, object invstd,
                       object dx, object dweight, object dbias, bint train=True,
                       object relu_y=None):
    """Gradients of BatchNorm for dy (x's shape). train=True: through the
    batch statistics (mean, invstd = save_mean, save_invstd of the training
    forward); train=False: statistics held constant (mean = running_mean,
    invstd = 1 / sqrt(running_var + eps)). dx, dweight, dbias (c,) are
    overwritten, each skipped when None; weight None means 1. relu_y (x's
    shape, or None): the output of a forward with act relu; dy then counts
    only where relu_y > 0 (the gradient through that ReLU too, the bits of
    act_backward before this call)."""
    cdef str fn = "batchnorm_backward"
    cdef int64_t n, c, hw
    _bn_shape(fn, x, &n, &c, &hw)
    if train and n * hw <= 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, got "
                         f"input shape {(<object>x).shape}")
    cdef const float *px = <const float *>cnp.PyArray_DATA(x)
    cdef const float *pdy = _fshape(dy, (<object>x).shape, False, fn, "dy")
    cdef const float *pw = _opt_vec(weight, c, fn, "weight")
    cdef const float *pm = _fshape(mean, (c,), False, fn, "mean")
    cdef const float *pi = _fshape(invstd, (c,), False, fn, "invstd")
    cdef const float *pry = NULL
    if relu_y is not None:
        pry = _fshape(relu_y, (<object>x).shape, False, fn, "relu_y")
    cdef float *pdx = NULL
    cdef float *pdw = NULL
    cdef float *pdb = NULL
    outs = []
    if dx is not None:
        pdx = _fshape(dx, (<object>x).shape, True, fn, "dx")
        outs.append(("dx", <size_t>pdx, cnp.PyArray_NBYTES(x)))
    if dweight is not None:
        pdw = _fshape(dweight, (c,), True, fn, "dweight")
        outs.append(("dweight", <size_t>pdw, c * 4))
    if dbias is not None:
        pdb = _fshape(dbias, (c,), True, fn, "dbias")
        outs.append(("dbias", <size_t>pdb, c * 4))
    _no_overlap(fn, outs, [("x", <size_t>px, cnp.PyArray_NBYTES(x)),
                           ("dy", <size_t>pdy, cnp.PyArray_NBYTES(x)),
                           ("weight", <size_t>pw, c * 4 if pw else 0),
                           ("mean", <size_t>pm, c * 4), ("invstd", <size_t>pi, c * 4),
                           ("relu_y", <size_t>pry, cnp.PyArray_NBYTES(x) if pry else 0)])
    if not outs:
        return
    with nogil:
        nn_batchnorm_backward(n, c, hw, px, pdy, pry, pw, pm, pi, train, pdx, pdw, pdb)


cdef const int32_t *_int32_in(cnp.ndarray a, str fn, str name) except NULL:
    if cnp.PyArray_TYPE(a) != cnp.NPY_INT32:
        raise TypeError(f"{fn}: {name} has dtype {a.dtype}, expected int32")
    if cnp.PyArray_NDIM(a) != 1:
        raise ValueError(f"{fn}: {name} must be 1-D, got {cnp.PyArray_NDIM(a)}-D")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")
    return <const int32_t *>cnp.PyArray_DATA(a)


cdef int _check_csr(cnp.ndarray indptr, cnp.ndarray indices, cnp.ndarray data, int64_t d,
                    str fn, int64_t *rows) except -1:
    """Check a CSR batch for the C kernels, which trust it: int32 indptr with
    m + 1 non-decreasing offsets into indices and data (float32, same length;
    indptr[0] may be > 0: a row range of a bigger matrix), and every column
    index the rows use in [0, d). Sets rows[0] = m."""
    cdef const int32_t *ptr = _int32_in(indptr, fn, "indptr")
    cdef const int32_t *idx = _int32_in(indices, fn, "indices")
    cdef int64_t nnz = cnp.PyArray_DIM(indices, 0)
    _fin(data, nnz, fn, "data")
    cdef int64_t m = cnp.PyArray_DIM(indptr, 0) - 1
    if m < 0:
        raise ValueError(f"{fn}: indptr is empty; it needs rows + 1 offsets")
    if ptr[0] < 0 or ptr[m] > nnz:
        raise ValueError(f"{fn}: indptr runs from {ptr[0]} to {ptr[m]}, outside the "
                         f"{nnz} stored values")
    cdef int64_t i
    cdef int32_t c
    for i in range(m):
        if ptr[i + 1] < ptr[i]:
            raise ValueError(f"{fn}: indptr decreases at row {i} ({ptr[i]} -> {ptr[i + 1]})")
    for i in range(ptr[0], ptr[m]):
        c = idx[i]
        if c < 0 or c >= d:
            raise ValueError(f"{fn}: column index {c} at position {i} is outside [0, {d})")
    rows[0] = m
    return 0


def csr_dense_forward(cnp.ndarray indptr not None, cnp.ndarray indices not None,
                      cnp.ndarray data not None, cnp.ndarray w not None, b,
                      cnp.ndarray y not None):
    """y = X w + b for the CSR batch X = (indptr, indices, data) with w.shape[0]
    columns; w (d, h), b (h,) float32 or None, y (m, h) float32, written."""
    cdef str fn = "csr_dense_forward"
    cdef int64_t d, h, m
    _matrix(w, &d, &h, fn, "w")
    _check_csr(indptr, indices, data, d, fn, &m)
    cdef const int32_t *pp = <const int32_t *>cnp.PyArray_DATA(indptr)
    cdef const int32_t *pi = <const int32_t *>cnp.PyArray_DATA(indices)
    cdef const float *pd = <const float *>cnp.PyArray_DATA(data)
    cdef const float *pw = _fin(w, d * h, fn, "w")
    cdef const float *pb = NULL
    if b is not None:
        pb = _fin(b, h, fn, "b")
    cdef float *py = _fout(y, m * h, fn, "y")
    if m == 0 or h == 0:
        return
    with nogil:
        nn_csr_dense_forward(m, h, pp, pi, pd, pw, pb, py)


def csr_dense_weight_grad(cnp.ndarray indptr not None, cnp.ndarray indices not None,
                          cnp.ndarray data not None, cnp.ndarray dy not None,
                          cnp.ndarray dw not None):
    """dw = X^T dy for the CSR batch X = (indptr, indices, data) with dw.shape[0]
    columns; dy (m, h), dw (d, h) float32, overwritten."""
    cdef str fn = "csr_dense_weight_grad"
    cdef int64_t d, h, m, my, hy
    _matrix(dw, &d, &h, fn, "dw")
    _matrix(dy, &my, &hy, fn, "dy")
    _check_csr(indptr, indices, data, d, fn, &m)
    if my != m or hy != h:
        raise ValueError(f"{fn}: dy has shape ({my}, {hy}), expected ({m}, {h})")
    cdef const int32_t *pp = <const int32_t *>cnp.PyArray_DATA(indptr)
    cdef const int32_t *pi = <const int32_t *>cnp.PyArray_DATA(indices)
    cdef const float *pd = <const float *>cnp.PyArray_DATA(data)
    cdef const float *pdy = _fin(dy, m * h, fn, "dy")
    cdef float *pdw = _fout(dw, d * h, fn, "dw")
    if d == 0 or h == 0:
        return
    with nogil:
        nn_csr_dense_weight_grad(m, d, h, pp, pi, pd, pdy, pdw)
