/* The direct convolution: no im2col matrix, no GEMM. conv_direct_kernel.c
 * holds the register tile (output channels in vector lanes, pixels of one
 * output row as the tile's rows); this file lays the data out for it.
 *
 * Per task (image, group, band of output rows):
 *   1. the input rows the band needs are copied, zero-padded, into
 *      sh * sw phase planes: plane (a, b) holds padded rows r*sh + a and
 *      columns q*sw + b. A tap (i, j) then reads plane ((i*dh) % sh,
 *      (j*dw) % sw) shifted by ((i*dh) / sh, (j*dw) / sw): one constant
 *      offset koff per tap (shared by all tasks), and consecutive output
 *      pixels of a row read consecutive floats, whatever the stride (the
 *      transposed convolution, dx: one padded copy of dy per channel);
 *   2. for each output row and each tile of 16 v channels, the row's
 *      pixels in tiles of at most rmax: the kernel sums the taps of each
 *      output in order (bias and activation applied in registers) into a
 *      row buffer, pixel-major. Taps that read the zero padding are left
 *      out (kernel rows outside the input for the whole row, kernel
 *      columns for a tile's first or last pixel), as oneDNN does: at 7x7
 *      with a 3x3 kernel that is 18% of the products, and a left-out
 *      product is an exact zero, so the bits are those of the full sum;
 *   3. the row buffer is transposed into the NCHW output (conv_transpose;
 *      with a residual, conv_transpose_res adds it and applies the
 *      activation on the way, which the tile then leaves out).
 * The weights are packed once per call: one row of ldw floats per tap,
 * output channels contiguous (zero past the group's o), taps ordered by
 * kernel row, kernel column, then input channel (transposed: by phase
 * first), so the kernel rows a row keeps are one range.
 *
 * Memory: the shared data is the size of the weights (the weight gradient:
 * NN_DCONV_DW_CHUNKS times that; the forward pass's packing: once more as
 * scratch); each thread's buffer holds at most
 * NN_DCONV_BAND_FLOATS of input (the plan splits rows into bands, and
 * declines when even one row's input band is larger) and one output row
 * (the weight gradient: at most NN_DCONV_BAND_FLOATS of transposed dy).
 * Nothing grows with the batch. */
#include <string.h>
#include "conv_direct.h"
#include "gemm.h"

/* A task's input band at most (floats): half of a 1 MiB L2. */
#define NN_DCONV_BAND_FLOATS 131072
/* With more than one thread and fewer than this many images (times
 * groups) per thread, rows are split into the fewest bands that give every
 * thread as many tasks (batch 1 runs on several threads, in one band each);
 * otherwise, and on one thread, a task is a whole image. Few bands: a band
 * re-copies the input rows its taps share with the next, and one-image
 * predicts on 2 threads ran 6-8% faster with 2 bands than with 8 (the
 * small CNN 87 -> 81 us, ResNet-20 640 -> 589 us). The bits do not depend
 * on the bands: each output is the same sum of the same copied values
 * whichever band computes it. */
#define NN_DCONV_TASKS_PER_THREAD 4

/* Tiles of o output channels: the fewest tiles of at most vmax blocks of
 * 16, balanced (*v blocks each, *nob tiles). */
static void channel_tiles(int64_t o, int vmax, int *v, int64_t *nob)
{
    const int64_t blocks = ceil_div(o, 16);
    *nob = ceil_div(blocks, vmax);
    *v = (int)ceil_div(blocks, *nob);
}

