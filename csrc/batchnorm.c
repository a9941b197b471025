/* Batch normalisation over (N, C, HW), PyTorch's BatchNorm1d/2d (HW = 1 for
 * BatchNorm1d on (N, C)). Compiled once per ISA (see dispatch.h).
 *
 * Training forward, per channel c over its M = N * HW values:
 *   mean = sum(x) / M, var = sum((x - mean)^2) / M (two passes, in double),
 *   invstd = 1 / sqrt(var + eps),
 *   y = (x - mean) * invstd * weight + bias, computed as x * a + b with
 *     a = invstd * weight, b = bias - mean * a,
 *   running_mean = (1 - momentum) * running_mean + momentum * mean,
 *   running_var  = (1 - momentum) * running_var + momentum * var * M / (M - 1)
 *     (the unbiased variance; M > 1, which the caller checks),
 *   save_mean, save_invstd: mean and invstd for the backward pass.
 * Evaluation forward: the same with running_mean and invstd =
 *   1 / sqrt(running_var + eps).
 * Backward (train = 1, the batch statistics): with xhat = (x - mean) * invstd,
 *   dbias = sum(dy), dweight = sum(dy * xhat),
 *   dx = (dy - sum(dy) / M - (x - mean) * invstd^2 * sum(dy * (x - mean)) / M)
 *        * invstd * weight;
 * (train = 0, statistics held constant, as in evaluation mode):
 *   dx = dy * invstd * weight, with mean and invstd those of the running stats.
 * weight and bias may be NULL (1 and 0); running stats, dx, dweight, dbias
 * may be NULL to skip them.
 *
 * A ReLU after the BatchNorm runs inside it when training: the forward pass
 * takes act = NN_ACT_RELU (y = max(0, x * a + b), the bits of the two
 * passes), the backward pass relu_y = that y, dy then counting only where
 * y > 0 (in the sums and in dx): the ReLU's own two passes over the tensor
 * are saved.
 *
 * Determinism: each channel's sums run in one fixed order in double,
 * whatever the thread count: per image plane (plane_sum's order), then the
 * planes' sums image by image from 0.0. Threads split channels (blocks of
 * NN_BN_BLOCK channels when HW = 1, so that rows are read contiguously), or
 * in training with planes and enough images (bn_image_team), images: each
 * thread's planes' sums go to a table the channels' owners then add up in
 * image order, the same sums in the same order, hence the same bits. The
 * image split keeps each thread on the images it (and the convolutions
 * around it, which split images) touched last: in a ResNet-20 training
 * step on 2 threads the backward pass of the 32- and 64-channel layers
 * took 1.6-2.1x less time than with the channel split (docs/measurements.md). */
#include <math.h>
#include <omp.h>
#include "barrier.h"
#include "dispatch.h"
#include "vmath.h"
#include "workspace.h"

#define NN_BN_BLOCK 64
#define NN_BN_PARALLEL_MIN 32768
/* The image split wants at least this many images per thread, and its
 * tables (two doubles per image and channel) at most this many pairs: they
 * stay in the workspace, like a layer's buffers (ResNet-20 at batch 128:
 * 8,192). */
#define NN_BN_IMAGES_PER_THREAD 2
#define NN_BN_TABLE_MAX 262144

/* The per-channel sums run in double, eight lanes at a time through GCC/Clang
 * vector extensions (lowered by each ISA's flags): gcc left the scalar
 * double loops unvectorised, ~4 cycles per element. Measured (1 thread,
 * (128, 16, 28, 28), tensors in cache): forward 1.04 -> 0.82 ms, backward
 * 1.62 -> 0.97 ms; inside a batch-128 ResNet-20 step the tensors come from
 * memory and the passes gain little. Each sum's order is fixed by the plane
 * size alone: two 8-lane accumulators over blocks of 16, one more block of
 * 8, the lanes combined in a fixed tree, then the scalar tail. */
