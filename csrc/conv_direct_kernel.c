/* The direct convolution's register tile (conv_direct.c lays out the data
 * for it), compiled once per ISA (see dispatch.h).
 *
 * Output channels run along the vector lanes, in blocks of 16 (one zmm, two
 * ymm), and output pixels along the tile's rows: a tile is r consecutive
 * pixels of one output row times v blocks of 16 channels,
 *
 *   y[i*ldy + j] = act(bias[j] + sum over t < k of x[koff[t] + i] * w[t*ldw + j])
 *
 * for i < r, j < 16 v (or, with rh = 3, for three rows of r = 3 pixels:
 * pixel (a, i) at x[koff[t] + a*ldx2 + i], output row 3a + i). x is the
 * tile's first pixel in the caller's padded,
 * phase-split input (so every tap t is one constant offset koff[t] and the
 * pixels of a row are unit stride), w the packed weights (one row of 16 v
 * channels per tap). Per tap: v weight vectors loaded, r input values
 * broadcast (an FMA memory operand on AVX-512), r v FMAs: the input is read
 * in place, no im2col.
 *
 * Each output is summed over t = 0..k-1 in order by one FMA chain (from 0,
 * or with beta from the value in y: a sum continued across calls), then the
 * bias is added and the activation applied: the bits do not depend on r, v or
 * which tile an output falls in, hence not on the thread count. */
#include <stddef.h>
#include <string.h>

#include "dispatch.h"

/* conv_split_rows in plain loops: each phase's valid columns [qlo, qhi)
 * copied, zeros before and after. */
static void split_rows_scalar(int64_t rows, int64_t s, int64_t wq, const float *src,
                              int64_t lds, int64_t lo, int64_t hi, float *dst, int64_t ldd,
                              int64_t ldp)
{
    for (int64_t b = 0; b < s; b++) {
        /* q s + b in [lo, hi) for q in [qlo, qhi) */
        int64_t qlo = lo - b <= 0 ? 0 : (lo - b + s - 1) / s;
        int64_t qhi = hi - b <= 0 ? 0 : (hi - b + s - 1) / s;
        qlo = qlo < wq ? qlo : wq;
        qhi = qhi < qlo ? qlo : qhi < wq ? qhi : wq;
        for (int64_t r = 0; r < rows; r++) {
            const float *sr = src + r * lds + b;
            float *d = dst + r * ldd + b * ldp;
            for (int64_t q = 0; q < qlo; q++)
                d[q] = 0.0f;
            for (int64_t q = qlo; q < qhi; q++)
                d[q] = sr[q * s];
            for (int64_t q = qhi; q < wq; q++)
                d[q] = 0.0f;
        }
    }
}

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

#define NN_INLINE static inline __attribute__((always_inline))
#define NN_UNROLL _Pragma("GCC unroll 32")

#if defined(__AVX512F__)
/* 32 zmm: up to 28 accumulators, v + the broadcast in the rest */
#define VL 16
#define VMAX 4
#define ACCS 28
typedef __m512 vf;
#define v_zero() _mm512_setzero_ps()
#define v_set1(x) _mm512_set1_ps(x)
#define v_load(p) _mm512_loadu_ps(p)
#define v_store(p, x) _mm512_storeu_ps((p), (x))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define v_add(a, b) _mm512_add_ps((a), (b))
#define v_max(a, b) _mm512_max_ps((a), (b))
#else
/* 16 ymm: 12 accumulators, the 2 v weight vectors and the broadcast */
#define VL 8
#define VMAX 2
#define ACCS 12
typedef __m256 vf;
#define v_zero() _mm256_setzero_ps()
#define v_set1(x) _mm256_set1_ps(x)
#define v_load(p) _mm256_loadu_ps(p)
#define v_store(p, x) _mm256_storeu_ps((p), (x))
#define v_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define v_add(a, b) _mm256_add_ps((a), (b))
#define v_max(a, b) _mm256_max_ps((a), (b))
#endif

#define NVB (16 / VL) /* hardware vectors per block of 16 channels */

/* k taps from koff and *wp into the accumulators of pixels [LO, HI) of
 * each of the RH rows (constants at every call site: the accumulators stay
 * in registers); *wp advances past the taps' weights. */
