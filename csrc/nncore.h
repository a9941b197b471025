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
void nn_set_num_threads(int n);
int nn_get_num_threads(void);

/* ---- activations (act.c) ---- */
typedef enum {
    NN_ACT_NONE = 0,
    NN_ACT_RELU = 1,
} nn_activation;

void nn_relu_forward(int64_t n, const float *x, float *y);
void nn_relu_backward(int64_t n, const float *x, const float *dy, float *dx);

/* ---- SGEMM (gemm.c) ----
 * C = alpha * op(A) op(B) + beta * C, then C[i][j] = act(C[i][j] + bias[j]).
 * op(A) is m x k, op(B) is k x n. trans_a/trans_b: 0 or 1. bias may be NULL.
 * beta == 0 never reads C. k may be 0 (then A and B are not read and the
 * product is zero). The activation is fused in registers: NN_ACT_NONE and
 * NN_ACT_RELU. Results are bitwise identical for any thread count.
 * Returns NN_OK, NN_EINVAL (negative size, activation not fused) or
 * NN_ENOMEM (packing buffers). Safe to call from several threads at once. */
int nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda,
             const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc,
             const float *bias, int activation);

#ifdef __cplusplus
}
#endif
#endif