typedef float nn_bn_v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t nn_bn_v8i __attribute__((vector_size(32), aligned(4), may_alias));
typedef double nn_bn_v8d __attribute__((vector_size(64)));

/* Eight floats widened to double (exact: the bits do not change). gcc 12
 * lowers the generic conversion to two 4-wide ones, an extract and an
 * insert even with AVX-512; one vcvtps2pd there halves the sums'
 * instructions (1 thread, training forward / backward: (128, 16, 28, 28)
 * 620 -> 500 us / 760 -> 690 us, (128, 32, 14, 14) 326 -> 248 / 365 -> 300). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline nn_bn_v8d widen8(nn_bn_v8f v)
{
    return (nn_bn_v8d)_mm512_cvtps_pd((__m256)v);
}
#else
static inline nn_bn_v8d widen8(nn_bn_v8f v)
{
    return __builtin_convertvector(v, nn_bn_v8d);
}
#endif
#define NN_BN_LOAD8(p) widen8(*(const nn_bn_v8f *)(p))

static inline double lanes_sum(nn_bn_v8d v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* The sum of x (square = 0) or of (x - shift)^2 (square = 1) over n floats,
 * in double. */
static inline double plane_sum(const float *x, int64_t n, double shift, int square)
{
    nn_bn_v8d a0 = {0}, a1 = {0};
    int64_t j = 0;
    if (square) {
        for (; j + 16 <= n; j += 16) {
            const nn_bn_v8d d0 = NN_BN_LOAD8(x + j) - shift, d1 = NN_BN_LOAD8(x + j + 8) - shift;
            a0 += d0 * d0;
            a1 += d1 * d1;
        }
        if (j + 8 <= n) {
            const nn_bn_v8d d0 = NN_BN_LOAD8(x + j) - shift;
            a0 += d0 * d0;
            j += 8;
        }
    } else {
        for (; j + 16 <= n; j += 16) {
            a0 += NN_BN_LOAD8(x + j);
            a1 += NN_BN_LOAD8(x + j + 8);
        }
        if (j + 8 <= n) {
            a0 += NN_BN_LOAD8(x + j);
            j += 8;
        }
    }
    double s = lanes_sum(a0 + a1);
    for (; j < n; j++) {
        const double d = (double)x[j] - (square ? shift : 0.0);
        s += square ? d * d : d;
    }
    return s;
}

/* dy[j..j+7] in double; with ry, +0.0 where ry is not > 0 (the bits of
 * relu_backward's output, nn_keep_if_pos). */
static inline nn_bn_v8d grad8(const float *dy, const float *ry, int64_t j)
{
    nn_bn_v8f g = *(const nn_bn_v8f *)(dy + j);
    if (ry)
        g = (nn_bn_v8f)((nn_bn_v8i)g & (*(const nn_bn_v8f *)(ry + j) > 0.0f));
    return widen8(g);
}

/* sum(g) and sum(g * (x - mean)) over n floats, g = dy (masked by ry > 0
 * when ry is given), in double, the same order as plane_sum. */
static inline void plane_sums2(const float *dy, const float *ry, const float *x, int64_t n,
                               double mean, double *sdy, double *sdyx)
{
    nn_bn_v8d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const nn_bn_v8d g0 = grad8(dy, ry, j), g1 = grad8(dy, ry, j + 8);
        a0 += g0;
        a1 += g1;
        b0 += g0 * (NN_BN_LOAD8(x + j) - mean);
        b1 += g1 * (NN_BN_LOAD8(x + j + 8) - mean);
    }
    if (j + 8 <= n) {
        const nn_bn_v8d g0 = grad8(dy, ry, j);
        a0 += g0;
        b0 += g0 * (NN_BN_LOAD8(x + j) - mean);
        j += 8;
    }
    double s = lanes_sum(a0 + a1), t = lanes_sum(b0 + b1);
    for (; j < n; j++) {
        const double g = ry ? nn_keep_if_pos(ry[j], dy[j]) : dy[j];
        s += g;
        t += g * ((double)x[j] - mean);
    }
    *sdy += s;
    *sdyx += t;
}

