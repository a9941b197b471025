/* Pooling, PyTorch's definitions, over planes of NCHW tensors (planes =
 * N * C, each h x w, contiguous). Compiled once per ISA (see dispatch.h).
 *
 *   MaxPool2d(kernel, stride, padding): y = max over the window (padding is
 *     -inf); argmax = the input index ih * w + iw of the FIRST maximum in
 *     row-major scan order (a NaN wins, as in PyTorch); backward adds dy at
 *     argmax.
 *   AvgPool2d(kernel, stride, padding), count_include_pad=True: y = sum of
 *     the window's values inside the input / (kh * kw).
 *   Global average pool: (N, C, H, W) -> (N, C), the mean of each plane.
 *
 * Output sizes (the caller sets them in nn_pool2d_params): oh = (h + 2 ph -
 * kh) / sh + 1, ow likewise; ph <= kh / 2 and pw <= kw / 2 (PyTorch's rule),
 * so every window holds at least one input value.
 *
 * Threads split whole planes; each plane is computed (and each backward
 * plane accumulated) by one thread in one fixed order: the bits never depend
 * on the thread count. */
#include <math.h>
#include <string.h>
#include "dispatch.h"

#define NN_POOL_PARALLEL_MIN 32768 /* input elements */

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

static void maxpool_plane(const nn_pool2d_params *p, const float *x, float *y, int32_t *arg)
{
    for (int64_t oh = 0; oh < p->oh; oh++) {
        const int64_t h0 = oh * p->sh - p->ph;
        const int64_t hs = imax(h0, 0), he = imin(h0 + p->kh, p->h);
        for (int64_t ow = 0; ow < p->ow; ow++) {
            const int64_t w0 = ow * p->sw - p->pw;
            const int64_t ws = imax(w0, 0), we = imin(w0 + p->kw, p->w);
            float m = -INFINITY;
            int64_t at = hs * p->w + ws;
            for (int64_t ih = hs; ih < he; ih++)
                for (int64_t iw = ws; iw < we; iw++) {
                    const float v = x[ih * p->w + iw];
                    if (v > m || v != v) {
                        m = v;
                        at = ih * p->w + iw;
                    }
                }
            y[oh * p->ow + ow] = m;
            if (arg)
                arg[oh * p->ow + ow] = (int32_t)at;
        }
    }
}

/* 2x2 windows, stride 2, no padding: the common case, eight output columns
 * at a time in vectors (GCC/Clang vector extensions, lowered by each ISA's
 * flags): the stride-2 columns split by shuffles, the window's first maximum
 * picked by compare-and-select in scan order. gcc 12 auto-vectorised the
 * scalar loop into something slower than the scalar code, so it is spelled
 * out. A row's last block starts at ow - 8 (overlapping the previous one,
 * which computes the same values again) so every block is whole. */
typedef float nn_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t nn_v8i __attribute__((vector_size(32), aligned(4), may_alias));
#define NN_V8F(p) (*(nn_v8f *)(p))
#define NN_V8I(p) (*(nn_v8i *)(p))
#if defined(__clang__)
#define NN_EVEN8(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define NN_ODD8(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#define NN_LO8(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define NN_HI8(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define NN_EVEN8(a, b) __builtin_shuffle(a, b, (nn_v8i){0, 2, 4, 6, 8, 10, 12, 14})
#define NN_ODD8(a, b) __builtin_shuffle(a, b, (nn_v8i){1, 3, 5, 7, 9, 11, 13, 15})
#define NN_LO8(a, b) __builtin_shuffle(a, b, (nn_v8i){0, 8, 1, 9, 2, 10, 3, 11})
#define NN_HI8(a, b) __builtin_shuffle(a, b, (nn_v8i){4, 12, 5, 13, 6, 14, 7, 15})
#endif

/* m, at = (v, idx) where v > m or v is NaN (PyTorch's rule), lane by lane. */
static inline void take8(nn_v8f v, nn_v8i idx, nn_v8f *m, nn_v8i *at)
{
    const nn_v8i t = (v > *m) | (v != v);
    *m = (nn_v8f)(((nn_v8i)v & t) | ((nn_v8i)*m & ~t));
    *at = (idx & t) | (*at & ~t);
}

