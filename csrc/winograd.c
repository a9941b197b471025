/* Winograd F(2x2, 3x3) (winograd.h): the plan, the weight transform and
 * the tasks. The transform loops are per ISA (winograd_kernel.c), the 16
 * products per task run on the GEMM's own register micro-kernel
 * (gemm_block of the kernel table), called directly: one task is one
 * thread's work, no nested parallel region.
 *
 * Per task (whole images, or a band of tile rows of one image), T tiles:
 *   1. per input channel, the input transform of the tiles' 4x4 input
 *      blocks (zeros outside the image): V[xi][c][t] (wino_input: on
 *      AVX-512 straight from the input rows, 16 tiles per vector; the
 *      portable path gathers the blocks into 16 arrays first);
 *   2. per position xi and block of mr tiles, one gemm_block call
 *      M[xi][t][k] = V[xi]^T (read in place: tiles are rows, channels the
 *      depth) x U[xi] (packed strips of output channels): each M element
 *      one FMA chain over the c input channels in order. Tiles as the
 *      GEMM's rows (units of mr = 6) and channels as its vector lanes
 *      waste little on small images (7x7: 16 tiles) and small batches;
 *   3. per tile row, the output transform (bias and activation in the
 *      vector lanes of the channels) into two pixel-major output rows,
 *      transposed into NCHW y (conv_transpose; with a residual,
 *      conv_transpose_res adds it and applies the activation), as the
 *      direct path writes its rows.
 * Each output is thus the same sequence of operations whichever task (and
 * thread) computes it, and whatever the batch size.
 *
 * Memory: U (16 c o floats, in strips) in the caller's shared workspace;
 * per thread V and M for at most tmax tiles, tmax from the cache sizes (V
 * and M in half of L2, one position's V in half of L1: the GEMM reads it
 * across all channel strips), the portable path's gathered blocks and two
 * output rows. Nothing grows with the batch. */
#include "gemm.h"
#include "winograd.h"

/* Fewer tiles per task make the GEMM strips too short to pay. */
#define NN_WINO_MIN_TILES 16
/* Floats between the 16 positions' blocks of V and M beyond their size:
 * blocks a multiple of 4 KiB apart (c T or o T floats: 16 KiB at 64
 * channels and 64 tiles) made the transforms' 16 loads or stores per tile
 * alias in the store buffer, and took up to 1.8x as long (measured at
 * 32->32 8x8 and 16->16 16x16, batch 32). One cache line apart, they do
 * not. The weight transform's U blocks are skewed likewise. */
#define NN_WINO_SKEW 16

int nn_wino_plan(nn_wino *W, const nn_kernel_table *kt, int nt)
{
    W->kt = kt;
    nn_gemm_tile tile;
    kt->gemm_tile(&tile);
    W->mr = tile.mr;
    W->nr = tile.nr;
    W->ldu = ceil_div(W->o, W->nr) * W->c * W->nr + NN_WINO_SKEW;
    W->ldk = round_up(W->o, 16);
    W->th = ceil_div(W->oh, 2);
    W->tw = ceil_div(W->ow, 2);
    int64_t l1, l2;
    nn_cache_sizes(&l1, &l2);
    const int64_t fsz = (int64_t)sizeof(float);
    int64_t cap = l2 / 2 / fsz / (16 * (W->c + W->o));
    cap = min64(cap, l1 / 2 / fsz / W->c);
    cap = max64(cap, NN_WINO_MIN_TILES);
    /* huge channel counts (buffers past several L2s) or one tile row past
     * the bound: the direct path */
    if (16 * (W->c + W->o) * cap * fsz > 8 * l2 || W->tw > cap)
        return 0;
    const int64_t per_img = W->th * W->tw;
    W->ipt = 0;
    W->tiles = 0;
    if (per_img <= cap && !(nt > 1 && W->n < nt)) {
        /* whole images, at least one task per thread */
        W->ipt = min64(cap / per_img, ceil_div(W->n, nt));
        W->tmax = W->ipt * per_img;
        return 1;
    }
    /* bands of tile rows of one image; with fewer images than threads,
     * enough bands for every thread */
    int64_t nb = ceil_div(W->th, max64(1, cap / W->tw));
    if (nt > 1 && W->n * nb < nt) {
        const int64_t want = ceil_div(nt, W->n);
        if (W->th % want != 0 && W->tw > 1 && (ceil_div(W->th, want) + 1) * W->tw <= cap) {
            /* 7 tile rows on 2 threads: 4 + 3 rows left a thread idle for a
             * seventh of the call; tile ranges split evenly (a range's
             * partial rows get their whole rows' input transform) */
            W->tiles = 1;
            W->nbands = want;
            W->band = ceil_div(W->th, want) + 1;
            W->tmax = W->band * W->tw;
            return 1;
        }
        nb = min64(W->th, want);
    }
    W->band = ceil_div(W->th, nb);
    W->nbands = ceil_div(W->th, W->band);
    W->tmax = W->band * W->tw;
    return 1;
}