static inline int64_t block_of(int64_t hw) { return hw == 1 ? NN_BN_BLOCK : 1; }

/* y = x * a[ch - c0] + b[ch - c0] for images [i0, i1), channels [c0, c1),
 * then max(0, y) with relu (NaN stays NaN, as relu_forward). */
static void bn_apply(int64_t i0, int64_t i1, int64_t c, int64_t hw, int64_t c0, int64_t c1,
                     const float *x, const float *a, const float *b, int relu, float *y)
{
    for (int64_t i = i0; i < i1; i++)
        for (int64_t ch = c0; ch < c1; ch++) {
            const float *xp = x + (i * c + ch) * hw;
            float *yp = y + (i * c + ch) * hw;
            const float s = a[ch - c0], t = b[ch - c0];
            if (relu)
                for (int64_t j = 0; j < hw; j++) {
                    const float v = xp[j] * s + t;
                    yp[j] = v < 0.0f ? 0.0f : v;
                }
            else
                for (int64_t j = 0; j < hw; j++)
                    yp[j] = xp[j] * s + t;
        }
}

/* The threads of an image split for a training pass over (n, c, hw), or 0
 * (the channel split). */
static int bn_image_team(int64_t n, int64_t c, int64_t hw)
{
    const int nt = nn_max_threads();
    return hw > 1 && nt > 1 && n * c * hw >= NN_BN_PARALLEL_MIN &&
                   n >= (int64_t)NN_BN_IMAGES_PER_THREAD * nt && n * c <= NN_BN_TABLE_MAX
               ? nt : 0;
}

/* In a region of *parts threads, the calling thread's images [*i0, *i1)
 * and channels [*c0, *c1). */
static void thread_parts(int64_t n, int64_t c, int *parts, int64_t *i0, int64_t *i1,
                         int64_t *c0, int64_t *c1)
{
    const int t = omp_get_thread_num();
    *parts = omp_get_num_threads();
    *i0 = n * t / *parts, *i1 = n * (t + 1) / *parts;
    *c0 = c * t / *parts, *c1 = c * (t + 1) / *parts;
}

/* part[i c + ch] = the sum of image i's plane of channel ch (square: of
 * (x - shift[ch])^2) for images [i0, i1). */
static void image_sums(int64_t i0, int64_t i1, int64_t c, int64_t hw, const float *x,
                       const double *shift, int square, double *part)
{
    for (int64_t i = i0; i < i1; i++)
        for (int64_t ch = 0; ch < c; ch++)
            part[i * c + ch] = plane_sum(x + (i * c + ch) * hw, hw, square ? shift[ch] : 0.0,
                                         square);
}

/* Column ch of part (n rows of c) summed image by image from 0.0. */
static inline double column_sum(const double *part, int64_t n, int64_t c, int64_t ch)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += part[i * c + ch];
    return s;
}

/* Channel ch's statistics from its mean and sum of squared deviations over
 * m values: y's scale *a and shift *b, the saved mean and invstd, the
 * running statistics moved. */
static void bn_finish(int64_t ch, double mean, double ssd, double m, const float *weight,
                      const float *bias, float eps, float momentum, float *running_mean,
                      float *running_var, float *save_mean, float *save_invstd, float *a,
                      float *b)
{
    const double v = ssd / m;
    const double invstd = 1.0 / sqrt(v + (double)eps);
    const double w = weight ? (double)weight[ch] : 1.0;
    const double sc = invstd * w;
    *a = (float)sc;
    *b = (float)((bias ? (double)bias[ch] : 0.0) - mean * sc);
    save_mean[ch] = (float)mean;
    save_invstd[ch] = (float)invstd;
    if (running_mean)
        running_mean[ch] = (float)((1.0 - (double)momentum) * running_mean[ch] +
                                   (double)momentum * mean);
    if (running_var) {
        const double unbiased = m > 1.0 ? ssd / (m - 1.0) : v;
        running_var[ch] = (float)((1.0 - (double)momentum) * running_var[ch] +
                                  (double)momentum * unbiased);
    }
}

