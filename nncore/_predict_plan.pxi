# Predict plans, included by _core.pyx (one extension module, this concept
# in a file of its own).
#
# Sequential.predict records the kernel calls of one evaluation-mode pass
# (record_plan) and replays them later without the Python between them
# (PredictPlan.run): the same C calls on the same arrays (or, for
# convolutions, on their nChw16c twins: _use_nchw16c below), so the same
# bits. Each binding a predict step uses adds its call to the plan this
# thread is recording (_record), after the call succeeded.

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
    _OP_CONV_NCHW16C = 10           # a conv, layout: which of x, y, x2 are nChw16c
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
    int layout                       # NN_NCHW16C_X / _Y / _RES (_OP_CONV_NCHW16C)
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
        """The kinds of the calls a run makes, in order: "conv", "conv_nchw16c
        " and which of its input, output and residual are nChw16c ("x", "y",
        "r": e.g. "conv_nchw16c xyr"), "to_nchw16c", "from_nchw16c",
        "other"."""
        cdef Py_ssize_t i
        cdef const _plan_op *op
        names = {_OP_CONV: "conv", _OP_TO_NCHW16C: "to_nchw16c",
                 _OP_FROM_NCHW16C: "from_nchw16c"}
        out = []
        for i in range(self.count):
            op = &self.ops[i]
            if op.kind == _OP_CONV_NCHW16C:
                out.append("conv_nchw16c " + ("x" if op.layout & NN_NCHW16C_X else "") +
                           ("y" if op.layout & NN_NCHW16C_Y else "") +
                           ("r" if op.layout & NN_NCHW16C_RES else ""))
            else:
                out.append(names.get(op.kind, "other"))
        return out

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


# ---- nChw16c between convolutions ----
#
# In a recorded plan, the tensors that convolutions write for convolutions
# that can read them so go in nChw16c instead while they fit in half of L2
# (nn_nchw16c_pays; csrc/layout.c says why): the Winograd path reads and
# writes either layout, the direct path writes nChw16c. A call that reads
# NCHW gets a conversion first. The
# same values as the recorded calls, bit for bit (nn_conv2d_forward_nchw16c);
# record_plan checks that on the recorded input and keeps the recorded calls
# if not.

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


cdef int _nchw16c_can(const _plan_op *op, bint always) noexcept nogil:
    """The layouts (NN_NCHW16C_X, _Y) a recorded call can take: a
    convolution whose tensors nn_nchw16c_pays for (any, always)."""
    if op.kind != _OP_CONV:
        return 0
    cdef int64_t floats = op.conv.n * max(op.conv.c * op.conv.h * op.conv.w,
                                          op.conv.o * _conv_out(&op.conv))
    if not (always or nn_nchw16c_pays(floats)):
        return 0
    cdef int can = 0
    if nn_conv2d_nchw16c_supported(&op.conv, NN_NCHW16C_X):
        can |= NN_NCHW16C_X
    if nn_conv2d_nchw16c_supported(&op.conv, NN_NCHW16C_Y):
        can |= NN_NCHW16C_Y
    return can


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


cdef list _nchw16c_layouts(PredictPlan plan):
    """Each call's layouts: a convolution writes nChw16c when a later call
    reads that output natively in it (a convolution's x where it can read
    nChw16c, or the residual of one writing nChw16c), and reads nChw16c when
    its input was written so."""
    cdef Py_ssize_t i, j, count = plan.count
    cdef const _plan_op *op
    cdef bint always = _plans_nchw16c == "always"
    can = [_nchw16c_can(&plan.ops[i], always) for i in range(count)]
    layout = [0] * count
    for i in range(count - 1, -1, -1):               # later calls decided first
        op = &plan.ops[i]
        if not can[i] & NN_NCHW16C_Y:
            continue
        for j in range(i + 1, count):
            reader = &plan.ops[j]
            if ((reader.x == op.y and can[j] & NN_NCHW16C_X) or
                    (reader.x2 == op.y and layout[j] & NN_NCHW16C_Y)):
                layout[i] = NN_NCHW16C_Y
            if <size_t>op.y in _op_writes(reader):   # overwritten: no later reader
                break
    for j in range(count):                           # inputs written in nChw16c
        op = &plan.ops[j]
        if not can[j] & NN_NCHW16C_X:
            continue
        for i in range(j - 1, -1, -1):
            if <size_t>op.x in _op_writes(&plan.ops[i]):
                if layout[i] & NN_NCHW16C_Y:
                    layout[j] |= NN_NCHW16C_X
                break
    return layout


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


