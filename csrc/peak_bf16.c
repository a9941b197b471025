/* The bfloat16 multiply-add peak: what vdpbf16ps can do on this core, the
 * limit the bf16 GEMM's "% of peak" is measured against (the twin of
 * peak.c's float32 FMA probe). Compiled only into the AVX512_BF16 object
 * (CMakeLists.txt) and called only when the CPU has the instruction
 * (nn_bf16_peak in gemm_bf16.c).
 *
 * One vdpbf16ps on zmm registers does 16 lanes x 2 bf16 products, each added
 * into a float32 accumulator: 64 floating-point operations, counted as the
 * GEMM counts them (2 per multiply-add). Cores differ in how many they issue
 * per cycle (Zen 4 runs it as two 256-bit halves on its two FMA pipes, twice
 * its float32 FMA rate; Sapphire Rapids on one port, the same flops as its
 * two FMA ports), which is why it is measured, not assumed.
 *
 * Twelve independent accumulator chains, as in peak.c, cover the latency
 * times the issue width. Each pair is (x, -x) times (y, y): every step adds
 * x*y - x*y = 0, so the accumulators stay at their seeds (no overflow, no
 * denormals) and the compiler cannot drop the intrinsics. */
#include <immintrin.h>
#include <stdint.h>
#include <omp.h>
#include "dispatch.h"
#include "gemm_bf16.h"

#define NN_BF16_PEAK_CHAINS 12

static float peak_thread(int64_t iters, float seed)
{
    /* bf16 0.5 is 0x3f00, -0.5 is 0xbf00, 0.25 is 0x3e80: pairs packed low first */
    const __m512bh x = (__m512bh)_mm512_set1_epi32((int)0xbf003f00u);
    const __m512bh y = (__m512bh)_mm512_set1_epi32(0x3e803e80);
    __m512 acc[NN_BF16_PEAK_CHAINS];
    for (int c = 0; c < NN_BF16_PEAK_CHAINS; c++)
        acc[c] = _mm512_set1_ps(seed + 0.01f * (float)c);
    for (int64_t i = 0; i < iters; i++) {
        acc[0] = _mm512_dpbf16_ps(acc[0], x, y);
        acc[1] = _mm512_dpbf16_ps(acc[1], x, y);
        acc[2] = _mm512_dpbf16_ps(acc[2], x, y);
        acc[3] = _mm512_dpbf16_ps(acc[3], x, y);
        acc[4] = _mm512_dpbf16_ps(acc[4], x, y);
        acc[5] = _mm512_dpbf16_ps(acc[5], x, y);
        acc[6] = _mm512_dpbf16_ps(acc[6], x, y);
        acc[7] = _mm512_dpbf16_ps(acc[7], x, y);
        acc[8] = _mm512_dpbf16_ps(acc[8], x, y);
        acc[9] = _mm512_dpbf16_ps(acc[9], x, y);
        acc[10] = _mm512_dpbf16_ps(acc[10], x, y);
        acc[11] = _mm512_dpbf16_ps(acc[11], x, y);
    }
    __m512 s = acc[0];
    for (int c = 1; c < NN_BF16_PEAK_CHAINS; c++)
        s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

void nn_bf16_peak_avx512bf16(int64_t iters, float *sink, double *flops)
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
    *flops = 64.0 * NN_BF16_PEAK_CHAINS * (double)iters * (double)team;
}
