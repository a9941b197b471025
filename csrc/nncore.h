/* nncore: the one public C header. Everything Cython may call is here.
 *
 * Conventions: C11, float32, row-major with explicit leading dimensions,
 * sizes as int64_t. Functions that can fail return an int status (NN_OK or a
 * negative NN_E* code); C never prints, aborts or exits. Callers own every
 * output buffer. The Python layer validates; C trusts its arguments. */
#ifndef NNCORE_H
#define NNCORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Kernels compiled once per ISA and picked at run time (dispatch.h, cpu.c)
 * are listed once, as X(name, parameter list, argument list) lines in the
 * NN_KERNELS_* lists below; nn_<name> is declared from each line here, and
 * the per-ISA tables and trampolines are generated from the same lines. */
#define NN_DECLARE_KERNEL(name, params, args) void nn_##name params;

/* ---- status codes ---- */
#define NN_OK 0
#define NN_EINVAL (-1)     /* an argument is out of range */
#define NN_ENOMEM (-2)     /* an allocation failed */
#define NN_EISA (-3)       /* the requested ISA is not available on this CPU/build */

/* ---- CPU dispatch (cpu.c) ---- */
typedef enum { NN_ISA_GENERIC = 0, NN_ISA_AVX2 = 1, NN_ISA_AVX512 = 2, NN_ISA_COUNT = 3 } nn_isa;

/* Pick the best ISA, or the one NNCORE_ISA names. Returns NN_OK, NN_EINVAL
 * (unknown name) or NN_EISA (not available); on error the best ISA is active. */
int nn_init(void);
int nn_set_isa(int isa);               /* NN_OK or NN_EISA */
int nn_get_isa(void);
int nn_isa_available(int isa);         /* compiled in and supported by this CPU */
const char *nn_isa_name(int isa);      /* "generic", "avx2", "avx512" */
int nn_isa_from_name(const char *name);/* an nn_isa, or -1 */
const char *nn_compiler(void);
const char *nn_build_flags(void);
int nn_openmp_version(void);           /* the _OPENMP date macro, e.g. 201511 */
/* Threads every kernel may use, in [1, NN_MAX_THREADS], for every calling
 * thread (OpenMP's omp_set_num_threads binds only the thread calling it; a
 * lower count set that way, e.g. by threadpoolctl, is honoured too). */
#define NN_MAX_THREADS 1024
void nn_set_num_threads(int n);
int nn_get_num_threads(void);
/* A cap for the calling thread only (OpenMP's own per-thread count); returns
 * the previous one, to restore it with. */
int nn_set_local_num_threads(int n);
/* The one-way latency of a cache line between two cores of the team, ns (the
 * mean over `rounds` round trips; 0 with fewer than two threads). */
double nn_core_to_core_ns(int64_t rounds);
/* This machine's L1 data and (per-core) L2 cache sizes in bytes, read once
 * (the defaults of the smaller known machine when they cannot be read). */
void nn_cache_sizes(int64_t *l1d, int64_t *l2);

/* ---- activations (act.c) ---- */
/* Activation codes: the kernels below and the GEMM epilogue's activation
 * (the Python layers use these codes too). */
typedef enum {
    NN_ACT_NONE = 0,
    NN_ACT_RELU = 1,
    NN_ACT_LEAKY_RELU = 2,
    NN_ACT_SIGMOID = 3,
    NN_ACT_TANH = 4,
    NN_ACT_GELU = 5,
    NN_ACT_SOFTMAX = 6,
} nn_activation;

/* Whether the SGEMM epilogue fuses activation `act`: the one list nn_sgemm,
 * nn_dense_chain and the Python bindings (_core.EPILOGUE_ACTS) check. To fuse
 * another, add it here, to nn_act_scalar (dispatch.h) and to act_vec
 * (gemm_kernel_simd.h). */
static inline int nn_epilogue_supports(int act)
{
    return act == NN_ACT_NONE || act == NN_ACT_RELU;
}

