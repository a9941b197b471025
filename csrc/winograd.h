/* Internal: Winograd F(2x2, 3x3) convolution (winograd.c lays out the work,
 * winograd_kernel.c holds its per-ISA transform loops), used by conv.c for
 * the forward pass and the input gradient of 3x3, stride-1, dilation-1,
 * ungrouped float32 convolutions.
 *
 * Each 2x2 block (tile) of output pixels is computed from the 4x4 block of
 * input around it: per input channel c the input transform V = B^T d B,
 * per output channel k and each of the 16 positions xi of the 4x4 transform
 *   M[xi][t][k] = sum over c of V[xi][c][t] U[xi][c][k]      (tiles t)
 * with U = G g G^T the transformed 3x3 weights, and the output transform
 * Y = A^T m A gives the tile's 2x2 outputs. 16 products of depth C per
 * tile of 4 outputs instead of 36: 2.25x fewer multiply-adds, for the price
 * of the transforms (adds only) and a little more rounding (the transforms'
 * sums; measured in tests/test_winograd.py against float64).
 *
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 *
 * The transforms below are small static inline functions written once for
 * any ISA: winograd_kernel.c compiles them per ISA (the loops over tiles
 * vectorise), and the weight gradient may reuse the input transform. */
#ifndef NN_WINOGRAD_H
#define NN_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>
#include "dispatch.h"

/* The input transform of len tiles: d holds their 4x4 input blocks as 16
 * arrays, value (i, j) of tile f at d[(4 i + j) * ldd + f] (zeros outside
 * the image); writes v[xi * ldv + f] for the 16 positions xi = 4 i + j.
 * One flat loop over the tiles (all tile rows of a task at once), so it
 * runs in whole vectors even for narrow images. */
static inline void nn_wino_input_tiles(int64_t len, const float *d, int64_t ldd, float *v,
                                       int64_t ldv)
{
    /* one pointer per array: gcc vectorises the loop (ivdep: no overlap
     * between them) */
    const float *restrict d0 = d + 0 * ldd;
    const float *restrict d1 = d + 1 * ldd;
    const float *restrict d2 = d + 2 * ldd;
    const float *restrict d3 = d + 3 * ldd;
    const float *restrict d4 = d + 4 * ldd;
    const float *restrict d5 = d + 5 * ldd;
    const float *restrict d6 = d + 6 * ldd;
    const float *restrict d7 = d + 7 * ldd;
    const float *restrict d8 = d + 8 * ldd;
    const float *restrict d9 = d + 9 * ldd;
    const float *restrict d10 = d + 10 * ldd;
    const float *restrict d11 = d + 11 * ldd;
    const float *restrict d12 = d + 12 * ldd;
    const float *restrict d13 = d + 13 * ldd;
    const float *restrict d14 = d + 14 * ldd;
    const float *restrict d15 = d + 15 * ldd;
    float *restrict v0 = v + 0 * ldv;
    float *restrict v1 = v + 1 * ldv;
    float *restrict v2 = v + 2 * ldv;
    float *restrict v3 = v + 3 * ldv;
    float *restrict v4 = v + 4 * ldv;
    float *restrict v5 = v + 5 * ldv;
    float *restrict v6 = v + 6 * ldv;
    float *restrict v7 = v + 7 * ldv;
    float *restrict v8 = v + 8 * ldv;
    float *restrict v9 = v + 9 * ldv;
    float *restrict v10 = v + 10 * ldv;
    float *restrict v11 = v + 11 * ldv;
    float *restrict v12 = v + 12 * ldv;
    float *restrict v13 = v + 13 * ldv;
    float *restrict v14 = v + 14 * ldv;
    float *restrict v15 = v + 15 * ldv;
#pragma GCC ivdep
    for (int64_t f = 0; f < len; f++) {
        /* B^T d: the rows, per column j */
        const float s00 = d0[f] - d8[f], s01 = d1[f] - d9[f];
        const float s02 = d2[f] - d10[f], s03 = d3[f] - d11[f];
        const float s10 = d4[f] + d8[f], s11 = d5[f] + d9[f];
        const float s12 = d6[f] + d10[f], s13 = d7[f] + d11[f];
        const float s20 = d8[f] - d4[f], s21 = d9[f] - d5[f];
        const float s22 = d10[f] - d6[f], s23 = d11[f] - d7[f];
        const float s30 = d4[f] - d12[f], s31 = d5[f] - d13[f];
        const float s32 = d6[f] - d14[f], s33 = d7[f] - d15[f];
        /* (B^T d) B: the columns, (c0 - c2, c1 + c2, c2 - c1, c1 - c3) */
        v0[f] = s00 - s02;
        v1[f] = s01 + s02;
        v2[f] = s02 - s01;
        v3[f] = s01 - s03;
        v4[f] = s10 - s12;
        v5[f] = s11 + s12;
        v6[f] = s12 - s11;
        v7[f] = s11 - s13;
        v8[f] = s20 - s22;
        v9[f] = s21 + s22;
        v10[f] = s22 - s21;
        v11[f] = s21 - s23;
        v12[f] = s30 - s32;
        v13[f] = s31 + s32;
        v14[f] = s32 - s31;
        v15[f] = s31 - s33;
    }
}

