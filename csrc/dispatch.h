/* Internal: the per-ISA kernel table.
 *
 * Sources listed in NN_ISA_SOURCES (CMakeLists.txt) are compiled once per ISA
 * with that ISA's flags and -DNN_ISA=<name>. Each kernel in them is defined as
 * NN_ISA_FN(name), which becomes nn_<name>_<isa>. cpu.c gathers the three sets
 * into tables and defines the public nn_<name>() trampolines, so callers never
 * see an ISA suffix.
 *
 * To add a kernel: add one X(...) line below (name, parameter list, argument
 * list), declare nn_<name> in nncore.h if it is public, and define
 * NN_ISA_FN(name) in an NN_ISA_SOURCES file. Kernels return void: they trust
 * their arguments and cannot fail. */
#ifndef NN_DISPATCH_H
#define NN_DISPATCH_H

#include <stdint.h>
#include "nncore.h"

/* One call of the GEMM kernel (gemm_kernel.c), set up by the driver (gemm.c):
 *   C[0:m, 0:n] = epilogue(alpha * A B + beta * C),  m <= mr, n any, over k.
 * A(i, p) = a[i*rsa + p*csa]: packed panels have rsa = 1, csa = mr; in place,
 * rsa = lda, csa = 1 (or the reverse for a transposed A).
 * B(p, j) = b[(j / nr) * sb + p * rsb + j % nr]: B is read in strips of nr
 * columns; packed strips have rsb = nr, sb = k * nr; in place, rsb = ldb, sb = nr.
 * beta == 0: C is not read. bias: NULL or n values added per column, then
 * act (NN_ACT_*). Edges are masked: nothing outside the m x n block of C, the
 * m rows of A or the n columns of B is read or written. */
typedef struct nn_gemm_args {
    int64_t m, n, k;
    const float *a;
    int64_t rsa, csa;
    const float *b;
    int64_t rsb, sb;
    float *c;
    int64_t ldc;
    float alpha, beta;
    const float *bias;
    int act;
} nn_gemm_args;

/* The GEMM epilogue's activation on one value, for the scalar and edge paths
 * of the driver and the kernels (act_vec in gemm_kernel.c is its SIMD twin). */
static inline float nn_act_scalar(float x, int act)
{
    switch (act) {
    case NN_ACT_RELU:
        return x < 0.0f ? 0.0f : x;
    default:
        return x;
    }
}

/* The register tile and cache blocking of one ISA's kernel. */
typedef struct nn_gemm_blocking {
    int mr, nr;   /* register tile: mr rows x nr columns of C */
    int64_t kc;   /* depth of a packed block (A micro-panel mr x kc stays in L1) */
    int64_t nc;   /* columns of packed B per thread (kc x nc stays in L2) */
} nn_gemm_blocking;

/* Matrix-vector products for m == 1, with the same epilogue:
 *   gemv_n: y[j] = epi(alpha * sum_p x[p*incx] * b[p*ldb + j] + beta * y[j]), j < n
 *   gemv_t: y[j] = epi(alpha * sum_p x[p] * b[j*ldb + p] + beta * y[j]),        j < n
 * work: n floats of scratch for gemv_n (partial sums), 64-byte aligned. */
typedef struct nn_gemv_args {
    int64_t n, k;
    const float *x;
    int64_t incx;
    const float *b;
    int64_t ldb;
    float *y;
    float alpha, beta;
    const float *bias;
    int act;
    float *work;
} nn_gemv_args;

