/* Internal: the direct convolution (conv_direct.c), used by conv.c for the
 * forward pass and for the input gradient (a convolution of the output
 * gradient with the flipped, transposed weights; with a stride, one such
 * convolution per phase of the input rows and columns). */
#ifndef NN_CONV_DIRECT_H
#define NN_CONV_DIRECT_H

#include <stddef.h>
#include <stdint.h>
#include "dispatch.h"

/* One direct convolution of n images in `groups` groups: per image and
 * group, c input channels (h x w planes) to o output channels (oh x ow),
 * kernel kh x kw, stride, dilation, zero padding; the input and output
 * tensors hold x_img and y_img floats per image (channels of all groups,
 * NCHW). The rest is the plan (nn_dconv_plan).
 *
 * transposed = 1: D is instead the input gradient of such a convolution
 * (the Conv2d's stride, dilation and padding, kernel kh x kw): its input
 * is the Conv2d's dy (c = O/groups planes of h x w), its output the
 * Conv2d's dx (o = C/groups planes of oh x ow),
 *   dx[co, y, x] = sum over ci, i, j of w[ci, co, i, j] dy[ci, r, q]
 * for r = (y + ph - i dh) / sh and q = (x + pw - j dw) / sw where both
 * divide exactly and fall inside dy. A row y reads only the taps i with
 * i dh = y + ph (mod sh), row r = (y + ph) / sh - (i dh) / sh: per phase
 * (row and column residue) a stride-1 convolution of dy with a subset of
 * the taps, each a constant offset in a padded copy of dy (no col2im). */
typedef struct nn_dconv {
    int64_t n, groups, c, h, w, o, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow;
    int64_t x_img, y_img;
    int transposed;
    const nn_kernel_table *kt;
    int v;                /* blocks of 16 output channels per tile */
    int rmax;             /* pixels per tile at most */
    int64_t nob, ldw;     /* channel tiles; packed weight row: nob * 16 v floats */
    int64_t taps;         /* c * kh * kw: the sum each output runs over */
    int64_t band, nbands; /* output rows per task, bands per (image, group) */
    int64_t ctasks;       /* tasks per band: 1, or nob (one channel tile each) */
    int64_t hq, wq;       /* one phase plane of a task's input band */
    int64_t xq_floats;    /* the input band: c * sh * sw phase planes (transposed: c planes) */
    int64_t tmax, umax;   /* transposed: the largest tap shift in dy rows, columns */
    /* in the caller's SHARED workspace (nn_dconv_pack) */
    const int64_t *koff;
    const int64_t *phase; /* transposed: taps of phase (a, b) at [phase[a sw + b], the next) */
    const float *wpk, *bias;
    /* added to the output before act (NULL: none), y's layout; the tile then
     * stops at the bias and conv_transpose_res adds it as it writes y */
    const float *res;
    int act;
    /* pool (set before planning; forward only, no res): a 2x2, stride-2 max
     * pooling of the activated output, as MaxPool2d(2) after it. y is then
     * the pooled output (y_img floats per image, planes of (oh/2) x (ow/2)),
     * arg its argmax (the same layout: the index row * ow + column of each
     * window's maximum in the unpooled plane); the unpooled output is never
     * stored. Bands hold an even number of rows (one more than the band
     * bound may allow); an odd last row or column is not pooled
     * (MaxPool2d's floor). */
    int pool;
    int32_t *arg;
    /* forward only, no pool, groups 1: y in blocks of 16 channels (nChw16c,
     * layout.c; o a multiple of 16), else NCHW; res likewise (nChw16c
     * always with y); x likewise (c a multiple of 16), its blocks turned
     * into channel rows as the band is filled */
    int y_nchw16c, res_nchw16c, x_nchw16c;
} nn_dconv;

/* Plan D (its geometry filled in by the caller) for kernel table kt and nt
 * threads: 1 when the direct path applies (a task's input band fits its
 * bound), else 0. */
int nn_dconv_plan(nn_dconv *D, const nn_kernel_table *kt, int nt);

/* Floats of the shared data (tap offsets, packed weights, bias). */
size_t nn_dconv_shared_floats(const nn_dconv *D);

/* Fill the shared data into `shared` and point D at it. w: the Conv2d's
 * weight (O, C/groups, kh, kw); bias: NULL or O values (NULL when
 * transposed: the input gradient has none). */
void nn_dconv_pack(nn_dconv *D, float *shared, const float *w, const float *bias);
/* Only the tap offsets of nn_dconv_pack (not transposed): D's packed
 * weights and bias are then set by the caller (a copy made earlier:
 * nn_dconv_packed_floats floats, the weights then the bias row). */
void nn_dconv_pack_offsets(nn_dconv *D, float *shared);
size_t nn_dconv_packed_floats(const nn_dconv *D);
/* Fold a per-channel affine map into the packed convolution (after
 * nn_dconv_pack): the weights of output channel j (O = groups * o values)
 * times scale[j], the bias replaced by shift[j]. */
void nn_dconv_fold(nn_dconv *D, const float *scale, const float *shift);

