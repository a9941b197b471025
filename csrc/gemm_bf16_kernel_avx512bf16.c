/* The AVX512_BF16 micro-kernel: a 6 x 64 tile of C in 24 zmm accumulators;
 * per depth pair, 4 zmm of packed B (64 columns x 2 bf16), one broadcast
 * dword (a pair of bf16) of A per row and 24 vdpbf16ps, each 32 multiply-adds
 * (twice a float32 FMA's). Compiled only into this file's object, with
 * -mavx512bf16 and the avx512 set (CMakeLists.txt), and called only when the
 * CPU has AVX512_BF16 (gemm_bf16.c). B is zero-padded to whole strips, so
 * only C and bias are masked at the last strip. The packing routines (at the
 * end) convert with vcvtne2ps2bf16. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "dispatch.h"
#include "gemm_bf16.h"

#define NN_INLINE static inline __attribute__((always_inline))
#define NN_UNROLL _Pragma("GCC unroll 16")
#define MR NN_BF16_MR
#define NR NN_BF16_NR
#define NV 4  /* vectors per strip */
#define VL 16 /* floats per vector */
#define PF_PAIRS 8

NN_INLINE __m512 act_vec(__m512 x, int act)
{
    return act == NN_ACT_RELU ? _mm512_max_ps(_mm512_setzero_ps(), x) : x;
}

/* R rows x V vectors of C; the last vector masked to `ncols` - (V-1)*VL
 * columns when `masked`. R, V, masked are constants at every call site. */
NN_INLINE void tile(const int R, const int V, const int masked, const nn_bf16_args *g,
                    const uint16_t *b, float *c, const float *bias, int64_t ncols)
{
    __m512 acc[MR][NV];
    const __mmask16 mask = masked ? (__mmask16)((1u << (ncols - (V - 1) * VL)) - 1u)
                                  : (__mmask16)0xffff;
    NN_UNROLL
    for (int i = 0; i < R; i++)
        NN_UNROLL
        for (int v = 0; v < V; v++)
            acc[i][v] = _mm512_setzero_ps();
    const uint16_t *a = g->a;
    const int64_t kp = g->kp;
    for (int64_t q = 0; q < kp; q++, a += MR * 2, b += NR * 2) {
        __m512i bv[NV];
        if (q + PF_PAIRS < kp)
            NN_UNROLL
            for (int v = 0; v < V; v++)
                _mm_prefetch((const char *)(b + PF_PAIRS * NR * 2 + v * 2 * VL), _MM_HINT_T0);
        NN_UNROLL
        for (int v = 0; v < V; v++)
            bv[v] = _mm512_loadu_si512((const void *)(b + v * 2 * VL));
        NN_UNROLL
        for (int i = 0; i < R; i++) {
            int32_t pair;
            memcpy(&pair, a + 2 * i, sizeof pair);
            const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
            NN_UNROLL
            for (int v = 0; v < V; v++)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, (__m512bh)bv[v]);
        }
    }
    const __m512 valpha = _mm512_set1_ps(g->alpha), vbeta = _mm512_set1_ps(g->beta);
    NN_UNROLL
    for (int i = 0; i < R; i++) {
        float *ci = c + i * g->ldc;
        NN_UNROLL
        for (int v = 0; v < V; v++) {
            const __mmask16 m = masked && v == V - 1 ? mask : (__mmask16)0xffff;
            __m512 x = _mm512_mul_ps(acc[i][v], valpha);
            if (g->beta != 0.0f)
                x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, ci + v * VL), vbeta, x);
            if (bias)
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + v * VL));
            _mm512_mask_storeu_ps(ci + v * VL, m, act_vec(x, g->act));
        }
    }
}