int nn_dconv_plan(nn_dconv *D, const nn_kernel_table *kt, int nt)
{
    D->kt = kt;
    int vmax = 1, rmax[8] = {0}, v3max = 0;
    kt->conv_direct_limits(&vmax, rmax, &v3max);
    channel_tiles(D->o, vmax, &D->v, &D->nob);
    D->rmax = rmax[D->v - 1];
    D->ldw = D->nob * 16 * D->v;
    D->taps = D->c * D->kh * D->kw;
    /* plane_row: floats of one input row's copy; ext: rows a band of one
     * output row needs; bmax: the most output rows whose band fits */
    int64_t plane_row, ext, bmax;
    if (D->transposed) {
        /* one dy plane per channel: dx columns x read dy columns
         * (x + pw) / sw - u for u <= umax, dx rows likewise */
        D->tmax = (D->kh - 1) * D->dh / D->sh;
        D->umax = (D->kw - 1) * D->dw / D->sw;
        D->wq = (D->ow - 1 + D->pw) / D->sw - D->pw / D->sw + D->umax + 1;
        plane_row = D->c * D->wq;
        ext = D->tmax;
        if (plane_row * (1 + ext) > NN_DCONV_BAND_FLOATS)
            return 0;
        /* b dx rows span at most ceil((b - 1) / sh) + 1 dy rows */
        bmax = (NN_DCONV_BAND_FLOATS / plane_row - 1 - ext) * D->sh + 1;
    } else {
        D->wq = D->ow + (D->kw - 1) * D->dw / D->sw;
        plane_row = D->c * D->sh * D->sw * D->wq;
        ext = (D->kh - 1) * D->dh / D->sh;
        if (plane_row * (1 + ext) > NN_DCONV_BAND_FLOATS)
            return 0;
        bmax = NN_DCONV_BAND_FLOATS / plane_row - ext;
    }
    int64_t nb = ceil_div(D->oh, bmax);
    const int64_t images = D->n * D->groups;
    int64_t want = 1;
    if (nt > 1 && images < NN_DCONV_TASKS_PER_THREAD * nt)
        while (images * want % nt != 0)
            want++;
    /* Rows that do not divide among the threads (7: 4 + 3) split the
     * channels instead, when their blocks of 16 do (64 channels, 2 threads:
     * two tiles of 32, all rows each), so the work splits evenly: only
     * where a row is one tile of pixels either way, and ldw stays, so each
     * output is the same sum in the same order (and a pack made for one
     * thread count fits another). */
    const int64_t blocks = ceil_div(D->o, 16);
    D->ctasks = 1;
    if (nb == 1 && want > 1 && D->oh % want != 0 && !D->pool && !D->transposed &&
        blocks % want == 0 && blocks / want <= vmax && D->ow <= D->rmax &&
        D->ow <= rmax[blocks / want - 1] && D->nob < want) {
        D->v = (int)(blocks / want);
        D->nob = want;
        D->rmax = rmax[D->v - 1];
        D->ctasks = want;
        want = 1;
    }
    nb = max64(nb, min64(want, D->oh));
    D->band = ceil_div(D->oh, nb);
    D->band += D->pool && D->band % 2; /* pooled rows come in pairs */
    D->nbands = ceil_div(D->oh, D->band);
    if (D->transposed) {
        D->hq = ceil_div(D->band - 1, D->sh) + 1 + ext;
        D->xq_floats = D->c * D->hq * D->wq;
    } else {
        D->hq = D->band + ext;
        D->xq_floats = D->c * D->sh * D->sw * D->hq * D->wq;
    }
    return 1;
}

/* Floats (a multiple of 16) of the tap offsets, and with transposed the
 * phases' starts: int64 each. */
static int64_t index_floats(const nn_dconv *D)
{
    return round_up(2 * (D->taps + (D->transposed ? D->sh * D->sw + 1 : 0)), 16);
}

size_t nn_dconv_shared_floats(const nn_dconv *D)
{
    /* the forward pass's packing uses one group's weights more as scratch */
    const int64_t scratch = D->transposed ? 0 : D->taps * D->ldw;
    return (size_t)(index_floats(D) + D->groups * D->ldw * (D->taps + 1) + scratch);
}

/* Floats of an nChw16c input's channel rows (fill_band): 16 channels of
 * the hq rows one row phase of a band reads. */
static int64_t rows16_floats(const nn_dconv *D)
{
    return D->x_nchw16c ? round_up(16 * D->hq * D->w, 16) : 0;
}

/* Floats of a tile's tap segments (one per kernel tap at most). */
static int64_t seg_floats(const nn_dconv *D)
{
    return round_up(D->kh * D->kw * (int64_t)(sizeof(nn_conv_seg) / sizeof(float)), 16);
}

size_t nn_dconv_task_floats(const nn_dconv *D)
{
    /* the input band, one output row (pooling: two, then the pooled row
     * and its argmax), a tile's tap segments, an nChw16c input's rows */
    return (size_t)(round_up(D->xq_floats, 16) + D->ow * 16 * D->v * (D->pool ? 3 : 1) +
                    seg_floats(D) + rows16_floats(D));
}

/* The transposed convolution's taps, phase by phase (row residue a, column
 * residue b), then by kernel row and column from the last to the first (the
 * order of the 180-degree rotated kernel), then by dy channel: a dx row's
 * kernel rows inside dy are one range of its phase's taps. Tap p of group
 * g's weights is row p of wpk (D->o dx channels in lanes); koff[p] its
 * offset in the band's dy planes. */
static void pack_transposed(nn_dconv *D, int64_t *koff, int64_t *phase, float *wpk,
                            const float *w)
{
    const int64_t kk = D->kh * D->kw, plane = D->hq * D->wq, o = D->o;
    int64_t p = 0;
    for (int64_t a = 0; a < D->sh; a++)
        for (int64_t b = 0; b < D->sw; b++) {
            phase[a * D->sw + b] = p;
            for (int64_t i = D->kh - 1; i >= 0; i--) {
                if (i * D->dh % D->sh != a)
                    continue;
                for (int64_t j = D->kw - 1; j >= 0; j--) {
                    if (j * D->dw % D->sw != b)
                        continue;
                    for (int64_t ci = 0; ci < D->c; ci++, p++) {
                        koff[p] = ci * plane + (D->tmax - i * D->dh / D->sh) * D->wq +
                                  D->umax - j * D->dw / D->sw;
                        /* the Conv2d's weight per group: (c, o, kh, kw) here */
                        for (int64_t g = 0; g < D->groups; g++) {
                            const float *src = w + (g * D->c + ci) * o * kk + i * D->kw + j;
                            float *row = wpk + (g * D->taps + p) * D->ldw;
                            for (int64_t jo = 0; jo < o; jo++)
                                row[jo] = src[jo * kk];
                            for (int64_t jo = o; jo < D->ldw; jo++)
                                row[jo] = 0.0f;
                        }
                    }
                }
            }
        }
    phase[D->sh * D->sw] = p;
}

