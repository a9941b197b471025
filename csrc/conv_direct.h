/* Internal: the direct convolution (conv_direct.c), used by conv.c for the
 * forward pass and, with stride 1, for the input gradient (a convolution of
 * the output gradient with the flipped, transposed weights). */
#ifndef NN_CONV_DIRECT_H
#define NN_CONV_DIRECT_H

#include <stddef.h>
#include <stdint.h>
#include "dispatch.h"

/* One direct convolution of n images in `groups` groups: per image and
 * group, c input channels (h x w planes) to o output channels (oh x ow),
 * kernel kh x kw, stride, dilation, zero padding; the input and output
 * tensors hold x_img and y_img floats per image (channels of all groups,
 * NCHW). The rest is the plan (nn_dconv_plan). */
typedef struct nn_dconv {
    int64_t n, groups, c, h, w, o, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow;
    int64_t x_img, y_img;
    const nn_kernel_table *kt;
    int v;                /* blocks of 16 output channels per tile */
    int rmax;             /* pixels per tile at most */
    int64_t nob, ldw;     /* channel tiles; packed weight row: nob * 16 v floats */
    int64_t taps;         /* c * kh * kw: the sum each output runs over */
    int64_t band, nbands; /* output rows per task, tasks per (image, group) */
    int64_t hq, wq;       /* one phase plane of a task's input band */
    int64_t xq_floats;    /* the input band: c * sh * sw phase planes */
    /* in the caller's SHARED workspace (nn_dconv_pack) */
    const int64_t *koff;
    const float *wpk, *bias;
    int act;
} nn_dconv;

/* Plan D (its geometry filled in by the caller) for kernel table kt: 1 when
 * the direct path applies (a task's input band fits its bound), else 0. */
int nn_dconv_plan(nn_dconv *D, const nn_kernel_table *kt);

/* Floats of the shared data (tap offsets, packed weights, bias). */
size_t nn_dconv_shared_floats(const nn_dconv *D);

/* Fill the shared data into `shared` and point D at it. w: the Conv2d's
 * weight (O, C/groups, kh, kw). flip == 0: D is that convolution (bias:
 * NULL or O values). flip == 1: D is its input gradient for stride 1 (D's
 * c is the Conv2d's O/groups, D's o its C/groups; the weights transposed and
 * rotated by 180 degrees; no bias). */
void nn_dconv_pack(nn_dconv *D, float *shared, const float *w, const float *bias, int flip);

/* Tasks: (image, group, band of output rows); each writes outputs no other
 * task writes. */
static inline int64_t nn_dconv_tasks(const nn_dconv *D) { return D->n * D->groups * D->nbands; }

/* Floats of the buffer each thread running tasks needs. */
size_t nn_dconv_task_floats(const nn_dconv *D);

/* Run task t: y's outputs of that (image, group, band) from x. */
void nn_dconv_task(const nn_dconv *D, int64_t t, const float *x, float *y, float *buf);

#endif
