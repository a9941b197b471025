/* Losses: forward/backward pairs, mean reduction, PyTorch's definitions.
 * Compiled once (not per ISA): losses touch batch x outputs elements, a
 * rounding error next to the GEMMs around them.
 *
 * Forward functions write the mean loss to *loss (double); backward functions
 * write the gradient of that mean with respect to the prediction. pred and
 * grad may be the same array.
 *
 * Determinism: a loss sum runs over nn_sum_blocks(count) equal blocks, a
 * number fixed by the element count alone. Each block is summed in index
 * order into eight interleaved double accumulators (lane i mod 8, added
 * pairwise at the end); blocks may run on any
 * thread; their partial sums are added in block order. The result is the same
 * for any thread count. */
#include <math.h>
#include <stddef.h>
#include "dispatch.h"
#include "profile.h"
#include "vmath.h"

#define NN_LOSS_MAX_BLOCKS 64
#define NN_LOSS_BLOCK_MIN 16384 /* elements (or rows x classes) per block */

static int64_t nn_sum_blocks(int64_t work)
{
    int64_t b = work / NN_LOSS_BLOCK_MIN;
    return b < 1 ? 1 : b > NN_LOSS_MAX_BLOCKS ? NN_LOSS_MAX_BLOCKS : b;
}

/* [lo, hi) of block b of nb over count items. */
static inline void nn_block_range(int64_t b, int64_t nb, int64_t count, int64_t *lo, int64_t *hi)
{
    *lo = count * b / nb;
    *hi = count * (b + 1) / nb;
}

/* Defines `static double name(x, t, param, lo, hi)`: the sum of
 * term(x, t, i, param) over [lo, hi) into eight interleaved double
 * accumulators (lane = i mod 8), added pairwise at the end. A macro, not a
 * function pointer, so the term is inlined into the loop. */
#define NN_DEFINE_BLOCK_SUM(name, term)                                               \
    static double name(const float *x, const float *t, double param, int64_t lo,      \
                       int64_t hi)                                                    \
    {                                                                                 \
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                     \
        int64_t i = lo;                                                               \
        for (; i + 8 <= hi; i += 8)                                                   \
            for (int l = 0; l < 8; l++)                                               \
                acc[l] += term(x, t, i + l, param);                                   \
        for (int l = 0; i < hi; i++, l++)                                             \
            acc[l] += term(x, t, i, param);                                           \
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +                              \
               ((acc[4] + acc[5]) + (acc[6] + acc[7]));                               \
    }

typedef double (*nn_block_sum)(const float *x, const float *t, double param, int64_t lo,
                               int64_t hi);

/* The mean over i < n of the terms block_sum adds up, summed as described
 * above. */
static double nn_mean_loss(nn_block_sum block_sum, int64_t n, const float *x, const float *t,
                           double param)
{
    double partial[NN_LOSS_MAX_BLOCKS];
    int64_t nb = nn_sum_blocks(n);
    if (nb == 1)    /* no OpenMP region at all: even an idle one costs ~0.3 us */
        return block_sum(x, t, param, 0, n) / (double)n;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo, hi;
        nn_block_range(b, nb, n, &lo, &hi);
        partial[b] = block_sum(x, t, param, lo, hi);
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++)
        s += partial[b];
    return s / (double)n;
}

/* ---- MSELoss: mean((x - t)^2) ---- */

static inline double nn_mse_term(const float *x, const float *t, int64_t i, double unused)
{
    double d = (double)x[i] - (double)t[i];
    return d * d;
}
NN_DEFINE_BLOCK_SUM(nn_mse_block, nn_mse_term)

static int mse_forward(int64_t n, const float *x, const float *t, double *loss)
{
    *loss = nn_mean_loss(nn_mse_block, n, x, t, 0.0);
    return NN_OK;
}

/* grad = 2 (x - t) / n */
static int mse_backward(int64_t n, const float *x, const float *t, float *grad)
{
    const float scale = (float)(2.0 / (double)n);
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            grad[i] = (x[i] - t[i]) * scale;
    });
    return NN_OK;
}

/* ---- HuberLoss(delta): 0.5 d^2 where |d| < delta, else delta (|d| - delta/2) ---- */