/* Elementwise over n floats; forward may run in place, backward may write dx
 * over dy. Backward passes read the forward output y (ReLU, Sigmoid, Tanh,
 * Softmax) or the forward input x (LeakyReLU, GELU), as named. GELU is the
 * exact (erf) one. Softmax is row-wise over an m x n row-major matrix
 * (leading dimension n). add_act: y = act(a + b), a residual block's sum and
 * the ReLU after it in one pass (act NN_ACT_NONE or NN_ACT_RELU; y may be a
 * or b). add_relu_backward: dx = relu_backward(y, a + b), a residual block's
 * two input gradients summed and passed back through the ReLU before the
 * block, whose output y is the block's input (dx may be a or b). */
#define NN_KERNELS_ACT(X) \
    X(relu_forward, (int64_t n, const float *x, float *y), (n, x, y)) \
    X(relu_backward, (int64_t n, const float *x, const float *dy, float *dx), (n, x, dy, dx)) \
    X(leaky_relu_forward, (int64_t n, const float *x, float *y, float slope), (n, x, y, slope)) \
    X(leaky_relu_backward, (int64_t n, const float *x, const float *dy, float *dx, float slope), \
      (n, x, dy, dx, slope)) \
    X(sigmoid_forward, (int64_t n, const float *x, float *y), (n, x, y)) \
    X(sigmoid_backward, (int64_t n, const float *y, const float *dy, float *dx), (n, y, dy, dx)) \
    X(tanh_forward, (int64_t n, const float *x, float *y), (n, x, y)) \
    X(tanh_backward, (int64_t n, const float *y, const float *dy, float *dx), (n, y, dy, dx)) \
    X(gelu_forward, (int64_t n, const float *x, float *y), (n, x, y)) \
    X(gelu_backward, (int64_t n, const float *x, const float *dy, float *dx), (n, x, dy, dx)) \
    X(softmax_forward, (int64_t m, int64_t n, const float *x, float *y), (m, n, x, y)) \
    X(softmax_backward, (int64_t m, int64_t n, const float *y, const float *dy, float *dx), \
      (m, n, y, dy, dx)) \
    X(add_act, (int64_t n, const float *a, const float *b, int act, float *y), (n, a, b, act, y)) \
    X(add_relu_backward, (int64_t n, const float *a, const float *b, const float *y, float *dx), \
      (n, a, b, y, dx))
NN_KERNELS_ACT(NN_DECLARE_KERNEL)

/* ---- Dense bias gradient (bias.c): db[j] = sum_i dy[i * ldy + j], in row
 * order in double, for any thread count. ---- */
#define NN_KERNELS_BIAS(X) \
    X(bias_backward, (int64_t m, int64_t n, const float *dy, int64_t ldy, float *db), \
      (m, n, dy, ldy, db))
NN_KERNELS_BIAS(NN_DECLARE_KERNEL)

/* ---- Dense layer on a CSR batch (sparse.c): m rows of d features given as
 * (indptr[0..m], indices, data), int32, absolute offsets (indptr[0] may be
 * > 0), indices in [0, d), any order, duplicates summed.
 * csr_dense_forward: y (m, h) = X w + b, w (d, h), b (h) or NULL.
 * csr_dense_weight_grad: dw (d, h) = X^T dy, dy (m, h); dw overwritten.
 * Each output accumulates in storage order: the same bits for any thread
 * count. ---- */
#define NN_KERNELS_SPARSE(X) \
    X(csr_dense_forward, (int64_t m, int64_t h, const int32_t *indptr, const int32_t *indices, \
                          const float *data, const float *w, const float *b, float *y), \
      (m, h, indptr, indices, data, w, b, y)) \
    X(csr_dense_weight_grad, (int64_t m, int64_t d, int64_t h, const int32_t *indptr, \
                              const int32_t *indices, const float *data, const float *dy, \
                              float *dw), \
      (m, d, h, indptr, indices, data, dy, dw))
NN_KERNELS_SPARSE(NN_DECLARE_KERNEL)

/* ---- Input check (check.c): 1 when none of the n floats is NaN or
 * infinite, else 0. Runs on the process's threads for large arrays. ---- */