static inline void maxpool_block8(const float *r0, const float *r1, int32_t at0, int32_t w,
                                  float *y, int32_t *arg)
{
    const nn_v8f l0 = NN_V8F(r0), h0 = NN_V8F(r0 + 8), l1 = NN_V8F(r1), h1 = NN_V8F(r1 + 8);
    const nn_v8i idx = at0 + (nn_v8i){0, 2, 4, 6, 8, 10, 12, 14};
    nn_v8f m = NN_EVEN8(l0, h0);
    nn_v8i at = idx;
    take8(NN_ODD8(l0, h0), idx + 1, &m, &at);
    take8(NN_EVEN8(l1, h1), idx + w, &m, &at);
    take8(NN_ODD8(l1, h1), idx + (w + 1), &m, &at);
    NN_V8F(y) = m;
    if (arg)
        NN_V8I(arg) = at;
}

/* xend: the end of the whole input (narrow rows read up to 16 floats from
 * a row's start when that stays inside it). */
static void maxpool_plane_2x2(const nn_pool2d_params *p, const float *x, const float *xend,
                              float *y, int32_t *arg)
{
    const int64_t w = p->w, ow = p->ow;
    for (int64_t oh = 0; oh < p->oh; oh++) {
        const float *r0 = x + 2 * oh * w, *r1 = r0 + w;
        const int32_t base = (int32_t)(2 * oh * w);
        float *yr = y + oh * ow;
        int32_t *ar = arg ? arg + oh * ow : NULL;
        if (ow >= 8) {
            for (int64_t j = 0;; j += 8) {
                j = j + 8 > ow ? ow - 8 : j;
                maxpool_block8(r0 + 2 * j, r1 + 2 * j, base + 2 * (int32_t)j, (int32_t)w,
                               yr + j, ar ? ar + j : NULL);
                if (j + 8 >= ow)
                    break;
            }
            continue;
        }
        /* narrow rows (a 14x14 -> 7x7 plane): one block of 16 inputs per
         * row, read in place where the input goes on that far, else from
         * copies; the lanes past ow are dropped (each lane is computed on
         * its own). The scalar loop this replaces branched on random data
         * and ran 3x slower per value. */
        float b0[16] = {0}, b1[16] = {0}, yb[8];
        int32_t ab[8];
        const float *s0 = r0, *s1 = r1;
        if (r1 + 16 > xend) {
            memcpy(b0, r0, (size_t)(2 * ow) * sizeof(float));
            memcpy(b1, r1, (size_t)(2 * ow) * sizeof(float));
            s0 = b0, s1 = b1;
        }
        maxpool_block8(s0, s1, base, (int32_t)w, yb, ab);
        for (int64_t j = 0; j < ow; j++)
            yr[j] = yb[j];
        if (ar)
            for (int64_t j = 0; j < ow; j++)
                ar[j] = ab[j];
    }
}

/* The 2x2 pooling of two output rows of the direct convolution, before they
 * are transposed to NCHW (conv_direct.c, nn_conv2d_forward_pool): r0, r1 hold
 * pixel-major rows of `lanes` channels (a multiple of 8) each, pixel i at
 * r[i * lanes]. Window q covers pixels 2q, 2q + 1 of both rows: its first
 * maximum in scan order (r0 before r1, left before right; a NaN wins), as
 * maxpool_plane_2x2 picks it, goes to y[q * lanes + c] and its input index
 * at0 + 2q (+ 1, + w, + w + 1) to arg[q * lanes + c]. Channels are vector
 * lanes here, so the four values of a window are four plain loads. */
void NN_ISA_FN(maxpool2x2_lanes)(int64_t pw, int64_t lanes, const float *r0, const float *r1,
                                 int32_t at0, int32_t w, float *y, int32_t *arg)
{
    for (int64_t q = 0; q < pw; q++) {
        const float *a = r0 + 2 * q * lanes, *c = r1 + 2 * q * lanes;
        const int32_t i0 = at0 + 2 * (int32_t)q;
        const nn_v8i z = {0};
        for (int64_t j = 0; j < lanes; j += 8) {
            nn_v8f m = NN_V8F(a + j);
            nn_v8i at = z + i0;
            take8(NN_V8F(a + lanes + j), z + (i0 + 1), &m, &at);
            take8(NN_V8F(c + j), z + (i0 + w), &m, &at);
            take8(NN_V8F(c + lanes + j), z + (i0 + w + 1), &m, &at);
            NN_V8F(y + q * lanes + j) = m;
            NN_V8I(arg + q * lanes + j) = at;
        }
    }
}

