/* Activations: forward/backward pairs. Compiled once per ISA (see dispatch.h);
 * the plain loops are written for the compiler to vectorise with that ISA.
 * Forward functions may run in place (x == y); backward functions may write
 * dx over dy.
 *
 * Which saved array a backward pass reads follows PyTorch: ReLU, Sigmoid,
 * Tanh and Softmax use their output y (cheaper, and it lets a ReLU fused into
 * the GEMM epilogue keep no pre-activation copy); LeakyReLU and GELU use their
 * input x.
 *
 * Sigmoid, Tanh, GELU and Softmax use the vectorisable exp, tanh and normal
 * CDF of vmath.h (a few ulp, tested against float64): gcc vectorises libm
 * calls only under -ffast-math, and scalar glibc measured ~5 ns (expf),
 * ~28 ns (tanhf) and ~15 ns (double erfc for an accurate GELU) per element
 * here, slower than the GEMM that produced the activations. */
#include <math.h>
#include "dispatch.h"
#include "vmath.h"

/* y = max(x, 0); NaN propagates, as in PyTorch. */
void NN_ISA_FN(relu_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = x[i] < 0.0f ? 0.0f : x[i];
    });
}

/* dx = dy where x > 0, else 0 (the subgradient at 0 is 0, as in PyTorch).
 * Passing the output y instead of x gives the same mask, since y > 0 exactly
 * where x > 0. A bit mask, not a select, so dy is loaded unconditionally and
 * the loop vectorises without masked loads (plain SSE2). */
void NN_ISA_FN(relu_backward)(int64_t n, const float *x, const float *dy, float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = nn_keep_if_pos(x[i], dy[i]);
    });
}

/* y = x where x > 0, else slope * x (PyTorch's LeakyReLU, any slope).
 * Both sides are computed and then selected: a multiply under a condition is
 * not if-converted under gcc's default -ftrapping-math, and the branchy
 * scalar loop it leaves mispredicts on random signs (~8 ns per element). */
void NN_ISA_FN(leaky_relu_forward)(int64_t n, const float *x, float *y, float slope)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = nn_select_pos(x[i], x[i], x[i] * slope);
    });
}

void NN_ISA_FN(leaky_relu_backward)(int64_t n, const float *x, const float *dy, float *dx,
                                    float slope)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = nn_select_pos(x[i], dy[i], dy[i] * slope);
    });
}

/* y = 1 / (1 + exp(-x)): exp overflows to inf for x < -88 and y becomes 0,
 * which is the correctly rounded answer there. */
void NN_ISA_FN(sigmoid_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = 1.0f / (1.0f + nn_expf(-x[i]));
    });
}

/* dx = dy * y * (1 - y), from the output, as PyTorch computes it. */
void NN_ISA_FN(sigmoid_backward)(int64_t n, const float *y, const float *dy, float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = dy[i] * ((1.0f - y[i]) * y[i]);
    });
}

void NN_ISA_FN(tanh_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = nn_tanhf(x[i]);
    });
}

/* dx = dy * (1 - y^2), from the output. */
void NN_ISA_FN(tanh_backward)(int64_t n, const float *y, const float *dy, float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    });
}

/* The exact GELU (PyTorch's default approximate='none'):
 * y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), with Phi from vmath.h, which
 * keeps full relative precision in the negative tail (where PyTorch's
 * 1 + erf(.) cancels: ~4 digits lost at x = -4). */
void NN_ISA_FN(gelu_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = x[i] * nn_normal_cdf(x[i]);
    });
}

/* dy/dx = Phi(x) + x phi(x), phi the standard normal density. */
void NN_ISA_FN(gelu_backward)(int64_t n, const float *x, const float *dy, float *dx)
{
    const float inv_sqrt_2pi = 0.39894228040143267794f;
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i];
            float pdf = inv_sqrt_2pi * nn_exp_neg_half_sq(v);
            dx[i] = dy[i] * (nn_normal_cdf(v) + v * pdf);
        }
    });
}

/* Row-wise softmax of an m x n row-major matrix (leading dimension n),
 * stable: exp(x - max) never overflows. x - max is formed exactly (hi + lo;
 * a rounded float difference would cost up to |x - max| * 2^-24 relative
 * error, as PyTorch's does); the row sum is accumulated in double,
 * in a fixed lane order (nn_sum_lanes), so a row's result does not depend on
 * how rows are split over threads. A row holding +inf or NaN gives NaN, as in PyTorch. */
static void softmax_rows(int64_t r0, int64_t r1, int64_t n, const float *x, float *y)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = xr[0];
        for (int64_t j = 1; j < n; j++)
            mx = xr[j] > mx ? xr[j] : mx;
        for (int64_t j = 0; j < n; j++) {
            float lo, d = nn_sub_exact(xr[j], mx, &lo);
            yr[j] = nn_expf2(d, lo);
        }
        float inv = (float)(1.0 / nn_sum_lanes(yr, NULL, n));
        for (int64_t j = 0; j < n; j++)
            yr[j] *= inv;
    }
}

void NN_ISA_FN(softmax_forward)(int64_t m, int64_t n, const float *x, float *y)
{
    if (m * n < NN_PARALLEL_MIN_ELEMENTS) {
        softmax_rows(0, m, n, x, y);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t r = 0; r < m; r++)
        softmax_rows(r, r + 1, n, x, y);
}

/* dx = y * (dy - sum_j(dy_j * y_j)), row by row, from the output y. */
static void softmax_backward_rows(int64_t r0, int64_t r1, int64_t n, const float *y,
                                  const float *dy, float *dx)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *yr = y + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float d = (float)nn_sum_lanes(dyr, yr, n);
        for (int64_t j = 0; j < n; j++)
            dxr[j] = yr[j] * (dyr[j] - d);
    }
}

void NN_ISA_FN(softmax_backward)(int64_t m, int64_t n, const float *y, const float *dy,
                                 float *dx)
{
    if (m * n < NN_PARALLEL_MIN_ELEMENTS) {
        softmax_backward_rows(0, m, n, y, dy, dx);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t r = 0; r < m; r++)
        softmax_backward_rows(r, r + 1, n, y, dy, dx);
}

/* y = act(a + b): a residual block's sum with the ReLU after it in the same
 * pass (the bits of add, then relu_forward). y may be a or b. */
void NN_ISA_FN(add_act)(int64_t n, const float *a, const float *b, int act, float *y)
{
    if (act == NN_ACT_RELU)
        NN_FOR_RANGES(n, lo, hi, {
            for (int64_t i = lo; i < hi; i++) {
                const float v = a[i] + b[i];
                y[i] = v < 0.0f ? 0.0f : v;
            }
        });
    else
        NN_FOR_RANGES(n, lo, hi, {
            for (int64_t i = lo; i < hi; i++)
                y[i] = a[i] + b[i];
        });
}

/* dx = relu_backward(y, a + b): the bits of add, then relu_backward on the
 * ReLU's output y (a residual block's input gradient through the ReLU before
 * the block). dx may be a or b. */
void NN_ISA_FN(add_relu_backward)(int64_t n, const float *a, const float *b, const float *y,
                                  float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = nn_keep_if_pos(y[i], a[i] + b[i]);
    });
}
