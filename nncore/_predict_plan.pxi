# Predict plans, included by _core.pyx (one extension module, this concept
# in a file of its own).
#
# Sequential.predict records the kernel calls of one evaluation-mode pass
# (record_plan) and replays them later without the Python between them
# (PredictPlan.run): the same C calls on the same arrays, so the same bits.
# Each binding a predict step uses adds its call to the plan this thread is
# recording (_record), after the call succeeded.

cdef enum:
    _OP_CONV = 1
    _OP_MAXPOOL = 2
    _OP_AVGPOOL = 3
    _OP_GLOBAL_AVGPOOL = 4
    _OP_BATCHNORM_EVAL = 5
    _OP_ACT = 6
    _OP_DENSE = 7
    _OP_ADD = 8
    _OP_CONV_POOL = 9
    _OP_CONV_NCHW16C = 10           # x, x2 and y in nChw16c (see _use_nchw16c)
    _OP_TO_NCHW16C = 11             # (a, b, c) = (n, c, h w): x NCHW into y nChw16c
    _OP_FROM_NCHW16C = 12           # and back

ctypedef struct _plan_op:
    int kind
    int act
    float param                      # LeakyReLU's slope; BatchNorm's eps
    int64_t a, b, c                  # sizes (see _run_ops)
    nn_conv2d_params conv
    nn_pool2d_params pool
    nn_dense_layer dense             # one Dense layer (layers NULL) ...
    const nn_dense_layer *layers     # ... or a DenseChain's (count of them)
    int count
    const float *x
    const float *x2                  # the residual (conv), the second summand (add)
    const float *w
    const float *packed              # the conv's packed weights (NULL: none) ...
    int64_t packed_floats            # ... and their size
    const float *bias
    const float *bn_weight
    const float *bn_bias
    const float *mean
    const float *var
    float *y
    float *z                         # the unpooled scratch (conv + pool)
    int32_t *arg                     # the pooling's argmax (conv + pool)


cdef class PredictPlan:
    """The kernel calls of one predict pass on inputs of one shape, in
    order, with the arrays they read and write (kept alive here). ``run(x)``
    copies x into the plan's input array and makes the calls in one C loop:
    no Python between kernels. The arrays' contents may change between runs
    (new weights are copied in place), not the arrays."""
    cdef _plan_op *ops
    cdef Py_ssize_t count, capacity
    cdef list keep
    cdef unsigned long thread
    cdef readonly object input, output

    def __cinit__(self):
        self.keep = []

    def __dealloc__(self):
        PyMem_Free(self.ops)

    @property
    def calls(self):
        """The number of kernel calls a run makes."""
        return self.count

    @property
    def kinds(self):
        """The kinds of the calls a run makes, in order: "conv", "conv_nchw16c",
        "to_nchw16c", "from_nchw16c", "other"."""
        names = {_OP_CONV: "conv", _OP_CONV_NCHW16C: "conv_nchw16c",
                 _OP_TO_NCHW16C: "to_nchw16c", _OP_FROM_NCHW16C: "from_nchw16c"}
        return [names.get(self.ops[i].kind, "other") for i in range(self.count)]

    def run(self, cnp.ndarray x not None):
        """The recorded pass on x (float32, C-contiguous, the recorded input's
        shape); returns the plan's output array (overwritten by the next run)."""
        if self.input is None:
            raise ValueError("predict plan: nothing recorded (plans come from record_plan)")
        cdef cnp.ndarray xin = <cnp.ndarray>self.input
        if (cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(x)
                or (<object>x).shape != (<object>xin).shape):
            raise ValueError(f"predict plan: x must be float32, C-contiguous, of shape "
                             f"{(<object>xin).shape}; got {x.dtype} {(<object>x).shape}")
        cdef int status
        with nogil:
            memcpy(cnp.PyArray_DATA(xin), cnp.PyArray_DATA(x), <size_t>cnp.PyArray_NBYTES(xin))
            status = _run_ops(self.ops, self.count)
        check(status, "predict")
        return self.output


cdef PredictPlan _recording = None