#define NN_ROWS(R) \
    static void rows_##R(const nn_bf16_args *g) \
    { \
        const int64_t strip = g->kp * NR * 2; \
        const uint16_t *b = g->b; \
        int64_t j = 0; \
        for (; j + NR <= g->n; j += NR, b += strip) \
            tile(R, NV, 0, g, b, g->c + j, g->bias ? g->bias + j : NULL, NR); \
        const int64_t rem = g->n - j; \
        const float *bias = g->bias ? g->bias + j : NULL; \
        switch ((rem + VL - 1) / VL) { \
        case 1: tile(R, 1, 1, g, b, g->c + j, bias, rem); break; \
        case 2: tile(R, 2, 1, g, b, g->c + j, bias, rem); break; \
        case 3: tile(R, 3, 1, g, b, g->c + j, bias, rem); break; \
        case 4: tile(R, 4, 1, g, b, g->c + j, bias, rem); break; \
        default: break; \
        } \
    }
NN_ROWS(1)
NN_ROWS(2)
NN_ROWS(3)
NN_ROWS(4)
NN_ROWS(5)
NN_ROWS(6)

void nn_gemm_bf16_block_avx512bf16(const nn_bf16_args *g)
{
    switch (g->m) {
    case 1: rows_1(g); break;
    case 2: rows_2(g); break;
    case 3: rows_3(g); break;
    case 4: rows_4(g); break;
    case 5: rows_5(g); break;
    case 6: rows_6(g); break;
    default: break;
    }
}

/* Packing with vcvtne2ps2bf16, whose rounding (nearest even, denormals to
 * zero, NaNs quieted) is nn_bf16_round's bit for bit. Masked-off lanes load
 * as zero and convert to the zero padding. */

/* The first n lanes (n may be <= 0 or >= 16). */
NN_INLINE __mmask16 lanes(int64_t n)
{
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

/* Pairs (x0[j], x1[j]) of 16 columns, as 16 dwords. */
NN_INLINE __m512i interleave_pairs(__m512 x0, __m512 x1)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17,
                                         1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

/* Depth [p0, p0 + 32) of one contiguous row (kc long) as 16 pair dwords
 * (pairs beyond kc are zero). */
NN_INLINE __m512i row_chunk(const float *src, int64_t p0, int64_t kc)
{
    const __m512 lo = _mm512_maskz_loadu_ps(lanes(kc - p0), src + p0);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes(kc - p0 - 16), src + p0 + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* The pairs of depth [p0, p0 + 32) that lie within kc (rounded up to a pair). */
NN_INLINE int64_t chunk_pairs(int64_t p0, int64_t kc)
{
    return (kc - p0 + 1) / 2 < 16 ? (kc - p0 + 1) / 2 : 16;
}

/* The 8 x 16 dword transpose: column c (dword c of every r[i]) as out[c],
 * 8 dwords. Pairs of dwords, then pairs of qwords, within 128-bit lanes;
 * then one two-source qword permute per two columns. */
NN_INLINE void transpose_8x16(const __m512i r[8], __m256i out[16])
{
    __m512i t[8], u[8];
    NN_UNROLL
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);     /* lane L: cols 4L, 4L+1 */
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]); /* lane L: cols 4L+2, 4L+3 */
    }
    NN_UNROLL
    for (int h = 0; h < 8; h += 4) { /* rows 0-3, then 4-7: lane L of u[h + j] is col 4L+j */
        u[h] = _mm512_unpacklo_epi64(t[h], t[h + 2]);
        u[h + 1] = _mm512_unpackhi_epi64(t[h], t[h + 2]);
        u[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]);
        u[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]);
    }
    const __m512i cols_0_1 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i cols_2_3 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    NN_UNROLL
    for (int j = 0; j < 4; j++) {
        const __m512i x = _mm512_permutex2var_epi64(u[j], cols_0_1, u[4 + j]);
        const __m512i y = _mm512_permutex2var_epi64(u[j], cols_2_3, u[4 + j]);
        out[j] = _mm512_castsi512_si256(x);
        out[4 + j] = _mm512_extracti64x4_epi64(x, 1);
        out[8 + j] = _mm512_castsi512_si256(y);
        out[12 + j] = _mm512_extracti64x4_epi64(y, 1);
    }
}