void nn_dconv_pack_offsets(nn_dconv *D, float *shared)
{
    int64_t *koff = (int64_t *)shared;
    D->koff = koff;
    D->wpk = shared + index_floats(D);
    D->phase = NULL;
    D->bias = NULL;
    /* per tap, its phase plane and shift, then one add per channel: the
     * divisions once per tap, not per tap and channel (at 64 channels the
     * per-channel divisions took ~5 us, a fifth of a one-image 7x7 layer) */
    const int64_t plane = D->hq * D->wq, per_channel = D->sh * D->sw * plane;
    for (int64_t i = 0; i < D->kh; i++)
        for (int64_t j = 0; j < D->kw; j++) {
            const int64_t a = i * D->dh % D->sh, b = j * D->dw % D->sw;
            const int64_t at = (a * D->sw + b) * plane + i * D->dh / D->sh * D->wq +
                               j * D->dw / D->sw;
            int64_t *row = koff + (i * D->kw + j) * D->c;
            for (int64_t ci = 0; ci < D->c; ci++)
                row[ci] = ci * per_channel + at;
        }
}

size_t nn_dconv_packed_floats(const nn_dconv *D)
{
    return (size_t)(D->groups * D->ldw * (D->taps + 1));
}

void nn_dconv_pack(nn_dconv *D, float *shared, const float *w, const float *bias)
{
    if (D->transposed) {
        int64_t *koff = (int64_t *)shared;
        D->koff = koff;
        D->wpk = shared + index_floats(D);
        D->phase = koff + D->taps;
        D->bias = NULL;
        pack_transposed(D, koff, (int64_t *)D->phase, (float *)D->wpk, w);
        return;
    }
    nn_dconv_pack_offsets(D, shared);
    float *wpk = (float *)D->wpk;
    const int64_t kk = D->kh * D->kw;
    /* The Conv2d's weight per group, (o, taps) with taps in (ci, t) order
     * (t = i kw + j), transposed through registers into the scratch after
     * the bias, then its rows copied to t c + ci. */
    float *scratch = wpk + D->groups * D->ldw * (D->taps + 1);
    for (int64_t g = 0; g < D->groups; g++) {
        float *dst = wpk + g * D->taps * D->ldw;
        /* 1x1: the orders agree */
        float *tr = kk == 1 ? dst : scratch;
        D->kt->conv_transpose(D->o, D->taps, w + g * D->o * D->taps, D->taps, tr, D->ldw);
        for (int64_t ci = 0; ci < D->c; ci++)
            for (int64_t t = 0; t < kk; t++) {
                float *row = dst + (t * D->c + ci) * D->ldw;
                if (tr != dst)
                    memcpy(row, tr + (ci * kk + t) * D->ldw, (size_t)D->o * sizeof(float));
                if (D->ldw > D->o)
                    memset(row + D->o, 0, (size_t)(D->ldw - D->o) * sizeof(float));
            }
    }
    float *bp = wpk + D->groups * D->taps * D->ldw;
    if (bias) {
        for (int64_t g = 0; g < D->groups; g++)
            for (int64_t jo = 0; jo < D->ldw; jo++)
                bp[g * D->ldw + jo] = jo < D->o ? bias[g * D->o + jo] : 0.0f;
        D->bias = bp;
    }
}

void nn_dconv_fold(nn_dconv *D, const float *scale, const float *shift)
{
    float *wpk = (float *)D->wpk, *bp = wpk + D->groups * D->taps * D->ldw;
    for (int64_t g = 0; g < D->groups; g++) {
        /* restrict and o in a local: the stores then alias neither the
         * scale nor D, and the loop vectorises (scalar, it was ~4% of a
         * one-image ResNet-20 predict) */
        const int64_t o = D->o;
        const float *restrict sg = scale + g * o;
        for (int64_t p = 0; p < D->taps; p++) {
            float *restrict row = wpk + (g * D->taps + p) * D->ldw;
            for (int64_t j = 0; j < o; j++)
                row[j] *= sg[j];
        }
        for (int64_t j = 0; j < D->ldw; j++)
            bp[g * D->ldw + j] = j < D->o ? shift[g * D->o + j] : 0.0f;
    }
    D->bias = bp;
}

