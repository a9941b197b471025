/* The direct (C/groups == 1, e.g. depthwise) convolution's inner loops,
 * compiled once per ISA (see dispatch.h); conv.c lays the planes out for them.
 *
 * Stride 1: a zero-padded input plane xp of hp x wp floats, and an output
 * plane laid out with the same row stride wp (its last wp - ow columns are
 * junk, dropped when copied out), make every kernel tap t = (kh, kw) a
 * constant shift off[t] = kh * dh * wp + kw * dw of the flat index:
 *
 *   forward  out[i] = act(b + sum_t w[t] * xp[i + off[t]]),  i < len
 *   dx       dxp[j] += sum_t w[t] * dyz[j - off[t] + pad],  j < lenx
 *            (dyz: the output gradient with junk columns zero, pad zeros
 *            before and after, pad = the largest shift)
 *   dw       acc[t] += sum_i dy[i] * xp[i + off[t]],          i < len
 *            (dy's junk columns zero)
 *
 * long contiguous loops the compiler vectorises for each ISA. The forward
 * and dx loops keep a block of outputs in registers over all taps (taps in
 * order: a fixed summation order) and run whole blocks: they compute (and
 * read) up to NN_CONV_TAPS_SLACK - 1 elements past len, which the caller's
 * buffers must hold (values there are never used). dw keeps 16 running sums
 * per tap, combined in a fixed order. */
#include "dispatch.h"

/* 16 floats, any alignment: GCC/Clang vector extensions, lowered to one zmm,
 * two ymm or four xmm registers by each ISA's flags (gcc 12 did not keep a
 * plain float[32] block in registers: it split the tap loop and ran the
 * block scalar). */
typedef float nn_v16 __attribute__((vector_size(64), aligned(4), may_alias));
#define NN_V(p) (*(nn_v16 *)(p))
#define NN_CV(p) (*(const nn_v16 *)(p))
typedef int nn_vi16 __attribute__((vector_size(64)));

/* x < 0 ? 0 : x per lane, as nn_act_scalar (NaN stays NaN: the compare is
 * false), by masking the bits. */
static inline nn_v16 relu16(nn_v16 x)
{
    return (nn_v16)((nn_vi16)x & ~(x < 0.0f));
}

#if NN_CONV_TAPS_SLACK != 32
#error "the blocks below are two vectors of 16"
#endif

/* Blocks of 64 outputs (four vectors: four independent FMA chains, enough
 * to cover the FMA latency; two left the loop latency-bound), while a block
 * starts more than 32 before len, then one block of 32: nothing read or
 * written past len + 31, the slack. Each output still sums its taps in
 * order, so the bits do not depend on the block. */
void NN_ISA_FN(conv_taps_forward)(int64_t len, int64_t taps, const int64_t *off,
                                  const float *w, const float *xp, float bias, int act,
                                  float *out)
{
    const nn_v16 b = (nn_v16){0} + bias;
    int64_t i = 0;
    for (; i + 32 < len; i += 64) {
        nn_v16 a0 = b, a1 = b, a2 = b, a3 = b;
        for (int64_t t = 0; t < taps; t++) {
            const float wt = w[t];
            const float *s = xp + i + off[t];
            a0 += wt * NN_CV(s);
            a1 += wt * NN_CV(s + 16);
            a2 += wt * NN_CV(s + 32);
            a3 += wt * NN_CV(s + 48);
        }
        if (act == NN_ACT_RELU) {
            a0 = relu16(a0);
            a1 = relu16(a1);
            a2 = relu16(a2);
            a3 = relu16(a3);
        }
        NN_V(out + i) = a0;
        NN_V(out + i + 16) = a1;
        NN_V(out + i + 32) = a2;
        NN_V(out + i + 48) = a3;
    }
    if (i < len) {
        nn_v16 a0 = b, a1 = b;
        for (int64_t t = 0; t < taps; t++) {
            const float wt = w[t];
            const float *s = xp + i + off[t];
            a0 += wt * NN_CV(s);
            a1 += wt * NN_CV(s + 16);
        }
        if (act == NN_ACT_RELU) {
            a0 = relu16(a0);
            a1 = relu16(a1);
        }
        NN_V(out + i) = a0;
        NN_V(out + i + 16) = a1;
    }
}

/* The same blocks as the forward loop. */
void NN_ISA_FN(conv_taps_backward)(int64_t len, int64_t taps, const int64_t *off,
                                   const float *w, const float *dyz, int64_t pad, float *dxp)
{
    const float *base = dyz + pad;
    int64_t j = 0;
    for (; j + 32 < len; j += 64) {
        nn_v16 a0 = NN_CV(dxp + j), a1 = NN_CV(dxp + j + 16);
        nn_v16 a2 = NN_CV(dxp + j + 32), a3 = NN_CV(dxp + j + 48);
        for (int64_t t = 0; t < taps; t++) {
            const float wt = w[t];
            const float *s = base + j - off[t];
            a0 += wt * NN_CV(s);
            a1 += wt * NN_CV(s + 16);
            a2 += wt * NN_CV(s + 32);
            a3 += wt * NN_CV(s + 48);
        }
        NN_V(dxp + j) = a0;
        NN_V(dxp + j + 16) = a1;
        NN_V(dxp + j + 32) = a2;
        NN_V(dxp + j + 48) = a3;
    }
    if (j < len) {
        nn_v16 a0 = NN_CV(dxp + j), a1 = NN_CV(dxp + j + 16);
        for (int64_t t = 0; t < taps; t++) {
            const float wt = w[t];
            const float *s = base + j - off[t];
            a0 += wt * NN_CV(s);
            a1 += wt * NN_CV(s + 16);
        }
        NN_V(dxp + j) = a0;
        NN_V(dxp + j + 16) = a1;
    }
}

/* One tap's 16 running sums, reduced in a fixed tree, added in double. */
static inline void add_lanes(nn_v16 part, double *acc)
{
    float lanes[16];
    NN_V(lanes) = part;
    for (int h = 8; h > 0; h /= 2)
        for (int l = 0; l < h; l++)
            lanes[l] += lanes[l + h];
    *acc += (double)lanes[0];
}

/* Whole blocks of 16 too: dy must hold zeros (and xp finite values) up to
 * the next multiple of 16 past len. Each tap keeps 16 running sums over the
 * blocks in order. A 3x3 kernel runs its nine taps in one pass (nine
 * independent chains, dy loaded once per block); others tap by tap (one
 * chain each): the same sums in the same order either way. */
void NN_ISA_FN(conv_taps_weight)(int64_t len, int64_t taps, const int64_t *off,
                                 const float *dy, const float *xp, double *acc)
{
    if (taps == 9) {
        nn_v16 part[9];
        for (int t = 0; t < 9; t++)
            part[t] = (nn_v16){0};
        for (int64_t i = 0; i < len; i += 16) {
            const nn_v16 d = NN_CV(dy + i);
            for (int t = 0; t < 9; t++)
                part[t] += d * NN_CV(xp + off[t] + i);
        }
        for (int t = 0; t < 9; t++)
            add_lanes(part[t], acc + t);
        return;
    }
    for (int64_t t = 0; t < taps; t++) {
        const float *s = xp + off[t];
        nn_v16 part = {0};
        for (int64_t i = 0; i < len; i += 16)
            part += NN_CV(dy + i) * NN_CV(s + i);
        add_lanes(part, acc + t);
    }
}
