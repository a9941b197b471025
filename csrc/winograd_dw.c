/* The weight (and bias) gradient of a 3x3, stride-1 Conv2d by Winograd's
 * F(2x2, 3x3): the algorithm and its layout are in winograd_dw.h.
 *
 * One task per chunk of images, on one thread:
 *   per image   x transposed into the interior of a zero-padded
 *               channels-last plane (the padding zeroed once per task),
 *               dy transposed to channels-last pixels (and, with db, its
 *               column sums: the direct path's, nn_dconv_dw_column_sums)
 *   per tile row   the transforms (kernel table, per ISA) append the row's
 *               tiles to a block of V and W
 *   per block   16 products dU[xi] (+)= W[xi]^T V[xi] on the GEMM
 *               micro-kernel (gemm_block), the C tile in registers for the
 *               whole block (the block's tiles are the depth)
 *   at the end  dU -> the chunk's 3x3 part, G^T dU G
 * A block holds as many tile rows as fit half of L2 (read at run time,
 * gemm_blocking.c), so the products read V and W from L2 right after the
 * transforms wrote them. */
#include <stdatomic.h>
#include <string.h>
#include "conv_direct.h"
#include "gemm.h"
#include "nncore.h"
#include "winograd_dw.h"

/* Each image's transposed planes (x padded, dy) stay below this many
 * floats (the direct path's band bound): larger images take the direct
 * or the im2col weight gradient. */
#define NN_WINO_DW_IMAGE_FLOATS 131072

static atomic_int wino_dw_mode = NN_WINOGRAD_AUTO;

int nn_conv_set_winograd_dw(int mode)
{
    return atomic_exchange(&wino_dw_mode, mode);
}

/* Where Winograd pays, from the shape and the L2 size only (never the
 * thread count). Measured on Zen 4 (1 thread, weight and bias gradient,
 * direct time / Winograd time; docs/measurements.md):
 *   c >= 16: the transforms pad channels to 16 (8->8 at 28x28 0.91, 4->16
 *     0.39, 3->16 0.32; 16->16 1.33-1.47, 16->4 1.8-2.5)
 *   tiles at least 3/4 full (oh ow >= 3 th tw): 7x7 outputs (49 of 64
 *     pixels) 1.26-1.41 at 64 channels, 0.97 at 16; 5x5 (25 of 36) 0.82,
 *     3x3 0.79
 *   dU (16 o ldc floats) within L2: every block's products read and write
 *     all of it (512->512 at 7x7, 16 MiB: 0.59; 128->128 1.4-1.7) */
static int wino_dw_pays(const nn_wino_dw *E, const nn_gemm_blocking *b)
{
    const int64_t du_bytes = 16 * E->o * E->ldc * (int64_t)sizeof(float);
    return E->c >= 16 && E->oh * E->ow >= 3 * E->th * E->tw && du_bytes <= 2 * b->inplace_a;
}

int nn_wino_dw_plan(nn_wino_dw *E, const nn_kernel_table *kt)
{
    const int mode = atomic_load_explicit(&wino_dw_mode, memory_order_relaxed);
    if (mode == NN_WINOGRAD_NEVER || E->n < 1)
        return 0;
    E->kt = kt;
    E->th = (E->oh + 1) / 2;
    E->tw = (E->ow + 1) / 2;
    E->hp = 2 * E->th + 2;
    E->wp = 2 * E->tw + 2;
    E->ldc = round_up(E->c, 16);
    E->ldk = round_up(E->o, 16);
    if (E->hp * E->wp * E->ldc > NN_WINO_DW_IMAGE_FLOATS ||
        E->oh * E->ow * E->ldk > NN_WINO_DW_IMAGE_FLOATS)
        return 0;
    /* inplace_a is half of L2, in bytes */
    nn_gemm_blocking b;
    nn_gemm_blocking_for(kt, &b);
    if (mode == NN_WINOGRAD_AUTO && !wino_dw_pays(E, &b))
        return 0;
    E->mr = b.mr;
    E->nr = b.nr;
    nn_dconv_dw_chunks(E->n, &E->nq, &E->per_q);
    /* V and W of a block, 16 positions of ldc + ldk floats per tile, fit
     * in half of L2 (one tile row at least) */
    const int64_t tile_bytes = 16 * (E->ldc + E->ldk) * (int64_t)sizeof(float);
    E->rows = max64(1, b.inplace_a / tile_bytes / E->tw);
    E->rows = min64(E->rows, E->per_q * E->th);
    E->tiles = E->rows * E->tw;
    return 1;
}

