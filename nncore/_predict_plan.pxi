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
            return plan, y
    return None, y


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