/* The backward of maxpool_plane_2x2: each window's four inputs written at
 * once (dy where the argmax points, zero elsewhere), rows and columns no
 * window covers zeroed; no scatter, no separate clearing pass. With ry (the
 * pooled output of a ReLU), dy counts only where ry > 0: +0.0 elsewhere, as
 * relu_backward writes, so the bits are those of the two passes. */
static int maxpool_plane_2x2_backward(const nn_pool2d_params *p, const float *dy,
                                      const int32_t *arg, const float *ry, float *dx)
{
    const int64_t w = p->w, ow = p->ow;
    const int32_t w32 = (int32_t)w;
    nn_v8i bad = {0}; /* lanes whose argmax is none of its window's four inputs */
    for (int64_t oh = 0; oh < p->oh; oh++) {
        float *d0 = dx + 2 * oh * w, *d1 = d0 + w;
        const float *g = dy + oh * ow;
        const int32_t *a = arg + oh * ow;
        const int32_t base = (int32_t)(2 * oh * w);
        for (int64_t j = 0;; j += 8) { /* ow >= 8 (the caller's rule) */
            j = j + 8 > ow ? ow - 8 : j;
            const nn_v8i at = NN_V8I(a + j) - (base + 2 * (int32_t)j) -
                              (nn_v8i){0, 2, 4, 6, 8, 10, 12, 14};
            nn_v8i v = NN_V8I(g + j);
            if (ry)
                v &= NN_V8F(ry + oh * ow + j) > 0.0f; /* NaN: not > 0 */
            const nn_v8i ie0 = at == 0, io0 = at == 1, ie1 = at == w32, io1 = at == w32 + 1;
            bad |= ~(ie0 | io0 | ie1 | io1);
            const nn_v8f e0 = (nn_v8f)(v & ie0), o0 = (nn_v8f)(v & io0);
            const nn_v8f e1 = (nn_v8f)(v & ie1), o1 = (nn_v8f)(v & io1);
            NN_V8F(d0 + 2 * j) = NN_LO8(e0, o0);
            NN_V8F(d0 + 2 * j + 8) = NN_HI8(e0, o0);
            NN_V8F(d1 + 2 * j) = NN_LO8(e1, o1);
            NN_V8F(d1 + 2 * j + 8) = NN_HI8(e1, o1);
            if (j + 8 >= ow)
                break;
        }
        for (int64_t j = 2 * ow; j < w; j++)
            d0[j] = d1[j] = 0.0f;
    }
    if (2 * p->oh < p->h)
        memset(dx + 2 * p->oh * w, 0, (size_t)((p->h - 2 * p->oh) * w) * sizeof(float));
    int32_t any = 0;
    for (int l = 0; l < 8; l++)
        any |= bad[l];
    return any != 0;
}

void NN_ISA_FN(maxpool2d_forward)(int64_t planes, const nn_pool2d_params *p, const float *x,
                                  float *y, int32_t *argmax)
{
    const int64_t in = p->h * p->w, out = p->oh * p->ow;
    const int fast = p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 &&
                     p->pw == 0;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * in >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++) {
        int32_t *a = argmax ? argmax + i * out : NULL;
        if (fast)
            maxpool_plane_2x2(p, x + i * in, x + planes * in, y + i * out, a);
        else
            maxpool_plane(p, x + i * in, y + i * out, a);
    }
}