NN_INLINE void dtaps(const int RH, const int R, const int V, const int LO, const int HI,
                     int64_t k, const int64_t *koff, const float *x, const float **wp,
                     int64_t ldw, int64_t ldx2, vf *acc)
{
    /* three rows (rh = 3): LO and HI bound the rows, every pixel of them */
    const int A0 = RH == 1 ? 0 : LO, A1 = RH == 1 ? 1 : HI;
    const int I0 = RH == 1 ? LO : 0, I1 = RH == 1 ? HI : R;
    const int NA = V * NVB;
    const float *w = *wp;
    for (int64_t p = 0; p < k; p++, w += ldw) {
        const float *xs = x + koff[p];
        vf wv[VMAX * NVB];
        NN_UNROLL
        for (int v = 0; v < NA; v++)
            wv[v] = v_load(w + v * VL);
        NN_UNROLL
        for (int a = A0; a < A1; a++)
            NN_UNROLL
            for (int i = I0; i < I1; i++) {
                const vf xv = v_set1(xs[a * ldx2 + i]);
                NN_UNROLL
                for (int v = 0; v < NA; v++)
                    acc[(a * R + i) * NA + v] = v_fma(xv, wv[v], acc[(a * R + i) * NA + v]);
            }
    }
    *wp = w;
}

/* RH rows of R pixels x V blocks, all constants at every call site (so
 * the accumulators live in registers); pixel (a, i) reads x[koff[p] +
 * a*ldx2 + i] and writes row a*R + i of y. With segments, each runs its
 * taps over the pixels (one row) or rows (three) its skip bits leave. */
NN_INLINE void dtile(const int RH, const int R, const int V, const nn_conv_tile *t)
{
    const int NA = V * NVB; /* accumulators per pixel */
    vf acc[ACCS];
    NN_UNROLL
    for (int i = 0; i < RH * R; i++)
        NN_UNROLL
        for (int v = 0; v < NA; v++)
            acc[i * NA + v] = t->beta ? v_load(t->y + i * t->ldy + v * VL) : v_zero();
    const float *x = t->x, *w = t->w;
    const int64_t *koff = t->koff, ldw = t->ldw, ldx2 = t->ldx2;
    /* pixels (one row) or rows (three) */
    const int N = RH == 1 ? R : RH;
    if (t->nseg == 0) {
        dtaps(RH, R, V, 0, N, t->k, koff, x, &w, ldw, ldx2, acc);
    } else {
        for (int s = 0; s < t->nseg; s++) {
            const int64_t k = t->seg[s].k;
            switch (t->seg[s].skip) {
            case 0: dtaps(RH, R, V, 0, N, k, koff, x, &w, ldw, ldx2, acc); break;
            case 1: dtaps(RH, R, V, 1, N, k, koff, x, &w, ldw, ldx2, acc); break;
            case 2: dtaps(RH, R, V, 0, N - 1, k, koff, x, &w, ldw, ldx2, acc); break;
            default: dtaps(RH, R, V, 1, N - 1, k, koff, x, &w, ldw, ldx2, acc); break;
            }
            koff += k;
        }
    }
    NN_UNROLL
    for (int i = 0; i < RH * R; i++) {
        float *y = t->y + i * t->ldy;
        NN_UNROLL
        for (int v = 0; v < NA; v++) {
            vf r = acc[i * NA + v];
            if (t->bias)
                r = v_add(r, v_load(t->bias + v * VL));
            if (t->act == NN_ACT_RELU)
                r = v_max(v_zero(), r); /* max(0, NaN) is NaN, as the GEMM epilogue */
            v_store(y + v * VL, r);
        }
    }
}

