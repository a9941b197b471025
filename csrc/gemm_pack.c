/* GEMM packing (see gemm.h): copy a block of op(A) or op(B) into the layout
 * the micro-kernel reads fastest, so transposes are absorbed here and the
 * kernel is the same for every case. The driver (gemm.c) decides what is
 * packed and which thread packs what. */
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "gemm.h"

/* dst[q*stride .. +mr) = src[q*mr .. +mr) for each whole piece q of w floats:
 * mr is a constant in each branch, so the copies compile to a few moves. */
static inline int64_t deal_pieces(const float *src, int64_t w, int64_t mr, float *dst,
                                  int64_t stride)
{
    int64_t q = 0;
    if (mr == 6)
        for (; q + 6 <= w; q += 6, dst += stride)
            memcpy(dst, src + q, 6 * sizeof(float));
    else if (mr == 4)
        for (; q + 4 <= w; q += 4, dst += stride)
            memcpy(dst, src + q, 4 * sizeof(float));
    return q;
}

void nn_gemm_pack_a(const nn_gemm_plan *P, int64_t i0, int64_t h, int64_t pc, int64_t kc,
                    float *dst)
{
    const int64_t mr = P->mr, lda = P->lda;
    if (P->trans_a) {
        /* op(A)(i, p) = a[p*lda + i]: row p of a holds the h values of depth
         * p, contiguous. Read a row by row (streaming, unlike a walk down
         * mr-wide columns) and deal each row's mr-float pieces to the panels. */
        for (int64_t p = 0; p < kc; p++) {
            const float *src = P->a + (pc + p) * lda + i0;
            float *d = dst + p * mr;
            const int64_t q = deal_pieces(src, h, mr, d, kc * mr);
            if (q < h) /* a last, partial panel */
                memcpy(d + q / mr * kc * mr, src + q, (size_t)(h - q) * sizeof(float));
        }
        return;
    }
    for (int64_t q = 0; q < h; q += mr, dst += kc * mr) {
        const int64_t rows = min64(mr, h - q);
        for (int64_t i = 0; i < rows; i++) {
            const float *src = P->a + (i0 + q + i) * lda + pc;
            for (int64_t p = 0; p < kc; p++)
                dst[p * mr + i] = src[p];
        }
    }
}

/* dst[p*nr + j] = src[j*lds + p] for j < w, p < kc: a transpose into one
 * strip, in blocks of 32 p so that the lines written stay in L1. */
static void transpose_strip(const float *src, int64_t lds, int64_t w, int64_t kc, int64_t nr,
                            float *dst)
{
    for (int64_t p0 = 0; p0 < kc; p0 += 32) {
        const int64_t p1 = min64(p0 + 32, kc);
        int64_t j = 0;
#if defined(__SSE2__)
        for (; j + 4 <= w; j += 4) {
            const float *s0 = src + j * lds, *s1 = s0 + lds, *s2 = s1 + lds, *s3 = s2 + lds;
            int64_t p = p0;
            for (; p + 4 <= p1; p += 4) {
                __m128 r0 = _mm_loadu_ps(s0 + p), r1 = _mm_loadu_ps(s1 + p);
                __m128 r2 = _mm_loadu_ps(s2 + p), r3 = _mm_loadu_ps(s3 + p);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                float *d = dst + p * nr + j;
                _mm_storeu_ps(d, r0);
                _mm_storeu_ps(d + nr, r1);
                _mm_storeu_ps(d + 2 * nr, r2);
                _mm_storeu_ps(d + 3 * nr, r3);
            }
            for (; p < p1; p++) {
                float *d = dst + p * nr + j;
                d[0] = s0[p];
                d[1] = s1[p];
                d[2] = s2[p];
                d[3] = s3[p];
            }
        }
#endif
        for (; j < w; j++)
            for (int64_t p = p0; p < p1; p++)
                dst[p * nr + j] = src[j * lds + p];
    }
}

void nn_gemm_pack_b(const nn_gemm_plan *P, int64_t j0, int64_t w, int64_t pc, int64_t kc,
                    float *dst)
{
    const int64_t nr = P->nr, ldb = P->ldb;
    for (int64_t s = 0; s < w; s += nr, dst += kc * nr) {
        const int64_t cols = min64(nr, w - s);
        if (P->trans_b) {
            /* op(B)(p, j) = b[j*ldb + p] */
            transpose_strip(P->b + (j0 + s) * ldb + pc, ldb, cols, kc, nr, dst);
        } else {
            const float *src = P->b + pc * ldb + j0 + s;
            for (int64_t p = 0; p < kc; p++)
                memcpy(dst + p * nr, src + p * ldb, (size_t)cols * sizeof(float));
        }
    }
}
