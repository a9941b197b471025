/* Machine limits for the benchmarks: the multiply-add peak and the memory
 * bandwidth of the ISA in use. Compiled once per ISA (see dispatch.h), so
 * the peak is that of the vectors this ISA's kernels use: 16 floats per
 * register with AVX-512, 8 with AVX2 (both with FMA), 4 for the generic
 * SSE2 build (separate multiply and add). A GEMM's "% of peak" is measured
 * against this. */
#include <omp.h>
#include "dispatch.h"

#if defined(NN_ISA_avx512)
#define NN_PEAK_LANES 16
#elif defined(NN_ISA_avx2)
#define NN_PEAK_LANES 8
#else
#define NN_PEAK_LANES 4
#endif

typedef float nn_peak_vec __attribute__((vector_size(NN_PEAK_LANES * 4)));

/* Twelve independent accumulator chains: enough to cover the FMA latency
 * (4-5 cycles) times the issue width (2 per cycle) on current x86 cores,
 * and with the two operands they still fit in the 16 registers of AVX2.
 * acc = acc * x + y converges to y / (1 - x) = 1: no overflow, no
 * denormals. peak.c is compiled with -ffp-contract=fast, so with FMA each
 * line is one fused multiply-add. */
#define NN_PEAK_CHAINS 12

static float peak_thread(int64_t iters, float seed)
{
    nn_peak_vec x, y, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    for (int l = 0; l < NN_PEAK_LANES; l++) {
        x[l] = 0.999f;
        y[l] = 0.001f;
        a0[l] = seed + 0.01f * (float)l;
    }
    a1 = a0 + y, a2 = a1 + y, a3 = a2 + y, a4 = a3 + y, a5 = a4 + y;
    a6 = a5 + y, a7 = a6 + y, a8 = a7 + y, a9 = a8 + y, a10 = a9 + y, a11 = a10 + y;
    for (int64_t i = 0; i < iters; i++) {
        a0 = a0 * x + y;
        a1 = a1 * x + y;
        a2 = a2 * x + y;
        a3 = a3 * x + y;
        a4 = a4 * x + y;
        a5 = a5 * x + y;
        a6 = a6 * x + y;
        a7 = a7 * x + y;
        a8 = a8 * x + y;
        a9 = a9 * x + y;
        a10 = a10 * x + y;
        a11 = a11 * x + y;
    }
    nn_peak_vec s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
    float r = 0.0f;
    for (int l = 0; l < NN_PEAK_LANES; l++)
        r += s[l];
    return r;
}

void NN_ISA_FN(fma_peak)(int64_t iters, float *sink, double *flops)
{
    int team = 1;
    float total = 0.0f;
#pragma omp parallel reduction(+ : total) num_threads(nn_max_threads())
    {
#pragma omp single
        team = omp_get_num_threads();
        total += peak_thread(iters, 0.5f + 0.001f * (float)omp_get_thread_num());
    }
    sink[0] = total;
    *flops = 2.0 * NN_PEAK_CHAINS * NN_PEAK_LANES * (double)iters * (double)team;
}

void NN_ISA_FN(triad)(int64_t n, float *a, const float *b, const float *c, float s)
{
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}
