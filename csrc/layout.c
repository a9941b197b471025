/* The blocked activation layout nChw16c, and its conversions to and from
 * NCHW.
 *
 * nChw16c holds an (n, c, h, w) tensor (c a multiple of 16) as n images of
 * c / 16 blocks of h w pixels of 16 channels: channel 16 b + l of pixel p
 * of image i at ((i c / 16 + b) h w + p) 16 + l. A one-image prediction
 * splits each convolution's output rows between the threads; in NCHW every
 * thread then writes a part of every channel plane, and the cores'
 * prefetchers reach across the boundaries into the other core's part
 * (benchmarks/interleaved_writes.c). In nChw16c a thread's rows of a block
 * are one run of memory. The predict plans keep the tensors between
 * convolutions in it (nn_conv2d_forward_nchw16c) while they fit in half of
 * L2 (nn_nchw16c_pays).
 *
 * The conversions move values only (conv_transpose: no arithmetic), split
 * so that each thread writes runs of its own: NCHW -> nChw16c by ranges of
 * pixels of a block, nChw16c -> NCHW by groups of 8 whole planes. */
#include "gemm.h"
#include "profile.h"

/* Below this many floats one thread converts (a fork and join costs more). */
#define NN_LAYOUT_PARALLEL_MIN 8192

/* Ranges of pixels per block: enough tasks for every thread. */
static int64_t pixel_parts(int64_t blocks, int64_t hw, int nt)
{
    return blocks >= nt ? 1 : min64(ceil_div(nt, blocks), ceil_div(hw, 64));
}

static void to_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    const nn_kernel_table *kt = nn_kernels();
    const int64_t blocks = n * (c / 16), total = blocks * hw * 16;
    const int nt = total >= NN_LAYOUT_PARALLEL_MIN ? nn_max_threads() : 1;
    const int64_t parts = pixel_parts(blocks, hw, nt);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < blocks * parts; t++) {
        const int64_t b = t / parts, part = t % parts;
        const int64_t p0 = split(hw, 16, (int)part, (int)parts);
        const int64_t p1 = split(hw, 16, (int)part + 1, (int)parts);
        if (p1 > p0)
            kt->conv_transpose(16, p1 - p0, x + b * 16 * hw + p0, hw, y + (b * hw + p0) * 16,
                               16);
    }
}

static void from_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    const nn_kernel_table *kt = nn_kernels();
    const int64_t groups = n * (c / 8), total = groups * hw * 8;
    const int nt = total >= NN_LAYOUT_PARALLEL_MIN ? nn_max_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t g = 0; g < groups; g++) /* planes 8 g to 8 g + 7 */
        kt->conv_transpose(hw, 8, x + (g / 2 * hw) * 16 + g % 2 * 8, 16, y + g * 8 * hw, hw);
}

static int convert(int id, int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    if (n < 0 || c < 0 || hw < 0 || c % 16 != 0)
        return NN_EINVAL;
    if (n == 0 || c == 0 || hw == 0)
        return NN_OK;
    void (*fn)(int64_t, int64_t, int64_t, const float *, float *) =
        id == NN_K_to_nchw16c ? to_nchw16c : from_nchw16c;
    if (!nn_profiling()) {
        fn(n, c, hw, x, y);
        return NN_OK;
    }
    const int64_t t0 = nn_profile_now_ns();
    fn(n, c, hw, x, y);
    nn_profile_record(id, t0, 0.0, n, c, hw);
    return NN_OK;
}

int nn_nchw16c_pays(int64_t floats)
{
    int64_t l1, l2;
    nn_cache_sizes(&l1, &l2);
    return floats <= l2 / 2 / (int64_t)sizeof(float);
}

int nn_to_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    return convert(NN_K_to_nchw16c, n, c, hw, x, y);
}

int nn_from_nchw16c(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    return convert(NN_K_from_nchw16c, n, c, hw, x, y);
}
