/* Optimizer update kernels: fused, in place, one pass over each parameter.
 * Compiled once per ISA (see dispatch.h).
 *
 * Each kernel is exactly one step of the matching torch.optim algorithm
 * (maximize=False, the single-tensor path), in float32 with the same order of
 * operations, so a run can be compared with PyTorch step by step. Scalars
 * derived from the step count (bias corrections) are computed by the caller
 * in double, as PyTorch computes them in Python. Every element is updated
 * independently, so results are identical for any thread count. This file
 * is compiled without FMA contraction (CMakeLists.txt): each operation is
 * rounded as written, so every ISA gives the same bits, and plain SGD's
 * w + (-lr * g) equals the GEMM epilogue that folds it into the weight
 * gradient product (Dense.backward with sgd_lr).
 *
 * Denormals are flushed to zero while an update runs (x86: MXCSR FTZ+DAZ,
 * set and restored around each range, so on every thread). The momentum or
 * moment buffer of a parameter whose gradient is exactly 0 (a dead ReLU
 * unit) decays geometrically into the denormal range, where each operation
 * takes a ~100-cycle microcode assist: measured 10x slower SGD steps. The
 * results differ from IEEE only by values below 1.2e-38. */
#include <math.h>
#include <stddef.h>
#include "dispatch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define NN_FTZ_BEGIN const unsigned nn_csr_ = _mm_getcsr(); _mm_setcsr(nn_csr_ | 0x8040u);
#define NN_FTZ_END _mm_setcsr(nn_csr_);
#else
#define NN_FTZ_BEGIN
#define NN_FTZ_END
#endif

/* torch.lerp(start, end, weight) for float32, with its two-sided formula. */
static inline float nn_lerp(float start, float end, float weight)
{
    return weight < 0.5f ? start + weight * (end - start)
                         : end - (end - start) * (1.0f - weight);
}

/* SGD. With weight decay wd, momentum mu, dampening tau:
 *   d = g + wd * w
 *   b = d on the first step, else b = mu * b + (1 - tau) * d
 *   d = d + mu * b  (Nesterov)  or  d = b
 *   w = w - lr * d
 * buf may be NULL when momentum == 0. */
static inline void sgd_range(int64_t lo, int64_t hi, float *restrict w, const float *restrict g,
                             float *restrict buf, float lr, float momentum, float dampening,
                             float weight_decay, int nesterov, int first)
{
    const float one_minus_damp = 1.0f - dampening;
    NN_FTZ_BEGIN
    if (momentum == 0.0f) {
        if (weight_decay == 0.0f)
            for (int64_t i = lo; i < hi; i++)
                w[i] = w[i] + (-lr) * g[i];
        else
            for (int64_t i = lo; i < hi; i++)
                w[i] = w[i] + (-lr) * (g[i] + weight_decay * w[i]);
    } else {
        for (int64_t i = lo; i < hi; i++) {
            float d = weight_decay != 0.0f ? g[i] + weight_decay * w[i] : g[i];
            float b = first ? d : buf[i] * momentum + one_minus_damp * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
            w[i] = w[i] + (-lr) * d;
        }
    }
    NN_FTZ_END
}

void NN_ISA_FN(sgd_step)(int64_t n, float *w, const float *g, float *buf, float lr,
                         float momentum, float dampening, float weight_decay, int nesterov,
                         int first)
{
    NN_FOR_RANGES(n, lo, hi,
                  sgd_range(lo, hi, w, g, buf, lr, momentum, dampening, weight_decay, nesterov,
                            first));
}

/* Adam and AdamW:
 *   w = w * decay                      (AdamW: decay = 1 - lr * wd; Adam: 1)
 *   d = g + weight_decay * w           (Adam's coupled L2; AdamW passes 0)
 *   m = lerp(m, d, 1 - beta1)
 *   v = v * beta2 + (1 - beta2) * d * d
 *   w = w - step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). */