/* The training forward split by images (team threads): 1, or 0 when its
 * tables cannot be had (the caller then splits channels). */
static int forward_train_images(int team, int64_t n, int64_t c, int64_t hw, const float *x,
                                const float *weight, const float *bias, float eps,
                                float momentum, float *running_mean, float *running_var,
                                float *y, float *save_mean, float *save_invstd, int act)
{
    /* the planes' sums (n c), the means (c), then a and b (c floats each) */
    double *part = (double *)nn_workspace_get(NN_WS_LAYER, (size_t)(2 * (n * c + c) + 2 * c));
    if (part == NULL)
        return 0;
    double *mean = part + n * c;
    float *a = (float *)(mean + c), *b = a + c;
    const double m = (double)n * (double)hw;
    nn_barrier bar = NN_BARRIER_INIT;
#pragma omp parallel num_threads(team) shared(bar)
    {
        int parts;
        int64_t i0, i1, c0, c1;
        thread_parts(n, c, &parts, &i0, &i1, &c0, &c1);
        image_sums(i0, i1, c, hw, x, NULL, 0, part);
        nn_barrier_wait(&bar, parts);
        for (int64_t ch = c0; ch < c1; ch++)
            mean[ch] = column_sum(part, n, c, ch) / m;
        nn_barrier_wait(&bar, parts);
        image_sums(i0, i1, c, hw, x, mean, 1, part);
        nn_barrier_wait(&bar, parts);
        for (int64_t ch = c0; ch < c1; ch++)
            bn_finish(ch, mean[ch], column_sum(part, n, c, ch), m, weight, bias, eps, momentum,
                      running_mean, running_var, save_mean, save_invstd, &a[ch], &b[ch]);
        nn_barrier_wait(&bar, parts);
        bn_apply(i0, i1, c, hw, 0, c, x, a, b, act == NN_ACT_RELU, y);
    }
    return 1;
}

void NN_ISA_FN(batchnorm_forward_train)(int64_t n, int64_t c, int64_t hw, const float *x,
                                        const float *weight, const float *bias, float eps,
                                        float momentum, float *running_mean,
                                        float *running_var, float *y, float *save_mean,
                                        float *save_invstd, int act)
{
    const int team = bn_image_team(n, c, hw);
    if (team > 1 && forward_train_images(team, n, c, hw, x, weight, bias, eps, momentum,
                                         running_mean, running_var, y, save_mean, save_invstd,
                                         act))
        return;
    const int64_t bs = block_of(hw), blocks = (c + bs - 1) / bs;
    const double m = (double)n * (double)hw;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (n * c * hw >= NN_BN_PARALLEL_MIN && blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * bs, c1 = c0 + bs < c ? c0 + bs : c;
        double mean[NN_BN_BLOCK], var[NN_BN_BLOCK];
        float a[NN_BN_BLOCK], b[NN_BN_BLOCK];
        for (int64_t ch = c0; ch < c1; ch++)
            mean[ch - c0] = var[ch - c0] = 0.0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t ch = c0; ch < c1; ch++)
                mean[ch - c0] += plane_sum(x + (i * c + ch) * hw, hw, 0.0, 0);
        for (int64_t ch = c0; ch < c1; ch++)
            mean[ch - c0] /= m;
        for (int64_t i = 0; i < n; i++)
            for (int64_t ch = c0; ch < c1; ch++)
                var[ch - c0] += plane_sum(x + (i * c + ch) * hw, hw, mean[ch - c0], 1);
        for (int64_t ch = c0; ch < c1; ch++)
            bn_finish(ch, mean[ch - c0], var[ch - c0], m, weight, bias, eps, momentum,
                      running_mean, running_var, save_mean, save_invstd, &a[ch - c0],
                      &b[ch - c0]);
        bn_apply(0, n, c, hw, c0, c1, x, a, b, act == NN_ACT_RELU, y);
    }
}

