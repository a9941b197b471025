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
    X(sgemm_naive, (int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, \
                    const float *a, int64_t lda, const float *b, int64_t ldb, float beta, \
                    float *c, int64_t ldc, const float *bias, int activation), \
      (trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, activation))

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
            NN_PRAGMA(omp parallel for schedule(static))                             \
            for (int64_t nn_c_ = 0; nn_c_ < (nn_n_ + NN_CHUNK - 1) / NN_CHUNK; nn_c_++) { \
                const int64_t lo = nn_c_ * NN_CHUNK;                                 \
                const int64_t hi = nn_n_ - lo < NN_CHUNK ? nn_n_ : lo + NN_CHUNK;    \
                __VA_ARGS__;                                                         \
            }                                                                        \
        }                                                                            \
    } while (0)

#endif