int nn_all_finite(int64_t n, const float *x);

/* ---- Row gather (gather.c): dst row i = src row index[i], rows n floats
 * wide, for i < m; NN_EINVAL (nothing copied) when an index is outside
 * [0, src_rows). Runs on the process's threads for large copies. ---- */
int nn_gather_rows(int64_t m, int64_t n, const float *src, int64_t src_rows,
                   const int64_t *index, float *dst);

/* ---- Dropout (dropout.c): element i kept when bits(key, i) >= threshold
 * (threshold = round(p * 2^24)), kept values scaled by `scale` = 1 / (1 - p).
 * The mask depends only on (key, i). ---- */
#define NN_KERNELS_DROPOUT(X) \
    X(dropout_forward, (int64_t n, const float *x, float *y, uint32_t threshold, float scale, \
                        uint64_t key), (n, x, y, threshold, scale, key)) \
    X(dropout_backward, (int64_t n, const float *dy, float *dx, uint32_t threshold, float scale, \
                         uint64_t key), (n, dy, dx, threshold, scale, key))
NN_KERNELS_DROPOUT(NN_DECLARE_KERNEL)

/* ---- Losses (loss.c): mean reduction, PyTorch's definitions. Forward writes
 * the mean loss; backward writes d(mean loss)/d(pred). x is the prediction
 * (n values, or m x c logits), t the target (n values). Cross-entropy returns
 * NN_EINVAL when a label is outside [0, c); its forward also writes the
 * gradient when grad != NULL (fused: one exp per logit). ---- */
int nn_mse_forward(int64_t n, const float *x, const float *t, double *loss);
int nn_mse_backward(int64_t n, const float *x, const float *t, float *grad);
int nn_huber_forward(int64_t n, const float *x, const float *t, float delta, double *loss);
int nn_huber_backward(int64_t n, const float *x, const float *t, float delta, float *grad);
int nn_bce_logits_forward(int64_t n, const float *x, const float *t, double *loss);
int nn_bce_logits_backward(int64_t n, const float *x, const float *t, float *grad);
int nn_cross_entropy_forward(int64_t m, int64_t c, const float *x, const int64_t *labels,
                             double *loss, float *grad);
int nn_cross_entropy_backward(int64_t m, int64_t c, const float *x, const int64_t *labels,
                              float *grad);

/* ---- Optimizer steps (optim.c): one torch.optim step, in place; see optim.c
 * for the exact formulas. Optional buffers may be NULL as documented there. ---- */
#define NN_KERNELS_OPTIM(X) \
    X(sgd_step, (int64_t n, float *w, const float *g, float *buf, float lr, float momentum, \
                 float dampening, float weight_decay, int nesterov, int first), \
      (n, w, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)) \
    X(adam_step, (int64_t n, float *w, const float *g, float *m, float *v, float beta1, \
                  float beta2, float eps, float weight_decay, float decay, float step_size, \
                  float bc2_sqrt), \
      (n, w, g, m, v, beta1, beta2, eps, weight_decay, decay, step_size, bc2_sqrt)) \
    X(rmsprop_step, (int64_t n, float *w, const float *g, float *sq, float *gavg, float *buf, \
                     float lr, float alpha, float eps, float weight_decay, float momentum), \
      (n, w, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum))
NN_KERNELS_OPTIM(NN_DECLARE_KERNEL)

/* ---- SGEMM (gemm.c) ----
 * C = alpha * op(A) op(B) + beta * C, then C[i][j] = act(C[i][j] + bias[j]).
 * op(A) is m x k, op(B) is k x n. trans_a/trans_b: 0 or 1. bias may be NULL.
 * beta == 0 never reads C. k may be 0 (then A and B are not read and the
 * product is zero). The activation is fused in registers: those
 * nn_epilogue_supports. Results are bitwise identical for any thread count.
 * Returns NN_OK, NN_EINVAL (negative size, activation not fused) or
 * NN_ENOMEM (packing buffers). Safe to call from several threads at once. */
int nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda,
             const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc,
             const float *bias, int activation);

