/* The direct (C/groups == 1, e.g. depthwise) convolution's inner loops,
 * compiled once per ISA (see dispatch.h); conv.c lays the planes out for them.
 *
 * Stride 1: a zero-padded input plane xp of hp x wp floats, and an output
 * plane laid out with the same row stride wp (its last wp - ow columns are
 * junk, dropped when copied out), make every kernel tap t = (kh, kw) a
 * constant shift off[t] = kh * dh * wp + kw * dw of the flat index:
 *
 *   forward  acc[i] += sum_t w[t] * xp[i + off[t]],          i < len
 *   dx       dxp[j] += sum_t w[t] * dyz[j - off[t] + pad],  j < lenx
 *            (dyz: the output gradient with junk columns zero, pad zeros
 *            before and after, pad = the largest shift)
 *   dw       acc[t] += sum_i dy[i] * xp[i + off[t]],          i < len
 *            (dy's junk columns zero)
 *
 * long contiguous loops the compiler vectorises for each ISA. The forward
 * and dx loops keep a block of NN_CONV_TAPS_SLACK outputs in registers over
 * all taps (taps in order: a fixed summation order) and run whole blocks:
 * they compute (and read) up to NN_CONV_TAPS_SLACK - 1 elements past len,
 * which the caller's buffers must hold (values there are never used). dw keeps
 * 16 running sums per tap, combined in a fixed order. */
#include "dispatch.h"

/* 16 floats, any alignment: GCC/Clang vector extensions, lowered to one zmm,
 * two ymm or four xmm registers by each ISA's flags (gcc 12 did not keep a
 * plain float[32] block in registers: it split the tap loop and ran the
 * block scalar). */
typedef float nn_v16 __attribute__((vector_size(64), aligned(4), may_alias));
#define NN_V(p) (*(nn_v16 *)(p))
#define NN_CV(p) (*(const nn_v16 *)(p))

#if NN_CONV_TAPS_SLACK != 32
#error "the blocks below are two vectors of 16"
#endif

void NN_ISA_FN(conv_taps_forward)(int64_t len, int64_t taps, const int64_t *off,
                                  const float *w, const float *xp, float *acc)
{
    for (int64_t i = 0; i < len; i += 32) {
        nn_v16 a0 = NN_CV(acc + i), a1 = NN_CV(acc + i + 16);
        for (int64_t t = 0; t < taps; t++) {
            const float wt = w[t];
            const float *s = xp + i + off[t];
            a0 += wt * NN_CV(s);
            a1 += wt * NN_CV(s + 16);
        }
        NN_V(acc + i) = a0;
        NN_V(acc + i + 16) = a1;
    }
}

void NN_ISA_FN(conv_taps_backward)(int64_t len, int64_t taps, const int64_t *off,
                                   const float *w, const float *dyz, int64_t pad, float *dxp)
{
    const float *base = dyz + pad;
    for (int64_t j = 0; j < len; j += 32) {
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

/* Whole blocks of 16 too: dy must hold zeros (and xp finite values) up to
 * the next multiple of 16 past len. */
void NN_ISA_FN(conv_taps_weight)(int64_t len, int64_t taps, const int64_t *off,
                                 const float *dy, const float *xp, double *acc)
{
    for (int64_t t = 0; t < taps; t++) {
        const float *s = xp + off[t];
        nn_v16 part = {0};
        for (int64_t i = 0; i < len; i += 16)
            part += NN_CV(dy + i) * NN_CV(s + i);
        float lanes[16];
        NN_V(lanes) = part;
        for (int h = 8; h > 0; h /= 2)
            for (int l = 0; l < h; l++)
                lanes[l] += lanes[l + h];
        acc[t] += (double)lanes[0];
    }
}