static int64_t part_floats(const nn_wino_dw *E) { return 9 * E->o * E->ldc; }

size_t nn_wino_dw_shared_floats(const nn_wino_dw *E)
{
    const int64_t db = E->with_db ? 2 * E->ldk : 0; /* doubles */
    return (size_t)(E->nq * (part_floats(E) + db));
}

void nn_wino_dw_pack(nn_wino_dw *E, float *shared)
{
    E->part = shared;
    E->dbpart = E->with_db ? (double *)(shared + E->nq * part_floats(E)) : NULL;
}

/* A task's buffer, carved in this order (each a multiple of 16 floats). */
typedef struct wino_buf {
    float *du, *v, *w, *xt, *dyt, *zero;
} wino_buf;

static size_t carve(const nn_wino_dw *E, float *buf, wino_buf *B)
{
    const int64_t sizes[6] = {
        16 * E->o * E->ldc,         /* dU[xi][k][c] */
        16 * E->tiles * E->ldc,     /* V[xi][tile][c] */
        16 * E->tiles * E->ldk,     /* W[xi][tile][k] */
        E->hp * E->wp * E->ldc,     /* x, padded, channels last */
        E->oh * E->ow * E->ldk,     /* dy, channels last */
        E->ldk,                     /* zeros: the missing pixels of odd tiles */
    };
    float *at[6];
    int64_t total = 0;
    for (int i = 0; i < 6; i++) {
        at[i] = buf ? buf + total : NULL;
        total += round_up(sizes[i], 16);
    }
    if (B)
        *B = (wino_buf){at[0], at[1], at[2], at[3], at[4], at[5]};
    return (size_t)total;
}

size_t nn_wino_dw_task_floats(const nn_wino_dw *E) { return carve(E, NULL, NULL); }

/* dU[xi] (o x c, rows of ldc) = W[xi]^T V[xi] over the block's t tiles,
 * added to it unless first: the micro-kernel on panels of mr output
 * channels, reading W (A: rows k, depth t) and V (B: depth t, columns c) in
 * place. (Putting the wider of o and c in the columns measured the same
 * for 32->64.) */
static void products(const nn_wino_dw *E, const wino_buf *B, int64_t t, int first)
{
    nn_gemm_args g = {.n = E->c, .k = t, .rsa = 1, .csa = E->ldk, .rsb = E->ldc,
                      .sb = E->nr, .ldc = E->ldc, .alpha = 1.0f,
                      .beta = first ? 0.0f : 1.0f, .bias = NULL, .act = NN_ACT_NONE};
    for (int64_t xi = 0; xi < 16; xi++)
        for (int64_t k0 = 0; k0 < E->o; k0 += E->mr) {
            g.m = min64(E->mr, E->o - k0);
            g.a = B->w + xi * E->tiles * E->ldk + k0;
            g.b = B->v + xi * E->tiles * E->ldc;
            g.c = B->du + (xi * E->o + k0) * E->ldc;
            E->kt->gemm_block(&g);
        }
}

/* Image n's planes: dy (and its column sums into dbacc), and with dw the
 * interior of the padded x. */
static void load_image(const nn_wino_dw *E, const wino_buf *B, int64_t n, const float *x,
                       const float *dy, double *dbacc)
{
    const int64_t P = E->oh * E->ow, hw = E->h * E->w;
    E->kt->conv_transpose(E->o, P, dy + n * E->o * P, P, B->dyt, E->ldk);
    if (E->o < E->ldk)
        for (int64_t p = 0; p < P; p++)
            memset(B->dyt + p * E->ldk + E->o, 0, (size_t)(E->ldk - E->o) * sizeof(float));
    if (dbacc)
        nn_dconv_dw_column_sums(B->dyt, P, E->ldk, dbacc);
    if (!E->with_dw)
        return;
    const float *xn = x + n * E->c * hw;
    for (int64_t ih = 0; ih < E->h; ih++)
        E->kt->conv_transpose(E->c, E->w, xn + ih * E->w, hw,
                              B->xt + ((ih + E->ph) * E->wp + E->pw) * E->ldc, E->ldc);
}