/* ---- bfloat16 GEMM (gemm_bf16.c) ----
 * nn_sgemm's product, arguments and results contract, with op(A) and op(B)
 * rounded to bfloat16 (round to nearest even; denormals to zero) and the
 * products accumulated in float32 as AVX512_BF16's vdpbf16ps does (pairs
 * along k, see gemm_bf16.h); epilogue and C in float32. Every kernel gives
 * the same bits, for any thread count. nn_bf16_native: 1 when this CPU and
 * build run the vdpbf16ps kernel (else the portable one, same results).
 * nn_bf16_kernel: the kernel nn_gemm_bf16 uses now, "avx512_bf16" (when
 * native and the active ISA is avx512) or "generic". nn_amx_available: the
 * CPU has AMX-BF16 tiles enabled by the OS (reported only: no AMX kernel). */
int nn_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc,
                 const float *bias, int activation);
int nn_bf16_native(void);
const char *nn_bf16_kernel(void);
/* The bf16 multiply-add peak probe (peak_bf16.c), for the benchmarks: as
 * nn_fma_peak, `iters` rounds of vdpbf16ps chains on every thread, the
 * operations done in *flops; 0 flops when this CPU or build has no
 * AVX512_BF16 (there is no bf16 peak to speak of then). */
void nn_bf16_peak(int64_t iters, float *sink, double *flops);
int nn_amx_available(void);

/* ---- Dense layers (dense.c) ----
 * Forward: the evaluation-mode chain through Dense layers.
 * out_i = act_i(in_i @ w_i + b_i), in_0 = x (m x n_in_0), in_i = out_{i-1}:
 * w_i is n_in x n_out row-major, b_i (n_out) may be NULL, act_i is an
 * epilogue activation (nn_epilogue_supports), out_i is m x n_out. The same
 * bits as one nn_sgemm per layer; one sample (m == 1) runs the layers up to
 * the last threaded one in one parallel region and the small ones after it
 * on the calling thread. Returns NN_OK or NN_EINVAL (negative size, sizes
 * that do not chain, activation not fused), NN_ENOMEM. */
typedef struct nn_dense_layer {
    const float *w, *b;
    int64_t n_in, n_out;
    int act;
    float *out;
    /* NULL, or w's columns regrouped for a one-sample chain on split_team
     * threads (nn_dense_split_weights): used, for the same bits, when the
     * layer splits into that many parts */
    const float *w_split;
    int split_team;
} nn_dense_layer;
int nn_dense_chain(int64_t m, const float *x, int count, const nn_dense_layer *layers);
/* w (n_in x n_out) into out (as many floats) with the columns each of `team`
 * threads computes in a one-sample chain one contiguous block, row by row:
 * each thread then streams only its own part (the parts of w's rows
 * interleaved, the cores' prefetchers also fetch each other's). */
void nn_dense_split_weights(int64_t n_in, int64_t n_out, const float *w, int team, float *out);
/* The parts a one-sample chain on `team` threads splits a layer of n_in x
 * n_out weights into (1: not split): the `team` to regroup its weights for. */
int nn_dense_chain_parts(int64_t n_in, int64_t n_out, int team);

/* Backward of y = x w + b (x: m x k, w: k x n, dy: m x n; contiguous rows):
 *   relu_z != NULL: the layer's ReLU (fused into the forward epilogue) first:
 *     dz = dy where relu_z > 0, else 0 (relu_z: the forward output, m x n;
 *     dz: m x n, may be dy), and dz stands for dy below;
 *   dw = x^T dy, db = column sums of dy, dx = dy w^T, each skipped when NULL;
 *   sgd != 0 (dw must be NULL): plain SGD folded into the weight-gradient
 *     GEMM, w += -lr * x^T dy in place, after dx is computed from the old w;
 *     then b += -lr * db when b != NULL (db required), by nn_sgd_step.
 * The same bits as those kernel calls made one by one. m == 0: dw and db are
 * zero, w is unchanged. Returns NN_OK, NN_EINVAL (negative size, dw with
 * sgd, b without sgd or db, relu_z without dz) or NN_ENOMEM. */
