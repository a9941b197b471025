/* Internal: float32 exp and tanh written so that loops calling them
 * vectorise (branch-free, no libm calls; the sources that use them are
 * built with -fno-trapping-math so selects are if-converted), included by
 * act.c (per ISA) and loss.c.
 *
 * Why: gcc vectorises expf/tanhf calls only under -ffast-math, and scalar
 * glibc costs ~5 ns (expf), ~28 ns (tanhf) and ~15 ns (double erfc, for an
 * accurate GELU) per element on the development machine, more than the GEMM
 * that produced the activations. Through these, Sigmoid / Tanh / GELU
 * forward passes measured ~1 / ~1.6 / ~2 ns per element with AVX-512.
 *
 * Accuracy (tests/test_kernels.py sweeps them against float64): nn_expf
 * within 2 ulp over its whole range; nn_tanhf within 3 ulp (measured 1.3);
 * GELU through nn_normal_cdf within 12 ulp, in the far negative tail
 * (PyTorch's float erf form is off by thousands of ulp there). All propagate
 * NaN and handle +-inf; nn_expf underflows gradually (denormals) and
 * overflows to +inf where expf does. */
#ifndef NN_VMATH_H
#define NN_VMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* c > 0 ? a : b with a and b already computed (see leaky_relu in act.c). */
static inline float nn_select_pos(float c, float a, float b)
{
    return c > 0.0f ? a : b;
}

static inline float nn_bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* c > 0 ? v : +0.0f, as a bit mask (see relu_backward in act.c). */
static inline float nn_keep_if_pos(float c, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return nn_bits_to_float(u & (c > 0.0f ? 0xFFFFFFFFu : 0u));
}

/* 2^n for integer n in [-126, 127], from the exponent bits. */
static inline float nn_pow2i(int32_t n)
{
    return nn_bits_to_float((uint32_t)(n + 127) << 23);
}

/* exp(x): x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2 split in a
 * 9-bit high part, so n * ln2_hi is exact), exp(r) by a degree-6 polynomial
 * (the classic Cephes expf coefficients), then scaled by 2^n as two halves
 * so that n in [-150, 128] never leaves the normal exponent range. */
static inline float nn_expf(float x)
{
    /* clamp so n stays in [-150, 128]: exp(89) overflows to inf and
     * exp(-104) underflows to 0 through the scaling, as they should. NaN
     * fails both tests and stays NaN. */
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    /* round to nearest integer: the 1.5 * 2^23 trick (vectorises without
     * SSE4.1's roundps). */
    const float shifter = 12582912.0f;
    float n = (xc * 1.44269504088896341f + shifter) - shifter;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t n1 = ni / 2;
    return p * nn_pow2i(n1) * nn_pow2i(ni - n1);
}

/* exp(hi + lo) for a small correction lo (|lo| <= ulp(hi)): exp(hi) (1 + lo). */
static inline float nn_expf2(float hi, float lo)
{
    float e = nn_expf(hi);
    return e + e * lo;
}

/* a - b as hi + lo exactly (Knuth's TwoSum, no FMA needed). */
static inline float nn_sub_exact(float a, float b, float *lo)
{
    float s = a - b;
    float bb = s - a;
    *lo = (a - (s - bb)) + (-b - bb);
    return s;
}

/* tanh(x): a polynomial a + a^3 P(a^2) for |x| < 0.625 (least-squares fit
 * weighted for relative error, 0.85 ulp), 1 - 2 / (exp(2|x|) + 1) above,
 * with the sign of x. */
static inline float nn_tanhf(float x)
{
    float a = x < 0.0f ? -x : x;
    float s = a * a;
    float p = -5.691985600e-03f;
    p = p * s + 2.062629163e-02f;
    p = p * s + -5.373531953e-02f;
    p = p * s + 1.333138198e-01f;
    p = p * s + -3.333328068e-01f;
    float small = a + a * s * p;
    float big = 1.0f - 2.0f / (nn_expf(2.0f * a) + 1.0f);
    float t = a < 0.625f ? small : big;   /* NaN takes `big`, which is NaN */
    return __builtin_copysignf(t, x);   /* bit operations; keeps tanh(-0) = -0 */
}

/* exp(-x^2 / 2) for any float x, without the ~x^2 * 2^-24 relative error a
 * rounded float square would cost: x^2 is exact in double, split into
 * hi + lo floats. */
static inline float nn_exp_neg_half_sq(float x)
{
    double half_sq = 0.5 * ((double)x * (double)x);
    float hi = (float)half_sq;
    float lo = (float)(half_sq - (double)hi);
    return nn_expf2(-hi, -lo);
}

/* Phi(x), the standard normal CDF: Phi(x) = erfc(|x| / sqrt 2) / 2 for
 * x <= 0 and 1 - Phi(-x) above, with erfc(z) = t exp(-z^2 + c(t)),
 * t = 1 / (1 + z / 2), c a degree-9 polynomial (Numerical Recipes' erfcc,
 * fractional error < 1.2e-7 for every z >= 0). exp(-z^2) is evaluated as
 * exp(-x^2 / 2) above, so the tail keeps its relative accuracy. */
static inline float nn_normal_cdf(float x)
{
    float a = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.5f * 0.70710678118654752f * a);
    float c = 0.17087277f;
    c = c * t + -0.82215223f;
    c = c * t + 1.48851587f;
    c = c * t + -1.13520398f;
    c = c * t + 0.27886807f;
    c = c * t + -0.18628806f;
    c = c * t + 0.09678418f;
    c = c * t + 0.37409196f;
    c = c * t + 1.00002368f;
    c = c * t + -1.26551223f;
    float q = 0.5f * t * nn_exp_neg_half_sq(a) * nn_expf(c);
    return x > 0.0f ? 1.0f - q : q;
}

/* sum_i v[i] (or v[i] * w[i]) in double over eight interleaved lanes
 * (lane = i mod 8, added pairwise at the end): a fixed order, so the same
 * result on every ISA and thread count, and vectorisable. */
static inline double nn_sum_lanes(const float *v, const float *w, int64_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    if (w == NULL) {
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += v[i + l];
        for (int l = 0; i < n; i++, l++)
            acc[l] += v[i];
    } else {
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += (double)v[i + l] * w[i + l];
        for (int l = 0; i < n; i++, l++)
            acc[l] += (double)v[i] * w[i];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#endif