cdef _plan_op *_record(int kind, tuple arrays) except? NULL:
    """A new zeroed op of the plan this thread records (its arrays kept
    alive), or NULL when this thread records none."""
    cdef PredictPlan plan = _recording
    if plan is None or plan.thread != PyThread_get_thread_ident():
        return NULL
    cdef _plan_op *grown
    if plan.count == plan.capacity:
        grown = <_plan_op *>PyMem_Realloc(plan.ops, (2 * plan.capacity + 16) * sizeof(_plan_op))
        if grown == NULL:
            raise MemoryError("predict plan: the call list")
        plan.ops, plan.capacity = grown, 2 * plan.capacity + 16
    plan.keep.append(arrays)
    cdef _plan_op *op = &plan.ops[plan.count]
    plan.count += 1
    memset(op, 0, sizeof(_plan_op))
    op.kind = kind
    return op


_record_lock = threading.Lock()


def record_plan(infer, cnp.ndarray x not None):
    """Run ``infer(x_copy)`` once (a copy of x: the plan's input array),
    recording the kernel calls this thread makes; returns ``(plan, y)``,
    y its output. plan is None when y is not the output of a recorded call
    (some step computed outside the recorded bindings) or nothing was
    recorded. The caller guarantees that every step of ``infer`` computes
    through recording bindings (Sequential.predict_traceable)."""
    global _recording
    cdef PredictPlan plan = PredictPlan()
    plan.thread = PyThread_get_thread_ident()
    plan.input = x.copy()
    with _record_lock:      # one recording at a time (other threads' calls are not in it)
        _recording = plan
        try:
            y = infer(plan.input)
        finally:
            _recording = None
    cdef Py_ssize_t i
    if (not isinstance(y, cnp.ndarray) or cnp.PyArray_TYPE(<cnp.ndarray>y) != cnp.NPY_FLOAT32
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>y)):
        return None, y
    cdef float *py = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    for i in range(plan.count):
        if plan.ops[i].y == py:
            plan.output = y
            _use_nchw16c(plan)
            return plan, y
    return None, y


# ---- nChw16c between Winograd convolutions ----
#
# A recorded plan's runs of convolutions that take the Winograd path (3x3,
# stride 1, channels multiples of 16: ResNet stages) read and write their
# activations in nChw16c instead (csrc/layout.c says why), converted from and
# to NCHW where another call reads or writes them. The same values as the
# recorded calls, bit for bit (nn_conv2d_forward_nchw16c); record_plan checks
# that on the recorded input and keeps the recorded calls if not.

cdef class _Tensor:
    """One NCHW array a rewritten plan also keeps in nChw16c: where (ptr,
    nbytes), its (n, c, h w), its nChw16c twin, and which copies hold the
    current values as the calls go."""
    cdef size_t ptr, nbytes
    cdef int64_t n, c, hw
    cdef object twin
    cdef float *blk
    cdef bint nchw_ok, blk_ok


cdef int64_t _conv_out(const nn_conv2d_params *p) noexcept nogil:
    """A convolution's output pixels per plane (0 for a bad geometry)."""
    cdef int64_t oh = 0, ow = 0
    if nn_conv2d_output_size(p, &oh, &ow) != NN_OK:
        return 0
    return oh * ow


cdef bint _is_nchw16c_conv(const _plan_op *op, int threads) noexcept nogil:
    """A convolution to run in nChw16c: one the Winograd path takes, on fewer
    images than threads (each image then split between threads, whose
    writes in NCHW interleave) or on one image. Measured on ResNet-20
    (docs/measurements.md): one image 1.06x (1 thread) and 1.11x (2)
    faster; 32 images 0.92-0.95x, the conversions' passes over tensors
    larger than L2 costing more than the convolutions gain."""
    return (op.kind == _OP_CONV and op.conv.n < max(2, threads) and
            nn_conv2d_nchw16c_supported(&op.conv) != 0)


cdef list _op_reads(const _plan_op *op):
    """The addresses of the arrays a call reads (as ints; 0 dropped)."""
    return [p for p in (<size_t>op.x, <size_t>op.x2) if p != 0]


