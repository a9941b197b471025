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

/* 2x2 windows, stride 2, no padding: the common case, without the index
 * arithmetic of the general loop. Starting from a instead of (-inf, index of
 * a) picks the same value and index: a is taken from -inf unless it is
 * -inf itself, whose index is the initial one anyway. */
static void maxpool_plane_2x2(const nn_pool2d_params *p, const float *x, float *y, int32_t *arg)
{
    const int64_t w = p->w;
    for (int64_t oh = 0; oh < p->oh; oh++) {
        const float *r0 = x + 2 * oh * w, *r1 = r0 + w;
        float *yr = y + oh * p->ow;
        for (int64_t ow = 0; ow < p->ow; ow++) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            float m = a;
            int64_t at = 0;
            if (b > m || b != b) {
                m = b;
                at = 1;
            }
            if (c > m || c != c) {
                m = c;
                at = w;
            }
            if (d > m || d != d) {
                m = d;
                at = w + 1;
            }
            yr[ow] = m;
            if (arg)
                arg[oh * p->ow + ow] = (int32_t)(2 * oh * w + 2 * ow + at);
        }
    }
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
            maxpool_plane_2x2(p, x + i * in, y + i * out, a);
        else
            maxpool_plane(p, x + i * in, y + i * out, a);
    }
}

void NN_ISA_FN(maxpool2d_backward)(int64_t planes, const nn_pool2d_params *p, const float *dy,
                                   const int32_t *argmax, float *dx)
{
    const int64_t in = p->h * p->w, out = p->oh * p->ow;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * in >= NN_POOL_PARALLEL_MIN && planes > 1)
    for (int64_t i = 0; i < planes; i++) {
        float *d = dx + i * in;
        const float *g = dy + i * out;
        const int32_t *a = argmax + i * out;
        memset(d, 0, (size_t)in * sizeof(float));
        for (int64_t j = 0; j < out; j++)
            d[a[j]] += g[j];
    }
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