/* Whether some tap i < k (dilation d) reads phase a of stride s. */
static inline int phase_used(int64_t k, int64_t d, int64_t s, int64_t a)
{
    for (int64_t i = 0; i < k; i++)
        if (i * d % s == a)
            return 1;
    return 0;
}

/* The task's input band: for each phase (a, b) of strides (fh, fw) and
 * each of the c channels xc (h x w planes), a plane of hq x wq whose row r,
 * column q holds input row row0 + r fh + a, column col0 + q fw + b (zero
 * outside the input). The forward pass: the stride's phases; transposed:
 * fh = fw = 1, one padded copy of dy per channel. The rows inside the input
 * are split into their column phases by the ISA's conv_split_rows (all fw
 * phases, those no tap reads too: they are never read). An nChw16c input
 * (D->x_nchw16c) goes through rows16 first: per block of 16 channels, the
 * rows the phase reads transposed into 16 channel rows each (conv_transpose),
 * the same values: the band, hence the bits, are those of the NCHW input. */
static void fill_band(const nn_dconv *D, const float *xc, int64_t row0, int64_t col0,
                      int64_t fh, int64_t fw, float *xq, float *rows16)
{
    const int64_t H = D->h, W = D->w, wq = D->wq, hq = D->hq, plane = hq * wq;
    for (int64_t a = 0; a < fh; a++) {
        /* a phase no tap reads stays unfilled (1x1 stride 2: only (0, 0)) */
        if (!phase_used(D->kh, D->dh, fh, a))
            continue;
        /* plane rows r in [rlo, rhi) hold input rows first + r fh inside
         * [0, H); the others are zero */
        const int64_t first = row0 + a;
        int64_t rlo = first >= 0 ? 0 : ceil_div(-first, fh);
        int64_t rhi = H - 1 - first < 0 ? 0 : (H - 1 - first) / fh + 1;
        rlo = min64(rlo, hq);
        rhi = min64(max64(rhi, rlo), hq);
        const int64_t nrows = rhi - rlo;
        for (int64_t ci = 0; ci < D->c; ci++) {
            float *planes = xq + (ci * fh + a) * fw * plane; /* phases (a, 0..fw-1) */
            for (int64_t b = 0; b < fw; b++) {
                if (!phase_used(D->kw, D->dw, fw, b))
                    continue;
                memset(planes + b * plane, 0, (size_t)(rlo * wq) * sizeof(float));
                memset(planes + b * plane + rhi * wq, 0, (size_t)((hq - rhi) * wq) * sizeof(float));
            }
            if (nrows <= 0)
                continue;
            /* source column t of a row is input column col0 + t */
            const float *src = xc + ci * H * W + (first + rlo * fh) * W;
            int64_t lds = fh * W;
            if (D->x_nchw16c) {
                /* block ci / 16 (the same offset as channel ci's plane), its
                 * rows r: rows16[l][r][.], channel ci + l */
                const float *blk = xc + ci * H * W;
                if (ci % 16 == 0)
                    for (int64_t r = 0; r < nrows; r++)
                        D->kt->conv_transpose(W, 16, blk + (first + (rlo + r) * fh) * W * 16, 16,
                                              rows16 + r * W, nrows * W);
                src = rows16 + ci % 16 * nrows * W;
                lds = W;
            }
            D->kt->conv_split_rows(nrows, fw, wq, src + col0, lds, -col0, W - col0,
                                   planes + rlo * wq, wq, plane);
        }
    }
}

/* Segments (dispatch.h) of a tile whose taps are nrows kernel rows of nj
 * kernel columns of c taps each, in that order: the columns jj < jl leave
 * out the first pixel (they read the padding there), jj >= jr the last.
 * Runs of one kind merged; 0 when no column skips (one plain run). */
static int tap_segments(nn_conv_seg *seg, int64_t nrows, int64_t nj, int64_t c, int64_t jl,
                        int64_t jr)
{
    if (nrows <= 0 || (jl <= 0 && jr >= nj))
        return 0;
    int ns = 0;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t jj = 0; jj < nj; jj++) {
            const int skip = (jj < jl) | (jj >= jr) << 1;
            if (ns > 0 && seg[ns - 1].skip == skip)
                seg[ns - 1].k += c;
            else
                seg[ns++] = (nn_conv_seg){.k = c, .skip = skip};
        }
    return ns;
}

/* The forward pass's output row oh of a band starting at oh0 (channel tile
 * in T). Taps run kernel row by kernel row (koff's order: row i, column j,
 * then channel), so the rows inside the input are one range of them; in a
 * tile only the first and last pixel can meet the padding, and segments
 * leave those pixels out of the kernel columns that read it. A skipped
 * product is an exact zero: the sums keep their bits. */