void NN_ISA_FN(conv_direct_tile)(const nn_conv_tile *t)
{
#if defined(__AVX512F__)
    if (t->rh == 3) { /* three rows of three: a 3x3 kernel's taps (weight gradient) */
        switch (t->v) {
        case 1: dtile(3, 3, 1, t); return;
        case 2: dtile(3, 3, 2, t); return;
        case 3: dtile(3, 3, 3, t); return;
        default: return;
        }
    }
    switch (t->v * 32 + t->r) {
#define RV(R, V) case (V) * 32 + (R): dtile(1, R, V, t); return;
#define RV7(V, b) RV(b + 1, V) RV(b + 2, V) RV(b + 3, V) RV(b + 4, V) RV(b + 5, V) \
    RV(b + 6, V) RV(b + 7, V)
    RV7(1, 0) RV7(1, 7) RV7(1, 14) RV7(1, 21)
    RV7(2, 0) RV7(2, 7)
    RV7(3, 0) RV(8, 3) RV(9, 3)
    RV7(4, 0)
    default: return;
    }
#else
    switch (t->v * 32 + t->r) {
#define RV(R, V) case (V) * 32 + (R): dtile(1, R, V, t); return;
    RV(1, 1) RV(2, 1) RV(3, 1) RV(4, 1) RV(5, 1) RV(6, 1)
    RV(1, 2) RV(2, 2) RV(3, 2)
    default: return;
    }
#endif
}

#if defined(__AVX512F__)
/* dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols (each <= 16): one
 * 16 x 16 block through registers (rows past `rows` read as zeros, columns
 * past `cols` not stored). With res (a constant NULL where there is none):
 * act(that + res[c*ldd + r]). */
NN_INLINE void transpose_block(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd, const float *res, int act)
{
    const __mmask16 cm = (__mmask16)((1u << cols) - 1u), rm = (__mmask16)((1u << rows) - 1u);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * lds) : _mm512_setzero_ps();
    /* 4 stages: pairs of rows interleave 1, 2, 4, then 8 floats at a time */
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]),
                                                   _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]),
                                                       _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]),
                                                       _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]),
                                                       _mm512_castps_pd(t[i + 3])));
    }
    /* r[4a + b] holds, in each 128-bit lane l, column 4l + b of rows 4a..4a+3 */
    for (int b = 0; b < 4; b++) {
        const __m512 a0 = r[b], a1 = r[4 + b], a2 = r[8 + b], a3 = r[12 + b];
        const __m512 lo01 = _mm512_shuffle_f32x4(a0, a1, 0x44), hi01 = _mm512_shuffle_f32x4(a0, a1, 0xee);
        const __m512 lo23 = _mm512_shuffle_f32x4(a2, a3, 0x44), hi23 = _mm512_shuffle_f32x4(a2, a3, 0xee);
        t[b] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);      /* column b */
        t[4 + b] = _mm512_shuffle_f32x4(lo01, lo23, 0xdd);  /* column 4 + b */
        t[8 + b] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);  /* column 8 + b */
        t[12 + b] = _mm512_shuffle_f32x4(hi01, hi23, 0xdd); /* column 12 + b */
    }
    for (int c = 0; c < cols; c++) {
        if (res) {
            t[c] = _mm512_add_ps(t[c], _mm512_maskz_loadu_ps(rm, res + c * ldd));
            if (act == NN_ACT_RELU)
                t[c] = _mm512_max_ps(_mm512_setzero_ps(), t[c]); /* NaN propagates */
        }
        _mm512_mask_storeu_ps(dst + c * ldd, rm, t[c]);
    }
}
#define TB 16
#else
/* The same in 8 x 8 blocks of ymm. */
NN_INLINE void transpose_block(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd, const float *res, int act)
{
    if (rows < 8 || cols < 8) {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < cols; c++)
                dst[c * ldd + i] = res ? nn_act_scalar(src[i * lds + c] + res[c * ldd + i], act)
                                       : src[i * lds + c];
        return;
    }
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    /* r[4a + b]: in each 128-bit half h, column 4h + b of rows 4a..4a+3 */
    for (int b = 0; b < 4; b++) {
        t[b] = _mm256_permute2f128_ps(r[b], r[4 + b], 0x20);
        t[4 + b] = _mm256_permute2f128_ps(r[b], r[4 + b], 0x31);
    }
    for (int c = 0; c < 8; c++) {
        if (res) {
            t[c] = _mm256_add_ps(t[c], _mm256_loadu_ps(res + c * ldd));
            if (act == NN_ACT_RELU)
                t[c] = _mm256_max_ps(_mm256_setzero_ps(), t[c]); /* NaN propagates */
        }
        _mm256_storeu_ps(dst + c * ldd, t[c]);
    }
}
#define TB 8
#endif

