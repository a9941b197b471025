/* The Winograd F(2x2, 3x3) transform loops (winograd.h), compiled once per
 * ISA (dispatch.h): the flat loops over tiles (input) and channels
 * (output) vectorise with each ISA's flags. Adds and subtractions only
 * (and the output's bias and activation), the same operations per value on
 * every ISA. */
#include <string.h>

#include "dispatch.h"
#include "winograd.h"

#if defined(__AVX512F__)
#include <immintrin.h>

/* The lanes l of 16 whose column t0 + l lies in [0, w). */
static inline __mmask16 inside(int64_t t0, int64_t w)
{
    const int64_t a = t0 < 0 ? -t0 : 0, b = w - t0 > 16 ? 16 : w - t0;
    return b <= a ? 0 : (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
}

/* nn_wino_input_tiles's sums in the same order on 16 lanes: V = B^T d B of
 * the 4x4 d, its position xi into the lanes st of out + xi ldv. */
static inline void input_sums(__m512 d[4][4], float *out, int64_t ldv, __mmask16 st)
{
    __m512 s[4][4]; /* B^T d: the rows */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        s[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
        s[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
        s[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
        s[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* (B^T d) B: the columns */
        _mm512_mask_storeu_ps(out + (4 * i) * ldv, st, _mm512_sub_ps(s[i][0], s[i][2]));
        _mm512_mask_storeu_ps(out + (4 * i + 1) * ldv, st, _mm512_add_ps(s[i][1], s[i][2]));
        _mm512_mask_storeu_ps(out + (4 * i + 2) * ldv, st, _mm512_sub_ps(s[i][2], s[i][1]));
        _mm512_mask_storeu_ps(out + (4 * i + 3) * ldv, st, _mm512_sub_ps(s[i][1], s[i][3]));
    }
}

/* Straight from the plane, 16 tiles at a time: per input row, masked loads
 * of the columns the tiles read (zeros outside the image; masked-off lanes
 * are never read), split by vpermt2ps into the columns 2q + j of each tile,
 * then nn_wino_input_tiles's sums in the same order. Rows of at most 8
 * tiles (planes up to 16 wide) go two tile rows per vector: lanes [0, tw)
 * from the first, [tw, 2 tw) from the second (the split's indices pick
 * them), so the lanes come out in V's order and half of them are not idle
 * on a 14x14 plane. */
void NN_ISA_FN(wino_input)(const float *xc, int64_t h, int64_t w, int64_t ph, int64_t pw,
                           int64_t r0, int64_t rows, int64_t tw, float *v, int64_t ldv,
                           float *scratch)
{
    const int pair = tw <= 8;
    int32_t ie[16], io[16];
    /* lane l's column 2q in the first (lo) or the second (hi) source */
    for (int l = 0; l < 16; l++) {
        ie[l] = !pair ? 2 * l : l < tw ? 2 * l : l < 2 * tw ? 16 + 2 * (l - (int)tw) : 0;
        io[l] = ie[l] + 1;
    }
    const __m512i even = _mm512_loadu_si512(ie), odd = _mm512_loadu_si512(io);
    for (int64_t q0 = 0; q0 < tw; q0 += 16) {
        const int64_t cb = 2 * q0 - pw; /* the column of tile q0's j = 0 */
        /* the columns inside the image, per source (pair: the second source
         * is the next tile row's input row, the same columns) */
        const __mmask16 c_lo = inside(cb, w), c_lo2 = inside(cb + 2, w);
        const __mmask16 c_hi = pair ? c_lo : inside(cb + 16, w);
        const __mmask16 c_hi2 = pair ? c_lo2 : inside(cb + 18, w);
        const int64_t hi_off = pair ? 2 * w : 16;
        for (int64_t r = 0; r < rows; r += 1 + pair) {
            const int two = pair && r + 1 < rows;
            __m512 d[4][4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const int64_t row = 2 * (r0 + r) - ph + i, row_hi = pair ? row + 2 : row;
                const __mmask16 ma = row >= 0 && row < h ? 0xffff : 0;
                const __mmask16 mb = (!pair || two) && row_hi >= 0 && row_hi < h ? 0xffff : 0;
                const float *p = xc + row * w + cb;
                const __m512 lo = _mm512_maskz_loadu_ps(ma & c_lo, p);
                const __m512 hi = _mm512_maskz_loadu_ps(mb & c_hi, p + hi_off);
                const __m512 lo2 = _mm512_maskz_loadu_ps(ma & c_lo2, p + 2);
                const __m512 hi2 = _mm512_maskz_loadu_ps(mb & c_hi2, p + hi_off + 2);
                d[i][0] = _mm512_permutex2var_ps(lo, even, hi);
                d[i][1] = _mm512_permutex2var_ps(lo, odd, hi);
                d[i][2] = _mm512_permutex2var_ps(lo2, even, hi2);
                d[i][3] = _mm512_permutex2var_ps(lo2, odd, hi2);
            }
            const int64_t lanes = pair ? (1 + two) * tw : tw - q0 >= 16 ? 16 : tw - q0;
            input_sums(d, v + r * tw + q0, ldv, (__mmask16)((1u << lanes) - 1u));
        }
    }
}
#else
/* The tiles' 4x4 input blocks gathered into 16 arrays (scratch: value (i,
 * j) of tile f at scratch[(4 i + j) len + f], zeros outside the image),
 * then nn_wino_input_tiles in one flat loop over them. */
void NN_ISA_FN(wino_input)(const float *xc, int64_t h, int64_t w, int64_t ph, int64_t pw,
                           int64_t r0, int64_t rows, int64_t tw, float *v, int64_t ldv,
                           float *scratch)
{
    const int64_t len = rows * tw;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t row = 2 * (r0 + r) - ph + i;
            const float *src = xc + row * w;
            for (int64_t j = 0; j < 4; j++) {
                float *dst = scratch + (4 * i + j) * len + r * tw;
                for (int64_t q = 0; q < tw; q++) {
                    const int64_t col = 2 * q - pw + j;
                    dst[q] = row >= 0 && row < h && col >= 0 && col < w ? src[col] : 0.0f;
                }
            }
        }
    nn_wino_input_tiles(len, scratch, len, v, ldv);
}
#endif

void NN_ISA_FN(wino_weights)(int64_t kn, int64_t c, const float *w, int64_t ldk, int64_t ldc,
                             int flip, const float *scale, float *u, int64_t ldu, int64_t ldcu)
{
    float g[9][16], s[16];
    for (int64_t l = 0; l < 16; l++)
        s[l] = l < kn ? (scale ? scale[l] : 1.0f) : 0.0f;
    for (int64_t ci = 0; ci < c; ci++) {
        /* the 16 kernels (zeros past kn), rotated by 180 degrees with flip */
        for (int i = 0; i < 9; i++)
            for (int64_t l = 0; l < 16; l++)
                g[i][l] = l < kn ? w[l * ldk + ci * ldc + (flip ? 8 - i : i)] : 0.0f;
        nn_wino_weight_lanes((const float(*)[16])g, s, u + ci * ldcu, ldu);
    }
}

#if defined(__AVX512F__)
/* nn_wino_output_tile's sums in the same order, 16 channels per vector
 * (the last block masked), for each tile of the row. */
void NN_ISA_FN(wino_output)(int64_t tw, int64_t k, const float *m, int64_t ldm, int64_t ldt,
                            const float *bias, int act, float *y0, float *y1, int64_t ldk)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < k; k0 += 16) {
        const __mmask16 km = k - k0 >= 16 ? (__mmask16)0xffff
                                          : (__mmask16)((1u << (k - k0)) - 1u);
        const __m512 b = _mm512_maskz_loadu_ps(km, bias + k0);
        for (int64_t q = 0; q < tw; q++) {
            const float *mq = m + q * ldt + k0;
            __m512 x[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                x[i] = _mm512_maskz_loadu_ps(km, mq + i * ldm);
            __m512 r0[4], r1[4]; /* A^T m: the rows */
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                r0[j] = _mm512_add_ps(_mm512_add_ps(x[j], x[4 + j]), x[8 + j]);
                r1[j] = _mm512_sub_ps(_mm512_sub_ps(x[4 + j], x[8 + j]), x[12 + j]);
            }
            /* (A^T m) A: the columns, the bias, the activation */
            __m512 o[4] = {
                _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r0[0], r0[1]), r0[2]), b),
                _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r0[1], r0[2]), r0[3]), b),
                _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r1[0], r1[1]), r1[2]), b),
                _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r1[1], r1[2]), r1[3]), b)};
            if (act == NN_ACT_RELU)
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++)
                    o[i] = _mm512_max_ps(zero, o[i]); /* NaN propagates, as act_vec */
            float *a = y0 + 2 * q * ldk + k0, *c = y1 + 2 * q * ldk + k0;
            _mm512_mask_storeu_ps(a, km, o[0]);
            _mm512_mask_storeu_ps(a + ldk, km, o[1]);
            _mm512_mask_storeu_ps(c, km, o[2]);
            _mm512_mask_storeu_ps(c + ldk, km, o[3]);
        }
    }
}
#else
void NN_ISA_FN(wino_output)(int64_t tw, int64_t k, const float *m, int64_t ldm, int64_t ldt,
                            const float *bias, int act, float *y0, float *y1, int64_t ldk)
{
    /* one loop per activation: the tile function's loop then has none */
    for (int64_t q = 0; q < tw; q++) {
        float *a = y0 + 2 * q * ldk, *b = y1 + 2 * q * ldk;
        if (act == NN_ACT_RELU)
            nn_wino_output_tile(k, m + q * ldt, ldm, bias, NN_ACT_RELU, a, b, ldk);
        else
            nn_wino_output_tile(k, m + q * ldt, ldm, bias, NN_ACT_NONE, a, b, ldk);
    }
}
#endif

