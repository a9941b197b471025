/* The first Dense layer on a sparse (CSR) batch: forward Y = X W + b and the
 * weight gradient dW = X^T dY, with X given by (indptr, indices, data).
 * Compiled once per ISA (see dispatch.h): the inner loops are plain axpy
 * over the output width, which each ISA build vectorises.
 *
 * Row i's nonzeros are data[p], indices[p] for indptr[i] <= p < indptr[i+1]
 * (absolute offsets, so a batch may be a row range of a bigger matrix
 * without copying). Indices need not be sorted; duplicates add up, as in
 * SciPy. The Python layer checks the CSR arrays; C trusts them.
 *
 * Determinism: each output value is accumulated in one fixed order (the
 * nonzeros in storage order) whatever the thread count. The forward pass
 * splits rows of Y between threads; the weight gradient splits the columns
 * of dW into fixed NN_CSR_BLOCK-wide blocks, each thread scanning all the
 * nonzeros for its blocks -- no atomics, no combined partial sums. */
#include <string.h>
#include "dispatch.h"

#define NN_CSR_BLOCK 64

static void csr_row(int64_t i, int64_t h, const int32_t *restrict indptr,
                    const int32_t *restrict indices, const float *restrict data,
                    const float *restrict w, const float *restrict b, float *restrict y)
{
    float *restrict yi = y + i * h;
    if (b != NULL)
        memcpy(yi, b, (size_t)h * sizeof *yi);
    else
        memset(yi, 0, (size_t)h * sizeof *yi);
    for (int32_t p = indptr[i]; p < indptr[i + 1]; p++) {
        const float v = data[p];
        const float *restrict wk = w + (int64_t)indices[p] * h;
        for (int64_t j = 0; j < h; j++)
            yi[j] += v * wk[j];
    }
}

void NN_ISA_FN(csr_dense_forward)(int64_t m, int64_t h, const int32_t *indptr,
                                  const int32_t *indices, const float *data, const float *w,
                                  const float *b, float *y)
{
    int64_t work = (int64_t)(indptr[m] - indptr[0]) * h + m * h;
    if (work < NN_PARALLEL_MIN_ELEMENTS || m == 1) {
        for (int64_t i = 0; i < m; i++)
            csr_row(i, h, indptr, indices, data, w, b, y);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t i = 0; i < m; i++)
        csr_row(i, h, indptr, indices, data, w, b, y);
}

/* dW[:, j0:j0+wd] = X^T dY[:, j0:j0+wd] for one column block. */
static void csr_weight_block(int64_t c, int64_t m, int64_t d, int64_t h,
                             const int32_t *restrict indptr, const int32_t *restrict indices,
                             const float *restrict data, const float *restrict dy,
                             float *restrict dw)
{
    const int64_t j0 = c * NN_CSR_BLOCK;
    const int64_t wd = h - j0 < NN_CSR_BLOCK ? h - j0 : NN_CSR_BLOCK;
    for (int64_t k = 0; k < d; k++)
        memset(dw + k * h + j0, 0, (size_t)wd * sizeof *dw);
    for (int64_t i = 0; i < m; i++) {
        const float *restrict dyi = dy + i * h + j0;
        for (int32_t p = indptr[i]; p < indptr[i + 1]; p++) {
            const float v = data[p];
            float *restrict dwk = dw + (int64_t)indices[p] * h + j0;
            for (int64_t j = 0; j < wd; j++)
                dwk[j] += v * dyi[j];
        }
    }
}

void NN_ISA_FN(csr_dense_weight_grad)(int64_t m, int64_t d, int64_t h, const int32_t *indptr,
                                      const int32_t *indices, const float *data,
                                      const float *dy, float *dw)
{
    int64_t blocks = (h + NN_CSR_BLOCK - 1) / NN_CSR_BLOCK;
    int64_t work = (int64_t)(indptr[m] - indptr[0]) * h + d * h;
    if (work < NN_PARALLEL_MIN_ELEMENTS || blocks == 1) {
        for (int64_t c = 0; c < blocks; c++)
            csr_weight_block(c, m, d, h, indptr, indices, data, dy, dw);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t c = 0; c < blocks; c++)
        csr_weight_block(c, m, d, h, indptr, indices, data, dy, dw);
}