cdef list _op_writes(const _plan_op *op):
    """The addresses of the arrays a call writes (as ints; 0 dropped)."""
    cdef int i
    if op.kind == _OP_DENSE:
        if op.layers != NULL:
            return [<size_t>op.layers[i].out for i in range(op.count)]
        return [<size_t>op.dense.out]
    return [p for p in (<size_t>op.y, <size_t>op.z, <size_t>op.arg) if p != 0]


cdef class _Calls:
    """A growing C array of calls."""
    cdef _plan_op *ops
    cdef Py_ssize_t count, capacity

    def __dealloc__(self):
        PyMem_Free(self.ops)

    cdef int push(self, const _plan_op *op) except -1:
        cdef _plan_op *grown
        if self.count == self.capacity:
            grown = <_plan_op *>PyMem_Realloc(self.ops,
                                              (2 * self.capacity + 16) * sizeof(_plan_op))
            if grown == NULL:
                raise MemoryError("predict plan: the call list")
            self.ops, self.capacity = grown, 2 * self.capacity + 16
        self.ops[self.count] = op[0]
        self.count += 1
        return 0


cdef _Tensor _tensor(list tensors, list twins, size_t ptr, int64_t n, int64_t c, int64_t hw):
    """The tracked tensor at ptr of this shape, or a new one (its NCHW copy
    current, its twin allocated 64-byte aligned: a pixel's 16 channels one
    cache line)."""
    cdef _Tensor t
    for t in tensors:
        if t.ptr == ptr and t.n == n and t.c == c and t.hw == hw:
            return t
    t = _Tensor()
    t.ptr, t.nbytes, t.n, t.c, t.hw = ptr, <size_t>(n * c * hw * 4), n, c, hw
    import numpy as np
    raw = np.empty(n * c * hw + 16, np.float32)
    cdef size_t skew = (64 - <size_t>cnp.PyArray_DATA(<cnp.ndarray>raw) % 64) % 64 // 4
    t.twin = raw[skew:skew + n * c * hw]
    t.blk = <float *>cnp.PyArray_DATA(<cnp.ndarray>t.twin)
    t.nchw_ok, t.blk_ok = True, False
    tensors.append(t)
    twins.append(t.twin)
    return t


cdef int _convert(_Calls out, _Tensor t, bint to_blocked) except -1:
    """Append the call bringing t's other copy up to date."""
    cdef _plan_op op
    memset(&op, 0, sizeof(_plan_op))
    op.kind = _OP_TO_NCHW16C if to_blocked else _OP_FROM_NCHW16C
    op.a, op.b, op.c = t.n, t.c, t.hw
    if to_blocked:
        op.x, op.y = <const float *>t.ptr, t.blk
    else:
        op.x, op.y = t.blk, <float *>t.ptr
    out.push(&op)
    if to_blocked:
        t.blk_ok = True
    else:
        t.nchw_ok = True
    return 0


cdef int _overwrite(_Calls out, list tensors, size_t ptr, size_t nbytes) except -1:
    """Forget the tensors a call writing [ptr, ptr + nbytes) in nChw16c
    overwrites, those it overwrites in part after their NCHW copies are
    made current (their other values stay there)."""
    cdef _Tensor t
    for t in list(tensors):
        if t.ptr < ptr + nbytes and ptr < t.ptr + t.nbytes:
            if not (t.ptr >= ptr and t.ptr + t.nbytes <= ptr + nbytes) and not t.nchw_ok:
                _convert(out, t, False)
            tensors.remove(t)
    return 0