static inline void adam_range(int64_t lo, int64_t hi, float *restrict w,
                              const float *restrict g, float *restrict m, float *restrict v,
                              float beta1, float beta2, float eps, float weight_decay,
                              float decay, float step_size, float bc2_sqrt)
{
    const float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
    NN_FTZ_BEGIN
    for (int64_t i = lo; i < hi; i++) {
        float p = decay != 1.0f ? w[i] * decay : w[i];
        float d = weight_decay != 0.0f ? g[i] + weight_decay * p : g[i];
        float mi = nn_lerp(m[i], d, w1);
        float vi = v[i] * beta2 + w2 * (d * d);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = p + (-step_size) * (mi / denom);
    }
    NN_FTZ_END
}

void NN_ISA_FN(adam_step)(int64_t n, float *w, const float *g, float *m, float *v,
                          float beta1, float beta2, float eps, float weight_decay, float decay,
                          float step_size, float bc2_sqrt)
{
    NN_FOR_RANGES(n, lo, hi,
                  adam_range(lo, hi, w, g, m, v, beta1, beta2, eps, weight_decay, decay,
                             step_size, bc2_sqrt));
}

/* RMSprop:
 *   d = g + wd * w
 *   s = s * alpha + (1 - alpha) * d * d
 *   centered: a = lerp(a, d, 1 - alpha); avg = sqrt(s - a * a) + eps
 *   else:     avg = sqrt(s) + eps
 *   momentum: b = b * mu + d / avg; w = w - lr * b
 *   else:     w = w - lr * d / avg
 * gavg may be NULL unless centered, buf NULL unless momentum > 0; the
 * buffers start at zero (PyTorch's RMSprop momentum buffer starts at 0).
 * The four variants are separate loops: loads through a pointer that may be
 * NULL cannot be if-converted, so one loop with branches stays scalar. */
#define NN_RMSPROP_LOOP(CENTERED, MOMENTUM)                                      \
    for (int64_t i = lo; i < hi; i++) {                                          \
        float d = weight_decay != 0.0f ? g[i] + weight_decay * w[i] : g[i];      \
        float s = sq[i] * alpha + wa * (d * d);                                  \
        sq[i] = s;                                                               \
        float avg;                                                               \
        if (CENTERED) {                                                          \
            float a = nn_lerp(gavg[i], d, wa);                                   \
            gavg[i] = a;                                                         \
            avg = sqrtf(s + (-1.0f) * (a * a)) + eps;                            \
        } else {                                                                 \
            avg = sqrtf(s) + eps;                                                \
        }                                                                        \
        if (MOMENTUM) {                                                          \
            float b = buf[i] * momentum + d / avg;                               \
            buf[i] = b;                                                          \
            w[i] = w[i] + (-lr) * b;                                             \
        } else {                                                                 \
            w[i] = w[i] + (-lr) * (d / avg);                                     \
        }                                                                        \
    }

static inline void rmsprop_range(int64_t lo, int64_t hi, float *restrict w,
                                 const float *restrict g, float *restrict sq,
                                 float *restrict gavg, float *restrict buf, float lr,
                                 float alpha, float eps, float weight_decay, float momentum)
{
    const float wa = 1.0f - alpha;
    NN_FTZ_BEGIN
    if (gavg != NULL && buf != NULL)
        NN_RMSPROP_LOOP(1, 1)
    else if (gavg != NULL)
        NN_RMSPROP_LOOP(1, 0)
    else if (buf != NULL)
        NN_RMSPROP_LOOP(0, 1)
    else
        NN_RMSPROP_LOOP(0, 0)
    NN_FTZ_END
}

void NN_ISA_FN(rmsprop_step)(int64_t n, float *w, const float *g, float *sq, float *gavg,
                             float *buf, float lr, float alpha, float eps, float weight_decay,
                             float momentum)
{
    if (!(momentum > 0.0f))
        buf = NULL;
    NN_FOR_RANGES(n, lo, hi,
                  rmsprop_range(lo, hi, w, g, sq, gavg, buf, lr, alpha, eps, weight_decay,
                                momentum));
}