static void row_forward(const nn_dconv *D, nn_conv_tile *T, const float *xq, int64_t oh0,
                        int64_t oh, float *yb, const float *w, nn_conv_seg *seg)
{
    const int64_t top = D->ph - oh * D->sh, bot = D->h - 1 + D->ph - oh * D->sh;
    const int64_t ilo = top <= 0 ? 0 : ceil_div(top, D->dh);
    const int64_t ihi = bot < 0 ? -1 : min64(D->kh - 1, bot / D->dh);
    const int64_t per = D->kw * D->c, L = 16 * D->v;
    const float *x = xq + (oh - oh0) * D->wq;
    const int64_t nchunk = ceil_div(D->ow, D->rmax), r = ceil_div(D->ow, nchunk);
    for (int64_t ow0 = 0; ow0 < D->ow; ow0 += r) {
        const int64_t n = min64(r, D->ow - ow0);
        /* kernel columns j < jl put the first pixel in the left padding,
         * j >= jr the last one in the right padding */
        const int64_t left = D->pw - ow0 * D->sw;
        const int64_t right = D->w + D->pw - (ow0 + n - 1) * D->sw;
        const int64_t jl = left <= 0 ? 0 : min64(D->kw, ceil_div(left, D->dw));
        const int64_t jr = right <= 0 ? 0 : min64(D->kw, ceil_div(right, D->dw));
        T->k = ihi >= ilo ? (ihi - ilo + 1) * per : 0;
        T->koff = D->koff + ilo * per;
        T->w = w + ilo * per * D->ldw;
        T->nseg = tap_segments(seg, ihi - ilo + 1, D->kw, D->c, jl, jr);
        T->seg = seg;
        T->r = (int)n;
        T->x = x + ow0;
        T->y = yb + ow0 * L;
        D->kt->conv_direct_tile(T);
    }
}

/* The transposed convolution's dx row y of a band whose dy planes start at
 * dy row m0 - tmax: per column phase, the pixels x0, x0 + sw, ... with that
 * phase's taps, interleaved into the row buffer (stride sw pixels). As in
 * the forward pass, only the kernel rows that land inside dy run, and the
 * first and last pixel of a tile leave out the columns that land outside. */
static void row_transposed(const nn_dconv *D, nn_conv_tile *T, const float *xq, int64_t m0,
                           int64_t y, float *yb, const float *w, int64_t L, nn_conv_seg *seg)
{
    const int64_t sh = D->sh, sw = D->sw, m = (y + D->ph) / sh, a = (y + D->ph) % sh;
    /* the phase's kernel rows, last first: dy row m - t, t = (i dh) / sh,
     * inside [0, h) for the positions [klo, khi) of that order */
    int64_t nrow = 0, klo = 0, khi = 0;
    for (int64_t i = D->kh - 1; i >= 0; i--) {
        if (i * D->dh % sh != a)
            continue;
        const int64_t t = i * D->dh / sh;
        klo += t > m;
        khi += t >= m - D->h + 1;
        nrow++;
    }
    const float *xrow = xq + (m - m0) * D->wq - D->pw / sw;
    for (int64_t x0 = 0; x0 < min64(sw, D->ow); x0++) {
        const int64_t b = (x0 + D->pw) % sw, mc = (x0 + D->pw) / sw;
        const int64_t ph = a * sw + b, cnt = ceil_div(D->ow - x0, sw);
        const int64_t nj = nrow ? (D->phase[ph + 1] - D->phase[ph]) / (nrow * D->c) : 0;
        const int64_t p0 = D->phase[ph] + klo * nj * D->c;
        const int64_t nchunk = ceil_div(cnt, D->rmax), r = ceil_div(cnt, nchunk);
        for (int64_t q0 = 0; q0 < cnt; q0 += r) {
            const int64_t n = min64(r, cnt - q0);
            /* the phase's kernel columns, last first: dy column mc - u; the
             * first jl read left of dy at the tile's first pixel, those from
             * jr on right of it at its last */
            int64_t jl = 0, jr = 0;
            for (int64_t j = D->kw - 1; j >= 0; j--) {
                if (j * D->dw % sw != b)
                    continue;
                const int64_t u = j * D->dw / sw;
                jl += u > mc + q0;
                jr += u >= mc + q0 + n - D->w;
            }
            T->k = (khi - klo) * nj * D->c;
            T->koff = D->koff + p0;
            T->w = w + p0 * D->ldw;
            T->nseg = tap_segments(seg, khi - klo, nj, D->c, jl, jr);
            T->seg = seg;
            T->r = (int)n;
            T->x = xrow + mc + q0;
            T->y = yb + (x0 + q0 * sw) * L;
            T->ldy = sw * L;
            D->kt->conv_direct_tile(T);
        }
    }
}

/* The rows [oh0, oh1) of nn_dconv_task with D->pool: two rows at a time into
 * the row buffers yb and yb + ow L (row_forward), their 2x2 windows pooled
 * with channels still in vector lanes (maxpool2x2_lanes: plain vertical
 * maxima), and only the pooled row and its argmax transposed into y and
 * D->arg. */