/* Tasks: (image, group, band of output rows, and with ctasks > 1 channel
 * tile); each writes outputs no other task writes. */
static inline int64_t nn_dconv_tasks(const nn_dconv *D)
{
    return D->n * D->groups * D->nbands * D->ctasks;
}

/* Floats of the buffer each thread running tasks needs. */
size_t nn_dconv_task_floats(const nn_dconv *D);

/* Run task t: y's outputs of that (image, group, band) from x. */
void nn_dconv_task(const nn_dconv *D, int64_t t, const float *x, float *y, float *buf);

/* Chunks of images in the weight gradient (each a part of dw's size): at
 * most NN_DCONV_DW_CHUNKS of per_q images, from n > 0 only (the Winograd
 * weight gradient chunks the batch the same way). */
#define NN_DCONV_DW_CHUNKS 8
static inline void nn_dconv_dw_chunks(int64_t n, int64_t *nq, int64_t *per_q)
{
    const int64_t q = n < NN_DCONV_DW_CHUNKS ? n : NN_DCONV_DW_CHUNKS;
    *per_q = (n + q - 1) / q;
    *nq = (n + *per_q - 1) / *per_q;
}

/* The weight gradient by the same register tile: per image, the kernel's
 * "taps" are the output pixels p (dy transposed, channels contiguous, as the
 * weights), its "pixels" the kernel columns j of one kernel row (input
 * column ow*sw + j: dilation 1 along the width), its sums run over p:
 *   part[q][g][(c, i, j)][o] = sum over the images of chunk q and pixels p
 *                              of x[c, oh*sh + i*dh - ph, ow*sw + j - pw] dy[o, p]
 * Tasks: (chunk q of images, group, tile of output channels), each summing
 * its images in order into its own part; nn_dconv_dw_reduce then adds the
 * chunks in order. The chunks depend on the batch size only.
 * With_db the same tasks also sum the bias gradient from the transposed dy
 * they hold anyway (dbpart[q][g][o], in double): conv.c's separate pass over
 * dy, which read it from memory once more, is saved. Without with_dw they
 * sum only that (db asked for alone gets the bits it gets with dw). */
#define NN_DCONV_DW_SEGS 8
typedef struct nn_dconv_dw {
    int64_t n, groups, c, h, w, o, kh, kw, sh, sw, dh, ph, pw, oh, ow;
    int64_t x_img, y_img;     /* floats per image of x and dy */
    const nn_kernel_table *kt;
    int v;                    /* blocks of 16 output channels per tile */
    int rows3;                /* 3x3: a channel's nine taps in one tile (rh = 3) */
    int64_t nob, ldo;         /* channel tiles; part row: nob * 16 v floats */
    int64_t nq, per_q;        /* chunks of images, images per chunk */
    int64_t hp, wp, taps;     /* the padded input plane; c * kh * kw */
    int with_dw, with_db;     /* the weight and the bias gradient (set before planning) */
    int nseg;                 /* rows3: segments of output rows skipping padded tile rows */
    nn_conv_seg seg[NN_DCONV_DW_SEGS];
    /* in the caller's SHARED workspace (nn_dconv_dw_pack) */
    const int64_t *koff;      /* oh * ow pixel offsets into a padded plane */
    float *part;              /* nq * groups * taps * ldo */
    double *dbpart;           /* nq * groups * ldo, with_db only */
} nn_dconv_dw;

/* 1 when the direct weight gradient applies to E (geometry filled in). */
int nn_dconv_dw_plan(nn_dconv_dw *E, const nn_kernel_table *kt);
size_t nn_dconv_dw_shared_floats(const nn_dconv_dw *E);
void nn_dconv_dw_pack(nn_dconv_dw *E, float *shared);
static inline int64_t nn_dconv_dw_tasks(const nn_dconv_dw *E)
{
    return E->nq * E->groups * E->nob;
}
size_t nn_dconv_dw_task_floats(const nn_dconv_dw *E);
void nn_dconv_dw_task(const nn_dconv_dw *E, int64_t t, const float *x, const float *dy,
                      float *buf);
/* The bias gradient's share of one image: acc[j] += the sum over the P rows
 * of dyt (L floats each, L a multiple of 16) of column j, for j < L, in a
 * fixed order (also the Winograd weight gradient's, winograd_dw.h, so db
 * gets the same bits whichever of the two runs). */
void nn_dconv_dw_column_sums(const float *dyt, int64_t P, int64_t L, double *acc);
/* db[o] = (float) the sum over the chunks q < nq, in order, of part[q ld + o],
 * o < n: the bias gradient's reduction (also the Winograd weight
 * gradient's, so db gets the same bits whichever of the two runs). */
void nn_dconv_db_reduce(const double *part, int64_t nq, int64_t ld, int64_t n, float *db);
/* dw (the Conv2d's weight shape) = the parts summed over the chunks in order;
 * with_db db (O floats) likewise; without with_dw dw is not touched. */
void nn_dconv_dw_reduce(const nn_dconv_dw *E, float *dw, float *db);

#endif
