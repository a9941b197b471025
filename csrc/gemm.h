/* Internal: what the GEMM driver (gemm.c) shares with the layer kernels
 * built on it (dense.c). */
#ifndef NN_GEMM_H
#define NN_GEMM_H

#include <stdint.h>
#include "dispatch.h"

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* Thread t's start in [0, len), in whole units: part t of nt. */
static inline int64_t split(int64_t len, int64_t unit, int t, int nt)
{
    return min64(ceil_div(len, unit) * t / nt * unit, len);
}

/* Split len into blocks of at most max (rounded up to unit), all but the
 * last the same size. */
static inline int64_t balanced_block(int64_t len, int64_t max, int64_t unit)
{
    if (len <= max)
        return round_up(len, unit);
    return round_up(ceil_div(len, ceil_div(len, max)), unit);
}

/* Below this many multiply-adds (k*n) an m == 1 product runs on one thread:
 * a fork/join (or, inside a chain's parallel region, a barrier) costs more
 * than the split saves. */
#define NN_GEMV_PARALLEL_MIN 65536
/* Threads split an m == 1 product into whole blocks of this many columns. */
#define NN_GEMV_UNIT 64

/* Thread t of team's share of an m == 1 product y = act(alpha x op(B) +
 * beta y + bias) (op(B) is k x n; B transposed when trans_b; work: n floats
 * of scratch for the untransposed case, or NULL): whole blocks of
 * NN_GEMV_UNIT columns of y, the same kernel calls whatever the split (each
 * y[j] goes through the same operations), so the bits never depend on the
 * team. */
void nn_gemv_part(const nn_kernel_table *kt, int trans_b, int64_t n, int64_t k, float alpha,
                  const float *x, int64_t incx, const float *b, int64_t ldb, float beta,
                  float *c, const float *bias, int act, float *work, int t, int team);

#endif
