/* Internal: the weight gradient of a 3x3, stride-1 Conv2d by Winograd's
 * F(2x2, 3x3) (winograd_dw.c), used by conv.c.
 *
 * The forward pass per 2x2 output tile is y = A^T [(G g G^T) .* (B^T d B)] A
 * (d the 4x4 input tile, zeros outside the image). It is linear in g, so
 * the weight gradient is its adjoint, summed over the tiles t of all images:
 *   dw[k][c] = G^T dU[c][k] G,   dU[c][k] = sum over t of V_t[c] .* W_t[k]
 * with V_t[c] = B^T d_t[c] B (the input tile of channel c) and
 * W_t[k] = A dy_t[k] A^T (the 2x2 output-gradient tile of channel k), all
 * 4x4. For each of the 16 positions xi of the 4x4, dU[xi] is one product of
 * (K x tiles) by (tiles x C): 16 multiply-adds per tile and channel pair
 * where the direct weight gradient does 36 (4 pixels by 9 taps).
 *
 * Layout: NCHW at the API; inside, each image's x and dy are transposed to
 * channels-last planes (x zero-padded so that every tile, the odd last ones
 * too, reads inside it), so both transforms run vectorised over channels
 * for any image size, and V and W come out as [xi][tile][channel] blocks,
 * the operands of the GEMM micro-kernel (dispatch.h) read in place.
 *
 * Determinism: tasks are chunks of images (the direct weight gradient's
 * chunks, conv_direct.h), each summing its tiles in a fixed order (images,
 * tile rows, blocks of tile rows, the micro-kernel's k order) into its own
 * dU, turned into its own 3x3 part; nn_wino_dw_reduce adds the parts in
 * chunk order. The block size depends on the shape and the L2 size, never
 * on the thread count. The bias gradient is summed as the direct weight
 * gradient sums it, from the same transposed dy, in the same chunks: the
 * same bits (nn_dconv_dw_column_sums). */
#ifndef NN_WINOGRAD_DW_H
#define NN_WINOGRAD_DW_H

#include <stddef.h>
#include <stdint.h>
#include "dispatch.h"

typedef struct nn_wino_dw {
    int64_t n, c, h, w, o, ph, pw, oh, ow; /* the Conv2d (3x3, stride 1, groups 1) */
    int with_dw, with_db;                  /* set before planning */
    const nn_kernel_table *kt;
    int64_t mr, nr;      /* the micro-kernel's register tile */
    int64_t th, tw;      /* tile rows and columns per image */
    int64_t hp, wp;      /* the padded input plane: 2 th + 2 by 2 tw + 2 pixels */
    int64_t ldc, ldk;    /* channel strides of x's and dy's transposed pixels (x16) */
    int64_t rows, tiles; /* a block: rows tile rows, tiles = rows * tw tiles */
    int64_t nq, per_q;   /* chunks of images, images per chunk */
    /* in the caller's SHARED workspace (nn_wino_dw_pack) */
    float *part;         /* nq 3x3 parts, tap-major: (9, o, ldc) each */
    double *dbpart;      /* nq * ldk, with_db only */
} nn_wino_dw;

/* 1 when Winograd runs for E (geometry and with_* filled in, kernel table
 * kt): by the mode (nn_conv_set_winograd_dw) and, in NN_WINOGRAD_AUTO,
 * the shape; else 0. */
int nn_wino_dw_plan(nn_wino_dw *E, const nn_kernel_table *kt);
size_t nn_wino_dw_shared_floats(const nn_wino_dw *E);
void nn_wino_dw_pack(nn_wino_dw *E, float *shared);
static inline int64_t nn_wino_dw_tasks(const nn_wino_dw *E) { return E->nq; }
size_t nn_wino_dw_task_floats(const nn_wino_dw *E);
/* Task q: chunk q's part (and bias part). */
void nn_wino_dw_task(const nn_wino_dw *E, int64_t q, const float *x, const float *dy,
                     float *buf);
/* dw (o, c, 3, 3) and db (o) = the parts summed over the chunks in order
 * (each NULL when not asked for). */
void nn_wino_dw_reduce(const nn_wino_dw *E, float *dw, float *db);

#endif
