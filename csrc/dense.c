/* Dense layers: y = act(x w + b) forward (nn_dense_chain, evaluation mode,
 * through any number of layers) and its backward pass (nn_dense_backward),
 * both built on nn_sgemm and the kernels of nncore.h, llm.c style: plain
 * functions, no hidden state, every buffer the caller's. */
#include <stdint.h>
#include <string.h>
#include <omp.h>
#include "barrier.h"
#include "gemm.h"
#include "profile.h"
#include "workspace.h"

/* A layer of a one-sample chain is split between threads from this many
 * weights: below it the barrier that follows costs more than the split
 * saves. */
#define NN_GEMV_CHAIN_SPLIT_MIN 16384

/* Whether a layer of a one-sample chain is split between threads: by the
 * layer's size alone, so the split never depends on the team. */
static int chain_layer_splits(const nn_dense_layer *L)
{
    return (double)L->n_in * (double)L->n_out >= NN_GEMV_CHAIN_SPLIT_MIN &&
           L->n_out > NN_GEMV_UNIT;
}

int nn_dense_chain_parts(int64_t n_in, int64_t n_out, int team)
{
    const nn_dense_layer L = {.n_in = n_in, .n_out = n_out};
    return chain_layer_splits(&L) ? (int)min64(team, ceil_div(n_out, NN_GEMV_UNIT)) : 1;
}

/* Part t of parts of layer L on one sample: its columns [j0, j1), read from
 * L->w_split when it was laid out for this many parts (each part's columns
 * a block of rows j1 - j0 wide: the same sums, in the same order). */
static void gemv_layer_part(const nn_kernel_table *kt, const nn_dense_layer *L,
                            const float *in, float *work, int t, int parts)
{
    if (L->w_split == NULL || L->split_team != parts) {
        nn_gemv_part(kt, 0, L->n_out, L->n_in, 1.0f, in, 1, L->w, L->n_out, 0.0f, L->out,
                     L->b, L->act, work, t, parts);
        return;
    }
    const int64_t j0 = split(L->n_out, NN_GEMV_UNIT, t, parts);
    const int64_t j1 = split(L->n_out, NN_GEMV_UNIT, t + 1, parts);
    if (j1 <= j0)
        return;
    nn_gemv_args g = {
        .n = j1 - j0, .k = L->n_in, .x = in, .incx = 1, .b = L->w_split + L->n_in * j0,
        .ldb = j1 - j0, .y = L->out + j0, .alpha = 1.0f, .beta = 0.0f,
        .bias = L->b ? L->b + j0 : NULL, .act = L->act, .work = work + j0,
    };
    kt->gemv_n(&g);
}

void nn_dense_split_weights(int64_t n_in, int64_t n_out, const float *w, int team, float *out)
{
    for (int t = 0; t < team; t++) {
        const int64_t j0 = split(n_out, NN_GEMV_UNIT, t, team);
        const int64_t j1 = split(n_out, NN_GEMV_UNIT, t + 1, team);
        for (int64_t p = 0; p < n_in && j1 > j0; p++)
            memcpy(out + n_in * j0 + p * (j1 - j0), w + p * n_out + j0,
                   (size_t)(j1 - j0) * sizeof(float));
    }
}

/* One sample through the chain: every layer a gemv_n. The layers up to the
 * last split one run in one parallel region (one fork/join instead of one
 * per layer; a barrier between layers, as each reads all of the previous
 * output: nn_barrier, which spins, not the runtime's, see barrier.h); the
 * unsplit layers after it run on the calling thread once the region has
 * joined, which saves their barriers. With one thread there is no region. */
static int dense_chain_vector(const nn_kernel_table *kt, const float *x, int count,
                              const nn_dense_layer *layers)
{
    int64_t widest = 0;
    double largest = 0.0;
    int tail = 0; /* layers [tail, count) are unsplit */
    for (int i = 0; i < count; i++) {
        widest = max64(widest, layers[i].n_out);
        const double size = (double)layers[i].n_in * (double)layers[i].n_out;
        largest = size > largest ? size : largest;
        if (chain_layer_splits(&layers[i]))
            tail = i + 1;
    }
    float *work = nn_workspace_get(NN_WS_AUX, (size_t)widest);
    if (work == NULL)
        return NN_ENOMEM;
    const int nt = largest >= NN_GEMV_PARALLEL_MIN ? nn_max_threads() : 1;
    if (nt == 1)
        tail = 0; /* every layer below, without a region: libgomp sets up a team even
                   * for one thread (see docs/measurements.md) */
    if (tail > 0) {
        nn_barrier bar = NN_BARRIER_INIT;
#pragma omp parallel num_threads(nt) shared(bar)
        {
            const int t = omp_get_thread_num(), team = omp_get_num_threads();
            const float *in = x;
            for (int i = 0; i < tail; i++) {
                const nn_dense_layer *L = &layers[i];
                const int parts = nn_dense_chain_parts(L->n_in, L->n_out, team);
                if (t < parts)
                    gemv_layer_part(kt, L, in, work, t, parts);
                if (i + 1 < tail)
                    nn_barrier_wait(&bar, team);
                in = L->out;
            }
        }
    }
    for (int i = tail; i < count; i++) {
        const nn_dense_layer *L = &layers[i];
        nn_gemv_part(kt, 0, L->n_out, L->n_in, 1.0f, i == 0 ? x : layers[i - 1].out, 1, L->w,
                     L->n_out, 0.0f, L->out, L->b, L->act, work, 0, 1);
    }
    return NN_OK;
}

