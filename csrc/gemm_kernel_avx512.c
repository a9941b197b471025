/* The AVX-512 GEMM and GEMV kernels (the code is gemm_kernel_simd.h):
 * a 6 x 64 tile, 24 zmm accumulators, 4 zmm of B and 1 broadcast of A per
 * depth step; edges use k-masks. Compiled only for the avx512 path. */
#include <stddef.h>
#include <immintrin.h>
#include "dispatch.h"

#define NN_INLINE static inline __attribute__((always_inline))

#define MR 6
#define NV 4        /* vectors per strip */
#define VL 16       /* floats per vector */
typedef __m512 vf;
typedef __mmask16 vm;
#define v_zero() _mm512_setzero_ps()
#define v_set1(x) _mm512_set1_ps(x)
#define v_load(p) _mm512_loadu_ps(p)
#define v_loadm(p, m) _mm512_maskz_loadu_ps((m), (p))
#define v_store(p, x) _mm512_storeu_ps((p), (x))
#define v_storem(p, m, x) _mm512_mask_storeu_ps((p), (m), (x))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define v_mul(a, b) _mm512_mul_ps((a), (b))
#define v_add(a, b) _mm512_add_ps((a), (b))
#define v_max(a, b) _mm512_max_ps((a), (b))
#define v_mask(n) ((__mmask16)((1u << (n)) - 1u)) /* the first n lanes, n in 1..16 */
#define v_full() ((__mmask16)0xffff)
NN_INLINE float v_hsum(vf x) { return _mm512_reduce_add_ps(x); }
#define GV 16 /* of 32 vector registers */

#include "gemm_kernel_simd.h"
