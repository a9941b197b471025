/* Dense bias gradient: db[j] = sum_i dy[i][j], the column sums of dY.
 * Compiled once per ISA (see dispatch.h).
 *
 * Determinism: every column is summed in row order into a double
 * accumulator, whatever the thread count; threads only split the columns
 * (independent outputs) into fixed 64-wide chunks. Rows are never split, so
 * no partial sums are combined in a thread-dependent order. The inner loop
 * runs across a chunk's columns, which the compiler vectorises without
 * reordering any one column's additions. */
#include "dispatch.h"

#define NN_BIAS_CHUNK 64

static void bias_chunk(int64_t c, int64_t m, int64_t n, const float *dy, int64_t ldy,
                       float *db)
{
    int64_t j0 = c * NN_BIAS_CHUNK;
    int64_t w = n - j0 < NN_BIAS_CHUNK ? n - j0 : NN_BIAS_CHUNK;
    double acc[NN_BIAS_CHUNK] = {0};
    for (int64_t i = 0; i < m; i++) {
        const float *row = dy + i * ldy + j0;
        for (int64_t j = 0; j < w; j++)
            acc[j] += row[j];
    }
    for (int64_t j = 0; j < w; j++)
        db[j0 + j] = (float)acc[j];
}

void NN_ISA_FN(bias_backward)(int64_t m, int64_t n, const float *dy, int64_t ldy, float *db)
{
    int64_t chunks = (n + NN_BIAS_CHUNK - 1) / NN_BIAS_CHUNK;
    if (m * n < NN_PARALLEL_MIN_ELEMENTS || chunks == 1) {
        for (int64_t c = 0; c < chunks; c++)
            bias_chunk(c, m, n, dy, ldy, db);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nn_max_threads())
    for (int64_t c = 0; c < chunks; c++)
        bias_chunk(c, m, n, dy, ldy, db);
}