#define NN_ISA_KERNELS(X) \
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
    X(bias_backward, (int64_t m, int64_t n, const float *dy, int64_t ldy, float *db), \
      (m, n, dy, ldy, db)) \
    X(dropout_forward, (int64_t n, const float *x, float *y, uint32_t threshold, float scale, \
                        uint64_t key), (n, x, y, threshold, scale, key)) \
    X(dropout_backward, (int64_t n, const float *dy, float *dx, uint32_t threshold, float scale, \
                         uint64_t key), (n, dy, dx, threshold, scale, key)) \
    X(sgd_step, (int64_t n, float *w, const float *g, float *buf, float lr, float momentum, \
                 float dampening, float weight_decay, int nesterov, int first), \
      (n, w, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)) \
    X(adam_step, (int64_t n, float *w, const float *g, float *m, float *v, float beta1, \
                  float beta2, float eps, float weight_decay, float decay, float step_size, \
                  float bc2_sqrt), \
      (n, w, g, m, v, beta1, beta2, eps, weight_decay, decay, step_size, bc2_sqrt)) \
    X(rmsprop_step, (int64_t n, float *w, const float *g, float *sq, float *gavg, float *buf, \
                     float lr, float alpha, float eps, float weight_decay, float momentum), \
      (n, w, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum)) \
    X(gemm_info, (nn_gemm_blocking *info), (info)) \
    X(gemm_block, (const nn_gemm_args *g), (g)) \
    X(gemv_n, (const nn_gemv_args *g), (g)) \
    X(gemv_t, (const nn_gemv_args *g), (g)) \
    X(fma_peak, (int64_t iters, float *sink, double *flops), (iters, sink, flops)) \
    X(triad, (int64_t n, float *a, const float *b, const float *c, float s), (n, a, b, c, s)) \
    X(maxpool2d_forward, (int64_t planes, const nn_pool2d_params *p, const float *x, float *y, \
                          int32_t *argmax), (planes, p, x, y, argmax)) \
    X(maxpool2d_backward, (int64_t planes, const nn_pool2d_params *p, const float *dy, \
                           const int32_t *argmax, float *dx), (planes, p, dy, argmax, dx)) \
    X(avgpool2d_forward, (int64_t planes, const nn_pool2d_params *p, const float *x, float *y), \
      (planes, p, x, y)) \
    X(avgpool2d_backward, (int64_t planes, const nn_pool2d_params *p, const float *dy, \
                           float *dx), (planes, p, dy, dx)) \
    X(global_avgpool_forward, (int64_t planes, int64_t hw, const float *x, float *y), \
      (planes, hw, x, y)) \
    X(global_avgpool_backward, (int64_t planes, int64_t hw, const float *dy, float *dx), \
      (planes, hw, dy, dx)) \
    X(batchnorm_forward_train, (int64_t n, int64_t c, int64_t hw, const float *x, \
                                const float *weight, const float *bias, float eps, \
                                float momentum, float *running_mean, float *running_var, \
                                float *y, float *save_mean, float *save_invstd), \
      (n, c, hw, x, weight, bias, eps, momentum, running_mean, running_var, y, save_mean, \
       save_invstd)) \
    X(batchnorm_forward_eval, (int64_t n, int64_t c, int64_t hw, const float *x, \
                               const float *weight, const float *bias, \
                               const float *running_mean, const float *running_var, float eps, \
                               float *y), \
      (n, c, hw, x, weight, bias, running_mean, running_var, eps, y)) \
    X(batchnorm_backward, (int64_t n, int64_t c, int64_t hw, const float *x, const float *dy, \
                           const float *weight, const float *mean, const float *invstd, \
                           int train, float *dx, float *dweight, float *dbias), \
      (n, c, hw, x, dy, weight, mean, invstd, train, dx, dweight, dbias))

#define NN_CAT_(a, b) a##b
#define NN_CAT(a, b) NN_CAT_(a, b)
#ifdef NN_ISA
#define NN_ISA_FN(name) NN_CAT(NN_CAT(nn_, name), NN_CAT(_, NN_ISA))
#endif

#define NN_TABLE_FIELD(name, params, args) void (*name) params;
typedef struct nn_kernel_table {
    NN_ISA_KERNELS(NN_TABLE_FIELD)
} nn_kernel_table;
#undef NN_TABLE_FIELD

/* The table of the active ISA. */
const nn_kernel_table *nn_kernels(void);

/* The number of threads a parallel region may use (cpu.c): OpenMP's count
 * for the calling thread, capped by nn_set_num_threads. Every parallel
 * region names it in a num_threads clause, because OpenMP's own count is
 * per thread: set from one Python thread, it would not bind the others. */
int nn_max_threads(void);

/* Elementwise kernels go parallel only above this many elements: below it
 * an OpenMP fork/join (a few microseconds) costs more than it saves. */
#define NN_PARALLEL_MIN_ELEMENTS 65536

/* Elementwise kernels: run `stmt` on [lo, hi) ranges covering [0, n):
 *
 *     NN_FOR_RANGES(n, lo, hi, my_range(lo, hi, x, y));
 *
 * Below NN_PARALLEL_MIN_ELEMENTS it runs once on [0, n) without touching
 * OpenMP (even a parallel region with a false `if` clause costs ~0.3 us);
 * above, on NN_CHUNK-sized ranges spread over the threads. The range code is
 * a plain loop the compiler vectorises (`restrict` pointers avoid alias
 * checks); gcc 12 left some branchy `omp parallel for simd` loops scalar.
 * Each element is computed the same way whichever thread runs it. */
#define NN_CHUNK 16384
#define NN_PRAGMA(x) _Pragma(#x)
#define NN_FOR_RANGES(n, lo, hi, ...)                                                \
    do {                                                                             \
        const int64_t nn_n_ = (n);                                                   \
        if (nn_n_ < NN_PARALLEL_MIN_ELEMENTS) {                                      \
            const int64_t lo = 0, hi = nn_n_;                                        \
            __VA_ARGS__;                                                             \
        } else {                                                                     \
            NN_PRAGMA(omp parallel for schedule(static) num_threads(nn_max_threads()))  \
            for (int64_t nn_c_ = 0; nn_c_ < (nn_n_ + NN_CHUNK - 1) / NN_CHUNK; nn_c_++) { \
                const int64_t lo = nn_c_ * NN_CHUNK;                                 \
                const int64_t hi = nn_n_ - lo < NN_CHUNK ? nn_n_ : lo + NN_CHUNK;    \
                __VA_ARGS__;                                                         \
            }                                                                        \
        }                                                                            \
    } while (0)

#endif
