/* Internal: the bfloat16 GEMM (gemm_bf16.c) and its micro-kernels
 * (gemm_bf16_kernel_generic.c, gemm_bf16_kernel_avx512bf16.c).
 *
 * Both operands are rounded to bfloat16 while they are packed, products are
 * accumulated in float32 and the epilogue and output are float32, as in the
 * float32 GEMM. The arithmetic is that of AVX512_BF16's vdpbf16ps, which
 * every kernel computes bit for bit: depth runs in pairs (p, p + 1) and each
 * pair is added to a float32 accumulator as two single-rounded fused
 * multiply-adds, the odd element first,
 *     acc = ftz(acc + a[p+1] * b[p+1]);  acc = ftz(acc + a[p] * b[p]);
 * with round-to-nearest-even, denormal results flushed to (signed) zero
 * (ftz) and denormal inputs read as zero (the packing never produces any:
 * rounding flushes them). An odd depth is padded with a zero pair. */
#ifndef NN_GEMM_BF16_H
#define NN_GEMM_BF16_H

#include <stdint.h>
#include <string.h>

/* The register tile every bf16 kernel is packed for: MR rows x NR columns. */
#define NN_BF16_MR 6
#define NN_BF16_NR 64

/* float32 -> bfloat16, round to nearest even, as vcvtne2ps2bf16 does (and,
 * like it, denormal inputs become signed zeros and NaNs stay quiet NaNs). */
static inline uint16_t nn_bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7f800000u) == 0)
        return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float nn_bf16_to_float(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* One call of a bf16 micro-kernel, set up by the driver (gemm_bf16.c):
 *   C[0:m, 0:n] = epilogue(alpha * A B + beta * C),  m <= NN_BF16_MR, n any,
 * over kp depth pairs. A is one packed panel: the pair (A(i, 2q), A(i, 2q+1))
 * at a[(q * MR + i) * 2 + {0, 1}]. B is packed in strips of NR columns,
 * zero beyond n: the pair of column j of strip s at
 * b[s * kp * NR * 2 + (q * NR + j) * 2 + {0, 1}]. The epilogue is the float32
 * GEMM's: x = alpha * acc, then x = fma(beta, C, x) when beta != 0, + bias
 * (NULL or n values), then act. Nothing outside the m x n block of C is read
 * or written. */
typedef struct nn_bf16_args {
    int64_t m, n, kp;
    const uint16_t *a, *b;
    float *c;
    int64_t ldc;
    float alpha, beta;
    const float *bias;
    int act;
} nn_bf16_args;

/* Packing, in the layouts above (every ISA writes the same bits):
 * pack_a: h <= MR rows of op(A) over depth kc into one panel; a points at
 *   op(A)(i0, pc): row i, depth p at a[i*lda + p], or a[p*lda + i] when trans.
 * pack_b: w columns of op(B) over depth kc into ceil(w / NR) strips, zero
 *   beyond w; b points at op(B)(pc, j0): depth p, column j at b[p*ldb + j],
 *   or b[j*ldb + p] when trans.
 * An odd kc's last pair is padded with zero in both. */
#define NN_BF16_KERNEL_DECL(isa) \
    void nn_gemm_bf16_block_##isa(const nn_bf16_args *g); \
    void nn_bf16_pack_a_##isa(const float *a, int64_t lda, int trans, int64_t h, int64_t kc, \
                              uint16_t *dst); \
    void nn_bf16_pack_b_##isa(const float *b, int64_t ldb, int trans, int64_t w, int64_t kc, \
                              uint16_t *dst);
NN_BF16_KERNEL_DECL(generic)
#if NN_HAVE_AVX512BF16
NN_BF16_KERNEL_DECL(avx512bf16)
/* peak_bf16.c: vdpbf16ps chains on every thread (see nn_bf16_peak). */
void nn_bf16_peak_avx512bf16(int64_t iters, float *sink, double *flops);
#endif

#endif