static inline double nn_huber_term(const float *x, const float *t, int64_t i, double delta)
{
    double d = (double)x[i] - (double)t[i], a = fabs(d);
    return a < delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
}
NN_DEFINE_BLOCK_SUM(nn_huber_block, nn_huber_term)

static int huber_forward(int64_t n, const float *x, const float *t, float delta, double *loss)
{
    *loss = nn_mean_loss(nn_huber_block, n, x, t, delta);
    return NN_OK;
}

/* grad = clamp(x - t, -delta, delta) / n */
static int huber_backward(int64_t n, const float *x, const float *t, float delta, float *grad)
{
    const float scale = (float)(1.0 / (double)n);
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) {
            float d = x[i] - t[i];
            d = d < -delta ? -delta : d > delta ? delta : d;
            grad[i] = d * scale;
        }
    });
    return NN_OK;
}

/* ---- BCEWithLogitsLoss: mean(max(x, 0) - x t + log(1 + exp(-|x|))) ---- */

static inline double nn_bce_term(const float *x, const float *t, int64_t i, double unused)
{
    /* log1pf(expf(.)) in float (~1 ulp, a third of the double cost); the
     * terms are still added in double. */
    float v = x[i];
    return (double)(v > 0.0f ? v : 0.0f) - (double)v * (double)t[i] +
           (double)log1pf(nn_expf(-fabsf(v)));
}
NN_DEFINE_BLOCK_SUM(nn_bce_block, nn_bce_term)

static int bce_logits_forward(int64_t n, const float *x, const float *t, double *loss)
{
    *loss = nn_mean_loss(nn_bce_block, n, x, t, 0.0);
    return NN_OK;
}

/* grad = (sigmoid(x) - t) / n, the sigmoid evaluated without overflow. */
static int bce_logits_backward(int64_t n, const float *x, const float *t, float *grad)
{
    const float scale = (float)(1.0 / (double)n);
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) {
            float e = nn_expf(-fabsf(x[i]));
            float s = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            grad[i] = (s - t[i]) * scale;
        }
    });
    return NN_OK;
}

/* ---- CrossEntropyLoss: logits (m x c) and class labels in [0, c) ----
 * row loss = logsumexp(x_r) - x_r[label], logsumexp = max + log(sum exp(x - max)),
 * with exp(x - max) <= 1 so nothing overflows, whatever the logits (1e4 or
 * 1e30), and the sum and logarithm in double. exp (vmath.h's nn_expf) of the
 * float difference
 * costs a relative error of at most |x - max| * 2^-24 in each term, below the
 * rounding of a float32 loss for any term that matters. The gradient
 * (softmax - onehot) / m is formed in double from those terms, so the label's
 * entry p - 1 keeps its precision when p is close to 1. */

/* One row: returns its loss; writes its gradient row when gr != NULL. */
static double ce_row(int64_t c, const float *xr, int64_t y, double scale, float *gr)
{
    float mx = xr[0];
    for (int64_t j = 1; j < c; j++)
        mx = xr[j] > mx ? xr[j] : mx;
    double sum;
    if (gr != NULL) {
        for (int64_t j = 0; j < c; j++)
            gr[j] = nn_expf(xr[j] - mx);
        sum = nn_sum_lanes(gr, NULL, c);
        double inv = scale / sum;
        double ey = gr[y];
        for (int64_t j = 0; j < c; j++)
            gr[j] = (float)(gr[j] * inv);
        gr[y] = (float)(ey * inv - scale);
    } else {
        sum = 0.0;
        for (int64_t j = 0; j < c; j++)
            sum += nn_expf(xr[j] - mx);
    }
    return ((double)mx + log(sum)) - (double)xr[y];
}

/* The summed loss of rows [lo, hi), their gradient rows written when
 * grad != NULL; sets *bad when a label is out of range. */
