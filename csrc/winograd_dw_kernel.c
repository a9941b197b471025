/* The Winograd F(2x2, 3x3) weight gradient's transforms (dispatch.h),
 * compiled once per ISA, on GCC's vector types of one register (LANES
 * floats, the ISA's width): a tile's sixteen intermediate values stay in
 * registers, and the code is the same for every ISA. (Plain loops over
 * channels were vectorised only in part, with scalar fallbacks for the
 * sixteen output streams.) The channel counts are multiples of 16
 * (winograd_dw.c pads them), so whole vectors cover them. */
#include <stdint.h>
#include <string.h>
#include "dispatch.h"

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX2__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));

/* Unaligned loads and stores (memcpy: one move, no aliasing question). */
static inline vf load(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* The row combinations (B^T d) of one column of a 4x4 input tile: four
 * rows ldr apart, m0 = d0 - d2, m1 = d1 + d2, m2 = d2 - d1, m3 = d1 - d3. */
static inline void rows_bt(const float *d, int64_t ldr, vf m[4])
{
    const vf d0 = load(d), d1 = load(d + ldr), d2 = load(d + 2 * ldr), d3 = load(d + 3 * ldr);
    m[0] = d0 - d2;
    m[1] = d1 + d2;
    m[2] = d2 - d1;
    m[3] = d1 - d3;
}

/* V = B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: the same
 * four combinations of the rows, then of the columns. Tile j + 1's first
 * two columns are tile j's last two: their row combinations carry over. */
void NN_ISA_FN(wino_dw_input)(int64_t c, int64_t tw, const float *x, int64_t ldr, float *v,
                              int64_t ldxi)
{
    for (int64_t c0 = 0; c0 < c; c0 += LANES) {
        vf m[4][4]; /* m[b][a] = (B^T d)[row a] of tile column b */
        rows_bt(x + c0, ldr, m[2]);
        rows_bt(x + c + c0, ldr, m[3]);
        for (int64_t j = 0; j < tw; j++) {
            const float *d = x + 2 * j * c + c0;
            for (int a = 0; a < 4; a++) {
                m[0][a] = m[2][a];
                m[1][a] = m[3][a];
            }
            rows_bt(d + 2 * c, ldr, m[2]);
            rows_bt(d + 3 * c, ldr, m[3]);
            float *o = v + j * c + c0;
            for (int a = 0; a < 4; a++) {
                store(o + 4 * a * ldxi, m[0][a] - m[2][a]);
                store(o + (4 * a + 1) * ldxi, m[1][a] + m[2][a]);
                store(o + (4 * a + 2) * ldxi, m[2][a] - m[1][a]);
                store(o + (4 * a + 3) * ldxi, m[1][a] - m[3][a]);
            }
        }
    }
}

/* W = A g A^T with A = [1 0; 1 1; 1 -1; 0 -1] for the 2x2 tile g = [p q; r s]:
 * rows (p, q), (p + r, q + s), (p - r, q - s), (-r, -s), and each row (u0, u1)
 * becomes (u0, u0 + u1, u0 - u1, -u1). Missing pixels (past an odd last row
 * or column) read the zeros. */
void NN_ISA_FN(wino_dw_grad)(int64_t k, int64_t tw, int64_t ow, const float *r0,
                             const float *r1, const float *zero, float *w, int64_t ldxi)
{
    for (int64_t j = 0; j < tw; j++) {
        const int right = 2 * j + 1 < ow;
        const float *p = r0 + 2 * j * k, *q = right ? p + k : zero;
        const float *r = r1 ? r1 + 2 * j * k : zero, *s = r1 && right ? r + k : zero;
        for (int64_t k0 = 0; k0 < k; k0 += LANES) {
            const vf pv = load(p + k0), qv = load(q + k0), rv = load(r + k0), sv = load(s + k0);
            const vf u[4][2] = {{pv, qv}, {pv + rv, qv + sv}, {pv - rv, qv - sv}, {-rv, -sv}};
            float *o = w + j * k + k0;
            for (int a = 0; a < 4; a++) {
                store(o + 4 * a * ldxi, u[a][0]);
                store(o + (4 * a + 1) * ldxi, u[a][0] + u[a][1]);
                store(o + (4 * a + 2) * ldxi, u[a][0] - u[a][1]);
                store(o + (4 * a + 3) * ldxi, -u[a][1]);
            }
        }
    }
}

/* part = G^T U G per 4x4 U (position xi = 4a + b of U at u[xi*ldxi]), the
 * nine taps at part[tap*ldtap], for n values (a multiple of 16). G = [1 0 0;
 * .5 .5 .5; .5 -.5 .5; 0 0 1]: each column, then each row, (u0, u1, u2, u3)
 * becomes (u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3). */
void NN_ISA_FN(wino_dw_output)(int64_t n, const float *u, int64_t ldxi, float *part,
                               int64_t ldtap)
{
    const vf half = (vf){0} + 0.5f;
    for (int64_t i = 0; i < n; i += LANES) {
        vf t[4][3];
        for (int a = 0; a < 4; a++) {
            const float *ua = u + 4 * a * ldxi + i;
            const vf u0 = load(ua), u1 = load(ua + ldxi), u2 = load(ua + 2 * ldxi);
            const vf u3 = load(ua + 3 * ldxi), h = half * (u1 + u2);
            t[a][0] = u0 + h;
            t[a][1] = half * (u1 - u2);
            t[a][2] = h + u3;
        }
        for (int j = 0; j < 3; j++) {
            const vf h = half * (t[1][j] + t[2][j]);
            store(part + j * ldtap + i, t[0][j] + h);
            store(part + (3 + j) * ldtap + i, half * (t[1][j] - t[2][j]));
            store(part + (6 + j) * ldtap + i, h + t[3][j]);
        }
    }
}