int nn_dense_backward(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                      const float *dy, const float *relu_z, float *dz, float *dx, float *dw,
                      float *db, int sgd, float lr, float *b);

/* Mixed precision (bfloat16 GEMMs, float32 everything else): the forward
 * pass of one layer, out = act(x w + b) (m x n_out), and the backward pass
 * above, with their GEMMs on nn_gemm_bf16; same arguments and codes. */
int nn_dense_forward_bf16(int64_t m, const float *x, const nn_dense_layer *layer);
int nn_dense_backward_bf16(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                           const float *dy, const float *relu_z, float *dz, float *dx,
                           float *dw, float *db, int sgd, float lr, float *b);

/* ---- Conv2d (conv.c): PyTorch's Conv2d on NCHW float32 ----
 * x (n, c, h, w); weight (o, c / groups, kh, kw); bias (o) or NULL;
 * y and dy (n, o, oh, ow) with oh = (h + 2 ph - dh (kh - 1) - 1) / sh + 1,
 * ow likewise (nn_conv2d_output_size). Zero padding ph, pw on both sides.
 * Forward: y = act(conv(x, w) + bias), act fused as in the GEMM epilogue
 * (nn_epilogue_supports). Backward: dx (x's shape), dw (w's shape), db (o) =
 * sums of dy over the batch and pixels; each overwritten, each skipped when
 * NULL (x is read only for dw, w only for dx). n == 0: dw and db are zero.
 * Bitwise identical for any thread count. Returns NN_OK, NN_EINVAL
 * (inconsistent parameters: a size < 1, channels not divisible by groups,
 * the kernel larger than the padded input, act not fused) or NN_ENOMEM.
 * bf16 != 0: the im2col GEMMs (forward, dx, dw) run on nn_gemm_bf16
 * (mixed precision; the direct depthwise paths stay float32). */
typedef struct nn_conv2d_params {
    int64_t n, c, h, w;   /* input */
    int64_t o, kh, kw;    /* output channels, kernel */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t groups;
    int bf16;             /* 0: float32 GEMMs; 1: bfloat16 operands */
} nn_conv2d_params;
int nn_conv2d_output_size(const nn_conv2d_params *p, int64_t *oh, int64_t *ow);
/* Winograd F(2x2, 3x3) for the forward pass and the input gradient of 3x3,
 * stride-1, dilation-1, ungrouped float32 convolutions: NN_WINOGRAD_AUTO
 * (the default) where the layer's shape says it pays (conv.c), ALWAYS for
 * every such layer, NEVER for none (the last two for tests and benchmarks).
 * Process-wide; returns the previous mode. */
enum { NN_WINOGRAD_AUTO = 0, NN_WINOGRAD_ALWAYS = 1, NN_WINOGRAD_NEVER = 2 };
int nn_conv_set_winograd(int mode);
int nn_conv_winograd_mode(void);     /* the current one */
int nn_conv2d_forward(const nn_conv2d_params *p, const float *x, const float *w,
                      const float *b, float *y, int act);
int nn_conv2d_backward(const nn_conv2d_params *p, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *db);
/* The same switch for their weight gradient (images within a size bound):
 * NN_WINOGRAD_AUTO, ALWAYS or NEVER; returns the previous mode. */
int nn_conv_set_winograd_dw(int mode);
/* The forward pass followed by an evaluation-mode BatchNorm2d (running
 * statistics mean, var; bn_weight, bn_bias NULL for 1 and 0; eps) and act,
 * in one pass: y = act(conv(x, w) * a + s) per output channel, a = bn_weight
 * / sqrt(var + eps), s = bn_bias + (bias - mean) a (bias NULL: 0), as
 * nn_batchnorm_forward_eval computes them. The scale is folded into the
 * packed weights where the direct path runs (the rounding then differs from
 * the two calls' by a few ulps). */
int nn_conv2d_forward_bn(const nn_conv2d_params *p, const float *x, const float *w,
                         const float *b, const float *bn_weight, const float *bn_bias,
                         const float *mean, const float *var, float eps, float *y, int act);