cdef _Calls _rewrite_nchw16c(PredictPlan plan):
    """The plan's calls with its runs of Winograd convolutions in nChw16c
    (with the conversions), or None when it has none.
    A convolution joins when its input comes from, or its output goes to,
    another such convolution (a lone one would pay conversions for
    nothing)."""
    cdef Py_ssize_t i, j, count = plan.count
    cdef const _plan_op *op
    cdef int threads = nn_get_num_threads()
    able = [_is_nchw16c_conv(&plan.ops[i], threads) for i in range(count)]
    chosen = []
    for i in range(count):
        op = &plan.ops[i]
        feeds = fed = False
        if able[i]:
            for j in range(i - 1, -1, -1):          # the writer of x
                if <size_t>op.x in _op_writes(&plan.ops[j]):
                    fed = able[j]
                    break
            for j in range(i + 1, count):           # the next reader of y
                if <size_t>op.y in _op_reads(&plan.ops[j]):
                    feeds = able[j]
                    break
        chosen.append(fed or feeds)
    if not any(chosen):
        return None
    cdef list tensors = [], twins = []
    cdef _Calls out = _Calls()
    cdef _Tensor t, tx, tr, ty
    cdef _plan_op new
    cdef int64_t P
    for i in range(count):
        op = &plan.ops[i]
        if chosen[i]:
            P = _conv_out(&op.conv)
            tx = _tensor(tensors, twins, <size_t>op.x, op.conv.n, op.conv.c, op.conv.h * op.conv.w)
            if not tx.blk_ok:
                _convert(out, tx, True)
            tr = None
            if op.x2 != NULL:
                tr = _tensor(tensors, twins, <size_t>op.x2, op.conv.n, op.conv.o, P)
                if not tr.blk_ok:
                    _convert(out, tr, True)
            _overwrite(out, tensors, <size_t>op.y, <size_t>(op.conv.n * op.conv.o * P * 4))
            ty = _tensor(tensors, twins, <size_t>op.y, op.conv.n, op.conv.o, P)
            new = op[0]
            new.kind = _OP_CONV_NCHW16C
            new.x, new.y = tx.blk, ty.blk
            new.x2 = tr.blk if tr is not None else NULL
            out.push(&new)
            ty.blk_ok, ty.nchw_ok = True, False
            continue
        # any other call: the NCHW copies of what it reads current first; a
        # tensor it writes from its start is dead after it (a new one is
        # written there), a part of one is made current first
        reads, writes = _op_reads(op), _op_writes(op)
        for t in list(tensors):
            dead = t.ptr in writes
            read = any(t.ptr <= p < t.ptr + t.nbytes for p in reads)
            part = any(t.ptr < p < t.ptr + t.nbytes for p in writes)
            if (read or part) and not t.nchw_ok:
                _convert(out, t, False)
            if dead:
                tensors.remove(t)
            elif part:
                t.blk_ok = False
        out.push(op)
    cdef size_t output = <size_t>cnp.PyArray_DATA(<cnp.ndarray>plan.output)
    for t in tensors:                                # the output, in NCHW
        if not t.nchw_ok and t.ptr <= output < t.ptr + t.nbytes:
            _convert(out, t, False)
    plan.keep.append(twins)
    return out


cdef bint _plans_use_nchw16c = True


def set_plan_nchw16c(bint on):
    """Whether plans recorded from now on keep their runs of Winograd
    convolutions in nChw16c (the default, True; the same bits either way:
    for comparisons). Returns the previous setting."""
    global _plans_use_nchw16c
    previous, _plans_use_nchw16c = _plans_use_nchw16c, on
    return previous


cdef _use_nchw16c(PredictPlan plan):
    """Rewrite the plan's calls with _rewrite_nchw16c when the rewritten
    calls give the recorded output's bits on the recorded input (they are
    built to; a call this pass does not foresee keeps the recorded ones)."""
    if not _plans_use_nchw16c:
        return
    cdef _Calls calls = _rewrite_nchw16c(plan)
    if calls is None:
        return
    want = plan.output.copy()
    cdef int status
    with nogil:
        status = _run_ops(calls.ops, calls.count)
    if status == NN_OK and (want.view("u4") == plan.output.view("u4")).all():
        plan.ops, calls.ops = calls.ops, plan.ops      # calls frees the recorded ones
        plan.count, plan.capacity = calls.count, calls.capacity
        return
    plan.output[...] = want


cdef int _act_run(int act, int64_t rows, int64_t cols, const float *x, float *y,
                  float param) noexcept nogil:
    """y = act(x) over rows * cols floats (softmax: per row); -1 for an
    unknown code."""
    cdef int64_t n = rows * cols
    if act == NN_ACT_RELU:
        nn_relu_forward(n, x, y)
    elif act == NN_ACT_LEAKY_RELU:
        nn_leaky_relu_forward(n, x, y, param)
    elif act == NN_ACT_SIGMOID:
        nn_sigmoid_forward(n, x, y)
    elif act == NN_ACT_TANH:
        nn_tanh_forward(n, x, y)
    elif act == NN_ACT_GELU:
        nn_gelu_forward(n, x, y)
    elif act == NN_ACT_SOFTMAX:
        nn_softmax_forward(rows, cols, x, y)
    else:
        return -1
    return 0


