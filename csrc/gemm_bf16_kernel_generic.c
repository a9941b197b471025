/* The portable bf16 micro-kernel and packing: vdpbf16ps's arithmetic
 * (gemm_bf16.h) in plain C, so a CPU without AVX512_BF16 gets the same bits,
 * only slower.
 *
 * One step acc = ftz(round(acc + a * b)) is computed in double: a product of
 * two bfloat16 (8-bit significands) is exact in double, and the sum of two
 * numbers of float precision rounded to double and then to float equals the
 * sum rounded once to float (double has at least 2 * 24 + 2 bits), so the
 * step is the single-rounded fused multiply-add the instruction does. The
 * epilogue's beta * C + x uses fmaf, as the SIMD kernels fuse it. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "dispatch.h"
#include "gemm_bf16.h"

#define MR NN_BF16_MR
#define NR NN_BF16_NR

/* A denormal result becomes a zero of its sign (vdpbf16ps flushes them). */
static inline float ftz(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0)
        u &= 0x80000000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float step(float acc, float a, float b)
{
    return ftz((float)((double)acc + (double)a * (double)b));
}

void nn_gemm_bf16_block_generic(const nn_bf16_args *g)
{
    const int64_t strip = g->kp * NR * 2;
    for (int64_t j0 = 0; j0 < g->n; j0 += NR) {
        const int64_t nw = g->n - j0 < NR ? g->n - j0 : NR;
        const uint16_t *b = g->b + j0 / NR * strip;
        float acc[MR][NR];
        for (int64_t i = 0; i < g->m; i++)
            for (int64_t j = 0; j < NR; j++)
                acc[i][j] = 0.0f;
        for (int64_t q = 0; q < g->kp; q++) {
            const uint16_t *bq = b + q * NR * 2;
            for (int64_t i = 0; i < g->m; i++) {
                const float a0 = nn_bf16_to_float(g->a[(q * MR + i) * 2]);
                const float a1 = nn_bf16_to_float(g->a[(q * MR + i) * 2 + 1]);
                for (int64_t j = 0; j < nw; j++) {
                    const float b0 = nn_bf16_to_float(bq[2 * j]);
                    const float b1 = nn_bf16_to_float(bq[2 * j + 1]);
                    acc[i][j] = step(step(acc[i][j], a1, b1), a0, b0);
                }
            }
        }
        for (int64_t i = 0; i < g->m; i++) {
            float *ci = g->c + i * g->ldc + j0;
            for (int64_t j = 0; j < nw; j++) {
                float x = g->alpha * acc[i][j];
                if (g->beta != 0.0f)
                    x = fmaf(g->beta, ci[j], x);
                if (g->bias)
                    x += g->bias[j0 + j];
                ci[j] = nn_act_scalar(x, g->act);
            }
        }
    }
}

void nn_bf16_pack_a_generic(const float *a, int64_t lda, int trans, int64_t h, int64_t kc,
                            uint16_t *dst)
{
    for (int64_t i = 0; i < h; i++)
        for (int64_t p = 0; p < kc; p++)
            dst[(p >> 1) * MR * 2 + 2 * i + (p & 1)] =
                nn_bf16_round(trans ? a[p * lda + i] : a[i * lda + p]);
    if (kc & 1)
        for (int64_t i = 0; i < h; i++)
            dst[(kc >> 1) * MR * 2 + 2 * i + 1] = 0;
}

void nn_bf16_pack_b_generic(const float *b, int64_t ldb, int trans, int64_t w, int64_t kc,
                            uint16_t *dst)
{
    const int64_t kp = (kc + 1) / 2;
    for (int64_t s = 0; s < w; s += NR, dst += kp * NR * 2) {
        for (int64_t q = 0; q < kp; q++)
            for (int64_t j = 0; j < NR; j++)
                for (int e = 0; e < 2; e++) {
                    const int64_t p = 2 * q + e, col = s + j;
                    dst[(q * NR + j) * 2 + e] =
                        p < kc && col < w
                            ? nn_bf16_round(trans ? b[col * ldb + p] : b[p * ldb + col]) : 0;
                }
    }
}
