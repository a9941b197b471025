/* Dropout with a counter-based generator. Compiled once per ISA.
 *
 * Element i is kept when the top 24 bits of splitmix64(key + (i+1) * golden)
 * are >= threshold, threshold = round(p * 2^24); kept elements are scaled by
 * 1 / (1 - p) (inverted dropout, as PyTorch). The mask is a pure function of
 * (key, i), so it is identical for any thread count and the backward pass
 * recomputes it instead of storing it. Dropped elements are multiplied by 0,
 * not overwritten, so a NaN input still shows up as NaN (as in PyTorch). The Python side draws a fresh key from
 * the seeded generator for every training forward pass. */
#include "dispatch.h"

static inline uint32_t nn_dropout_bits(uint64_t key, uint64_t i)
{
    /* splitmix64's output function at stream position i (Steele et al. 2014). */
    uint64_t z = key + (i + 1) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return (uint32_t)(z >> 40);
}

void NN_ISA_FN(dropout_forward)(int64_t n, const float *x, float *y, uint32_t threshold,
                                float scale, uint64_t key)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            y[i] = x[i] * (nn_dropout_bits(key, (uint64_t)i) >= threshold ? scale : 0.0f);
    });
}

/* dx = dy * mask / (1 - p), with the mask the forward pass used (same key). */
void NN_ISA_FN(dropout_backward)(int64_t n, const float *dy, float *dx, uint32_t threshold,
                                 float scale, uint64_t key)
{
    NN_FOR_RANGES(n, lo, hi, {
        for (int64_t i = lo; i < hi; i++)
            dx[i] = dy[i] * (nn_dropout_bits(key, (uint64_t)i) >= threshold ? scale : 0.0f);
    });
}
