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
 * Sigmoid, Tanh, GELU and Softmax call scalar libm (expf, tanhf, erfc, exp): gcc
 * vectorises those calls only under -ffast-math. Measured at 0.7-1.5 ns per
 * element on the development machine, a full pass over a 1024x256 activation
 * costs ~0.3 ms against ~4 ms for the GEMM that produced it, so a hand-written
 * vector approximation is not worth its accuracy risk yet. */
#include <math.h>
#include "dispatch.h"

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
 * where x > 0. */
void NN_ISA_FN(relu_backward)(int64_t n, const float *x, const float *dy, float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    });
}

/* y = x where x > 0, else slope * x (PyTorch's LeakyReLU, any slope). */
void NN_ISA_FN(leaky_relu_forward)(int64_t n, const float *x, float *y, float slope)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
    });
}

void NN_ISA_FN(leaky_relu_backward)(int64_t n, const float *x, const float *dy, float *dx,
                                    float slope)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * slope;
    });
}

/* y = 1 / (1 + exp(-x)): expf overflows to inf for x < -88 and y becomes 0,
 * which is the correctly rounded answer there. */
void NN_ISA_FN(sigmoid_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = 1.0f / (1.0f + expf(-x[i]));
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
            y[i] = tanhf(x[i]);
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

#define NN_SQRT1_2 0.70710678118654752440
#define NN_INV_SQRT_2PI 0.39894228040143267794

/* The exact GELU (PyTorch's default approximate='none'):
 * y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2).
 * The erfc form keeps full relative precision for negative x, where
 * 1 + erf(.) cancels (PyTorch's erf form loses ~4 digits at x = -4), and it
 * runs in double because erfc amplifies the rounding of its argument by ~x^2
 * (float32 would be off by up to ~150 ulp at x = -12). Double erfc costs
 * ~1.1 ns per element, the same as erff. */
void NN_ISA_FN(gelu_forward)(int64_t n, const float *x, float *y)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = (float)(0.5 * x[i] * erfc(-x[i] * NN_SQRT1_2));
    });
}

/* dy/dx = Phi(x) + x phi(x), phi the standard normal density. */
void NN_ISA_FN(gelu_backward)(int64_t n, const float *x, const float *dy, float *dx)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++) {
            double v = x[i];
            double cdf = 0.5 * erfc(-v * NN_SQRT1_2);
            double pdf = NN_INV_SQRT_2PI * exp(-0.5 * v * v);
            dx[i] = dy[i] * (float)(cdf + v * pdf);
        }
    });
}

/* Row-wise softmax of an m x n row-major matrix (leading dimension n),
 * stable: exp(x - max) never overflows. x - max and exp run in double (a
 * float32 difference would cost up to |x - max| * 2^-24 relative error); the
 * row sum is accumulated in double,
 * in index order, so a row's result does not depend on how rows are split
 * over threads. A row holding +inf or NaN gives NaN, as in PyTorch. */
static void softmax_rows(int64_t r0, int64_t r1, int64_t n, const float *x, float *y)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = xr[0];
        for (int64_t j = 1; j < n; j++)
            mx = xr[j] > mx ? xr[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++)
            sum += exp((double)xr[j] - mx);
        double inv = 1.0 / sum;
        for (int64_t j = 0; j < n; j++)
            yr[j] = (float)(exp((double)xr[j] - mx) * inv);
    }
}

void NN_ISA_FN(softmax_forward)(int64_t m, int64_t n, const float *x, float *y)
{
    if (m * n < NN_PARALLEL_MIN_ELEMENTS) {
        softmax_rows(0, m, n, x, y);
        return;
    }
#pragma omp parallel for schedule(static)
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
        double dot = 0.0;
        for (int64_t j = 0; j < n; j++)
            dot += (double)dyr[j] * yr[j];
        float d = (float)dot;
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
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++)
        softmax_backward_rows(r, r + 1, n, y, dy, dx);
}