void nn_wino_dw_task(const nn_wino_dw *E, int64_t q, const float *x, const float *dy,
                     float *buf)
{
    const int64_t n0 = q * E->per_q, n1 = min64(n0 + E->per_q, E->n);
    wino_buf B;
    carve(E, buf, &B);
    memset(B.zero, 0, (size_t)E->ldk * sizeof(float));
    /* the padding and the channels past c stay zero: images write only the
     * interior's c channels (and the products only dU's first c columns) */
    if (E->with_dw) {
        memset(B.xt, 0, (size_t)(E->hp * E->wp * E->ldc) * sizeof(float));
        if (E->c < E->ldc)
            memset(B.du, 0, (size_t)(16 * E->o * E->ldc) * sizeof(float));
    }
    double *dbacc = E->with_db ? E->dbpart + q * E->ldk : NULL;
    if (dbacc)
        for (int64_t j = 0; j < E->ldk; j++)
            dbacc[j] = 0.0;
    const int64_t ldr = E->wp * E->ldc, vxi = E->tiles * E->ldc, wxi = E->tiles * E->ldk;
    int64_t t = 0; /* tiles in the block so far */
    int first = 1;
    for (int64_t n = n0; n < n1; n++) {
        load_image(E, &B, n, x, dy, dbacc);
        if (!E->with_dw)
            continue;
        for (int64_t r = 0; r < E->th; r++) {
            /* dy's rows 2r and 2r + 1 (none past an odd last row) */
            const float *r0 = B.dyt + 2 * r * E->ow * E->ldk;
            const float *r1 = 2 * r + 1 < E->oh ? r0 + E->ow * E->ldk : NULL;
            E->kt->wino_dw_input(E->ldc, E->tw, B.xt + 2 * r * ldr, ldr, B.v + t * E->ldc, vxi);
            E->kt->wino_dw_grad(E->ldk, E->tw, E->ow, r0, r1, B.zero, B.w + t * E->ldk, wxi);
            t += E->tw;
            if (t == E->tiles || (n == n1 - 1 && r == E->th - 1)) {
                products(E, &B, t, first);
                first = 0;
                t = 0;
            }
        }
    }
    if (E->with_dw)
        E->kt->wino_dw_output(E->o * E->ldc, B.du, E->o * E->ldc, E->part + q * part_floats(E),
                              E->o * E->ldc);
}

void nn_wino_dw_reduce(const nn_wino_dw *E, float *dw, float *db)
{
    if (db)
        nn_dconv_db_reduce(E->dbpart, E->nq, E->ldk, E->o, db);
    if (!dw)
        return;
    /* the parts are tap-major: each (tap, k) row of c channels is summed
     * over the chunks in order, a block of channels at a time in a
     * contiguous buffer (a loop the compiler vectorises), then spread to
     * dw's (k, c, 3, 3) layout */
    float acc[256];
    const int64_t pf = part_floats(E);
    for (int64_t tap = 0; tap < 9; tap++)
        for (int64_t k = 0; k < E->o; k++)
            for (int64_t c0 = 0; c0 < E->c; c0 += 256) {
                const int64_t nc = min64(256, E->c - c0);
                const float *src = E->part + (tap * E->o + k) * E->ldc + c0;
                memcpy(acc, src, (size_t)nc * sizeof(float));
                for (int64_t q = 1; q < E->nq; q++)
                    for (int64_t j = 0; j < nc; j++)
                        acc[j] += src[q * pf + j];
                float *dst = dw + (k * E->c + c0) * 9 + tap;
                for (int64_t j = 0; j < nc; j++)
                    dst[j * 9] = acc[j];
            }
}