/* The output transform of one tile for output channels k < K: from
 * m[xi * ldm + k] (its 16 positions), Y = A^T m A + bias[k], then the
 * activation act, into the tile's 2x2 outputs y0[k], y0[ldk + k] (its
 * first row) and y1[k], y1[ldk + k] (its second). One flat loop over the
 * channels (vector lanes). */
static inline void nn_wino_output_tile(int64_t K, const float *m, int64_t ldm,
                                       const float *bias, int act, float *y0, float *y1,
                                       int64_t ldk)
{
    const float *restrict m0 = m + 0 * ldm;
    const float *restrict m1 = m + 1 * ldm;
    const float *restrict m2 = m + 2 * ldm;
    const float *restrict m3 = m + 3 * ldm;
    const float *restrict m4 = m + 4 * ldm;
    const float *restrict m5 = m + 5 * ldm;
    const float *restrict m6 = m + 6 * ldm;
    const float *restrict m7 = m + 7 * ldm;
    const float *restrict m8 = m + 8 * ldm;
    const float *restrict m9 = m + 9 * ldm;
    const float *restrict m10 = m + 10 * ldm;
    const float *restrict m11 = m + 11 * ldm;
    const float *restrict m12 = m + 12 * ldm;
    const float *restrict m13 = m + 13 * ldm;
    const float *restrict m14 = m + 14 * ldm;
    const float *restrict m15 = m + 15 * ldm;
    const float *restrict bv = bias;
    float *restrict a0 = y0, *restrict a1 = y0 + ldk, *restrict b0 = y1;
    float *restrict b1 = y1 + ldk;
#pragma GCC ivdep
    for (int64_t k = 0; k < K; k++) {
        /* A^T m: the rows */
        const float r00 = m0[k] + m4[k] + m8[k], r01 = m1[k] + m5[k] + m9[k];
        const float r02 = m2[k] + m6[k] + m10[k], r03 = m3[k] + m7[k] + m11[k];
        const float r10 = m4[k] - m8[k] - m12[k], r11 = m5[k] - m9[k] - m13[k];
        const float r12 = m6[k] - m10[k] - m14[k], r13 = m7[k] - m11[k] - m15[k];
        /* (A^T m) A: the columns */
        a0[k] = nn_act_scalar(r00 + r01 + r02 + bv[k], act);
        a1[k] = nn_act_scalar(r01 - r02 - r03 + bv[k], act);
        b0[k] = nn_act_scalar(r10 + r11 + r12 + bv[k], act);
        b1[k] = nn_act_scalar(r11 - r12 - r13 + bv[k], act);
    }
}

/* The weight transform U = G g G^T of 16 kernels at once (one per vector
 * lane l: kernel value i of lane l at g[i][l], row-major 3x3), times
 * scale[l]: u[xi * ldu + l] for the 16 positions xi. */
static inline void nn_wino_weight_lanes(const float g[9][16], const float *scale, float *u,
                                        int64_t ldu)
{
#pragma GCC ivdep
    for (int l = 0; l < 16; l++) {
        float t[4][3];
        for (int j = 0; j < 3; j++) { /* G g: the rows */
            t[0][j] = g[j][l];
            t[1][j] = 0.5f * (g[j][l] + g[3 + j][l] + g[6 + j][l]);
            t[2][j] = 0.5f * (g[j][l] - g[3 + j][l] + g[6 + j][l]);
            t[3][j] = g[6 + j][l];
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T: the columns */
            const float c0 = t[i][0], c1 = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            const float c2 = 0.5f * (t[i][0] - t[i][1] + t[i][2]), c3 = t[i][2];
            u[(4 * i + 0) * ldu + l] = c0 * scale[l];
            u[(4 * i + 1) * ldu + l] = c1 * scale[l];
            u[(4 * i + 2) * ldu + l] = c2 * scale[l];
            u[(4 * i + 3) * ldu + l] = c3 * scale[l];
        }
    }
}