int nn_dense_chain(int64_t m, const float *x, int count, const nn_dense_layer *layers)
{
    if (m < 0 || count < 0)
        return NN_EINVAL;
    int vector = m == 1 && !nn_profiling(); /* profiling: one event per layer's nn_sgemm */
    for (int i = 0; i < count; i++) {
        const nn_dense_layer *L = &layers[i];
        if (L->n_in < 0 || L->n_out < 0 || (i > 0 && L->n_in != layers[i - 1].n_out))
            return NN_EINVAL;
        if (!nn_epilogue_supports(L->act))
            return NN_EINVAL;
        vector = vector && L->n_in > 0 && L->n_out > 0;
    }
    if (m == 0 || count == 0)
        return NN_OK;
    if (vector)
        return dense_chain_vector(nn_kernels(), x, count, layers);
    const float *in = x;
    for (int i = 0; i < count; i++) {
        const nn_dense_layer *L = &layers[i];
        const int status = nn_sgemm(0, 0, m, L->n_out, L->n_in, 1.0f, in, max64(L->n_in, 1),
                                    L->w, max64(L->n_out, 1), 0.0f, L->out,
                                    max64(L->n_out, 1), L->b, L->act);
        if (status != NN_OK)
            return status;
        in = L->out;
    }
    return NN_OK;
}

/* gemm: the GEMM the backward pass runs on, nn_sgemm or nn_gemm_bf16 (for
 * nn_dense_backward_bf16). */
static int dense_backward(nn_gemm_fn gemm, int64_t m, int64_t k, int64_t n, const float *x,
                          float *w, const float *dy, const float *relu_z, float *dz, float *dx,
                          float *dw, float *db, int sgd, float lr, float *b)
{
    if (m < 0 || k < 0 || n < 0 || (sgd && dw != NULL) || (b != NULL && (!sgd || db == NULL)) ||
        (relu_z != NULL && dz == NULL))
        return NN_EINVAL;
    if (n == 0)
        return NN_OK;
    const int64_t ldx = max64(k, 1), ldw = max64(n, 1);
    const float *g = dy;
    if (relu_z != NULL) {
        /* The ReLU fused into the forward epilogue: its output z is > 0
         * exactly where its input was. */
        if (m > 0)
            nn_relu_backward(m * n, relu_z, dy, dz);
        g = dz;
    }
    int status = NN_OK;
    if (m == 0) {
        /* An empty batch: every gradient is zero, and so is the update. */
        if (dw != NULL && k > 0)
            memset(dw, 0, (size_t)(k * n) * sizeof(float));
        if (db != NULL)
            memset(db, 0, (size_t)n * sizeof(float));
    } else if (sgd) {
        /* dx first: it needs the weights from before the update. Then plain
         * SGD folded into the weight-gradient GEMM (alpha = -lr, beta = 1):
         * bitwise what dw followed by nn_sgd_step gives (optim.c). */
        if (dx != NULL)
            status = gemm(0, 1, m, k, n, 1.0f, g, ldw, w, ldw, 0.0f, dx, ldx, NULL,
                          NN_ACT_NONE);
        if (status == NN_OK && db != NULL)
            nn_bias_backward(m, n, g, n, db);
        if (status == NN_OK)
            status = gemm(1, 0, k, n, m, -lr, x, ldx, g, ldw, 1.0f, w, ldw, NULL,
                          NN_ACT_NONE);
    } else {
        if (dw != NULL)
            status = gemm(1, 0, k, n, m, 1.0f, x, ldx, g, ldw, 0.0f, dw, ldw, NULL,
                          NN_ACT_NONE);
        if (status == NN_OK && db != NULL)
            nn_bias_backward(m, n, g, n, db);
        if (status == NN_OK && dx != NULL)
            status = gemm(0, 1, m, k, n, 1.0f, g, ldw, w, ldw, 0.0f, dx, ldx, NULL,
                          NN_ACT_NONE);
    }
    if (status == NN_OK && b != NULL)
        nn_sgd_step(n, b, db, NULL, lr, 0.0f, 0.0f, 0.0f, 0, 1);
    return status;
}

int nn_dense_backward(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                      const float *dy, const float *relu_z, float *dz, float *dx, float *dw,
                      float *db, int sgd, float lr, float *b)
{
    return dense_backward(nn_sgemm, m, k, n, x, w, dy, relu_z, dz, dx, dw, db, sgd, lr, b);
}

/* ---- bfloat16 (mixed precision): the same passes with every GEMM on
 * nn_gemm_bf16; weights, biases, gradients and outputs stay float32. ---- */

int nn_dense_forward_bf16(int64_t m, const float *x, const nn_dense_layer *L)
{
    if (m < 0 || L->n_in < 0 || L->n_out < 0 || !nn_epilogue_supports(L->act))
        return NN_EINVAL;
    return nn_gemm_bf16(0, 0, m, L->n_out, L->n_in, 1.0f, x, max64(L->n_in, 1), L->w,
                        max64(L->n_out, 1), 0.0f, L->out, max64(L->n_out, 1), L->b, L->act);
}

int nn_dense_backward_bf16(int64_t m, int64_t k, int64_t n, const float *x, float *w,
                           const float *dy, const float *relu_z, float *dz, float *dx,
                           float *dw, float *db, int sgd, float lr, float *b)
{
    return dense_backward(nn_gemm_bf16, m, k, n, x, w, dy, relu_z, dz, dx, dw, db, sgd, lr, b);
}