cdef class _Layouts:
    """The rewrite's state: the calls so far and the tensors tracked."""
    cdef _Calls out
    cdef list tensors, twins

    def __cinit__(self):
        self.out, self.tensors, self.twins = _Calls(), [], []

    cdef _Tensor tensor(self, size_t ptr, int64_t n, int64_t c, int64_t hw):
        """The tracked tensor at ptr of this shape, or a new one (its NCHW
        copy current; its twin 64-byte aligned: a pixel's 16 channels one
        cache line)."""
        cdef _Tensor t
        for t in self.tensors:
            if t.ptr == ptr and t.n == n and t.c == c and t.hw == hw:
                return t
        t = _Tensor()
        t.ptr, t.nbytes, t.n, t.c, t.hw = ptr, <size_t>(n * c * hw * 4), n, c, hw
        t.twin = _guard.empty((n * c * hw,), "float32", "predict: an nChw16c tensor")
        t.blk = <float *>cnp.PyArray_DATA(<cnp.ndarray>t.twin)
        t.nchw_ok, t.blk_ok = True, False
        self.tensors.append(t)
        self.twins.append(t.twin)
        return t

    cdef int convert(self, _Tensor t, bint to_blocked) except -1:
        """Append the call bringing t's other copy up to date."""
        cdef _plan_op op
        memset(&op, 0, sizeof(_plan_op))
        op.kind = _OP_TO_NCHW16C if to_blocked else _OP_FROM_NCHW16C
        op.a, op.b, op.c = t.n, t.c, t.hw
        if to_blocked:
            op.x, op.y = <const float *>t.ptr, t.blk
            t.blk_ok = True
        else:
            op.x, op.y = t.blk, <float *>t.ptr
            t.nchw_ok = True
        self.out.push(&op)
        return 0

    cdef bint current_blocked(self, const float *ptr):
        """Whether the tensor at ptr is tracked with only its twin current."""
        cdef _Tensor t
        for t in self.tensors:
            if t.ptr == <size_t>ptr:
                return t.blk_ok and not t.nchw_ok
        return False

    cdef const float *blocked(self, const float *ptr, int64_t n, int64_t c, int64_t hw) except? NULL:
        """The nChw16c copy of the tensor at ptr, made current."""
        cdef _Tensor t = self.tensor(<size_t>ptr, n, c, hw)
        if not t.blk_ok:
            self.convert(t, True)
        return t.blk

    cdef int access(self, list reads, list writes) except -1:
        """Before a call reading and writing NCHW there: the NCHW copies of
        what it reads current; a tensor it writes from its start is dead
        after it (a new one is written there), one it writes a part of is
        made current first and its twin stale."""
        cdef _Tensor t
        for t in list(self.tensors):
            dead = t.ptr in writes
            read = any(t.ptr <= p < t.ptr + t.nbytes for p in reads)
            part = any(t.ptr < p < t.ptr + t.nbytes for p in writes)
            if (read or part) and not t.nchw_ok:
                self.convert(t, False)
            if dead:
                self.tensors.remove(t)
            elif part:
                t.blk_ok = False
        return 0

    cdef float *write_blocked(self, float *ptr, int64_t n, int64_t c, int64_t hw) except? NULL:
        """A call writes the tensor at ptr in nChw16c: the tensors it
        overwrites forgotten, as those starting at ptr (dead: a new one
        starts there); those it overwrites a part of after their NCHW copies
        are made current (their other values stay there). Its twin."""
        cdef size_t start = <size_t>ptr, nbytes = <size_t>(n * c * hw * 4)
        cdef _Tensor t
        for t in list(self.tensors):
            if t.ptr < start + nbytes and start < t.ptr + t.nbytes:
                inside = t.ptr >= start and t.ptr + t.nbytes <= start + nbytes
                if not (inside or t.ptr == start or t.nchw_ok):
                    self.convert(t, False)
                self.tensors.remove(t)
        t = self.tensor(start, n, c, hw)
        t.blk_ok, t.nchw_ok = True, False
        return t.blk


