/* GEMM micro-kernels, compiled once per ISA (see dispatch.h).
 * For now a straightforward reference kernel; the blocked, packed kernels
 * replace it. */
#include "dispatch.h"

void NN_ISA_FN(sgemm_naive)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda,
                            const float *b, int64_t ldb, float beta,
                            float *c, int64_t ldc, const float *bias, int activation)
{
#pragma omp parallel for schedule(static) if (m * n * k >= (1 << 18))
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++)
            ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (int64_t p = 0; p < k; p++) {
            float av = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
            if (trans_b)
                for (int64_t j = 0; j < n; j++)
                    ci[j] += av * b[j * ldb + p];
            else
                for (int64_t j = 0; j < n; j++)
                    ci[j] += av * b[p * ldb + j];
        }
        for (int64_t j = 0; j < n; j++) {
            float v = ci[j] + (bias ? bias[j] : 0.0f);
            ci[j] = (activation == NN_ACT_RELU && v < 0.0f) ? 0.0f : v;
        }
    }
}
