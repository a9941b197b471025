/* The Winograd F(2x2, 3x3) weight gradient's transforms (dispatch.h),
 * compiled once per ISA: plain loops over blocks of LANES channels, which
 * the compiler vectorises with the ISA's flags. LANES is one vector, so a
 * tile's sixteen intermediate values stay in registers (16 of them). The
 * channel counts are multiples of 16 (winograd_dw.c pads them). */
#include <stdint.h>
#include "dispatch.h"

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX2__)
#define LANES 8
#else
#define LANES 4
#endif

/* V = B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: the same
 * four combinations of the rows, then of the columns. */
void NN_ISA_FN(wino_dw_input)(int64_t c, int64_t tw, const float *x, int64_t ldr,
                              float *restrict v, int64_t ldxi)
{
    for (int64_t j = 0; j < tw; j++) {
        const float *d0 = x + 2 * j * c, *d1 = d0 + ldr, *d2 = d1 + ldr, *d3 = d2 + ldr;
        float *vj = v + j * c;
        for (int64_t c0 = 0; c0 < c; c0 += LANES) {
            float m[4][4][LANES]; /* (B^T d)[row a][column b] */
            for (int b = 0; b < 4; b++)
                for (int l = 0; l < LANES; l++) {
                    const int64_t at = b * c + c0 + l;
                    m[0][b][l] = d0[at] - d2[at];
                    m[1][b][l] = d1[at] + d2[at];
                    m[2][b][l] = d2[at] - d1[at];
                    m[3][b][l] = d1[at] - d3[at];
                }
            for (int a = 0; a < 4; a++)
                for (int l = 0; l < LANES; l++) {
                    float *o = vj + 4 * a * ldxi + c0 + l;
                    o[0] = m[a][0][l] - m[a][2][l];
                    o[ldxi] = m[a][1][l] + m[a][2][l];
                    o[2 * ldxi] = m[a][2][l] - m[a][1][l];
                    o[3 * ldxi] = m[a][1][l] - m[a][3][l];
                }
        }
    }
}

/* W = A g A^T with A = [1 0; 1 1; 1 -1; 0 -1] for the 2x2 tile g = [p q; r s]:
 * rows (p, q), (p + r, q + s), (p - r, q - s), (-r, -s), and each row (u0, u1)
 * becomes (u0, u0 + u1, u0 - u1, -u1). Missing pixels (past an odd last row
 * or column) read the zeros. */
void NN_ISA_FN(wino_dw_grad)(int64_t k, int64_t tw, int64_t ow, const float *r0,
                             const float *r1, const float *zero, float *restrict w,
                             int64_t ldxi)
{
    for (int64_t j = 0; j < tw; j++) {
        const int right = 2 * j + 1 < ow;
        const float *p = r0 + 2 * j * k, *q = right ? p + k : zero;
        const float *r = r1 ? r1 + 2 * j * k : zero, *s = r1 && right ? r + k : zero;
        float *wj = w + j * k;
        for (int64_t k0 = 0; k0 < k; k0 += LANES) {
            float u[4][2][LANES];
            for (int l = 0; l < LANES; l++) {
                const int64_t at = k0 + l;
                u[0][0][l] = p[at];
                u[0][1][l] = q[at];
                u[1][0][l] = p[at] + r[at];
                u[1][1][l] = q[at] + s[at];
                u[2][0][l] = p[at] - r[at];
                u[2][1][l] = q[at] - s[at];
                u[3][0][l] = -r[at];
                u[3][1][l] = -s[at];
            }
            for (int a = 0; a < 4; a++)
                for (int l = 0; l < LANES; l++) {
                    float *o = wj + 4 * a * ldxi + k0 + l;
                    o[0] = u[a][0][l];
                    o[ldxi] = u[a][0][l] + u[a][1][l];
                    o[2 * ldxi] = u[a][0][l] - u[a][1][l];
                    o[3 * ldxi] = -u[a][1][l];
                }
        }
    }
}