void nn_bf16_pack_a_avx512bf16(const float *a, int64_t lda, int trans, int64_t h, int64_t kc,
                               uint16_t *dst)
{
    uint32_t *d = (uint32_t *)(void *)dst;
    if (trans) {
        const __mmask16 rows = lanes(h);
        for (int64_t q = 0; 2 * q < kc; q++) {
            const __m512 x0 = _mm512_maskz_loadu_ps(rows, a + 2 * q * lda);
            const __m512 x1 = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(rows, a + (2 * q + 1) * lda)
                                             : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(d + q * MR, rows, interleave_pairs(x0, x1));
        }
        return;
    }
    /* 32 deep at a time: the h rows' pairs (rows up to 8 zero), transposed;
     * pair column c's MR dwords go to d + c * MR. Each store writes 8 dwords
     * and the next one overwrites the 2 extra (rows 6, 7); the chunk's last
     * store is masked to MR, so nothing is written past the panel. */
    _Static_assert(MR <= 8, "the A panel is packed through an 8-row transpose");
    for (int64_t p0 = 0; p0 < kc; p0 += 32) {
        __m512i r[8];
        NN_UNROLL
        for (int i = 0; i < 8; i++)
            r[i] = i < MR && i < h ? row_chunk(a + i * lda, p0, kc) : _mm512_setzero_si512();
        __m256i col[16];
        transpose_8x16(r, col);
        const int64_t pairs = chunk_pairs(p0, kc);
        uint32_t *dc = d + p0 / 2 * MR;
        for (int64_t c = 0; c + 1 < pairs; c++)
            _mm256_storeu_si256((__m256i *)(void *)(dc + c * MR), col[c]);
        _mm256_mask_storeu_epi32(dc + (pairs - 1) * MR, (__mmask8)((1u << MR) - 1u),
                                 col[pairs - 1]);
    }
}

void nn_bf16_pack_b_avx512bf16(const float *b, int64_t ldb, int trans, int64_t w, int64_t kc,
                               uint16_t *dst)
{
    const int64_t kp = (kc + 1) / 2;
    for (int64_t s = 0; s < w; s += NR, dst += kp * NR * 2) {
        uint32_t *d = (uint32_t *)(void *)dst;
        const int64_t cols = w - s < NR ? w - s : NR;
        if (trans) {
            /* 8 columns (rows of the stored B^T) x 32 deep at a time,
             * transposed: pair column c's 8 dwords go to d + c * NR + j0. */
            for (int64_t j0 = 0; j0 < NR; j0 += 8)
                for (int64_t p0 = 0; p0 < kc; p0 += 32) {
                    __m512i r[8];
                    NN_UNROLL
                    for (int i = 0; i < 8; i++)
                        r[i] = j0 + i < cols ? row_chunk(b + (s + j0 + i) * ldb, p0, kc)
                                             : _mm512_setzero_si512();
                    __m256i col[16];
                    transpose_8x16(r, col);
                    const int64_t pairs = chunk_pairs(p0, kc);
                    for (int64_t c = 0; c < pairs; c++)
                        _mm256_storeu_si256((__m256i *)(void *)(d + (p0 / 2 + c) * NR + j0),
                                            col[c]);
                }
            continue;
        }
        for (int64_t q = 0; q < kp; q++) {
            const float *r0 = b + 2 * q * ldb + s, *r1 = r0 + ldb;
            const int odd = 2 * q + 1 < kc;
            NN_UNROLL
            for (int v = 0; v < NV; v++) {
                const __mmask16 m = lanes(cols - v * VL);
                const __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + v * VL);
                const __m512 x1 =
                    odd ? _mm512_maskz_loadu_ps(m, r1 + v * VL) : _mm512_setzero_ps();
                _mm512_storeu_si512((void *)(d + q * NR + v * VL), interleave_pairs(x0, x1));
            }
        }
    }
}