static void task_pooled(const nn_dconv *D, nn_conv_tile *T, int64_t n, int64_t g, int64_t oh0,
                        int64_t oh1, const float *xq, float *yb, float *y, nn_conv_seg *seg)
{
    const int L = 16 * D->v;
    const int64_t pw = D->ow / 2, P2 = (D->oh / 2) * pw;
    float *yb1 = yb + D->ow * L, *pm = yb1 + D->ow * L;
    int32_t *pa = (int32_t *)(pm + pw * L);
    float *yg = y + n * D->y_img + g * D->o * P2;
    int32_t *ag = D->arg ? D->arg + n * D->y_img + g * D->o * P2 : NULL;
    for (int64_t ob = 0; ob < D->nob; ob++) {
        const int64_t o0 = ob * L, nch = min64(L, D->o - o0);
        const float *w = D->wpk + g * D->taps * D->ldw + o0;
        T->bias = D->bias ? D->bias + g * D->ldw + o0 : NULL;
        for (int64_t oh = oh0; oh + 1 < oh1; oh += 2) {
            row_forward(D, T, xq, oh0, oh, yb, w, seg);
            row_forward(D, T, xq, oh0, oh + 1, yb1, w, seg);
            D->kt->maxpool2x2_lanes(pw, L, yb, yb1, (int32_t)(oh * D->ow), (int32_t)D->ow, pm,
                                    pa);
            const int64_t at = o0 * P2 + oh / 2 * pw;
            D->kt->conv_transpose(pw, nch, pm, L, yg + at, P2);
            /* the argmax through the same transpose: it only moves the
             * 32-bit patterns (loads, shuffles, stores; no arithmetic) */
            if (ag)
                D->kt->conv_transpose(pw, nch, (const float *)pa, L, (float *)(ag + at), P2);
        }
    }
}

/* Whether dx row y of the transposed convolution has no taps in any phase. */
static int row_is_zero(const nn_dconv *D, int64_t y)
{
    const int64_t a = (y + D->ph) % D->sh;
    return D->phase[a * D->sw] == D->phase[(a + 1) * D->sw];
}

void nn_dconv_task(const nn_dconv *D, int64_t t, const float *x, float *y, float *buf)
{
    const int64_t ct = t % D->ctasks;
    t /= D->ctasks;
    const int64_t per_n = D->groups * D->nbands;
    const int64_t n = t / per_n, g = t % per_n / D->nbands, band = t % D->nbands;
    const int64_t oh0 = band * D->band, oh1 = min64(oh0 + D->band, D->oh);
    float *xq = buf, *yb = buf + round_up(D->xq_floats, 16);
    nn_conv_seg *seg = (nn_conv_seg *)(yb + D->ow * 16 * D->v * (D->pool ? 3 : 1));
    const float *xc = x + n * D->x_img + g * D->c * D->h * D->w;
    /* transposed: dy rows from the band's first dx row's m0 - tmax */
    const int64_t m0 = (oh0 + D->ph) / D->sh;
    float *rows16 = (float *)seg + seg_floats(D);
    if (D->transposed)
        fill_band(D, xc, m0 - D->tmax, D->pw / D->sw - D->umax, 1, 1, xq, NULL);
    else
        fill_band(D, xc, oh0 * D->sh - D->ph, -D->pw, D->sh, D->sw, xq, rows16);

    const int L = 16 * D->v;
    const int64_t P = D->oh * D->ow;
    float *yg = y + n * D->y_img + g * D->o * P;
    const float *rg = D->res ? D->res + n * D->y_img + g * D->o * P : NULL;
    nn_conv_tile T = {.k = D->taps, .koff = D->koff, .ldw = D->ldw, .ldy = L, .v = D->v,
                      .act = rg ? NN_ACT_NONE : D->act};
    if (D->pool) {
        task_pooled(D, &T, n, g, oh0, oh1, xq, yb, y, seg);
        return;
    }
    const int64_t ob1 = D->ctasks > 1 ? ct + 1 : D->nob;
    for (int64_t ob = D->ctasks > 1 ? ct : 0; ob < ob1; ob++) {
        const int64_t o0 = ob * L, nch = min64(L, D->o - o0);
        const float *w = D->wpk + g * D->taps * D->ldw + o0;
        T.w = w;
        T.bias = D->bias ? D->bias + g * D->ldw + o0 : NULL;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            const int64_t at = o0 * P + oh * D->ow;
            if (D->transposed && row_is_zero(D, oh)) {
                /* no tap reaches this dx row (1x1 stride 2: every other row) */
                for (int64_t j = 0; j < nch; j++)
                    memset(yg + at + j * P, 0, (size_t)D->ow * sizeof(float));
                continue;
            }
            if (D->transposed)
                row_transposed(D, &T, xq, m0, oh, yb, w, L, seg);
            else
                row_forward(D, &T, xq, oh0, oh, yb, w, seg);
            const int64_t at16 = n * D->y_img + (o0 * P + oh * D->ow * 16);
            if (D->y_nchw16c) {
                D->kt->conv_store_nchw16c(D->ow, nch, yb, L, y + at16, P * 16,
                                          D->res ? D->res + at16 : NULL, D->act);
            } else if (rg && D->res_nchw16c) {
                D->kt->conv_add_nchw16c(D->ow, nch, yb, L, D->res + at16, P * 16, D->act);
                D->kt->conv_transpose(D->ow, nch, yb, L, yg + at, P);
            } else if (rg) {
                D->kt->conv_transpose_res(D->ow, nch, yb, L, yg + at, P, rg + at, D->act);
            } else {
                D->kt->conv_transpose(D->ow, nch, yb, L, yg + at, P);
            }
        }
    }
}