/* nn_conv2d_forward (mean == NULL) or nn_conv2d_forward_bn with a residual
 * res (y's shape, not overlapping y) added before the activation:
 * y = act(conv(x, w) + b + res), or with the BatchNorm act(conv * a + s + res);
 * the same bits as the call without act followed by y = act(y + res). A
 * ResNet block's last convolution, its shortcut sum and the ReLU after it
 * in one pass over y (the direct path adds res as it writes y). */
int nn_conv2d_forward_res(const nn_conv2d_params *p, const float *x, const float *w,
                          const float *b, const float *bn_weight, const float *bn_bias,
                          const float *mean, const float *var, float eps, const float *res,
                          float *y, int act);

/* The forward pass followed by MaxPool2d(2) (2x2 windows, stride 2, no
 * padding) of its activated output: y and argmax (n, o, oh / 2, ow / 2) as
 * nn_maxpool2d_forward gives them for the output z (n, o, oh, ow) of
 * nn_conv2d_forward, bit for bit (argmax NULL: not kept, as inference
 * needs none). Where the direct or the Winograd path runs, the windows are
 * pooled as the output rows are computed and z is not written (nor read);
 * elsewhere z holds the convolution's output. oh, ow >= 2. */
int nn_conv2d_forward_pool(const nn_conv2d_params *p, const float *x, const float *w,
                           const float *b, float *z, float *y, int32_t *argmax, int act);

/* Weights packed once for many forward passes of one convolution (a model
 * frozen for inference), for the direct and Winograd paths: the weight, the
 * bias (or NULL) and an evaluation-mode BatchNorm (mean NULL: none; as in
 * nn_conv2d_forward_bn) in the layout the forward pass reads, after a
 * header that records the path and layout (they depend on the input's
 * size, the ISA and the Winograd switch; not on the batch or the threads).
 * *needed: the floats packed takes (0: this shape's path packs nothing
 * ahead); packed is written when it is not NULL and capacity >= *needed.
 * Returns NN_OK or the forward pass's errors. */
int nn_conv2d_pack_forward(const nn_conv2d_params *p, const float *w, const float *b,
                           const float *bn_weight, const float *bn_bias, const float *mean,
                           const float *var, float eps, float *packed, int64_t capacity,
                           int64_t *needed);
/* Every forward pass above in one call (mean NULL: no BatchNorm; res NULL:
 * none; pool_y NULL: no pooling, else y is the unpooled scratch z and
 * pool_arg the argmax or NULL, as in nn_conv2d_forward_pool, with neither
 * BatchNorm nor res), reading the weights from packed (packed_floats
 * floats, made by nn_conv2d_pack_forward
 * from the same w, b and BatchNorm) when its header matches this call's
 * plan, else packing them as the calls above do: the same bits either way. */
int nn_conv2d_forward_packed(const nn_conv2d_params *p, const float *packed,
                             int64_t packed_floats, const float *x, const float *w,
                             const float *b, const float *bn_weight, const float *bn_bias,
                             const float *mean, const float *var, float eps, const float *res,
                             float *y, int act, float *pool_y, int32_t *pool_arg);
/* nn_conv2d_forward_packed without pooling, with x (layout
 * NN_NCHW16C_X), y and res (NN_NCHW16C_Y) or res alone (NN_NCHW16C_RES) in
 * blocks of 16 channels (nChw16c, layout.c): the same values as in NCHW,
 * for the layers where nn_conv2d_nchw16c_supported: the Winograd path runs
 * (3x3, stride 1, a shape the current nn_conv_set_winograd mode takes), or,
 * for NN_NCHW16C_Y alone, the direct one (ungrouped); the channels of each
 * nChw16c tensor a multiple of 16. NN_EINVAL for any other. */
enum { NN_NCHW16C_X = 1, NN_NCHW16C_Y = 2, NN_NCHW16C_RES = 4 };
int nn_conv2d_nchw16c_supported(const nn_conv2d_params *p, int layout);
int nn_conv2d_forward_nchw16c(const nn_conv2d_params *p, int layout, const float *packed,
                              int64_t packed_floats, const float *x, const float *w,
                              const float *b, const float *bn_weight, const float *bn_bias,
                              const float *mean, const float *var, float eps, const float *res,
                              float *y, int act);
