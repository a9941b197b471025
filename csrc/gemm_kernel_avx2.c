/* The AVX2 GEMM and GEMV kernels (the code is gemm_kernel_simd.h): a 6 x 16
 * tile, 12 ymm accumulators, 2 ymm of B and 1 broadcast of A per depth step;
 * edges use vmaskmov. Compiled only for the avx2 path. */
#include <stddef.h>
#include <immintrin.h>
#include "dispatch.h"

#define NN_INLINE static inline __attribute__((always_inline))

#define MR 6
#define NV 2
#define VL 8
typedef __m256 vf;
typedef __m256i vm;
#define v_zero() _mm256_setzero_ps()
#define v_set1(x) _mm256_set1_ps(x)
#define v_load(p) _mm256_loadu_ps(p)
#define v_loadm(p, m) _mm256_maskload_ps((p), (m))
#define v_store(p, x) _mm256_storeu_ps((p), (x))
#define v_storem(p, m, x) _mm256_maskstore_ps((p), (m), (x))
#define v_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define v_mul(a, b) _mm256_mul_ps((a), (b))
#define v_add(a, b) _mm256_add_ps((a), (b))
#define v_max(a, b) _mm256_max_ps((a), (b))
#define v_mask(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define v_full() _mm256_set1_epi32(-1)
NN_INLINE float v_hsum(vf x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define GV 8 /* of 16 vector registers */

#include "gemm_kernel_simd.h"
