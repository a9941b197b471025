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
 *      pixels of a row read consecutive floats, whatever the stride;
 *   2. for each output row and each tile of 16 v channels, the row's
 *      pixels in tiles of at most rmax: the kernel sums all taps of each
 *      output in order (bias and activation applied in registers) into a
 *      row buffer, pixel-major;
 *   3. the row buffer is transposed into the NCHW output (conv_transpose;
 *      with a residual, conv_transpose_res adds it and applies the
 *      activation on the way, which the tile then leaves out).
 * The weights are packed once per call: one row of ldw floats per tap,
 * output channels contiguous (zero past the group's o).
 *
 * Memory: the shared data is the size of the weights (the weight gradient:
 * NN_DCONV_DW_CHUNKS times that); each thread's buffer holds at most
 * NN_DCONV_BAND_FLOATS of input (the plan splits rows into bands, and
 * declines when even one row's input band is larger) and one output row
 * (the weight gradient: at most NN_DCONV_BAND_FLOATS of transposed dy).
 * Nothing grows with the batch. */
#include <string.h>
#include "conv_direct.h"
#include "gemm.h"

/* A task's input band at most (floats): half of a 1 MiB L2. */
#define NN_DCONV_BAND_FLOATS 131072
/* With more than one thread, rows are split into bands until there are
 * this many tasks per thread (batch 1 runs on several threads); one thread
 * takes whole images (a band re-copies the input rows its taps share with
 * the next). The bits do not depend on the bands: each output is the same
 * sum of the same copied values whichever band computes it. */
#define NN_DCONV_TASKS_PER_THREAD 4

/* Tiles of o output channels: the fewest tiles of at most vmax blocks of
 * 16, balanced (*v blocks each, *nob tiles). */
static void channel_tiles(int64_t o, int vmax, int *v, int64_t *nob)
{
    const int64_t blocks = ceil_div(o, 16);
    *nob = ceil_div(blocks, vmax);
    *v = (int)ceil_div(blocks, *nob);
}

int nn_dconv_plan(nn_dconv *D, const nn_kernel_table *kt)
{
    D->kt = kt;
    int vmax = 1, rmax[8] = {0}, v3max = 0;
    kt->conv_direct_limits(&vmax, rmax, &v3max);
    channel_tiles(D->o, vmax, &D->v, &D->nob);
    D->rmax = rmax[D->v - 1];
    D->ldw = D->nob * 16 * D->v;
    D->taps = D->c * D->kh * D->kw;
    D->wq = D->ow + (D->kw - 1) * D->dw / D->sw;
    const int64_t ext = (D->kh - 1) * D->dh / D->sh; /* rows a band needs past its own */
    const int64_t plane_row = D->c * D->sh * D->sw * D->wq;
    if (plane_row * (1 + ext) > NN_DCONV_BAND_FLOATS)
        return 0;
    const int64_t bmax = NN_DCONV_BAND_FLOATS / plane_row - ext;
    int64_t nb = ceil_div(D->oh, bmax);
    const int nt = nn_max_threads();
    const int64_t want = nt > 1 ? ceil_div(NN_DCONV_TASKS_PER_THREAD * nt, D->n * D->groups) : 1;
    nb = max64(nb, min64(want, D->oh));
    D->band = ceil_div(D->oh, nb);
    D->band += D->pool && D->band % 2; /* pooled rows come in pairs */
    D->nbands = ceil_div(D->oh, D->band);
    D->hq = D->band + ext;
    D->xq_floats = D->c * D->sh * D->sw * D->hq * D->wq;
    return 1;
}

size_t nn_dconv_shared_floats(const nn_dconv *D)
{
    return (size_t)(round_up(2 * D->taps, 16) + D->groups * D->ldw * (D->taps + 1));
}

size_t nn_dconv_task_floats(const nn_dconv *D)
{
    /* one output row; pooling: two, then the pooled row and its argmax */
    return (size_t)(round_up(D->xq_floats, 16) + D->ow * 16 * D->v * (D->pool ? 3 : 1));
}

void nn_dconv_pack(nn_dconv *D, float *shared, const float *w, const float *bias, int flip)
{
    int64_t *koff = (int64_t *)shared;
    const int64_t kk = D->kh * D->kw, plane = D->hq * D->wq;
    for (int64_t ci = 0; ci < D->c; ci++)
        for (int64_t i = 0; i < D->kh; i++)
            for (int64_t j = 0; j < D->kw; j++) {
                const int64_t a = i * D->dh % D->sh, b = j * D->dw % D->sw;
                koff[ci * kk + i * D->kw + j] = ((ci * D->sh + a) * D->sw + b) * plane +
                                                i * D->dh / D->sh * D->wq + j * D->dw / D->sw;
            }
    float *wpk = shared + round_up(2 * D->taps, 16);
    /* The Conv2d's weight per group: (O/groups, C/groups, kh, kw). */
    const int64_t wo = flip ? D->c : D->o, wc = flip ? D->o : D->c;
    for (int64_t g = 0; g < D->groups; g++) {
        const float *wg = w + g * wo * wc * kk;
        float *dst = wpk + g * D->taps * D->ldw;
        if (!flip) { /* a transpose: (o, taps) -> (taps, o), through registers */
            D->kt->conv_transpose(D->o, D->taps, wg, D->taps, dst, D->ldw);
            if (D->ldw > D->o)
                for (int64_t p = 0; p < D->taps; p++)
                    memset(dst + p * D->ldw + D->o, 0, (size_t)(D->ldw - D->o) * sizeof(float));
            continue;
        }
        for (int64_t p = 0; p < D->taps; p++) {
            float *row = dst + p * D->ldw;
            const int64_t ci = p / kk, t = p % kk;
            for (int64_t jo = 0; jo < D->o; jo++)
                row[jo] = wg[(ci * wc + jo) * kk + (kk - 1 - t)];
            for (int64_t jo = D->o; jo < D->ldw; jo++)
                row[jo] = 0.0f;
        }
    }
    float *bp = wpk + D->groups * D->taps * D->ldw;
    if (bias) {
        for (int64_t g = 0; g < D->groups; g++)
            for (int64_t jo = 0; jo < D->ldw; jo++)
                bp[g * D->ldw + jo] = jo < D->o ? bias[g * D->o + jo] : 0.0f;
    }
    D->koff = koff;
    D->wpk = wpk;
    D->bias = bias ? bp : NULL;
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

/* One phase-plane row: out[q] = src[q * sw] for q in [qlo, qhi), zero
 * elsewhere in [0, wq). Inline loops (the rows are short: a call to memcpy
 * and memset per row cost more than the copy; GCC would turn the loops back
 * into those calls) over restrict pointers, with the strides 1 and 2 of
 * ResNets spelled out so the compiler vectorises them. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static inline void fill_row(float *restrict out, const float *restrict src, int64_t sw,
                            int64_t qlo, int64_t qhi, int64_t wq)
{
    for (int64_t q = 0; q < qlo; q++)
        out[q] = 0.0f;
    if (sw == 1)
        for (int64_t q = qlo; q < qhi; q++)
            out[q] = src[q];
    else if (sw == 2)
        for (int64_t q = qlo; q < qhi; q++)
            out[q] = src[2 * q];
    else
        for (int64_t q = qlo; q < qhi; q++)
            out[q] = src[q * sw];
    for (int64_t q = qhi; q < wq; q++)
        out[q] = 0.0f;
}

/* The task's input band: phase planes of rows oh0 .. oh0 + hq - 1 (in
 * phase-plane rows) of channels xc (c planes of h x w). */
static void fill_band(const nn_dconv *D, const float *xc, int64_t oh0, float *xq)
{
    const int64_t H = D->h, W = D->w, wq = D->wq, hq = D->hq, sh = D->sh, sw = D->sw;
    const int64_t c = D->c, ph = D->ph;
    for (int64_t a = 0; a < sh; a++) {
        /* a phase no tap reads stays unfilled (1x1 stride 2: only (0, 0)) */
        if (!phase_used(D->kh, D->dh, sh, a))
            continue;
        /* plane rows r in [rlo, rhi) hold input rows ih = (oh0 + r) sh + a - ph
         * inside [0, H); the others are zero */
        const int64_t first = oh0 * sh + a - ph;
        int64_t rlo = first >= 0 ? 0 : ceil_div(-first, sh);
        int64_t rhi = H - 1 - first < 0 ? 0 : (H - 1 - first) / sh + 1;
        rlo = min64(rlo, hq);
        rhi = min64(max64(rhi, rlo), hq);
        for (int64_t b = 0; b < sw; b++) {
            if (!phase_used(D->kw, D->dw, sw, b))
                continue;
            /* column q holds input column q*sw + off: inside [0, W) for q
             * in [qlo, qhi) */
            const int64_t off = b - D->pw;
            int64_t qlo = off >= 0 ? 0 : ceil_div(-off, sw);
            int64_t qhi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
            qlo = min64(qlo, wq);
            qhi = min64(max64(qhi, qlo), wq);
            for (int64_t ci = 0; ci < c; ci++) {
                float *plane = xq + ((ci * sh + a) * sw + b) * hq * wq;
                const float *xp = xc + ci * H * W + off;
                memset(plane, 0, (size_t)(rlo * wq) * sizeof(float));
                for (int64_t r = rlo; r < rhi; r++)
                    fill_row(plane + r * wq, xp + (first + r * sh) * W, sw, qlo, qhi, wq);
                memset(plane + rhi * wq, 0, (size_t)((hq - rhi) * wq) * sizeof(float));
            }
        }
    }
}

/* The rows [oh0, oh1) of nn_dconv_task with D->pool: two rows at a time into
 * the row buffers yb and yb + ow L, their 2x2 windows pooled with channels
 * still in vector lanes (maxpool2x2_lanes: plain vertical maxima), and only
 * the pooled row and its argmax transposed into y and D->arg. */
static void task_pooled(const nn_dconv *D, int64_t n, int64_t g, int64_t oh0, int64_t oh1,
                        const float *xq, float *yb, float *y)
{
    const int L = 16 * D->v;
    const int64_t pw = D->ow / 2, P2 = (D->oh / 2) * pw;
    const int64_t nchunk = ceil_div(D->ow, D->rmax), r = ceil_div(D->ow, nchunk);
    float *yb1 = yb + D->ow * L, *pm = yb1 + D->ow * L;
    int32_t *pa = (int32_t *)(pm + pw * L);
    float *yg = y + n * D->y_img + g * D->o * P2;
    int32_t *ag = D->arg + n * D->y_img + g * D->o * P2;
    nn_conv_tile T = {.k = D->taps, .koff = D->koff, .ldw = D->ldw, .ldy = L, .v = D->v,
                      .act = D->act};
    for (int64_t ob = 0; ob < D->nob; ob++) {
        const int64_t o0 = ob * L, nch = min64(L, D->o - o0);
        T.w = D->wpk + g * D->taps * D->ldw + o0;
        T.bias = D->bias ? D->bias + g * D->ldw + o0 : NULL;
        for (int64_t oh = oh0; oh + 1 < oh1; oh += 2) {
            for (int a = 0; a < 2; a++)
                for (int64_t ow0 = 0; ow0 < D->ow; ow0 += r) {
                    T.r = (int)min64(r, D->ow - ow0);
                    T.x = xq + (oh + a - oh0) * D->wq + ow0;
                    T.y = (a ? yb1 : yb) + ow0 * L;
                    D->kt->conv_direct_tile(&T);
                }
            D->kt->maxpool2x2_lanes(pw, L, yb, yb1, (int32_t)(oh * D->ow), (int32_t)D->ow, pm,
                                    pa);
            const int64_t at = o0 * P2 + oh / 2 * pw;
            D->kt->conv_transpose(pw, nch, pm, L, yg + at, P2);
            /* the argmax through the same transpose: it only moves the
             * 32-bit patterns (loads, shuffles, stores; no arithmetic) */
            D->kt->conv_transpose(pw, nch, (const float *)pa, L, (float *)(ag + at), P2);
        }
    }
}

void nn_dconv_task(const nn_dconv *D, int64_t t, const float *x, float *y, float *buf)
{
    const int64_t per_n = D->groups * D->nbands;
    const int64_t n = t / per_n, g = t % per_n / D->nbands, band = t % D->nbands;
    const int64_t oh0 = band * D->band, oh1 = min64(oh0 + D->band, D->oh);
    float *xq = buf, *yb = buf + round_up(D->xq_floats, 16);
    fill_band(D, x + n * D->x_img + g * D->c * D->h * D->w, oh0, xq);
    if (D->pool) {
        task_pooled(D, n, g, oh0, oh1, xq, yb, y);
        return;
    }

    const int L = 16 * D->v;
    const int64_t P = D->oh * D->ow;
    const int64_t nchunk = ceil_div(D->ow, D->rmax), r = ceil_div(D->ow, nchunk);
    float *yg = y + n * D->y_img + g * D->o * P;
    const float *rg = D->res ? D->res + n * D->y_img + g * D->o * P : NULL;
    nn_conv_tile T = {.k = D->taps, .koff = D->koff, .ldw = D->ldw, .ldy = L, .v = D->v,
                      .act = rg ? NN_ACT_NONE : D->act};
    for (int64_t ob = 0; ob < D->nob; ob++) {
        const int64_t o0 = ob * L, nch = min64(L, D->o - o0);
        T.w = D->wpk + g * D->taps * D->ldw + o0;
        T.bias = D->bias ? D->bias + g * D->ldw + o0 : NULL;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            for (int64_t ow0 = 0; ow0 < D->ow; ow0 += r) {
                T.r = (int)min64(r, D->ow - ow0);
                T.x = xq + (oh - oh0) * D->wq + ow0;
                T.y = yb + ow0 * L;
                D->kt->conv_direct_tile(&T);
            }
            const int64_t at = o0 * P + oh * D->ow;
            if (rg)
                D->kt->conv_transpose_res(D->ow, nch, yb, L, yg + at, P, rg + at, D->act);
            else
                D->kt->conv_transpose(D->ow, nch, yb, L, yg + at, P);
        }
    }
}

/* ---- the weight gradient ---- */

/* Chunks of images in the weight gradient (each a part of dw's size). */
#define NN_DCONV_DW_CHUNKS 8

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
    E->nq = min64(E->n, NN_DCONV_DW_CHUNKS);
    E->per_q = ceil_div(E->n, E->nq);
    E->nq = ceil_div(E->n, E->per_q);
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

/* The bias gradient's share of one image: acc[j] += the sum over the P rows
 * of dyt (L floats each, L a multiple of 16) of column j, for j < L. Blocks
 * of 16 rows are summed in float, sixteen columns at a time in registers
 * (fixed-size loops gcc vectorises with any ISA's flags), and each block's
 * sums added in double: a fixed order, float error bounded by one block. */
static void dyt_column_sums(const float *dyt, int64_t P, int64_t L, double *acc)
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
            dyt_column_sums(dyt, P, L, acc);
        }
        if (!E->with_dw)
            continue;
        pad_planes(E, x + n * E->x_img + g * E->c * E->h * E->w, xp);
        T.beta = n > n0;
        if (E->rows3) {
            T.rh = 3;
            T.ldx2 = E->dh * E->wp;
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

void nn_dconv_dw_reduce(const nn_dconv_dw *E, float *dw, float *db)
{
    if (E->with_db)
        for (int64_t g = 0; g < E->groups; g++)
            for (int64_t o = 0; o < E->o; o++) {
                double s = 0.0;
                for (int64_t q = 0; q < E->nq; q++)
                    s += E->dbpart[(q * E->groups + g) * E->ldo + o];
                db[g * E->o + o] = (float)s;
            }
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