cdef int _run_ops(const _plan_op *ops, Py_ssize_t count) noexcept nogil:
    """The recorded calls in order; the first failing status, else NN_OK."""
    cdef Py_ssize_t i
    cdef int64_t j
    cdef int status
    cdef const _plan_op *op
    for i in range(count):
        op = &ops[i]
        status = NN_OK
        if op.kind == _OP_CONV:
            status = nn_conv2d_forward_packed(&op.conv, op.packed, op.packed_floats, op.x, op.w,
                                              op.bias, op.bn_weight, op.bn_bias, op.mean,
                                              op.var, op.param, op.x2, op.y, op.act, NULL,
                                              NULL)
        elif op.kind == _OP_CONV_POOL:
            status = nn_conv2d_forward_packed(&op.conv, op.packed, op.packed_floats, op.x, op.w,
                                              op.bias, NULL, NULL, NULL, NULL, 0.0, NULL, op.z,
                                              op.act, op.y, op.arg)
        elif op.kind == _OP_MAXPOOL:
            nn_maxpool2d_forward(op.a, &op.pool, op.x, op.y, NULL)
        elif op.kind == _OP_AVGPOOL:
            nn_avgpool2d_forward(op.a, &op.pool, op.x, op.y)
        elif op.kind == _OP_GLOBAL_AVGPOOL:
            nn_global_avgpool_forward(op.a, op.b, op.x, op.y)
        elif op.kind == _OP_BATCHNORM_EVAL:
            nn_batchnorm_forward_eval(op.a, op.b, op.c, op.x, op.bn_weight, op.bn_bias,
                                      op.mean, op.var, op.param, op.y)
        elif op.kind == _OP_ACT:
            if _act_run(op.act, op.a, op.b, op.x, op.y, op.param) != 0:
                status = NN_EINVAL
        elif op.kind == _OP_DENSE:
            status = nn_dense_chain(op.a, op.x, op.count,
                                    op.layers if op.layers != NULL else &op.dense)
        elif op.kind == _OP_ADD:
            nn_add_act(op.a, op.x, op.x2, op.act, op.y)
        elif op.kind == _OP_CONV_NCHW16C:
            status = nn_conv2d_forward_nchw16c(&op.conv, op.packed, op.packed_floats, op.x, op.w,
                                               op.bias, op.bn_weight, op.bn_bias, op.mean,
                                               op.var, op.param, op.x2, op.y, op.act)
        elif op.kind == _OP_TO_NCHW16C:
            status = nn_to_nchw16c(op.a, op.b, op.c, op.x, op.y)
        elif op.kind == _OP_FROM_NCHW16C:
            status = nn_from_nchw16c(op.a, op.b, op.c, op.x, op.y)
        else:
            status = NN_EINVAL
        if status != NN_OK:
            return status
    return NN_OK


def add(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray y not None, int act=0):
    """y = act(a + b) elementwise (float32 arrays of one shape; y may be a or
    b; act NONE or RELU: a residual block's sum and the ReLU after it)."""
    cdef str fn = "add"
    cdef int64_t n = cnp.PyArray_SIZE(a)
    if (<object>b).shape != (<object>a).shape or (<object>y).shape != (<object>a).shape:
        raise ValueError(f"{fn}: shapes {(<object>a).shape}, {(<object>b).shape} and "
                         f"{(<object>y).shape} must match")
    if act != NN_ACT_NONE and act != NN_ACT_RELU:
        raise ValueError(f"{fn}: act must be NONE or RELU, got {act}")
    cdef const float *pa = _fin(a, n, fn, "a")
    cdef const float *pb = _fin(b, n, fn, "b")
    cdef float *py = _fout(y, n, fn, "y")
    with nogil:
        nn_add_act(n, pa, pb, act, py)
    cdef _plan_op *op = _record(_OP_ADD, (a, b, y))
    if op != NULL:
        op.a, op.x, op.x2, op.y, op.act = n, pa, pb, py, act