size_t nn_wino_shared_floats(const nn_wino *W)
{
    return (size_t)(16 * W->ldu + W->ldk);
}

size_t nn_wino_task_floats(const nn_wino *W)
{
    /* V, M, the portable input transform's gathered blocks (16 arrays),
     * two output rows */
    const int64_t v = 16 * (W->c * W->tmax + NN_WINO_SKEW);
    const int64_t m = 16 * (W->o * W->tmax + NN_WINO_SKEW);
    /* pooling: the pooled row and its argmax */
    return (size_t)(round_up(v, 16) + round_up(m, 16) + round_up(16 * W->tmax, 16) +
                    (W->pool_y ? 3 : 2) * 2 * W->tw * W->ldk);
}

void nn_wino_pack(const nn_wino *W, int part, int parts)
{
    /* whole blocks of 16 output channels (strips hold whole blocks) */
    const int64_t k0 = split(W->o, 16, part, parts), k1 = split(W->o, 16, part + 1, parts);
    const int64_t c = W->c, nr = W->nr;
    /* the Conv2d's weight: (o, c, 3, 3), or transposed (c, o, 3, 3) */
    const int64_t ldk = W->transposed ? 9 : c * 9, ldc = W->transposed ? W->o * 9 : 9;
    for (int64_t k = k0; k < k1; k += 16)
        W->kt->wino_weights(min64(16, W->o - k), c, W->wsrc + k * ldk, ldk, ldc, W->transposed,
                            W->scale ? W->scale + k : NULL, W->u + k / nr * c * nr + k % nr,
                            W->ldu, nr);
    float *bias = W->u + 16 * W->ldu;
    for (int64_t k = k0; k < k1; k++)
        bias[k] = W->bias ? W->bias[k] : 0.0f;
    if (part == parts - 1) /* the padding: read by the vector loops, never stored */
        for (int64_t k = W->o; k < W->ldk; k++)
            bias[k] = 0.0f;
}

/* Tile row r of image i, its two output rows at yb and yb + 2 tw ldk: the
 * pooled row r (an odd last output row is not pooled, MaxPool2d's floor)
 * and its argmax, transposed into W->pool_y and W->arg. */
static void pool_row(const nn_wino *W, int64_t i, int64_t r, int64_t q0, int64_t q1,
                     float *yb)
{
    const int64_t pw = W->ow / 2, P2 = (W->oh / 2) * pw, ldk = W->ldk, tw = W->tw;
    const int64_t np = min64(q1, pw) - q0; /* tile q is pooled column q */
    if (2 * r + 1 >= W->oh || np <= 0)
        return;
    float *pm = yb + 4 * tw * ldk;
    int32_t *pa = (int32_t *)(pm + tw * ldk);
    W->kt->maxpool2x2_lanes(np, ldk, yb, yb + 2 * tw * ldk, (int32_t)(2 * r * W->ow + 2 * q0),
                            (int32_t)W->ow, pm, pa);
    const int64_t at = i * W->o * P2 + r * pw + q0;
    W->kt->conv_transpose(np, W->o, pm, ldk, W->pool_y + at, P2);
    /* the argmax through the same transpose: it only moves the 32-bit
     * patterns (loads, shuffles, stores; no arithmetic) */
    if (W->arg)
        W->kt->conv_transpose(np, W->o, (const float *)pa, ldk, (float *)(W->arg + at), P2);
}