/* One Winograd convolution of n images: c input planes (h x w) to o output
 * planes (oh x ow = h + 2 ph - 2, w + 2 pw - 2), 3x3 kernel, stride 1; the
 * input and output tensors hold x_img and y_img floats per image (NCHW).
 *
 * transposed = 1: the input gradient of a Conv2d (weight (c, o, 3, 3) here:
 * the Conv2d's (O, C, 3, 3) with O = c, C = o), a convolution of dy with the
 * weights transposed and rotated by 180 degrees, padding 2 - the Conv2d's. */
typedef struct nn_wino {
    int64_t n, c, h, w, o, ph, pw, oh, ow;
    int64_t x_img, y_img;
    int transposed;
    const float *wsrc;   /* the Conv2d's weight */
    const float *scale;  /* NULL, or o factors folded into U (a BatchNorm's) */
    const float *bias;   /* NULL, or o values added to the output */
    const float *res;    /* NULL, or added to the output (y's layout) before act */
    int act;
    /* pool (forward only, no res): a 2x2, stride-2 max pooling of the
     * activated output into pool_y and arg (n, o, oh / 2, ow / 2; arg
     * NULL: not kept), as MaxPool2d(2) after it; y is then not written. A
     * tile's two output rows are a row of pooling windows: they are pooled
     * in the vector lanes before the transpose (maxpool2x2_lanes, as the
     * direct path). */
    float *pool_y;
    int32_t *arg;
    /* forward only, no pool: x (c a multiple of 16), y, res (o a multiple
     * of 16; res with y, or alone) in blocks of 16 channels (nChw16c,
     * layout.c), else NCHW. The same values either way: only where they
     * are read and written moves. */
    int x_nchw16c, y_nchw16c, res_nchw16c;
    /* the plan (nn_wino_plan) */
    const nn_kernel_table *kt;
    int64_t mr, nr;      /* the GEMM micro-kernel's tile */
    int64_t ldu;         /* floats of one position's U: strips of nr channels, c rows each */
    int64_t ldk;         /* o rounded up to 16: a pixel of the output row buffers */
    int64_t th, tw;      /* tile rows and columns per image */
    int64_t ipt;         /* whole images per task, or 0: bands of tile rows */
    int64_t band, nbands;/* tile rows per task and tasks per image (ipt == 0) */
    int tiles;           /* 1: the tasks of an image are even ranges of its tiles
                          * (tile rows that do not divide among the threads) */
    int64_t tmax;        /* tiles per task at most */
    /* in the caller's SHARED workspace (set before nn_wino_pack): per
     * position xi, U[xi] (c x o) as the GEMM's packed B: channel k of input
     * channel ci at u[xi ldu + (k / nr) c nr + ci nr + k % nr]; then the
     * bias (ldk floats: zeros without one) */
    float *u;
} nn_wino;

/* Plan W (geometry filled in) for kernel table kt and nt threads: 1 when
 * the Winograd path applies (a task's buffers fit their bound), else 0. */
int nn_wino_plan(nn_wino *W, const nn_kernel_table *kt, int nt);

/* Floats of the transformed weights and the bias (the shared workspace). */
size_t nn_wino_shared_floats(const nn_wino *W);

/* Thread `part` of `parts`' share of the weight transform into W->u (its
 * own slice of output channels); every thread of the call's team calls
 * it, then all meet at a barrier before the first task. */
void nn_wino_pack(const nn_wino *W, int part, int parts);

static inline int64_t nn_wino_tasks(const nn_wino *W)
{
    return W->ipt ? (W->n + W->ipt - 1) / W->ipt : W->n * W->nbands;
}

/* Floats of the buffer each thread running tasks needs. */
size_t nn_wino_task_floats(const nn_wino *W);

/* Run task t: the outputs of its tiles (whole images, or a band of tile
 * rows of one image), from x into y. Each output is the same sum whichever
 * task computes it: the bits do not depend on the tasks, the thread count
 * or the batch size. */
void nn_wino_task(const nn_wino *W, int64_t t, const float *x, float *y, float *buf);

#endif