cdef _Calls _rewrite_nchw16c(PredictPlan plan):
    """The plan's calls with the layouts of _nchw16c_layouts (and the
    conversions they need), or None when every call keeps NCHW."""
    layout = _nchw16c_layouts(plan)
    if not any(layout):
        return None
    cdef _Layouts L = _Layouts()
    cdef Py_ssize_t i
    cdef const _plan_op *op
    cdef _plan_op new
    cdef int64_t P
    for i in range(plan.count):
        op = &plan.ops[i]
        if not layout[i]:
            L.access(_op_reads(op), _op_writes(op))
            L.out.push(op)
            continue
        new = op[0]
        new.kind, new.layout = _OP_CONV_NCHW16C, layout[i]
        P = _conv_out(&op.conv)
        if layout[i] & NN_NCHW16C_X:
            new.x = L.blocked(op.x, op.conv.n, op.conv.c, op.conv.h * op.conv.w)
        else:
            L.access([<size_t>op.x], [])
        if op.x2 != NULL and (layout[i] & NN_NCHW16C_Y or (
                layout[i] & NN_NCHW16C_X and L.current_blocked(op.x2))):
            # the residual in nChw16c: with y, or where only that copy is
            # current (Winograd reads it so)
            new.layout |= NN_NCHW16C_RES
            new.x2 = L.blocked(op.x2, op.conv.n, op.conv.o, P)
        if layout[i] & NN_NCHW16C_Y:
            new.y = L.write_blocked(op.y, op.conv.n, op.conv.o, P)
        else:
            L.access([<size_t>op.x2] if op.x2 != NULL and not new.layout & NN_NCHW16C_RES
                     else [], [<size_t>op.y])
        L.out.push(&new)
    cdef size_t output = <size_t>cnp.PyArray_DATA(<cnp.ndarray>plan.output)
    L.access([output], [])                           # the output, in NCHW
    plan.keep.append(L.twins)
    return L.out


_NCHW16C_MODES = ("auto", "always", "never")
cdef str _plans_nchw16c = "auto"
cdef Py_ssize_t _nchw16c_discarded = 0


def nchw16c_discarded():
    """How many rewritten plans record_plan has discarded because they did
    not give the recorded bits (a call the rewrite does not foresee; the
    tests hold it at 0)."""
    return _nchw16c_discarded


def set_plan_nchw16c(str mode):
    """Where plans recorded from now on keep convolutions' tensors in
    nChw16c: "auto" (the default: while they fit in half of L2,
    nn_nchw16c_pays), "always" (wherever a convolution can) or "never" (the
    same bits in every mode: for comparisons). Returns the previous mode."""
    global _plans_nchw16c
    if mode not in _NCHW16C_MODES:
        raise ValueError(f"unknown nChw16c mode {mode!r}; expected one of "
                         f"{list(_NCHW16C_MODES)}")
    previous, _plans_nchw16c = _plans_nchw16c, mode
    return previous


cdef _use_nchw16c(PredictPlan plan):
    """Rewrite the plan's calls with _rewrite_nchw16c when the rewritten
    calls give the recorded output's bits on the recorded input (they are
    built to; a call this pass does not foresee keeps the recorded ones)."""
    if _plans_nchw16c == "never":
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
    global _nchw16c_discarded
    _nchw16c_discarded += 1
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
            status = nn_conv2d_forward_nchw16c(&op.conv, op.layout, op.packed, op.packed_floats,
                                               op.x, op.w, op.bias, op.bn_weight, op.bn_bias,
                                               op.mean, op.var, op.param, op.x2, op.y, op.act)
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
