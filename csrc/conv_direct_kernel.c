/* The direct convolution's register tile (conv_direct.c lays out the data
 * for it), compiled once per ISA (see dispatch.h).
 *
 * Output channels run along the vector lanes, in blocks of 16 (one zmm, two
 * ymm), and output pixels along the tile's rows: a tile is r consecutive
 * pixels of one output row times v blocks of 16 channels,
 *
 *   y[i*ldy + j] = act(bias[j] + sum over t < k of x[koff[t] + i] * w[t*ldw + j])
 *
 * for i < r, j < 16 v. x is the tile's first pixel in the caller's padded,
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
#include "dispatch.h"

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

/* R pixels x V blocks, both constants at every call site (so the
 * accumulators live in registers). */
NN_INLINE void dtile(const int R, const int V, const nn_conv_tile *t)
{
    vf acc[ACCS];
    NN_UNROLL
    for (int i = 0; i < R; i++)
        NN_UNROLL
        for (int v = 0; v < V * NVB; v++)
            acc[i * V * NVB + v] = t->beta ? v_load(t->y + i * t->ldy + v * VL) : v_zero();
    const float *x = t->x, *w = t->w;
    const int64_t *koff = t->koff, ldw = t->ldw;
    for (int64_t p = 0; p < t->k; p++, w += ldw) {
        const float *xs = x + koff[p];
        vf wv[VMAX * NVB];
        NN_UNROLL
        for (int v = 0; v < V * NVB; v++)
            wv[v] = v_load(w + v * VL);
        NN_UNROLL
        for (int i = 0; i < R; i++) {
            const vf xv = v_set1(xs[i]);
            NN_UNROLL
            for (int v = 0; v < V * NVB; v++)
                acc[i * V * NVB + v] = v_fma(xv, wv[v], acc[i * V * NVB + v]);
        }
    }
    NN_UNROLL
    for (int i = 0; i < R; i++) {
        float *y = t->y + i * t->ldy;
        NN_UNROLL
        for (int v = 0; v < V * NVB; v++) {
            vf r = acc[i * V * NVB + v];
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
    switch (t->v * 32 + t->r) {
#define RV(R, V) case (V) * 32 + (R): dtile(R, V, t); return;
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
#define RV(R, V) case (V) * 32 + (R): dtile(R, V, t); return;
    RV(1, 1) RV(2, 1) RV(3, 1) RV(4, 1) RV(5, 1) RV(6, 1)
    RV(1, 2) RV(2, 2) RV(3, 2)
    default: return;
    }
#endif
}

void NN_ISA_FN(conv_direct_limits)(int *vmax, int *rmax)
{
    *vmax = VMAX;
    for (int v = 1; v <= VMAX; v++)
        rmax[v - 1] = ACCS / (v * NVB);
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
    for (int64_t p = 0; p < t->k; p++) {
        const float *xs = t->x + t->koff[p], *w = t->w + p * t->ldw;
        for (int64_t i = 0; i < r; i++)
            for (int j = 0; j < 16; j++)
                acc[i][j] += xs[i] * w[j];
    }
    for (int64_t i = 0; i < r; i++)
        for (int j = 0; j < 16; j++) {
            float s = acc[i][j];
            if (t->bias)
                s += t->bias[j];
            t->y[i * t->ldy + j] = nn_act_scalar(s, t->act);
        }
}

void NN_ISA_FN(conv_direct_limits)(int *vmax, int *rmax)
{
    *vmax = 1;
    rmax[0] = GR;
}
#endif