/* (n, c, h w) NCHW x into the nChw16c y and back (c a multiple of 16, else
 * NN_EINVAL; x and y do not overlap). */
/* Whether a predict plan keeps a convolution's tensors of this many floats
 * (the larger of its input and output) in nChw16c: while they fit in half
 * of L2. Frozen ResNet-20 (docs/measurements.md): batch 1-8 (up to 400 KB)
 * 1.09-1.19x faster on 2 threads, batch 32 (1.6 MB) no faster. */
int nn_nchw16c_pays(int64_t floats);
int nn_to_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y);
int nn_from_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y);

/* ---- Pooling (pool.c): PyTorch's MaxPool2d, AvgPool2d (count_include_pad)
 * and global average pooling, over `planes` = n * c contiguous h x w planes.
 * The caller sets oh = (h + 2 ph - kh) / sh + 1 and ow likewise, with
 * ph <= kh / 2 and pw <= kw / 2. Max pooling's argmax (may be NULL in the
 * forward pass) holds, per output, the index ih * w + iw of the window's
 * first maximum in row-major order (padding is -inf; a NaN wins); backward
 * adds dy there. Backward passes overwrite dx. Max pooling's backward takes
 * relu_y (or NULL): the pooled output y of a ReLU's output, dy then counting
 * only where y > 0 (the gradient through that ReLU too, in the same pass).
 * It checks argmax as it reads it: *bad = 1 when an index is outside its
 * window (2x2 windows of stride 2, no padding) or its plane (other
 * geometries); dx is then not the gradient, but nothing is written outside
 * it. Else *bad = 0. ---- */
typedef struct nn_pool2d_params {
    int64_t h, w, kh, kw, sh, sw, ph, pw, oh, ow;
} nn_pool2d_params;
#define NN_KERNELS_POOL(X) \
    X(maxpool2d_forward, (int64_t planes, const nn_pool2d_params *p, const float *x, float *y, \
                          int32_t *argmax), (planes, p, x, y, argmax)) \
    X(maxpool2d_backward, (int64_t planes, const nn_pool2d_params *p, const float *dy, \
                           const int32_t *argmax, const float *relu_y, float *dx, int *bad), \
      (planes, p, dy, argmax, relu_y, dx, bad)) \
    X(avgpool2d_forward, (int64_t planes, const nn_pool2d_params *p, const float *x, float *y), \
      (planes, p, x, y)) \
    X(avgpool2d_backward, (int64_t planes, const nn_pool2d_params *p, const float *dy, \
                           float *dx), (planes, p, dy, dx)) \
    X(global_avgpool_forward, (int64_t planes, int64_t hw, const float *x, float *y), \
      (planes, hw, x, y)) \
    X(global_avgpool_backward, (int64_t planes, int64_t hw, const float *dy, float *dx), \
      (planes, hw, dy, dx))
NN_KERNELS_POOL(NN_DECLARE_KERNEL)

/* ---- Batch normalisation (batchnorm.c) over x (n, c, hw), PyTorch's
 * BatchNorm1d (hw = 1) and BatchNorm2d; see batchnorm.c for the formulas.
 * Training: batch mean and biased variance normalise; save_mean and
 * save_invstd (c) are written for the backward pass; running stats (may be
 * NULL) move by momentum, running_var with the unbiased variance (needs
 * n * hw > 1). weight/bias may be NULL (1, 0). Backward: train = 1 for the
 * batch statistics (mean, invstd = the saved ones), 0 for constant ones
 * (evaluation mode); dx, dweight, dbias may be NULL. A ReLU after it, in
 * training: act = NN_ACT_RELU in the training forward (else NN_ACT_NONE), and
 * relu_y = that forward's y in the backward (else NULL; dy then counts where
 * y > 0). ---- */