/* ---- the weight gradient ---- */

int nn_dconv_dw_plan(nn_dconv_dw *E, const nn_kernel_table *kt)
{
    E->kt = kt;
    int vmax = 1, rmax[8] = {0}, v3max = 0;
    kt->conv_direct_limits(&vmax, rmax, &v3max);
    /* 3x3 kernels: all nine taps of a channel in one tile, where the ISA has it */
    E->rows3 = E->kh == 3 && E->kw == 3 && v3max > 0;
    if (E->rows3)
        vmax = v3max;
    channel_tiles(E->o, vmax, &E->v, &E->nob);
    E->ldo = E->nob * 16 * E->v;
    E->hp = E->h + 2 * E->ph;
    E->wp = E->w + 2 * E->pw;
    E->taps = E->c * E->kh * E->kw;
    /* a thread's buffer: the padded input planes and the transposed dy */
    if (E->kw > rmax[E->v - 1] || E->c * E->hp * E->wp > NN_DCONV_BAND_FLOATS ||
        E->oh * E->ow * 16 * E->v > NN_DCONV_BAND_FLOATS)
        return 0;
    /* 3x3: output rows whose kernel row 0 (2) reads the top (bottom)
     * padding leave that tile row out: segments of whole output rows */
    E->nseg = 0;
    if (E->rows3) {
        int last = -1;
        for (int64_t oh = 0; oh < E->oh; oh++) {
            const int64_t top = oh * E->sh - E->ph;
            const int skip = (top < 0) | (top + 2 * E->dh >= E->h) << 1;
            if (last == skip) {
                E->seg[E->nseg - 1].k += E->ow;
                continue;
            }
            if (E->nseg == NN_DCONV_DW_SEGS) { /* more kinds than room: no skips */
                E->nseg = 0;
                break;
            }
            E->seg[E->nseg++] = (nn_conv_seg){.k = E->ow, .skip = skip};
            last = skip;
        }
        if (E->nseg == 1 && E->seg[0].skip == 0)
            E->nseg = 0;
    }
    nn_dconv_dw_chunks(E->n, &E->nq, &E->per_q);
    return 1;
}

/* Floats of the weight-gradient parts (a multiple of 16: ldo is). */
static int64_t dw_part_floats(const nn_dconv_dw *E)
{
    return E->nq * E->groups * E->taps * E->ldo;
}

size_t nn_dconv_dw_shared_floats(const nn_dconv_dw *E)
{
    const int64_t db = E->with_db ? 2 * E->nq * E->groups * E->ldo : 0; /* doubles */
    return (size_t)(round_up(2 * E->oh * E->ow, 16) + dw_part_floats(E) + db);
}

void nn_dconv_dw_pack(nn_dconv_dw *E, float *shared)
{
    int64_t *koff = (int64_t *)shared;
    for (int64_t oh = 0; oh < E->oh; oh++)
        for (int64_t ow = 0; ow < E->ow; ow++)
            koff[oh * E->ow + ow] = oh * E->sh * E->wp + ow * E->sw;
    E->koff = koff;
    E->part = shared + round_up(2 * E->oh * E->ow, 16);
    E->dbpart = E->with_db ? (double *)(E->part + dw_part_floats(E)) : NULL;
}

size_t nn_dconv_dw_task_floats(const nn_dconv_dw *E)
{
    return (size_t)(round_up(E->c * E->hp * E->wp, 16) + E->oh * E->ow * 16 * E->v);
}

/* c zero-padded planes (hp x wp) of the input planes xc. */
static void pad_planes(const nn_dconv_dw *E, const float *xc, float *xp)
{
    const int64_t plane = E->hp * E->wp;
    for (int64_t ci = 0; ci < E->c; ci++) {
        float *d = xp + ci * plane;
        const float *s = xc + ci * E->h * E->w;
        memset(d, 0, (size_t)(E->ph * E->wp) * sizeof(float));
        for (int64_t r = 0; r < E->h; r++) {
            float *row = d + (r + E->ph) * E->wp;
            for (int64_t q = 0; q < E->pw; q++)
                row[q] = row[E->pw + E->w + q] = 0.0f;
            memcpy(row + E->pw, s + r * E->w, (size_t)E->w * sizeof(float));
        }
        memset(d + (E->ph + E->h) * E->wp, 0, (size_t)(E->ph * E->wp) * sizeof(float));
    }
}

