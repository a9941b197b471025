# The C core's declarations for Cython: csrc/nncore.h mirrored once, section
# by section. Cython reads this file whenever it compiles _core.pyx (same
# module name), so _core.pyx declares nothing of C itself. The generated
# _core.c includes nncore.h, so the C compiler checks every call made through
# these declarations against the real prototypes.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef extern from "nncore.h" nogil:
    # status codes
    int NN_OK, NN_EINVAL, NN_ENOMEM, NN_EISA

    # CPU dispatch and threads (cpu.c)
    int NN_ISA_COUNT
    int NN_MAX_THREADS
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
    int nn_set_local_num_threads(int n)
    double nn_core_to_core_ns(int64_t rounds)
    void nn_cache_sizes(int64_t *l1d, int64_t *l2)

    # activations (act.c) and the GEMM epilogue's set
    int NN_ACT_NONE, NN_ACT_RELU, NN_ACT_LEAKY_RELU, NN_ACT_SIGMOID, NN_ACT_TANH
    int NN_ACT_GELU, NN_ACT_SOFTMAX
    int nn_epilogue_supports(int act)
    void nn_relu_forward(int64_t n, const float *x, float *y)
    void nn_relu_backward(int64_t n, const float *x, const float *dy, float *dx)
    void nn_add_act(int64_t n, const float *a, const float *b, int act, float *y)
    void nn_add_relu_backward(int64_t n, const float *a, const float *b, const float *y,
                              float *dx)
    void nn_leaky_relu_forward(int64_t n, const float *x, float *y, float slope)
    void nn_leaky_relu_backward(int64_t n, const float *x, const float *dy, float *dx,
                                float slope)
    void nn_sigmoid_forward(int64_t n, const float *x, float *y)
    void nn_sigmoid_backward(int64_t n, const float *y, const float *dy, float *dx)
    void nn_tanh_forward(int64_t n, const float *x, float *y)
    void nn_tanh_backward(int64_t n, const float *y, const float *dy, float *dx)
    void nn_gelu_forward(int64_t n, const float *x, float *y)
    void nn_gelu_backward(int64_t n, const float *x, const float *dy, float *dx)
    void nn_softmax_forward(int64_t m, int64_t n, const float *x, float *y)
    void nn_softmax_backward(int64_t m, int64_t n, const float *y, const float *dy, float *dx)

    # bias gradient (bias.c), input check (check.c), row gather (gather.c)
    void nn_bias_backward(int64_t m, int64_t n, const float *dy, int64_t ldy, float *db)
    int nn_all_finite(int64_t n, const float *x)

    # Dense layer on a CSR batch (sparse.c)
    void nn_csr_dense_forward(int64_t m, int64_t h, const int32_t *indptr,
                              const int32_t *indices, const float *data, const float *w,
                              const float *b, float *y)
    void nn_csr_dense_weight_grad(int64_t m, int64_t d, int64_t h, const int32_t *indptr,
                                  const int32_t *indices, const float *data,
                                  const float *dy, float *dw)
    int nn_gather_rows(int64_t m, int64_t n, const float *src, int64_t src_rows,
                       const int64_t *index, float *dst)

    # dropout (dropout.c)
    void nn_dropout_forward(int64_t n, const float *x, float *y, uint32_t threshold,
                            float scale, uint64_t key)
    void nn_dropout_backward(int64_t n, const float *dy, float *dx, uint32_t threshold,
                             float scale, uint64_t key)

    # losses (loss.c)
    int nn_mse_forward(int64_t n, const float *x, const float *t, double *loss)
    int nn_mse_backward(int64_t n, const float *x, const float *t, float *grad)
    int nn_huber_forward(int64_t n, const float *x, const float *t, float delta, double *loss)
    int nn_huber_backward(int64_t n, const float *x, const float *t, float delta, float *grad)
    int nn_bce_logits_forward(int64_t n, const float *x, const float *t, double *loss)
    int nn_bce_logits_backward(int64_t n, const float *x, const float *t, float *grad)
    int nn_cross_entropy_forward(int64_t m, int64_t c, const float *x, const int64_t *labels,
                                 double *loss, float *grad)
    int nn_cross_entropy_backward(int64_t m, int64_t c, const float *x,
                                  const int64_t *labels, float *grad)

    # optimizer steps (optim.c)
    void nn_sgd_step(int64_t n, float *w, const float *g, float *buf, float lr, float momentum,
                     float dampening, float weight_decay, int nesterov, int first)
    void nn_adam_step(int64_t n, float *w, const float *g, float *m, float *v, float beta1,
                      float beta2, float eps, float weight_decay, float decay,
                      float step_size, float bc2_sqrt)
    void nn_rmsprop_step(int64_t n, float *w, const float *g, float *sq, float *gavg,
                         float *buf, float lr, float alpha, float eps, float weight_decay,
                         float momentum)

    # SGEMM (gemm.c)
    int nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc, const float *bias, int activation)

    # bfloat16 GEMM (gemm_bf16.c)
    int nn_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                     float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float beta, float *c, int64_t ldc, const float *bias, int activation)
    int nn_bf16_native()
    const char *nn_bf16_kernel()
    void nn_bf16_peak(int64_t iters, float *sink, double *flops)
    int nn_amx_available()

    # Dense layers (dense.c)
    ctypedef struct nn_dense_layer:
        const float *w
        const float *b
        int64_t n_in, n_out
        int act
        float *out
        const float *w_split
        int split_team
    int nn_dense_chain(int64_t m, const float *x, int count, const nn_dense_layer *layers)
    void nn_dense_split_weights(int64_t n_in, int64_t n_out, const float *w, int team,
                                float *out)
    int nn_dense_chain_parts(int64_t n_in, int64_t n_out, int team)
    int nn_dense_backward(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                          const float *dy, const float *relu_z, float *dz, float *dx,
                          float *dw, float *db, int sgd, float lr, float *b)

    int nn_dense_forward_bf16(int64_t m, const float *x, const nn_dense_layer *layer)
    int nn_dense_backward_bf16(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                               const float *dy, const float *relu_z, float *dz, float *dx,
                               float *dw, float *db, int sgd, float lr, float *b)

    # Conv2d (conv.c)
    ctypedef struct nn_conv2d_params:
        int64_t n, c, h, w
        int64_t o, kh, kw
        int64_t sh, sw, ph, pw, dh, dw
        int64_t groups
        int bf16
    int nn_conv2d_output_size(const nn_conv2d_params *p, int64_t *oh, int64_t *ow)
    enum:
        NN_WINOGRAD_AUTO
        NN_WINOGRAD_ALWAYS
        NN_WINOGRAD_NEVER
    int nn_conv_winograd_mode()
    int nn_conv_set_winograd(int mode)
    int nn_conv2d_pack_forward(const nn_conv2d_params *p, const float *w, const float *b,
                               const float *bn_weight, const float *bn_bias, const float *mean,
                               const float *var, float eps, float *packed, int64_t capacity,
                               int64_t *needed)
    int nn_conv2d_forward_packed(const nn_conv2d_params *p, const float *packed,
                                 int64_t packed_floats, const float *x, const float *w,
                                 const float *b, const float *bn_weight, const float *bn_bias,
                                 const float *mean, const float *var, float eps,
                                 const float *res, float *y, int act, float *pool_y,
                                 int32_t *pool_arg)
    enum:
        NN_NCHW16C_X
        NN_NCHW16C_Y
        NN_NCHW16C_RES
    int nn_conv2d_nchw16c_supported(const nn_conv2d_params *p, int layout)
    int nn_conv2d_forward_nchw16c(const nn_conv2d_params *p, int layout, const float *packed,
                                  int64_t packed_floats, const float *x, const float *w,
                                  const float *b, const float *bn_weight, const float *bn_bias,
                                  const float *mean, const float *var, float eps,
                                  const float *res, float *y, int act)
    int nn_nchw16c_pays(int64_t floats)
    int nn_to_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
    int nn_from_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
    int nn_conv2d_backward(const nn_conv2d_params *p, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db)
    int nn_conv_set_winograd_dw(int mode)

    # pooling (pool.c)
    ctypedef struct nn_pool2d_params:
        int64_t h, w, kh, kw, sh, sw, ph, pw, oh, ow
    void nn_maxpool2d_forward(int64_t planes, const nn_pool2d_params *p, const float *x,
                              float *y, int32_t *argmax)
    void nn_maxpool2d_backward(int64_t planes, const nn_pool2d_params *p, const float *dy,
                               const int32_t *argmax, const float *relu_y, float *dx, int *bad)
    void nn_avgpool2d_forward(int64_t planes, const nn_pool2d_params *p, const float *x,
                              float *y)
    void nn_avgpool2d_backward(int64_t planes, const nn_pool2d_params *p, const float *dy,
                               float *dx)
    void nn_global_avgpool_forward(int64_t planes, int64_t hw, const float *x, float *y)
    void nn_global_avgpool_backward(int64_t planes, int64_t hw, const float *dy, float *dx)

    # batch normalisation (batchnorm.c)
    void nn_batchnorm_forward_train(int64_t n, int64_t c, int64_t hw, const float *x,
                                    const float *weight, const float *bias, float eps,
                                    float momentum, float *running_mean, float *running_var,
                                    float *y, float *save_mean, float *save_invstd, int act)
    void nn_batchnorm_forward_eval(int64_t n, int64_t c, int64_t hw, const float *x,
                                   const float *weight, const float *bias,
                                   const float *running_mean, const float *running_var,
                                   float eps, float *y)
    void nn_batchnorm_backward(int64_t n, int64_t c, int64_t hw, const float *x,
                               const float *dy, const float *relu_y, const float *weight,
                               const float *mean, const float *invstd, int train, float *dx,
                               float *dweight, float *dbias)

    # machine limits (peak.c)
    void nn_fma_peak(int64_t iters, float *sink, double *flops)
    void nn_triad(int64_t n, float *a, const float *b, const float *c, float s)

    # profiler (profile.c)
    ctypedef struct nn_profile_event:
        pass
    int nn_profile_start(int64_t capacity)
    void nn_profile_stop()
    int nn_profile_enabled()
    int64_t nn_profile_count()
    int64_t nn_profile_dropped()
    int64_t nn_profile_read(int64_t max, nn_profile_event *out)
    int nn_profile_kernel_count()
    const char *nn_profile_kernel_name(int id)
    int64_t nn_profile_now_ns()
