/* Activations: forward/backward pairs. Compiled once per ISA (see dispatch.h);
 * the plain loops are written for the compiler to vectorise with that ISA.
 * Forward functions may run in place (x == y). */
#include "dispatch.h"

/* y = max(x, 0); NaN propagates, as in PyTorch. */
void NN_ISA_FN(relu_forward)(int64_t n, const float *x, float *y)
{
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* dx = dy where x > 0, else 0 (the subgradient at 0 is 0, as in PyTorch). */
void NN_ISA_FN(relu_backward)(int64_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for simd schedule(static) if (n >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t i = 0; i < n; i++)
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}
