/* Optimizer update kernels: fused, in place, one pass over each parameter.
 * Compiled once per ISA (see dispatch.h).
 *
 * Each kernel is exactly one step of the matching torch.optim algorithm
 * (maximize=False, the single-tensor path), in float32 with the same order of
 * operations, so a run can be compared with PyTorch step by step. Scalars
 * derived from the step count (bias corrections) are computed by the caller
 * in double, as PyTorch computes them in Python. Every element is updated
 * independently, so results are identical for any thread count. */
#include <math.h>
#include <stddef.h>
#include "dispatch.h"

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
void NN_ISA_FN(sgd_step)(int64_t n, float *w, const float *g, float *buf, float lr,
                         float momentum, float dampening, float weight_decay, int nesterov,
                         int first)
{
    const float one_minus_damp = 1.0f - dampening;
    if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
        for (int64_t i = 0; i < n; i++) {
            float d = weight_decay != 0.0f ? g[i] + weight_decay * w[i] : g[i];
            w[i] = w[i] + (-lr) * d;
        }
        return;
    }
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++) {
        float d = weight_decay != 0.0f ? g[i] + weight_decay * w[i] : g[i];
        float b = first ? d : buf[i] * momentum + one_minus_damp * d;
        buf[i] = b;
        d = nesterov ? d + momentum * b : b;
        w[i] = w[i] + (-lr) * d;
    }
}

/* Adam and AdamW:
 *   w = w * decay                      (AdamW: decay = 1 - lr * wd; Adam: 1)
 *   d = g + weight_decay * w           (Adam's coupled L2; AdamW passes 0)
 *   m = lerp(m, d, 1 - beta1)
 *   v = v * beta2 + (1 - beta2) * d * d
 *   w = w - step_size * m / (sqrt(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). */
void NN_ISA_FN(adam_step)(int64_t n, float *w, const float *g, float *m, float *v,
                          float beta1, float beta2, float eps, float weight_decay, float decay,
                          float step_size, float bc2_sqrt)
{
    const float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++) {
        float p = decay != 1.0f ? w[i] * decay : w[i];
        float d = weight_decay != 0.0f ? g[i] + weight_decay * p : g[i];
        float mi = nn_lerp(m[i], d, w1);
        float vi = v[i] * beta2 + w2 * (d * d);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = p + (-step_size) * (mi / denom);
    }
}

/* RMSprop:
 *   d = g + wd * w
 *   s = s * alpha + (1 - alpha) * d * d
 *   centered: a = lerp(a, d, 1 - alpha); avg = sqrt(s - a * a) + eps
 *   else:     avg = sqrt(s) + eps
 *   momentum: b = b * mu + d / avg; w = w - lr * b
 *   else:     w = w - lr * d / avg
 * gavg may be NULL unless centered, buf NULL unless momentum > 0; the
 * buffers start at zero (PyTorch's RMSprop momentum buffer starts at 0). */
void NN_ISA_FN(rmsprop_step)(int64_t n, float *w, const float *g, float *sq, float *gavg,
                             float *buf, float lr, float alpha, float eps, float weight_decay,
                             float momentum)
{
    const float wa = 1.0f - alpha;
    const int centered = gavg != NULL, use_buf = buf != NULL && momentum > 0.0f;
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++) {
        float d = weight_decay != 0.0f ? g[i] + weight_decay * w[i] : g[i];
        float s = sq[i] * alpha + wa * (d * d);
        sq[i] = s;
        float avg;
        if (centered) {
            float a = nn_lerp(gavg[i], d, wa);
            gavg[i] = a;
            avg = sqrtf(s + (-1.0f) * (a * a)) + eps;
        } else {
            avg = sqrtf(s) + eps;
        }
        if (use_buf) {
            float b = buf[i] * momentum + d / avg;
            buf[i] = b;
            w[i] = w[i] + (-lr) * b;
        } else {
            w[i] = w[i] + (-lr) * (d / avg);
        }
    }
}