void NN_ISA_FN(conv_transpose)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd)
{
    for (int64_t i = 0; i < rows; i += TB)
        for (int64_t c = 0; c < cols; c += TB)
            transpose_block(rows - i < TB ? rows - i : TB, cols - c < TB ? cols - c : TB,
                            src + i * lds + c, lds, dst + c * ldd + i, ldd, NULL, NN_ACT_NONE);
}

void NN_ISA_FN(conv_transpose_res)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                                   float *dst, int64_t ldd, const float *res, int act)
{
    for (int64_t i = 0; i < rows; i += TB)
        for (int64_t c = 0; c < cols; c += TB)
            transpose_block(rows - i < TB ? rows - i : TB, cols - c < TB ? cols - c : TB,
                            src + i * lds + c, lds, dst + c * ldd + i, ldd,
                            res + c * ldd + i, act);
}

#if defined(__AVX512F__)
/* Lanes [lo, hi) of the 16 from t0, as a mask. */
static inline __mmask16 range_mask(int64_t t0, int64_t lo, int64_t hi)
{
    const int64_t a = lo - t0 < 0 ? 0 : lo - t0, b = hi - t0 > 16 ? 16 : hi - t0;
    return b <= a ? 0 : (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
}

/* Masked loads read the valid part of each source row (zeros elsewhere:
 * the padding), vpermt2ps splits 32 floats into the 16 even and 16 odd
 * columns; the masks depend on the column block only, so they are made
 * once per block for all rows. */
void NN_ISA_FN(conv_split_rows)(int64_t rows, int64_t s, int64_t wq, const float *src,
                                int64_t lds, int64_t lo, int64_t hi, float *dst, int64_t ldd,
                                int64_t ldp)
{
    if (s > 2) {
        split_rows_scalar(rows, s, wq, src, lds, lo, hi, dst, ldd, ldp);
        return;
    }
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t q0 = 0; q0 < wq; q0 += 16) {
        const __mmask16 st = range_mask(q0, 0, wq);
        if (s == 1) {
            const __mmask16 m = range_mask(q0, lo, hi);
            for (int64_t r = 0; r < rows; r++)
                _mm512_mask_storeu_ps(dst + r * ldd + q0, st,
                                      _mm512_maskz_loadu_ps(m, src + r * lds + q0));
            continue;
        }
        const int64_t t0 = 2 * q0;
        const __mmask16 m0 = range_mask(t0, lo, hi), m1 = range_mask(t0 + 16, lo, hi);
        for (int64_t r = 0; r < rows; r++) {
            const float *sr = src + r * lds + t0;
            const __m512 a = _mm512_maskz_loadu_ps(m0, sr), b = _mm512_maskz_loadu_ps(m1, sr + 16);
            float *d = dst + r * ldd + q0;
            _mm512_mask_storeu_ps(d, st, _mm512_permutex2var_ps(a, even, b));
            _mm512_mask_storeu_ps(d + ldp, st, _mm512_permutex2var_ps(a, odd, b));
        }
    }
}
#else
void NN_ISA_FN(conv_split_rows)(int64_t rows, int64_t s, int64_t wq, const float *src,
                                int64_t lds, int64_t lo, int64_t hi, float *dst, int64_t ldd,
                                int64_t ldp)
{
    split_rows_scalar(rows, s, wq, src, lds, lo, hi, dst, ldd, ldp);
}
#endif

void NN_ISA_FN(conv_direct_limits)(int *vmax, int *rmax, int *v3max)
{
    *vmax = VMAX;
    for (int v = 1; v <= VMAX; v++)
        rmax[v - 1] = ACCS / (v * NVB);
#if defined(__AVX512F__)
    *v3max = 3;
#else
    *v3max = 0;
#endif
}

#else /* the portable kernel: plain loops the compiler vectorises as it can */

#define GR 8 /* pixels per tile, one block of 16 channels */

