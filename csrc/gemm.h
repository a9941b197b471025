/* Internal: the parts of the GEMM shared between its files (the driver
 * gemm.c, the packing gemm_pack.c, the block sizes gemm_blocking.c) and the
 * layer kernels built on it (dense.c). */
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

/* The block sizes of one call's kernel on this machine (gemm_blocking.c). */
typedef struct nn_gemm_blocking {
    int64_t mr, nr;    /* the micro-kernel's register tile: mr rows x nr columns */
    int64_t kc;        /* depth of a block (an mr x kc panel of A stays in L1) */
    int64_t nc;        /* columns of packed B per thread (kc x nc stays in L2) */
    int64_t inplace_a; /* bytes of a transposed A's depth block still read in place */
} nn_gemm_blocking;

/* The blocking for kernel table kt, from its register tile and the cache
 * sizes of this machine (read once, at the first call). */
void nn_gemm_blocking_for(const nn_kernel_table *kt, nn_gemm_blocking *out);

/* The plan of one blocked product (gemm.c), read by the packing routines. */
typedef struct nn_gemm_plan {
    const nn_kernel_table *kt;
    int64_t mr, nr;
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b, *bias;
    int64_t lda, ldb, ldc;
    float *c;
    int act;
    int64_t kc, mcb, ncb; /* block sizes */
    int pack_a, pack_b;
    int split_n;          /* threads split columns (1) or rows (0) */
    float *ap, *bp;       /* packed A (mcb x kc) and B (kc x ncb) */
} nn_gemm_plan;

/* Pack rows [i0, i0+h) of op(A), depth [pc, pc+kc), into micro-panels of mr
 * rows: element (i, p) of panel q at dst[q*kc*mr + p*mr + i]. */
void nn_gemm_pack_a(const nn_gemm_plan *P, int64_t i0, int64_t h, int64_t pc, int64_t kc,
                    float *dst);
/* Pack columns [j0, j0+w) of op(B), depth [pc, pc+kc), into strips of nr
 * columns: element (p, j) of strip s at dst[s*kc*nr + p*nr + j]. The columns
 * of a last, partial strip beyond w are left unset: the kernel masks them. */
void nn_gemm_pack_b(const nn_gemm_plan *P, int64_t j0, int64_t w, int64_t pc, int64_t kc,
                    float *dst);

/* nn_sgemm and nn_gemm_bf16 without their profiler events: for kernels
 * that record one event of their own around the GEMMs they run (conv.c). */
int nn_sgemm_unprofiled(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc, const float *bias, int activation);
int nn_gemm_bf16_unprofiled(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float beta, float *c, int64_t ldc, const float *bias,
                            int activation);

/* A GEMM with nn_sgemm's arguments: nn_sgemm or nn_gemm_bf16 (and their
 * unprofiled forms), for the layers that run either (dense.c, conv.c). */
typedef int (*nn_gemm_fn)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                          float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                          float beta, float *c, int64_t ldc, const float *bias, int activation);

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