/* Blocks of 16 rows are summed in float, sixteen columns at a time in
 * registers (fixed-size loops gcc vectorises with any ISA's flags), and each
 * block's sums added in double: a fixed order, float error bounded by one
 * block. */
void nn_dconv_dw_column_sums(const float *dyt, int64_t P, int64_t L, double *acc)
{
    for (int64_t j0 = 0; j0 < L; j0 += 16)
        for (int64_t p0 = 0; p0 < P; p0 += 16) {
            float s[16] = {0};
            const int64_t p1 = min64(p0 + 16, P);
            for (int64_t p = p0; p < p1; p++)
                for (int j = 0; j < 16; j++)
                    s[j] += dyt[p * L + j0 + j];
            for (int j = 0; j < 16; j++)
                acc[j0 + j] += s[j];
        }
}

void nn_dconv_dw_task(const nn_dconv_dw *E, int64_t t, const float *x, const float *dy,
                      float *buf)
{
    const int64_t per_q = E->groups * E->nob;
    const int64_t q = t / per_q, g = t % per_q / E->nob, ob = t % E->nob;
    const int64_t n0 = q * E->per_q, n1 = min64(n0 + E->per_q, E->n);
    const int L = 16 * E->v;
    const int64_t P = E->oh * E->ow, plane = E->hp * E->wp;
    const int64_t o0 = ob * L, nch = min64(L, E->o - o0);
    float *xp = buf, *dyt = buf + round_up(E->c * plane, 16);
    float *part = E->part + (q * E->groups + g) * E->taps * E->ldo + o0;
    nn_conv_tile T = {.k = P, .koff = E->koff, .w = dyt, .ldw = L, .ldy = E->ldo,
                      .r = (int)E->kw, .v = E->v, .act = NN_ACT_NONE};
    for (int64_t n = n0; n < n1; n++) {
        /* dy's channels o0 .. o0 + nch of this image, pixel-major */
        const float *dyo = dy + n * E->y_img + (g * E->o + o0) * P;
        E->kt->conv_transpose(nch, P, dyo, P, dyt, L);
        if (nch < L)
            for (int64_t p = 0; p < P; p++)
                memset(dyt + p * L + nch, 0, (size_t)(L - nch) * sizeof(float));
        if (E->with_db) {
            double *acc = E->dbpart + (q * E->groups + g) * E->ldo + o0;
            if (n == n0)
                for (int64_t j = 0; j < L; j++)
                    acc[j] = 0.0;
            nn_dconv_dw_column_sums(dyt, P, L, acc);
        }
        if (!E->with_dw)
            continue;
        pad_planes(E, x + n * E->x_img + g * E->c * E->h * E->w, xp);
        T.beta = n > n0;
        if (E->rows3) {
            T.rh = 3;
            T.ldx2 = E->dh * E->wp;
            T.nseg = E->nseg;
            T.seg = E->seg;
            for (int64_t ci = 0; ci < E->c; ci++) {
                T.x = xp + ci * plane;
                T.y = part + ci * 9 * E->ldo;
                E->kt->conv_direct_tile(&T);
            }
            continue;
        }
        for (int64_t ci = 0; ci < E->c; ci++)
            for (int64_t i = 0; i < E->kh; i++) {
                T.x = xp + ci * plane + i * E->dh * E->wp;
                T.y = part + (ci * E->kh + i) * E->kw * E->ldo;
                E->kt->conv_direct_tile(&T);
            }
    }
}

void nn_dconv_db_reduce(const double *part, int64_t nq, int64_t ld, int64_t n, float *db)
{
    for (int64_t o = 0; o < n; o++) {
        double s = 0.0;
        for (int64_t q = 0; q < nq; q++)
            s += part[q * ld + o];
        db[o] = (float)s;
    }
}

void nn_dconv_dw_reduce(const nn_dconv_dw *E, float *dw, float *db)
{
    if (E->with_db)
        for (int64_t g = 0; g < E->groups; g++)
            nn_dconv_db_reduce(E->dbpart + g * E->ldo, E->nq, E->groups * E->ldo, E->o,
                               db + g * E->o);
    if (!E->with_dw)
        return;
    const int64_t chunk = E->groups * E->taps * E->ldo;
    for (int64_t g = 0; g < E->groups; g++)
        for (int64_t p = 0; p < E->taps; p++) {
            const float *src = E->part + (g * E->taps + p) * E->ldo;
            float *dst = dw + g * E->o * E->taps + p;
            for (int64_t o = 0; o < E->o; o++) {
                float s = src[o];
                for (int64_t q = 1; q < E->nq; q++)
                    s += src[q * chunk + o];
                dst[o * E->taps] = s;
            }
        }
}