void NN_ISA_FN(conv_direct_tile)(const nn_conv_tile *t)
{
    float acc[GR][16] = {{0.0f}};
    const int64_t r = t->r;
    if (t->beta)
        for (int64_t i = 0; i < r; i++)
            for (int j = 0; j < 16; j++)
                acc[i][j] = t->y[i * t->ldy + j];
    /* the segments (or all k taps over all r pixels) */
    const int nseg = t->nseg ? t->nseg : 1;
    int64_t p = 0;
    for (int s = 0; s < nseg; s++) {
        const int64_t end = p + (t->nseg ? t->seg[s].k : t->k);
        const int skip = t->nseg ? t->seg[s].skip : 0;
        const int64_t lo = skip & 1, hi = skip & 2 ? r - 1 : r;
        for (; p < end; p++) {
            const float *xs = t->x + t->koff[p], *w = t->w + p * t->ldw;
            for (int64_t i = lo; i < hi; i++)
                for (int j = 0; j < 16; j++)
                    acc[i][j] += xs[i] * w[j];
        }
    }
    for (int64_t i = 0; i < r; i++)
        for (int j = 0; j < 16; j++) {
            float s = acc[i][j];
            if (t->bias)
                s += t->bias[j];
            t->y[i * t->ldy + j] = nn_act_scalar(s, t->act);
        }
}

void NN_ISA_FN(conv_transpose)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd)
{
    for (int64_t c0 = 0; c0 < cols; c0 += 8)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = c0; c < cols && c < c0 + 8; c++)
                dst[c * ldd + i] = src[i * lds + c];
}

void NN_ISA_FN(conv_transpose_res)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                                   float *dst, int64_t ldd, const float *res, int act)
{
    for (int64_t c0 = 0; c0 < cols; c0 += 8)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = c0; c < cols && c < c0 + 8; c++)
                dst[c * ldd + i] = nn_act_scalar(src[i * lds + c] + res[c * ldd + i], act);
}

void NN_ISA_FN(conv_split_rows)(int64_t rows, int64_t s, int64_t wq, const float *src,
                                int64_t lds, int64_t lo, int64_t hi, float *dst, int64_t ldd,
                                int64_t ldp)
{
    split_rows_scalar(rows, s, wq, src, lds, lo, hi, dst, ldd, ldp);
}

void NN_ISA_FN(conv_direct_limits)(int *vmax, int *rmax, int *v3max)
{
    *vmax = 1;
    rmax[0] = GR;
    *v3max = 0;
}
#endif

/* One pixel's 16 channels of a block plus the residual's, in place (act a
 * constant where it is inlined: the loop then vectorises without a
 * branch). */
static inline void add16(float *restrict s, const float *restrict r, int act)
{
    for (int l = 0; l < 16; l++)
        s[l] = nn_act_scalar(s[l] + r[l], act);
}

void NN_ISA_FN(conv_add_nchw16c)(int64_t nx, int64_t o, float *src, int64_t lds,
                                 const float *res, int64_t ldb, int act)
{
    for (int64_t b = 0; b < o / 16; b++)
        for (int64_t x = 0; x < nx; x++) {
            float *s = src + x * lds + 16 * b;
            const float *r = res + b * ldb + 16 * x;
            if (act == NN_ACT_RELU)
                add16(s, r, NN_ACT_RELU);
            else
                add16(s, r, NN_ACT_NONE);
        }
}

/* Each block's row moved, then the residual added where it is stored (a
 * block's row is pixel-major with 16 channels: conv_add_nchw16c's row
 * buffer of one block). */
void NN_ISA_FN(conv_store_nchw16c)(int64_t nx, int64_t o, const float *src, int64_t lds,
                                   float *dst, int64_t ldb, const float *res, int act)
{
    for (int64_t b = 0; b < o / 16; b++) {
        for (int64_t x = 0; x < nx; x++)
            memcpy(dst + b * ldb + 16 * x, src + x * lds + 16 * b, 16 * sizeof(float));
        if (res)
            NN_ISA_FN(conv_add_nchw16c)(nx, 16, dst + b * ldb, 16, res + b * ldb, 0, act);
    }
}