void NN_ISA_FN(batchnorm_forward_eval)(int64_t n, int64_t c, int64_t hw, const float *x,
                                       const float *weight, const float *bias,
                                       const float *running_mean, const float *running_var,
                                       float eps, float *y)
{
    const int64_t bs = block_of(hw), blocks = (c + bs - 1) / bs;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (n * c * hw >= NN_BN_PARALLEL_MIN && blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * bs, c1 = c0 + bs < c ? c0 + bs : c;
        float a[NN_BN_BLOCK], b[NN_BN_BLOCK];
        for (int64_t ch = c0; ch < c1; ch++) {
            const double invstd = 1.0 / sqrt((double)running_var[ch] + (double)eps);
            const double sc = invstd * (weight ? (double)weight[ch] : 1.0);
            a[ch - c0] = (float)sc;
            b[ch - c0] = (float)((bias ? (double)bias[ch] : 0.0) - (double)running_mean[ch] * sc);
        }
        bn_apply(0, n, c, hw, c0, c1, x, a, b, 0, y);
    }
}

/* dx = (dy - (x - mu) * k2 - k3) * k1 (train; else dy * k1), dy masked by
 * relu_y > 0 when given, for images [i0, i1) in reverse and channels [c0,
 * c1) (k1.. indexed by ch - c0): a channel's x, dy (and relu_y) over the
 * batch can exceed L2 (3 x 400 KB at batch 128, 28 x 28), and a forward
 * scan would then miss on every line the sums pass left; backwards it
 * starts on the lines that pass read last (each dx value is independent:
 * the bits do not change). */
static void bn_dx(int64_t i0, int64_t i1, int64_t c, int64_t hw, int64_t c0, int64_t c1,
                  const float *x, const float *dy, const float *relu_y, int train,
                  const float *k1, const float *k2, const float *k3, const float *mu, float *dx)
{
    for (int64_t i = i1 - 1; i >= i0; i--)
        for (int64_t ch = c0; ch < c1; ch++) {
            const int64_t off = (i * c + ch) * hw, k = ch - c0;
            const float *xp = x + off, *gp = dy + off, *rp = relu_y ? relu_y + off : NULL;
            float *dp = dx + off;
            const float a = k1[k], b = k2[k], d = k3[k], u = mu[k];
            if (rp && train)
                for (int64_t j = 0; j < hw; j++)
                    dp[j] = (nn_keep_if_pos(rp[j], gp[j]) - (xp[j] - u) * b - d) * a;
            else if (rp)
                for (int64_t j = 0; j < hw; j++)
                    dp[j] = nn_keep_if_pos(rp[j], gp[j]) * a;
            else if (train)
                for (int64_t j = 0; j < hw; j++)
                    dp[j] = (gp[j] - (xp[j] - u) * b - d) * a;
            else
                for (int64_t j = 0; j < hw; j++)
                    dp[j] = gp[j] * a;
        }
}

/* Channel ch's gradients from its sums sdy = sum(g) and sdyx = sum(g (x -
 * mean)) over m values: dbias, dweight, and dx's coefficients *k1.. */
static void bn_grads(int64_t ch, double sdy, double sdyx, double m, const float *weight,
                     const float *mean, const float *invstd, int train, float *dweight,
                     float *dbias, float *k1, float *k2, float *k3, float *mu)
{
    const double is = invstd[ch], w = weight ? (double)weight[ch] : 1.0;
    if (dbias)
        dbias[ch] = (float)sdy;
    if (dweight)
        dweight[ch] = (float)(sdyx * is);
    *k1 = (float)(is * w);
    *k2 = train ? (float)(sdyx * is * is / m) : 0.0f;
    *k3 = train ? (float)(sdy / m) : 0.0f;
    *mu = mean[ch];
}

/* The training backward split by images (team threads): 1, or 0 when its
 * tables cannot be had (the caller then splits channels). */