static double ce_rows(int64_t lo, int64_t hi, int64_t m, int64_t c, const float *x,
                      const int64_t *labels, float *grad, int *bad)
{
    const double scale = 1.0 / (double)m;
    double s = 0.0;
    for (int64_t r = lo; r < hi; r++) {
        int64_t y = labels[r];
        if (y < 0 || y >= c) {
            *bad = 1;
            continue;
        }
        s += ce_row(c, x + r * c, y, scale, grad != NULL ? grad + r * c : NULL);
    }
    return s;
}

/* Writes the mean loss, and when grad != NULL also the gradient (the fused
 * forward + backward: one pass, one exp per logit). Returns NN_EINVAL when a
 * label is outside [0, c) (then *loss is NaN and grad unspecified). */
static int cross_entropy_forward(int64_t m, int64_t c, const float *x, const int64_t *labels,
                                 double *loss, float *grad)
{
    double partial[NN_LOSS_MAX_BLOCKS];
    int64_t nb = nn_sum_blocks(m * c);
    nb = nb > m ? m : nb;
    int bad = 0;
    if (nb == 1) {
        partial[0] = ce_rows(0, m, m, c, x, labels, grad, &bad);
    } else {
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) reduction(| : bad)
        for (int64_t b = 0; b < nb; b++) {
            int64_t lo, hi;
            nn_block_range(b, nb, m, &lo, &hi);
            partial[b] = ce_rows(lo, hi, m, c, x, labels, grad, &bad);
        }
    }
    if (bad) {
        *loss = NAN;
        return NN_EINVAL;
    }
    double total = 0.0;
    for (int64_t b = 0; b < nb; b++)
        total += partial[b];
    *loss = total / (double)m;
    return NN_OK;
}

/* grad = (softmax(x) - onehot(label)) / m. Returns NN_EINVAL for a bad label
 * (grad is then unspecified). */
static int cross_entropy_backward(int64_t m, int64_t c, const float *x, const int64_t *labels,
                                  float *grad)
{
    int bad = 0;
    if (m * c < NN_PARALLEL_MIN_ELEMENTS) {
        ce_rows(0, m, m, c, x, labels, grad, &bad);
    } else {
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) reduction(| : bad)
        for (int64_t r = 0; r < m; r++)
            ce_rows(r, r + 1, m, c, x, labels, grad, &bad);
    }
    return bad ? NN_EINVAL : NN_OK;
}

/* The public entry points: each call timed and recorded while profiling is
 * on (profile.h), with its sizes (n elements, or m rows of c classes). */
#define NN_LOSS_ENTRY(name, params, args, m, n)                            \
    int nn_##name params                                                   \
    {                                                                      \
        const int profiling = nn_profiling();                              \
        const int64_t t0 = profiling ? nn_profile_now_ns() : 0;            \
        int status = name args;   /* one call site: inlined */             \
        if (profiling)                                                     \
            nn_profile_record(NN_K_##name, t0, 0.0, m, n, 0);              \
        return status;                                                     \
    }
NN_LOSS_ENTRY(mse_forward, (int64_t n, const float *x, const float *t, double *loss),
              (n, x, t, loss), n, 0)
NN_LOSS_ENTRY(mse_backward, (int64_t n, const float *x, const float *t, float *grad),
              (n, x, t, grad), n, 0)
NN_LOSS_ENTRY(huber_forward,
              (int64_t n, const float *x, const float *t, float delta, double *loss),
              (n, x, t, delta, loss), n, 0)
NN_LOSS_ENTRY(huber_backward,
              (int64_t n, const float *x, const float *t, float delta, float *grad),
              (n, x, t, delta, grad), n, 0)
NN_LOSS_ENTRY(bce_logits_forward, (int64_t n, const float *x, const float *t, double *loss),
              (n, x, t, loss), n, 0)
NN_LOSS_ENTRY(bce_logits_backward, (int64_t n, const float *x, const float *t, float *grad),
              (n, x, t, grad), n, 0)
NN_LOSS_ENTRY(cross_entropy_forward,
              (int64_t m, int64_t c, const float *x, const int64_t *labels, double *loss,
               float *grad),
              (m, c, x, labels, loss, grad), m, c)
NN_LOSS_ENTRY(cross_entropy_backward,
              (int64_t m, int64_t c, const float *x, const int64_t *labels, float *grad),
              (m, c, x, labels, grad), m, c)