void NN_ISA_FN(maxpool2d_backward)(int64_t planes, const nn_pool2d_params *p, const float *dy,
                                   const int32_t *argmax, const float *relu_y, float *dx,
                                   int *bad)
{
    const int64_t in = p->h * p->w, out = p->oh * p->ow;
    const int fast = p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 &&
                     p->pw == 0 && p->ow >= 8;
    int nbad = 0;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * in >= NN_POOL_PARALLEL_MIN && planes > 1) reduction(| : nbad)
    for (int64_t i = 0; i < planes; i++) {
        float *d = dx + i * in;
        const float *g = dy + i * out;
        const int32_t *a = argmax + i * out;
        const float *ry = relu_y ? relu_y + i * out : NULL;
        if (fast) {
            nbad |= maxpool_plane_2x2_backward(p, g, a, ry, d);
            continue;
        }
        /* (narrow 2x2 planes too: clearing and scattering beat selects there) */
        /* an index outside the plane is flagged and sent to index 0 (the
         * plane is then garbage, but nothing is written outside it) */
        memset(d, 0, (size_t)in * sizeof(float));
        const uint32_t lim = (uint32_t)in;
        int off = 0;
        if (ry)
            for (int64_t j = 0; j < out; j++) {
                const uint32_t k = (uint32_t)a[j];
                off |= k >= lim;
                d[k < lim ? k : 0] += ry[j] > 0.0f ? g[j] : 0.0f;
            }
        else
            for (int64_t j = 0; j < out; j++) {
                const uint32_t k = (uint32_t)a[j];
                off |= k >= lim;
                d[k < lim ? k : 0] += g[j];
            }
        nbad |= off;
    }
    *bad = nbad;
}

static void avgpool_plane(const nn_pool2d_params *p, const float *x, float *y)
{
    const float div = (float)(p->kh * p->kw);
    for (int64_t oh = 0; oh < p->oh; oh++) {
        const int64_t h0 = oh * p->sh - p->ph;
        const int64_t hs = imax(h0, 0), he = imin(h0 + p->kh, p->h);
        for (int64_t ow = 0; ow < p->ow; ow++) {
            const int64_t w0 = ow * p->sw - p->pw;
            const int64_t ws = imax(w0, 0), we = imin(w0 + p->kw, p->w);
            float s = 0.0f;
            for (int64_t ih = hs; ih < he; ih++)
                for (int64_t iw = ws; iw < we; iw++)
                    s += x[ih * p->w + iw];
            y[oh * p->ow + ow] = s / div;
        }
    }
}

static void avgpool_plane_backward(const nn_pool2d_params *p, const float *dy, float *dx)
{
    const float div = (float)(p->kh * p->kw);
    memset(dx, 0, (size_t)(p->h * p->w) * sizeof(float));
    for (int64_t oh = 0; oh < p->oh; oh++) {
        const int64_t h0 = oh * p->sh - p->ph;
        const int64_t hs = imax(h0, 0), he = imin(h0 + p->kh, p->h);
        for (int64_t ow = 0; ow < p->ow; ow++) {
            const int64_t w0 = ow * p->sw - p->pw;
            const int64_t ws = imax(w0, 0), we = imin(w0 + p->kw, p->w);
            const float g = dy[oh * p->ow + ow] / div;
            for (int64_t ih = hs; ih < he; ih++)
                for (int64_t iw = ws; iw < we; iw++)
                    dx[ih * p->w + iw] += g;
        }
    }
}

void NN_ISA_FN(avgpool2d_forward)(int64_t planes, const nn_pool2d_params *p, const float *x,
                                  float *y)
{
    const int64_t in = p->h * p->w, out = p->oh * p->ow;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * in >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++)
        avgpool_plane(p, x + i * in, y + i * out);
}

void NN_ISA_FN(avgpool2d_backward)(int64_t planes, const nn_pool2d_params *p, const float *dy,
                                   float *dx)
{
    const int64_t in = p->h * p->w, out = p->oh * p->ow;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * in >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++)
        avgpool_plane_backward(p, dy + i * out, dx + i * in);
}

/* The sum of n floats in double: eight running sums combined in a fixed order. */
static double sum_fixed(const float *x, int64_t n)
{
    double part[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            part[l] += x[j + l];
    double s = ((part[0] + part[4]) + (part[2] + part[6])) +
               ((part[1] + part[5]) + (part[3] + part[7]));
    for (; j < n; j++)
        s += x[j];
    return s;
}

void NN_ISA_FN(global_avgpool_forward)(int64_t planes, int64_t hw, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * hw >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++)
        y[i] = (float)(sum_fixed(x + i * hw, hw) / (double)hw);
}

void NN_ISA_FN(global_avgpool_backward)(int64_t planes, int64_t hw, const float *dy, float *dx)
{
    const float div = (float)hw;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * hw >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++) {
        const float g = dy[i] / div;
        float *d = dx + i * hw;
        for (int64_t j = 0; j < hw; j++)
            d[j] = g;
    }
}