static int backward_train_images(int team, int64_t n, int64_t c, int64_t hw, const float *x,
                                 const float *dy, const float *relu_y, const float *weight,
                                 const float *mean, const float *invstd, float *dx,
                                 float *dweight, float *dbias)
{
    /* the planes' two sums (n c each), then k1, k2, k3, mu (c floats each) */
    double *psdy = (double *)nn_workspace_get(NN_WS_LAYER, (size_t)(4 * n * c + 4 * c));
    if (psdy == NULL)
        return 0;
    double *psdyx = psdy + n * c;
    float *k1 = (float *)(psdyx + n * c), *k2 = k1 + c, *k3 = k2 + c, *mu = k3 + c;
    const double m = (double)n * (double)hw;
    nn_barrier bar = NN_BARRIER_INIT;
#pragma omp parallel num_threads(team) shared(bar)
    {
        int parts;
        int64_t i0, i1, c0, c1;
        thread_parts(n, c, &parts, &i0, &i1, &c0, &c1);
        for (int64_t i = i0; i < i1; i++)
            for (int64_t ch = 0; ch < c; ch++) {
                const int64_t off = (i * c + ch) * hw;
                double sdy = 0.0, sdyx = 0.0;
                plane_sums2(dy + off, relu_y ? relu_y + off : NULL, x + off, hw,
                            (double)mean[ch], &sdy, &sdyx);
                psdy[i * c + ch] = sdy;
                psdyx[i * c + ch] = sdyx;
            }
        nn_barrier_wait(&bar, parts);
        for (int64_t ch = c0; ch < c1; ch++)
            bn_grads(ch, column_sum(psdy, n, c, ch), column_sum(psdyx, n, c, ch), m, weight,
                     mean, invstd, 1, dweight, dbias, &k1[ch], &k2[ch], &k3[ch], &mu[ch]);
        if (dx) {
            nn_barrier_wait(&bar, parts);
            bn_dx(i0, i1, c, hw, 0, c, x, dy, relu_y, 1, k1, k2, k3, mu, dx);
        }
    }
    return 1;
}

void NN_ISA_FN(batchnorm_backward)(int64_t n, int64_t c, int64_t hw, const float *x,
                                   const float *dy, const float *relu_y, const float *weight,
                                   const float *mean, const float *invstd, int train, float *dx,
                                   float *dweight, float *dbias)
{
    const int team = train ? bn_image_team(n, c, hw) : 0;
    if (team > 1 && backward_train_images(team, n, c, hw, x, dy, relu_y, weight, mean, invstd,
                                          dx, dweight, dbias))
        return;
    const int64_t bs = block_of(hw), blocks = (c + bs - 1) / bs;
    const double m = (double)n * (double)hw;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (n * c * hw >= NN_BN_PARALLEL_MIN && blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * bs, c1 = c0 + bs < c ? c0 + bs : c;
        double sdy[NN_BN_BLOCK], sdyx[NN_BN_BLOCK];
        float k1[NN_BN_BLOCK], k2[NN_BN_BLOCK], k3[NN_BN_BLOCK], mu[NN_BN_BLOCK];
        for (int64_t ch = c0; ch < c1; ch++)
            sdy[ch - c0] = sdyx[ch - c0] = 0.0;
        if (train || dweight || dbias)
            for (int64_t i = 0; i < n; i++)
                for (int64_t ch = c0; ch < c1; ch++) {
                    const int64_t off = (i * c + ch) * hw;
                    plane_sums2(dy + off, relu_y ? relu_y + off : NULL, x + off, hw,
                                (double)mean[ch], &sdy[ch - c0], &sdyx[ch - c0]);
                }
        for (int64_t ch = c0; ch < c1; ch++) {
            const int64_t k = ch - c0;
            bn_grads(ch, sdy[k], sdyx[k], m, weight, mean, invstd, train, dweight, dbias,
                     &k1[k], &k2[k], &k3[k], &mu[k]);
        }
        if (dx)
            bn_dx(0, n, c, hw, c0, c1, x, dy, relu_y, train, k1, k2, k3, mu, dx);
    }
}