#if defined(__AVX512F__)
/* Per tile and block of 16 channels, the tile's 4x4 input pixels as 16
 * vectors of channels (zeros outside the image), then wino_input's sums:
 * the same values, with channels where wino_input has tiles. */
void NN_ISA_FN(wino_input_blocked)(const float *xb, int64_t c, int64_t h, int64_t w,
                                   int64_t ph, int64_t pw, int64_t r0, int64_t rows, int64_t tw,
                                   float *v, int64_t ldv)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t b = 0; b < c / 16; b++) {
        const float *xc = xb + b * h * w * 16;
        for (int64_t r = 0; r < rows; r++) {
            int64_t row[4];
            for (int i = 0; i < 4; i++)
                row[i] = 2 * (r0 + r) - ph + i;
            for (int64_t q = 0; q < tw; q++) {
                __m512 d[4][4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
                    for (int j = 0; j < 4; j++) {
                        const int64_t col = 2 * q - pw + j;
                        d[i][j] = row[i] >= 0 && row[i] < h && col >= 0 && col < w
                                      ? _mm512_loadu_ps(xc + (row[i] * w + col) * 16)
                                      : zero;
                    }
                input_sums(d, v + (r * tw + q) * c + b * 16, ldv, 0xffff);
            }
        }
    }
}
#else
/* Per tile and block of 16 channels, the tile's 4x4 input pixels (16
 * vectors of channels; zeros outside the image) gathered into d, then
 * nn_wino_input_tiles over the 16 lanes: the sums of wino_input, so the
 * same values, with channels where wino_input has tiles. */
void NN_ISA_FN(wino_input_blocked)(const float *xb, int64_t c, int64_t h, int64_t w,
                                   int64_t ph, int64_t pw, int64_t r0, int64_t rows, int64_t tw,
                                   float *v, int64_t ldv)
{
    float d[16][16];
    for (int64_t b = 0; b < c / 16; b++) {
        const float *xc = xb + b * h * w * 16;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < tw; q++) {
                for (int64_t i = 0; i < 4; i++) {
                    const int64_t row = 2 * (r0 + r) - ph + i;
                    for (int64_t j = 0; j < 4; j++) {
                        const int64_t col = 2 * q - pw + j;
                        if (row >= 0 && row < h && col >= 0 && col < w)
                            memcpy(d[4 * i + j], xc + (row * w + col) * 16, sizeof d[0]);
                        else
                            memset(d[4 * i + j], 0, sizeof d[0]);
                    }
                }
                nn_wino_input_tiles(16, &d[0][0], 16, v + (r * tw + q) * c + b * 16, ldv);
            }
    }
}
#endif