void nn_wino_task(const nn_wino *W, int64_t t, const float *x, float *y, float *buf)
{
    /* images [n0, n1), tile rows [r0, r1), of which the tiles [a, b) (in
     * the first image's row-major order) are this task's */
    int64_t n0, n1, r0, r1, a = 0, b = 0;
    if (W->ipt) {
        n0 = t * W->ipt, n1 = min64(n0 + W->ipt, W->n), r0 = 0, r1 = W->th;
    } else if (W->tiles) {
        const int64_t part = t % W->nbands, all = W->th * W->tw;
        n0 = t / W->nbands, n1 = n0 + 1;
        a = part * all / W->nbands, b = (part + 1) * all / W->nbands;
        r0 = a / W->tw, r1 = ceil_div(b, W->tw);
    } else {
        n0 = t / W->nbands, n1 = n0 + 1, r0 = t % W->nbands * W->band;
        r1 = min64(r0 + W->band, W->th);
    }
    const int64_t c = W->c, o = W->o, tw = W->tw, rows = r1 - r0;
    const int64_t per = rows * tw, T = (n1 - n0) * per;
    if (!W->tiles)
        a = r0 * tw, b = r1 * tw;
    const int64_t ta = a - r0 * tw, tb = b - r0 * tw; /* the task's tiles of V and M */
    const int64_t ldv = c * T + NN_WINO_SKEW, ldm = T * o + NN_WINO_SKEW;
    float *v = buf, *m = v + 16 * (c * W->tmax + NN_WINO_SKEW);
    float *d = m + 16 * (o * W->tmax + NN_WINO_SKEW), *yb = d + round_up(16 * W->tmax, 16);
    const nn_kernel_table *kt = W->kt;

    /* V[xi] as the GEMM's A (tiles the rows, channels the depth): tile
     * t's channel ci at t rsa + ci csa */
    const int64_t rsa = W->x_nchw16c ? c : 1, csa = W->x_nchw16c ? 1 : T;
    for (int64_t i = n0; i < n1; i++) {
        if (W->x_nchw16c) {
            kt->wino_input_blocked(x + i * W->x_img, c, W->h, W->w, W->ph, W->pw, r0, rows, tw,
                                   v + (i - n0) * per * c, ldv);
            continue;
        }
        for (int64_t ci = 0; ci < c; ci++)
            kt->wino_input(x + i * W->x_img + ci * W->h * W->w, W->h, W->w, W->ph, W->pw, r0,
                           rows, tw, v + ci * T + (i - n0) * per, ldv, d);
    }

    nn_gemm_args g = {.n = o, .k = c, .rsa = rsa, .csa = csa, .rsb = W->nr,
                      .sb = c * W->nr, .ldc = o, .alpha = 1.0f, .beta = 0.0f, .bias = NULL,
                      .act = NN_ACT_NONE};
    for (int64_t xi = 0; xi < 16; xi++) {
        g.b = W->u + xi * W->ldu;
        for (int64_t t0 = W->tiles ? ta : 0, t1 = W->tiles ? tb : T; t0 < t1; t0 += W->mr) {
            g.m = min64(W->mr, t1 - t0);
            g.a = v + xi * ldv + t0 * rsa;
            g.c = m + xi * ldm + t0 * o;
            kt->gemm_block(&g);
        }
    }

    /* with a residual, conv_transpose_res applies the activation */
    const int act = W->res ? NN_ACT_NONE : W->act;
    const float *bias = W->u + 16 * W->ldu;
    const int64_t P = W->oh * W->ow, ldk = W->ldk;
    float *yb1 = yb + 2 * tw * ldk;
    for (int64_t i = n0; i < n1; i++)
        for (int64_t r = r0; r < r1; r++) {
            /* tiles [q0, q1) of the row: output columns [2 q0, x1) */
            const int64_t q0 = max64(ta - (r - r0) * tw, 0), q1 = min64(tb - (r - r0) * tw, tw);
            const int64_t tile = (i - n0) * per + (r - r0) * tw + q0;
            const int64_t x0 = 2 * q0, nx = min64(2 * q1, W->ow) - x0;
            kt->wino_output(q1 - q0, o, m + tile * o, ldm, o, bias, act, yb, yb1, ldk);
            if (W->pool_y) {
                pool_row(W, i, r, q0, q1, yb);
                continue;
            }
            for (int64_t h = 0; h < 2 && 2 * r + h < W->oh; h++) {
                /* the row's first output pixel, in NCHW and in nChw16c */
                float *row = h ? yb1 : yb;
                const int64_t px = (2 * r + h) * W->ow + x0;
                const int64_t at = i * W->y_img + px, at16 = i * W->y_img + px * 16;
                if (W->y_nchw16c) {
                    kt->conv_store_nchw16c(nx, o, row, ldk, y + at16, P * 16,
                                           W->res ? W->res + at16 : NULL, W->act);
                } else if (W->res && W->res_nchw16c) { /* the sum in the row, then moved */
                    kt->conv_add_nchw16c(nx, o, row, ldk, W->res + at16, P * 16, W->act);
                    kt->conv_transpose(nx, o, row, ldk, y + at, P);
                } else if (W->res) {
                    kt->conv_transpose_res(nx, o, row, ldk, y + at, P, W->res + at, W->act);
                } else {
                    kt->conv_transpose(nx, o, row, ldk, y + at, P);
                }
            }
        }
}