#define NN_KERNELS_BATCHNORM(X) \
    X(batchnorm_forward_train, (int64_t n, int64_t c, int64_t hw, const float *x, \
                                const float *weight, const float *bias, float eps, \
                                float momentum, float *running_mean, float *running_var, \
                                float *y, float *save_mean, float *save_invstd, int act), \
      (n, c, hw, x, weight, bias, eps, momentum, running_mean, running_var, y, save_mean, \
       save_invstd, act)) \
    X(batchnorm_forward_eval, (int64_t n, int64_t c, int64_t hw, const float *x, \
                               const float *weight, const float *bias, \
                               const float *running_mean, const float *running_var, float eps, \
                               float *y), \
      (n, c, hw, x, weight, bias, running_mean, running_var, eps, y)) \
    X(batchnorm_backward, (int64_t n, int64_t c, int64_t hw, const float *x, const float *dy, \
                           const float *relu_y, const float *weight, const float *mean, \
                           const float *invstd, int train, float *dx, float *dweight, \
                           float *dbias), \
      (n, c, hw, x, dy, relu_y, weight, mean, invstd, train, dx, dweight, dbias))
NN_KERNELS_BATCHNORM(NN_DECLARE_KERNEL)

/* ---- Machine limits (peak.c; per ISA, for the benchmarks) ----
 * nn_fma_peak: `iters` rounds of independent multiply-adds on every thread
 * (nn_get_num_threads()), in registers only; writes the operations done to
 * *flops (the caller times the call) and a result to sink[0] so nothing is
 * optimised away. nn_triad: a[i] = b[i] + s * c[i], over the threads (the
 * STREAM triad: 12 bytes of traffic per element). */
#define NN_KERNELS_PEAK(X) \
    X(fma_peak, (int64_t iters, float *sink, double *flops), (iters, sink, flops)) \
    X(triad, (int64_t n, float *a, const float *b, const float *c, float s), (n, a, b, c, s))
NN_KERNELS_PEAK(NN_DECLARE_KERNEL)

/* Every public dispatched kernel (the GEMM's internal ones are added in
 * dispatch.h). */
#define NN_PUBLIC_KERNELS(X) \
    NN_KERNELS_ACT(X) NN_KERNELS_BIAS(X) NN_KERNELS_DROPOUT(X) NN_KERNELS_OPTIM(X) \
    NN_KERNELS_PEAK(X) NN_KERNELS_POOL(X) NN_KERNELS_BATCHNORM(X) NN_KERNELS_SPARSE(X)

/* ---- Profiler (profile.c) ----
 * While on, every dispatched kernel, nn_sgemm and the loss functions record
 * one event per call into a preallocated buffer: safe under concurrent
 * callers (an atomic index; events past the capacity are counted as dropped).
 * Off, each entry point pays one relaxed load and a predictable branch. */
typedef struct nn_profile_event {
    int32_t kernel;     /* kernel id: nn_profile_kernel_name(kernel) */
    int32_t thread;     /* the caller's OS thread id */
    int64_t start_ns;   /* nn_profile_now_ns() at entry */
    int64_t dur_ns;
    double flops;       /* 2 m n k for sgemm, else 0 */
    int64_t m, n, k;    /* sizes: sgemm's m, n, k; element or row/column counts otherwise */
} nn_profile_event;

/* Start recording into room for `capacity` events, forgetting earlier ones.
 * NN_EINVAL if already on or capacity < 1; NN_ENOMEM. */
int nn_profile_start(int64_t capacity);
void nn_profile_stop(void);
int nn_profile_enabled(void);
int64_t nn_profile_count(void);       /* events recorded (at most the capacity) */
int64_t nn_profile_dropped(void);     /* events lost because the buffer was full */
/* Copy up to `max` completed events, in record order, to out; returns how many. */
int64_t nn_profile_read(int64_t max, nn_profile_event *out);
int nn_profile_kernel_count(void);
const char *nn_profile_kernel_name(int id);   /* "relu_forward", "sgemm_nt", ... */
int64_t nn_profile_now_ns(void);      /* CLOCK_MONOTONIC, as Python's perf_counter */

#ifdef __cplusplus
}
#endif
#endif
