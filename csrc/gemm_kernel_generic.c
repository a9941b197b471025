/* The portable GEMM and GEMV kernels in plain C (the generic path, and the
 * only one on non-x86 builds): a 4 x 16 tile the compiler vectorises as it
 * can. Same contract as the SIMD kernels (gemm_kernel_simd.h): edges read
 * and write nothing outside the block, and each C element goes through the
 * same operations whichever tile or thread it falls in. Compiled only for
 * the generic path. */
#include <stddef.h>
#include "dispatch.h"

#define MR 4
#define NR 16
#define KC_MAX 256 /* the depth this kernel has always run with (kc sets the bits) */

static inline float epilogue(float acc, const nn_gemm_args *g, const float *cp, const float *bias)
{
    float x = g->alpha * acc;
    if (g->beta != 0.0f)
        x += g->beta * *cp;
    if (bias)
        x += *bias;
    return nn_act_scalar(x, g->act);
}

void NN_ISA_FN(gemm_block)(const nn_gemm_args *g)
{
    for (int64_t j0 = 0; j0 < g->n; j0 += NR) {
        const int64_t nw = g->n - j0 < NR ? g->n - j0 : NR;
        const float *b = g->b + (j0 / NR) * g->sb;
        float acc[MR][NR] = {{0.0f}};
        for (int64_t p = 0; p < g->k; p++) {
            const float *bp = b + p * g->rsb;
            for (int64_t i = 0; i < g->m; i++) {
                const float av = g->a[i * g->rsa + p * g->csa];
                if (nw == NR)
                    for (int jj = 0; jj < NR; jj++)
                        acc[i][jj] += av * bp[jj];
                else
                    for (int64_t jj = 0; jj < nw; jj++)
                        acc[i][jj] += av * bp[jj];
            }
        }
        for (int64_t i = 0; i < g->m; i++) {
            float *ci = g->c + i * g->ldc + j0;
            for (int64_t jj = 0; jj < nw; jj++)
                ci[jj] = epilogue(acc[i][jj], g, ci + jj, g->bias ? g->bias + j0 + jj : NULL);
        }
    }
}

static inline float gemv_epilogue(float s, const nn_gemv_args *g, int64_t j)
{
    float x = g->alpha * s;
    if (g->beta != 0.0f)
        x += g->beta * g->y[j];
    if (g->bias)
        x += g->bias[j];
    return nn_act_scalar(x, g->act);
}

void NN_ISA_FN(gemv_n)(const nn_gemv_args *g)
{
    for (int64_t j0 = 0; j0 < g->n; j0 += NR) {
        const int64_t nw = g->n - j0 < NR ? g->n - j0 : NR;
        float acc[NR] = {0.0f};
        for (int64_t p = 0; p < g->k; p++) {
            const float xv = g->x[p * g->incx];
            const float *bp = g->b + p * g->ldb + j0;
            for (int64_t jj = 0; jj < nw; jj++)
                acc[jj] += xv * bp[jj];
        }
        for (int64_t jj = 0; jj < nw; jj++)
            g->y[j0 + jj] = gemv_epilogue(acc[jj], g, j0 + jj);
    }
}

void NN_ISA_FN(gemv_t)(const nn_gemv_args *g)
{
    for (int64_t j = 0; j < g->n; j++) {
        const float *bj = g->b + j * g->ldb;
        float part[8] = {0.0f}; /* 8 partial sums, combined in a fixed order */
        int64_t p = 0;
        for (; p + 8 <= g->k; p += 8)
            for (int u = 0; u < 8; u++)
                part[u] += g->x[p + u] * bj[p + u];
        for (; p < g->k; p++)
            part[0] += g->x[p] * bj[p];
        const float s = ((part[0] + part[1]) + (part[2] + part[3])) +
                        ((part[4] + part[5]) + (part[6] + part[7]));
        g->y[j] = gemv_epilogue(s, g, j);
    }
}

void NN_ISA_FN(gemm_tile)(nn_gemm_tile *tile)
{
    tile->mr = MR;
    tile->nr = NR;
    tile->kc_max = KC_MAX;
}

