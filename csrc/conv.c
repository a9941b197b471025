/* Conv2d forward and backward, PyTorch's definition (NCHW, cross-correlation,
 * zero padding, stride, dilation, groups).
 *
 * 3x3, stride-1, dilation-1 convolutions without groups take Winograd
 * F(2x2, 3x3) (winograd.c) for the forward pass (every epilogue; with
 * nn_conv2d_forward_pool each tile row's two output rows are pooled as
 * they are written, the bits of the separate steps) and the input
 * gradient, where wino_pays says it is faster than the direct path: by the
 * layer's shape, never the batch size (nn_conv_set_winograd can force it
 * on or off). Its weight transform runs on the call's threads before the
 * tasks (prologue, then a barrier), unless the forward pass was given the
 * transformed weights (nn_conv2d_pack_forward). Their weight gradient is
 * Winograd's too where it pays (winograd_dw.c, wino_dw_pays: 16 input
 * channels or more, tiles mostly full, its 4x4 sums within L2); its tasks,
 * one per chunk of images, sum db as the direct path's do. Either way 16
 * multiply-adds per tile and channel pair where the direct path does 36.
 *
 * Most other shapes take the direct convolution (conv_direct.c): output
 * channels in vector lanes, no im2col, no GEMM. It runs the forward pass
 * (with an evaluation-mode BatchNorm folded in for nn_conv2d_forward_bn), the input
 * gradient (a convolution of dy with the rotated, transposed weights, split
 * by the stride into phases of dx's rows and columns: no col2im) and the
 * weight gradient (dilation 1 along the width).
 * It is skipped for 1x1 stride-1 convolutions (a GEMM on x itself), for
 * fewer than NN_CONV_DIRECT_MIN_O outputs per group (and, with one input
 * channel per group, NN_CONV_DIRECT_MIN_OG), and when one output row's input
 * band exceeds its bound. Those cases take the paths below.
 *
 * Layout: NCHW at the API and inside; no repacking of x, y or the weights.
 * Per sample n and group g, with K = C/groups * KH * KW and P = OH * OW:
 *
 *   forward   y[n,g] (O/g x P) = W[g] (O/g x K) @ col (K x P)
 *   dx        dcol (K x P)     = W[g]^T @ dy[n,g],  dx[n,g] = col2im(dcol)
 *   dw        dW[g] (O/g x K)  = sum over n of dy[n,g] @ col^T
 *   db        db[o]            = sum over n, p of dy[n,o,p]
 *
 * col is im2col of x[n,g]: row (c, kh, kw), column p = (oh, ow), so that the
 * GEMM's rows are output channels and its wide dimension is pixels, and y is
 * written in place in NCHW (C = y[n,g] with ldc = P). Bias is per row of that
 * product: the rows are first filled with the bias, then the GEMM adds to
 * them (beta = 1) and its epilogue applies the ReLU in registers.
 *
 * Special cases:
 *   1x1, stride 1, no padding: col is x itself (B = x[n,g], ldb = H*W), and
 *     dx is written by the GEMM directly: no im2col, no col2im.
 *   MaxPool2d(2) after the activation (nn_conv2d_forward_pool, a small CNN's
 *     conv-ReLU-pool in training): the direct and Winograd paths pool each
 *     pair of output rows before writing (conv_direct.h, winograd.h), never
 *     storing the unpooled output; the GEMM paths write it to y, then pool
 *     it.
 *   C/groups == 1 (depthwise, any channel multiplier, and a one-channel input
 *     layer): direct, no GEMM. Stride 1: the input plane is zero-padded into
 *     the thread's buffer, the output kept with the padded row stride, so
 *     every kernel tap is one constant shift of a flat index and the tap
 *     loops (conv_kernel.c, per ISA) run long and vectorised. Other strides:
 *     plain loops over rows of the output.
 *
 * Work is a list of independent tasks, each writing outputs no other task
 * writes; the list depends only on the shapes, never on the thread count:
 *   forward   (n, g, block of pixels): im2col of the block, one GEMM
 *   dx        (n, g, block of input channels): GEMM into dcol, col2im into
 *             those channels' planes (zeroed by the task, added in a fixed order)
 *   dw        (g, block of output channels, block of K rows): loops over all
 *             samples in order, accumulating with beta = 1, so each weight's
 *             reduction over the batch runs in one fixed order
 *   db        (block of channels): double sums in (n, p) order; none when the
 *             direct weight gradient runs: its tasks sum db on the way
 *             (conv_direct.h), saving a pass over dy
 * One parallel region per call runs the list (dynamic schedule: a task
 * computes the same bits whichever thread runs it). Inside the region each
 * thread caps its own OpenMP count at 1 (nn_set_local_num_threads), so the
 * nn_sgemm calls run on the calling thread without opening a region of
 * their own. A list of one task runs without a region, and its GEMM may then
 * use the threads itself (nn_sgemm's bits do not depend on its thread count).
 * Results are therefore bitwise identical for any thread count.
 *
 * Mixed precision (p->bf16): the GEMMs above run on the bfloat16 GEMM
 * (operands rounded to bf16, float32 accumulation and output, the same
 * arguments), so the shapes the direct convolution would take go through
 * im2col and the GEMM instead (the direct kernels are float32 only); the
 * depthwise loops and the bias sums stay float32.
 *
 * Buffers: each thread's im2col / dcol block comes from its
 * nn_workspace_get(NN_WS_LAYER) buffer (nn_sgemm uses the PACK and AUX
 * slots), bounded by NN_CONV_COL_FLOATS: no allocation once warm. The
 * direct path's per-call data every thread reads (packed weights, tap
 * offsets, the weight gradient's parts) is in the calling thread's
 * NN_WS_SHARED buffer. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <omp.h>
#include "barrier.h"
#include "conv_direct.h"
#include "dispatch.h"
#include "gemm.h"
#include "profile.h"
#include "winograd.h"
#include "winograd_dw.h"
#include "workspace.h"

/* Floats of one im2col / dcol block (the K x columns matrix a task builds):
 * 256 KiB, which leaves room in a 1-2 MiB L2 for the GEMM's packed panels. */
#define NN_CONV_COL_FLOATS 65536
/* Pixel blocks are multiples of this (the widest GEMM register tile). */
#define NN_CONV_PIXEL_UNIT 64
/* Below this many flops a call runs on the calling thread. Low: alone, a
 * one-image 1 -> 32 28x28 input layer runs as fast on one thread as on two,
 * but inside a net its input and output sit in both cores' caches, and the
 * small CNN's one-image predict ran 4-8% faster on 2 threads with it (and
 * ResNet-20's stem and projections) split than at 1.5 MFLOP. */
#define NN_CONV_PARALLEL_MIN_FLOPS 200000.0
/* The direct path puts a group's outputs in vector lanes of 16: it runs
 * with at least NN_CONV_DIRECT_MIN_O of them, and with one input channel
 * per group (depthwise, a one-channel input layer) with at least
 * NN_CONV_DIRECT_MIN_OG (fewer run the shift loops of conv_kernel.c, or
 * im2col/col2im). Measured: the 1 -> 16 and 1 -> 32 3x3 input layers at
 * 28x28 run forward 2x and dw 5x faster direct; their dx (one output lane)
 * 5x slower. */
#define NN_CONV_DIRECT_MIN_O 4
#define NN_CONV_DIRECT_MIN_OG 16
/* The weight-gradient list aims at this many tasks (shape only). */
#define NN_CONV_DW_MIN_TASKS 4


/* Split len into blocks of at most max (rounded up to unit when that still
 * fits within len), all but the last the same size. */
static int64_t block_size(int64_t len, int64_t max, int64_t unit)
{
    max = max64(max, 1);
    if (len <= max)
        return len;
    int64_t b = ceil_div(len, ceil_div(len, max));
    if (unit > 1 && b > unit)
        b = min64(round_up(b, unit), len);
    return b;
}

typedef struct geom {
    int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int64_t oh, ow;
    int64_t cg, og;   /* channels per group in and out */
    int64_t kk, kg;   /* kh * kw, cg * kk: the GEMM depth */
    int64_t hw, p;    /* input and output plane sizes */
    int pointwise;    /* 1x1, stride 1, no padding: col is x */
    int depthwise;    /* cg == 1: direct loops */
    int shift;        /* depthwise with stride 1: taps as shifts of padded planes */
    int64_t hp, wp;   /* the zero-padded input plane */
    int64_t len, pad; /* flat output span (row stride wp), the largest tap shift */
} geom;

static int geom_init(const nn_conv2d_params *q, geom *G)
{
    if (q->n < 0 || q->c < 1 || q->h < 1 || q->w < 1 || q->o < 1 || q->kh < 1 || q->kw < 1 ||
        q->sh < 1 || q->sw < 1 || q->ph < 0 || q->pw < 0 || q->dh < 1 || q->dw < 1 ||
        q->groups < 1 || q->c % q->groups != 0 || q->o % q->groups != 0)
        return NN_EINVAL;
    G->n = q->n, G->c = q->c, G->h = q->h, G->w = q->w, G->o = q->o;
    G->kh = q->kh, G->kw = q->kw, G->sh = q->sh, G->sw = q->sw, G->ph = q->ph, G->pw = q->pw;
    G->dh = q->dh, G->dw = q->dw, G->groups = q->groups;
    const int64_t eh = q->h + 2 * q->ph - q->dh * (q->kh - 1) - 1;
    const int64_t ew = q->w + 2 * q->pw - q->dw * (q->kw - 1) - 1;
    if (eh < 0 || ew < 0)
        return NN_EINVAL;
    G->oh = eh / q->sh + 1;
    G->ow = ew / q->sw + 1;
    G->cg = q->c / q->groups;
    G->og = q->o / q->groups;
    G->kk = q->kh * q->kw;
    G->kg = G->cg * G->kk;
    G->hw = q->h * q->w;
    G->p = G->oh * G->ow;
    G->pointwise = q->kh == 1 && q->kw == 1 && q->sh == 1 && q->sw == 1 && q->ph == 0 &&
                   q->pw == 0;
    G->depthwise = G->cg == 1 && !G->pointwise;
    G->shift = G->depthwise && q->sh == 1 && q->sw == 1;
    G->hp = q->h + 2 * q->ph;
    G->wp = q->w + 2 * q->pw;
    G->len = (G->oh - 1) * G->wp + G->ow;
    G->pad = (q->kh - 1) * q->dh * G->wp + (q->kw - 1) * q->dw;
    return NN_OK;
}

int nn_conv2d_output_size(const nn_conv2d_params *p, int64_t *oh, int64_t *ow)
{
    geom G;
    int status = geom_init(p, &G);
    if (status == NN_OK) {
        *oh = G.oh;
        *ow = G.ow;
    }
    return status;
}

/* The output columns [lo, hi) of one kernel column whose input column
 * ow * sw + off lies inside [0, w). */
static inline void valid_range(int64_t off, int64_t s, int64_t w, int64_t ow, int64_t *lo,
                               int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : ceil_div(-off, s);
    int64_t b = w - 1 - off < 0 ? 0 : (w - 1 - off) / s + 1;
    a = min64(a, ow);
    b = min64(max64(b, a), ow);
    *lo = a;
    *hi = b;
}

/* col[r - r0][p - p0] = x value under kernel row r at output pixel p (zero in
 * the padding), for rows [r0, r1) and pixels [p0, p1) of one group's input
 * xg (cg planes). ld: col's row stride. */
static void im2col(const geom *G, const float *xg, int64_t r0, int64_t r1, int64_t p0,
                   int64_t p1, float *col, int64_t ld)
{
    const int64_t OW = G->ow, W = G->w, sw = G->sw;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t c = r / G->kk, ki = r % G->kk / G->kw, kj = r % G->kw;
        const float *xc = xg + c * G->hw;
        const int64_t ih0 = ki * G->dh - G->ph, iw0 = kj * G->dw - G->pw;
        int64_t lo, hi;
        valid_range(iw0, sw, W, OW, &lo, &hi);
        float *dst = col + (r - r0) * ld - p0;
        for (int64_t p = p0; p < p1;) {
            const int64_t oh = p / OW, a = p % OW, e = min64(OW, a + (p1 - p));
            const int64_t ih = oh * G->sh + ih0;
            float *d = dst + oh * OW; /* d[ow] is pixel (oh, ow) */
            if (ih < 0 || ih >= G->h) {
                for (int64_t j = a; j < e; j++)
                    d[j] = 0.0f;
            } else {
                const float *src = xc + ih * W + iw0;
                /* m0 clamped to e: a segment may end before the first valid
                 * column, and zeroing up to lo would write past it (past the
                 * buffer, on the last row) */
                const int64_t m0 = min64(max64(a, lo), e), m1 = max64(m0, min64(e, hi));
                for (int64_t j = a; j < m0; j++)
                    d[j] = 0.0f;
                if (sw == 1) {
                    if (m1 > m0)
                        memcpy(d + m0, src + m0, (size_t)(m1 - m0) * sizeof(float));
                } else {
                    for (int64_t j = m0; j < m1; j++)
                        d[j] = src[j * sw];
                }
                for (int64_t j = m1; j < e; j++)
                    d[j] = 0.0f;
            }
            p += e - a;
        }
    }
}

/* The adjoint of im2col: dxg plane values += dcol[r - r0][p - p0] for rows
 * [r0, r1) and pixels [p0, p1) (padding dropped). Rows, then pixels, in
 * order: each input value's additions happen in one fixed order. */
static void col2im(const geom *G, const float *dcol, int64_t ld, int64_t r0, int64_t r1,
                   int64_t p0, int64_t p1, float *dxg)
{
    const int64_t OW = G->ow, W = G->w, sw = G->sw;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t c = r / G->kk, ki = r % G->kk / G->kw, kj = r % G->kw;
        float *xc = dxg + c * G->hw;
        const int64_t ih0 = ki * G->dh - G->ph, iw0 = kj * G->dw - G->pw;
        int64_t lo, hi;
        valid_range(iw0, sw, W, OW, &lo, &hi);
        const float *src = dcol + (r - r0) * ld - p0;
        for (int64_t p = p0; p < p1;) {
            const int64_t oh = p / OW, a = p % OW, e = min64(OW, a + (p1 - p));
            const int64_t ih = oh * G->sh + ih0;
            if (ih >= 0 && ih < G->h) {
                const float *s = src + oh * OW;
                float *d = xc + ih * W + iw0;
                const int64_t m0 = max64(a, lo), m1 = max64(m0, min64(e, hi));
                if (sw == 1) {
                    for (int64_t j = m0; j < m1; j++)
                        d[j] += s[j];
                } else {
                    for (int64_t j = m0; j < m1; j++)
                        d[j * sw] += s[j];
                }
            }
            p += e - a;
        }
    }
}

/* ---- depthwise (C/groups == 1): direct loops ---- */

/* One output plane: y = act(b + sum over (kh, kw) of w * x shifted). */
static void dw_forward_plane(const geom *G, const float *x, const float *w, float bias,
                             int act, float *y)
{
    const int64_t OW = G->ow, W = G->w, sw = G->sw;
    for (int64_t oh = 0; oh < G->oh; oh++) {
        float *yr = y + oh * OW;
        for (int64_t j = 0; j < OW; j++)
            yr[j] = bias;
        for (int64_t ki = 0; ki < G->kh; ki++) {
            const int64_t ih = oh * G->sh - G->ph + ki * G->dh;
            if (ih < 0 || ih >= G->h)
                continue;
            const float *xr = x + ih * W;
            for (int64_t kj = 0; kj < G->kw; kj++) {
                const float wv = w[ki * G->kw + kj];
                const int64_t off = kj * G->dw - G->pw;
                int64_t lo, hi;
                valid_range(off, sw, W, OW, &lo, &hi);
                const float *s = xr + off;
                if (sw == 1) {
                    for (int64_t j = lo; j < hi; j++)
                        yr[j] += wv * s[j];
                } else {
                    for (int64_t j = lo; j < hi; j++)
                        yr[j] += wv * s[j * sw];
                }
            }
        }
        if (act == NN_ACT_RELU)
            for (int64_t j = 0; j < OW; j++)
                yr[j] = yr[j] < 0.0f ? 0.0f : yr[j];
    }
}

/* dx plane += the adjoint of dw_forward_plane for one output plane dy. */
static void dw_dx_plane(const geom *G, const float *dy, const float *w, float *dx)
{
    const int64_t OW = G->ow, W = G->w, sw = G->sw;
    for (int64_t oh = 0; oh < G->oh; oh++) {
        const float *dyr = dy + oh * OW;
        for (int64_t ki = 0; ki < G->kh; ki++) {
            const int64_t ih = oh * G->sh - G->ph + ki * G->dh;
            if (ih < 0 || ih >= G->h)
                continue;
            float *xr = dx + ih * W;
            for (int64_t kj = 0; kj < G->kw; kj++) {
                const float wv = w[ki * G->kw + kj];
                const int64_t off = kj * G->dw - G->pw;
                int64_t lo, hi;
                valid_range(off, sw, W, OW, &lo, &hi);
                float *d = xr + off;
                if (sw == 1) {
                    for (int64_t j = lo; j < hi; j++)
                        d[j] += wv * dyr[j];
                } else {
                    for (int64_t j = lo; j < hi; j++)
                        d[j * sw] += wv * dyr[j];
                }
            }
        }
    }
}

/* sum over j in [lo, hi) of a[j] * b[j * sb], in a fixed order: eight
 * running partial sums (which the compiler can keep in one vector when
 * sb == 1), combined pairwise, then the tail. */
static inline float dot_fixed(const float *a, const float *b, int64_t sb, int64_t lo,
                              int64_t hi)
{
    float part[8] = {0};
    int64_t j = lo;
    if (sb == 1) {
        for (; j + 8 <= hi; j += 8)
            for (int l = 0; l < 8; l++)
                part[l] += a[j + l] * b[j + l];
    } else {
        for (; j + 8 <= hi; j += 8)
            for (int l = 0; l < 8; l++)
                part[l] += a[j + l] * b[(j + l) * sb];
    }
    float s = ((part[0] + part[4]) + (part[2] + part[6])) +
              ((part[1] + part[5]) + (part[3] + part[7]));
    for (; j < hi; j++)
        s += a[j] * b[j * sb];
    return s;
}

/* acc[kh*kw] += the weight gradient of one plane pair (dy, x), each (oh, kh,
 * kw) row dot product in float, added to the double accumulators. */
static void dw_dw_plane(const geom *G, const float *dy, const float *x, double *acc)
{
    const int64_t OW = G->ow, W = G->w, sw = G->sw;
    for (int64_t oh = 0; oh < G->oh; oh++) {
        const float *dyr = dy + oh * OW;
        for (int64_t ki = 0; ki < G->kh; ki++) {
            const int64_t ih = oh * G->sh - G->ph + ki * G->dh;
            if (ih < 0 || ih >= G->h)
                continue;
            const float *xr = x + ih * W;
            for (int64_t kj = 0; kj < G->kw; kj++) {
                const int64_t off = kj * G->dw - G->pw;
                int64_t lo, hi;
                valid_range(off, sw, W, OW, &lo, &hi);
                acc[ki * G->kw + kj] += (double)dot_fixed(dyr, xr + off, sw, lo, hi);
            }
        }
    }
}

/* ---- depthwise with stride 1 (conv_kernel.c's tap loops) ----
 * A thread's buffer: the kh*kw tap shifts (int64), then the padded input (or
 * input-gradient) plane, then the flat output-side plane, then (dw) the
 * double accumulators. */

static inline int64_t shift_off_floats(const geom *G) { return round_up(2 * G->kk, 16); }
/* The padded plane's region (read up to NN_CONV_TAPS_SLACK past its end by
 * the forward loop, written that far by the backward one). */
static inline int64_t shift_plane_floats(const geom *G)
{
    return round_up(G->hp * G->wp + NN_CONV_TAPS_SLACK, 16);
}
/* The output-side region: the forward accumulators (len + slack), the dx
 * pass's zero-framed dy (2 pad + len, read up to pad + hp wp + slack), or
 * the dw pass's spread dy (len). */
static inline int64_t shift_out_floats(const geom *G)
{
    return round_up(max64(G->oh * G->wp, 2 * G->pad + G->len) + NN_CONV_TAPS_SLACK, 16);
}

static size_t shift_buf_floats(const geom *G)
{
    return (size_t)(shift_off_floats(G) + shift_plane_floats(G) + shift_out_floats(G) +
                    2 * G->kk);
}

static int64_t *shift_offsets(const geom *G, float *buf)
{
    int64_t *off = (int64_t *)buf;
    for (int64_t ki = 0; ki < G->kh; ki++)
        for (int64_t kj = 0; kj < G->kw; kj++)
            off[ki * G->kw + kj] = ki * G->dh * G->wp + kj * G->dw;
    return off;
}

/* The zero-padded plane, and zeros in the slack after it. The rows go
 * through the ISA's conv_split_rows (stride 1: a masked copy that writes
 * the padding columns too): a memcpy call per short row cost more. */
static void pad_plane(const nn_kernel_table *kt, const geom *G, const float *x, float *xp)
{
    const int64_t top = G->ph * G->wp, rows = G->h * G->wp;
    memset(xp, 0, (size_t)top * sizeof(float));
    kt->conv_split_rows(G->h, 1, G->wp, x - G->pw, G->w, G->pw, G->pw + G->w, xp + top, G->wp, 0);
    memset(xp + top + rows, 0,
           (size_t)(G->hp * G->wp - top - rows + NN_CONV_TAPS_SLACK) * sizeof(float));
}

/* dst[oh * wp + ow] = src[oh * ow_ + ow], the junk columns zero: oh * wp
 * floats (the last row's junk too). */
static void spread_rows(const nn_kernel_table *kt, const geom *G, const float *src, float *dst)
{
    kt->conv_split_rows(G->oh, 1, G->wp, src, G->ow, 0, G->ow, dst, G->wp, 0);
}

static void shift_forward(const nn_kernel_table *kt, const geom *G, const float *x,
                          int64_t c, const float *w, const float *b, int act, float *y,
                          float *buf)
{
    const int64_t *off = shift_offsets(G, buf);
    float *xp = buf + shift_off_floats(G);
    float *acc = xp + shift_plane_floats(G);
    pad_plane(kt, G, x, xp);
    for (int64_t o = c * G->og; o < (c + 1) * G->og; o++) {
        kt->conv_taps_forward(G->len, G->kk, off, w + o * G->kk, xp, b ? b[o] : 0.0f, act, acc);
        /* the rows without their junk columns */
        kt->conv_split_rows(G->oh, 1, G->ow, acc, G->wp, 0, G->ow, y + o * G->p, G->ow, 0);
    }
}

/* dx plane of input channel c (sample's dy planes at dy, o-major). */
static void shift_dx(const nn_kernel_table *kt, const geom *G, const float *dy, int64_t c,
                     const float *w, float *dx, float *buf)
{
    const int64_t *off = shift_offsets(G, buf);
    float *dxp = buf + shift_off_floats(G);
    float *dyz = dxp + shift_plane_floats(G);
    /* only the padded plane's rows that hold dx: [top, top + rows) */
    const int64_t top = G->ph * G->wp, rows = G->h * G->wp;
    memset(dxp + top, 0, (size_t)(rows + NN_CONV_TAPS_SLACK) * sizeof(float));
    memset(dyz, 0, (size_t)G->pad * sizeof(float));
    memset(dyz + G->pad + G->len, 0, (size_t)(G->pad + NN_CONV_TAPS_SLACK) * sizeof(float));
    for (int64_t o = c * G->og; o < (c + 1) * G->og; o++) {
        spread_rows(kt, G, dy + o * G->p, dyz + G->pad);
        kt->conv_taps_backward(rows, G->kk, off, w + o * G->kk, dyz + top, G->pad, dxp + top);
    }
    kt->conv_split_rows(G->h, 1, G->w, dxp + top + G->pw, G->wp, 0, G->w, dx, G->w, 0);
}

/* A read prefetch of every 64-byte line of p[0, n). */
static inline void prefetch_floats(const float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16)
        __builtin_prefetch(p + i);
    __builtin_prefetch(p + n - 1);
}

/* dw of output channel o over the whole batch, in sample order. */
static void shift_dw(const nn_kernel_table *kt, const geom *G, const float *x, const float *dy,
                     int64_t o, float *dw, float *buf)
{
    const int64_t c = o / G->og;
    const int64_t *off = shift_offsets(G, buf);
    float *xp = buf + shift_off_floats(G);
    float *dyx = xp + shift_plane_floats(G);
    double *acc = (double *)(dyx + shift_out_floats(G));
    for (int64_t t = 0; t < G->kk; t++)
        acc[t] = 0.0;
    for (int64_t n = 0; n < G->n; n++) {
        /* the next image's planes are a batch stride away, beyond the
         * hardware prefetchers' reach: ask for them now (measured: one
         * image ahead beat two and three) */
        if (n + 1 < G->n) {
            prefetch_floats(x + ((n + 1) * G->c + c) * G->hw, G->hw);
            prefetch_floats(dy + ((n + 1) * G->o + o) * G->p, G->p);
        }
        pad_plane(kt, G, x + (n * G->c + c) * G->hw, xp);
        spread_rows(kt, G, dy + (n * G->o + o) * G->p, dyx);
        memset(dyx + G->len, 0, 16 * sizeof(float)); /* conv_taps_weight's last block */
        kt->conv_taps_weight(G->len, G->kk, off, dyx, xp, acc);
    }
    for (int64_t t = 0; t < G->kk; t++)
        dw[o * G->kk + t] = (float)acc[t];
}

/* ---- the tasks ---- */

typedef struct conv_call {
    geom G;
    const nn_kernel_table *kt;
    nn_gemm_fn gemm; /* nn_sgemm, or the bf16 GEMM when p->bf16 */
    const float *x, *w, *b, *dy;
    const float *res; /* forward: added to y before act (NULL: none) */
    float *y, *dx, *dwt, *db;
    /* forward: MaxPool2d(2) of act(y) into pool_y (NULL: none), its argmax
     * into pool_arg (NULL: not kept, as predict needs none) */
    float *pool_y;
    int32_t *pool_arg;
    int act;
    /* forward: NN_NCHW16C_X, _Y, _RES (nn_conv2d_forward_nchw16c), else 0 */
    int layout;
    /* forward: pixel blocks of pb */
    int64_t pb, npb;
    /* dx: input-channel blocks of cb channels, pixel chunks of dpc */
    int64_t cb, ncb, dpc;
    /* dw: output-channel blocks of ob, K-row blocks of rb, pixel chunks of wpc */
    int64_t ob, nob, rb, nrb, wpc;
    /* db: channel blocks of bb */
    int64_t bb, nbb;
    /* depthwise forward: blocks of dcb input channels (all their outputs) */
    int64_t dcb, ndcb;
    /* the direct convolution (conv_direct.c): the forward pass, and the
     * input gradient as a (transposed) convolution of dy */
    nn_dconv dfwd, ddx;
    nn_dconv_dw ddw;
    int direct_fwd, direct_dx, direct_dw;
    /* Winograd F(2x2, 3x3) for the forward pass and dx (winograd.c) and
     * for the weight gradient (winograd_dw.c) */
    nn_wino wfwd, wdx;
    nn_wino_dw wdw;
    int wino_fwd, wino_dx, wino_dw;
    /* forward: the weights packed by nn_conv2d_pack_forward (its payload, the
     * header checked against this call's plan), or NULL: packed here */
    const float *packed;
    /* forward, not packed: floats of the copy of the packed weights each
     * thread makes for itself at the front of its LAYER buffer (0: one
     * shared copy; own_pack_floats), and the BatchNorm fold's a and s */
    size_t own_pack;
    const float *fold_scale, *fold_shift;
    int nt;                          /* the call's threads (call_threads) */
    int64_t t_fwd, t_dx, t_dw, t_db; /* task counts, in list order */
    size_t buf_floats;               /* each thread's LAYER buffer */
} conv_call;

static void fill_rows(float *c, int64_t ldc, int64_t rows, int64_t cols, const float *v)
{
    for (int64_t i = 0; i < rows; i++) {
        float *ci = c + i * ldc;
        const float x = v[i];
        for (int64_t j = 0; j < cols; j++)
            ci[j] = x;
    }
}

static int forward_task(const conv_call *K, int64_t t, float *buf)
{
    const geom *G = &K->G;
    if (K->wino_fwd) {
        nn_wino_task(&K->wfwd, t, K->x, K->y, buf);
        return NN_OK;
    }
    if (K->direct_fwd) {
        nn_dconv_task(&K->dfwd, t, K->x, K->y, buf);
        return NN_OK;
    }
    if (G->depthwise) {
        const int64_t n = t / K->ndcb, c0 = t % K->ndcb * K->dcb, c1 = min64(c0 + K->dcb, G->c);
        for (int64_t c = c0; c < c1; c++) {
            const float *xc = K->x + (n * G->c + c) * G->hw;
            float *yn = K->y + n * G->o * G->p;
            if (G->shift) {
                shift_forward(K->kt, G, xc, c, K->w, K->b, K->act, yn, buf);
                continue;
            }
            for (int64_t o = c * G->og; o < (c + 1) * G->og; o++)
                dw_forward_plane(G, xc, K->w + o * G->kk, K->b ? K->b[o] : 0.0f, K->act,
                                 yn + o * G->p);
        }
        return NN_OK;
    }
    const int64_t per_n = G->groups * K->npb;
    const int64_t n = t / per_n, g = t % per_n / K->npb, blk = t % K->npb;
    const int64_t p0 = blk * K->pb, p1 = min64(p0 + K->pb, G->p), np = p1 - p0;
    const float *xg = K->x + (n * G->c + g * G->cg) * G->hw;
    const float *B;
    int64_t ldb;
    if (G->pointwise) {
        B = xg + p0;
        ldb = G->hw;
    } else {
        im2col(G, xg, 0, G->kg, p0, p1, buf, np);
        B = buf;
        ldb = np;
    }
    float *C = K->y + (n * G->o + g * G->og) * G->p + p0;
    if (K->b)
        fill_rows(C, G->p, G->og, np, K->b + g * G->og);
    return K->gemm(0, 0, G->og, np, G->kg, 1.0f, K->w + g * G->og * G->kg, G->kg, B, ldb,
                    K->b ? 1.0f : 0.0f, C, G->p, NULL, K->act);
}

static int dx_task(const conv_call *K, int64_t t, float *buf)
{
    const geom *G = &K->G;
    if (K->wino_dx) {
        nn_wino_task(&K->wdx, t, K->dy, K->dx, buf);
        return NN_OK;
    }
    if (K->direct_dx) {
        nn_dconv_task(&K->ddx, t, K->dy, K->dx, buf);
        return NN_OK;
    }
    if (G->depthwise) {
        /* one input plane: the sum over its og output channels */
        const int64_t n = t / G->c, c = t % G->c;
        float *dx = K->dx + (n * G->c + c) * G->hw;
        if (G->shift) {
            shift_dx(K->kt, G, K->dy + n * G->o * G->p, c, K->w, dx, buf);
            return NN_OK;
        }
        memset(dx, 0, (size_t)G->hw * sizeof(float));
        for (int64_t o = c * G->og; o < (c + 1) * G->og; o++)
            dw_dx_plane(G, K->dy + (n * G->o + o) * G->p, K->w + o * G->kk, dx);
        return NN_OK;
    }
    const int64_t per_n = G->groups * K->ncb;
    const int64_t n = t / per_n, g = t % per_n / K->ncb, c0 = t % K->ncb * K->cb;
    const int64_t c1 = min64(c0 + K->cb, G->cg);
    const float *A = K->w + g * G->og * G->kg + c0 * G->kk;
    const float *dy = K->dy + (n * G->o + g * G->og) * G->p;
    float *dxg = K->dx + (n * G->c + g * G->cg) * G->hw;
    if (G->pointwise) /* dx rows are dcol rows */
        return K->gemm(1, 0, c1 - c0, G->p, G->og, 1.0f, A, G->kg, dy, G->p, 0.0f,
                        dxg + c0 * G->hw, G->hw, NULL, NN_ACT_NONE);
    memset(dxg + c0 * G->hw, 0, (size_t)((c1 - c0) * G->hw) * sizeof(float));
    const int64_t r0 = c0 * G->kk, r1 = c1 * G->kk;
    for (int64_t p0 = 0; p0 < G->p; p0 += K->dpc) {
        const int64_t p1 = min64(p0 + K->dpc, G->p), np = p1 - p0;
        int status = K->gemm(1, 0, r1 - r0, np, G->og, 1.0f, A, G->kg, dy + p0, G->p, 0.0f,
                              buf, np, NULL, NN_ACT_NONE);
        if (status != NN_OK)
            return status;
        col2im(G, buf, np, r0, r1, p0, p1, dxg);
    }
    return NN_OK;
}

static int dw_task(const conv_call *K, int64_t t, float *buf)
{
    const geom *G = &K->G;
    if (K->wino_dw) {
        nn_wino_dw_task(&K->wdw, t, K->x, K->dy, buf);
        return NN_OK;
    }
    if (K->direct_dw) {
        nn_dconv_dw_task(&K->ddw, t, K->x, K->dy, buf);
        return NN_OK;
    }
    if (G->depthwise) {
        /* one output channel's kh x kw weights, over the batch in order */
        const int64_t o = t, c = o / G->og;
        if (G->shift) {
            shift_dw(K->kt, G, K->x, K->dy, o, K->dwt, buf);
            return NN_OK;
        }
        double *acc = (double *)buf; /* kh * kw doubles */
        for (int64_t i = 0; i < G->kk; i++)
            acc[i] = 0.0;
        for (int64_t n = 0; n < G->n; n++)
            dw_dw_plane(G, K->dy + (n * G->o + o) * G->p, K->x + (n * G->c + c) * G->hw, acc);
        for (int64_t i = 0; i < G->kk; i++)
            K->dwt[o * G->kk + i] = (float)acc[i];
        return NN_OK;
    }
    const int64_t per_g = K->nob * K->nrb;
    const int64_t g = t / per_g, o0 = t % per_g / K->nrb * K->ob, r0 = t % K->nrb * K->rb;
    const int64_t o1 = min64(o0 + K->ob, G->og), r1 = min64(r0 + K->rb, G->kg);
    float *C = K->dwt + (g * G->og + o0) * G->kg + r0;
    for (int64_t n = 0; n < G->n; n++) {
        const float *xg = K->x + (n * G->c + g * G->cg) * G->hw;
        const float *dy = K->dy + (n * G->o + g * G->og + o0) * G->p;
        for (int64_t p0 = 0; p0 < G->p; p0 += K->wpc) {
            const int64_t p1 = min64(p0 + K->wpc, G->p), np = p1 - p0;
            const float *B;
            int64_t ldb;
            if (G->pointwise) {
                B = xg + r0 * G->hw + p0;
                ldb = G->hw;
            } else {
                im2col(G, xg, r0, r1, p0, p1, buf, np);
                B = buf;
                ldb = np;
            }
            int status = K->gemm(0, 1, o1 - o0, r1 - r0, np, 1.0f, dy + p0, G->p, B, ldb,
                                  n == 0 && p0 == 0 ? 0.0f : 1.0f, C, G->kg, NULL,
                                  NN_ACT_NONE);
            if (status != NN_OK)
                return status;
        }
    }
    return NN_OK;
}

/* db[o] for one block of channels: each a double sum over (n, p) in order,
 * eight running sums per plane combined in a fixed order. */
static void db_task(const conv_call *K, int64_t t)
{
    const geom *G = &K->G;
    const int64_t o0 = t * K->bb, o1 = min64(o0 + K->bb, G->o);
    for (int64_t o = o0; o < o1; o++) {
        double total = 0.0;
        for (int64_t n = 0; n < G->n; n++) {
            const float *d = K->dy + (n * G->o + o) * G->p;
            double part[8] = {0};
            int64_t j = 0;
            for (; j + 8 <= G->p; j += 8)
                for (int l = 0; l < 8; l++)
                    part[l] += d[j + l];
            double s = ((part[0] + part[4]) + (part[2] + part[6])) +
                       ((part[1] + part[5]) + (part[3] + part[7]));
            for (; j < G->p; j++)
                s += d[j];
            total += s;
        }
        K->db[o] = (float)total;
    }
}

static int run_task(const conv_call *K, int64_t t, float *buf)
{
    if (t < K->t_fwd)
        return forward_task(K, t, buf);
    t -= K->t_fwd;
    if (t < K->t_dx)
        return dx_task(K, t, buf);
    t -= K->t_dx;
    if (t < K->t_dw)
        return dw_task(K, t, buf);
    t -= K->t_dw;
    db_task(K, t);
    return NN_OK;
}

/* Whether the team transforms the forward pass's Winograd weights: not
 * given them packed, and no thread packing its own. */
static int team_packs_wino_fwd(const conv_call *K)
{
    return K->wino_fwd && K->packed == NULL && !K->own_pack;
}

/* What every thread of the call does before the tasks (part of parts):
 * the Winograd weight transforms, split by output channels; 1 when there
 * is such work (the threads then meet at a barrier before the tasks). */
static int prologue(const conv_call *K, int part, int parts)
{
    const int wino_fwd = team_packs_wino_fwd(K);
    if (wino_fwd)
        nn_wino_pack(&K->wfwd, part, parts);
    if (K->wino_dx)
        nn_wino_pack(&K->wdx, part, parts);
    return wino_fwd || K->wino_dx;
}

/* The GEMM FLOPs of the forward pass (2 N O OH OW K). */
static double forward_flops(const geom *G)
{
    return 2.0 * (double)G->n * (double)G->o * (double)G->p * (double)G->kg;
}

/* The threads a call of this many flops runs on (the plans split the work
 * for them: a call run on one thread is not split into bands for two). */
static int call_threads(double flops)
{
    return flops >= NN_CONV_PARALLEL_MIN_FLOPS ? nn_max_threads() : 1;
}

/* What a thread running tasks of K starts with: its LAYER buffer (*buf)
 * and the call to run its tasks of, K itself or, with K->own_pack, *own: a
 * copy of K pointing at the thread's own packed weights (the buffer's
 * front; *buf is then the rest). NULL when out of memory. */
static const conv_call *thread_start(const conv_call *K, conv_call *own, float **buf)
{
    const size_t floats = K->buf_floats + K->own_pack;
    *buf = NULL;
    if (floats > 0 && (*buf = nn_workspace_get(NN_WS_LAYER, floats)) == NULL)
        return NULL;
    if (!K->own_pack)
        return K;
    *own = *K;
    float *pack = *buf;
    *buf += K->own_pack;
    if (own->direct_fwd) {
        nn_dconv_pack(&own->dfwd, pack, K->w, K->b);
        if (K->fold_scale)
            nn_dconv_fold(&own->dfwd, K->fold_scale, K->fold_shift);
    } else {
        own->wfwd.u = pack;
        nn_wino_pack(&own->wfwd, 0, 1);
    }
    return own;
}

/* The floats of each thread's own packed weights for K's forward pass, or
 * 0 (one shared copy): when its tasks are parts of images and the packed
 * weights fit in half of L2. A shared copy, packed on every call, is
 * written by one core and at once read by the other: a one-image 64->64
 * 7x7 call on 2 threads took 38.8 us with it, 24.7 us with a copy per
 * thread, 18.7 us with the weights packed ahead (1 thread: 36.7, 30.4). */
static size_t own_pack_floats(const conv_call *K)
{
    if (K->packed || K->nt < 2)
        return 0;
    int64_t floats = 0, l1, l2;
    if (K->direct_fwd && (K->dfwd.nbands > 1 || K->dfwd.ctasks > 1))
        floats = (int64_t)nn_dconv_shared_floats(&K->dfwd);
    else if (K->wino_fwd && K->wfwd.ipt == 0)
        floats = (int64_t)nn_wino_shared_floats(&K->wfwd);
    nn_cache_sizes(&l1, &l2);
    return floats * (int64_t)sizeof(float) <= l2 / 2 ? (size_t)round_up(floats, 16) : 0;
}

/* Teams up to this size split each kind of task (forward, dx, dw, db) in
 * parts, one per thread: thread t runs part t of each kind, then takes
 * what is left of the others' (task_claim). The parts follow the task
 * list's image order, so a thread keeps to the same images from layer to
 * layer, as BatchNorm's image split does: their data stay in its core's
 * caches (ResNet-20 training, 2 threads, batch 128: 931 -> 993 samples/s;
 * docs/measurements.md). Each task writes its own outputs: the bits do not
 * depend on which thread runs it. */
#define NN_CONV_AFFINE_TEAM 8

/* A part of the task list: its next unclaimed task and its end. */
typedef struct task_claim {
    _Alignas(64) atomic_llong next;
    int64_t end;
} task_claim;

/* claims[k team + u]: part u of kind k's tasks. */
static void init_claims(const conv_call *K, int team, task_claim *claims)
{
    const int64_t starts[5] = {0, K->t_fwd, K->t_fwd + K->t_dx,
                               K->t_fwd + K->t_dx + K->t_dw,
                               K->t_fwd + K->t_dx + K->t_dw + K->t_db};
    for (int k = 0; k < 4; k++)
        for (int u = 0; u < team; u++) {
            const int64_t len = starts[k + 1] - starts[k];
            atomic_init(&claims[k * team + u].next, starts[k] + len * u / team);
            claims[k * team + u].end = starts[k] + len * (u + 1) / team;
        }
}

/* Thread me's tasks of the claims: per kind, its own part, then the rest of
 * the others'. The first failing status, else NN_OK. */
static int run_claimed(const conv_call *K, task_claim *claims, int me, int team, float *buf)
{
    for (int k = 0; k < 4 * team; k++) {
        task_claim *c = &claims[k / team * team + (me + k) % team];
        int64_t t;
        while ((t = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed)) < c->end) {
            const int status = run_task(K, t, buf);
            if (status != NN_OK)
                return status;
        }
    }
    return NN_OK;
}

/* Run the task list: on the calling thread when it is one task or little
 * work (K->nt == 1; the GEMMs may then thread themselves), else in one
 * parallel region where every thread runs its GEMMs alone (tasks by part,
 * see NN_CONV_AFFINE_TEAM). */
static int run_tasks(const conv_call *K)
{
    const int64_t total = K->t_fwd + K->t_dx + K->t_dw + K->t_db;
    int nt = K->nt;
    /* the Winograd weight transform splits over the threads too */
    nt = (int)min64(nt, max64(total, team_packs_wino_fwd(K) || K->wino_dx ? nt : 0));
    if (nt <= 1) {
        conv_call own;
        float *buf = NULL;
        const conv_call *C = thread_start(K, &own, &buf);
        if (C == NULL)
            return NN_ENOMEM;
        prologue(C, 0, 1);
        for (int64_t t = 0; t < total; t++) {
            int status = run_task(C, t, buf);
            if (status != NN_OK)
                return status;
        }
        return NN_OK;
    }
    int status = NN_OK; /* the lowest (an error) of the threads' statuses */
    nn_barrier bar = NN_BARRIER_INIT;
    task_claim claims[4 * NN_CONV_AFFINE_TEAM];
    if (nt <= NN_CONV_AFFINE_TEAM)
        init_claims(K, nt, claims);
#pragma omp parallel num_threads(nt) reduction(min : status) shared(claims)
    {
        nn_set_local_num_threads(1); /* this thread's GEMMs open no region */
        conv_call own;
        float *buf = NULL;
        const conv_call *C = thread_start(K, &own, &buf);
        int mine = C ? NN_OK : NN_ENOMEM;
        const int team = omp_get_num_threads();
        if (prologue(C ? C : K, omp_get_thread_num(), team))
            nn_barrier_wait(&bar, team);
        if (total <= team) {
            /* a task per thread, thread t the t-th: one image's bands keep
             * their thread from layer to layer, so a band's input rows are
             * mostly in the cache of the core that wrote them (ResNet-20, one
             * image, 2 threads: 322 -> 313 us; dynamic: whichever thread
             * came first took the first band) */
            const int64_t t = omp_get_thread_num();
            if (t < total && mine == NN_OK)
                mine = run_task(C, t, buf);
        } else if (team == nt && nt <= NN_CONV_AFFINE_TEAM) {
            if (mine == NN_OK)
                mine = run_claimed(C, claims, omp_get_thread_num(), team, buf);
        } else {
#pragma omp for schedule(dynamic, 1) nowait
            for (int64_t t = 0; t < total; t++)
                if (mine == NN_OK)
                    mine = run_task(C, t, buf);
        }
        status = mine;
    }
    return status;
}

/* ---- planning ---- */

/* A planned path's tasks: `tasks` of them in *count, each thread's LAYER
 * buffer at least `need` floats. */
static void plan_tasks(conv_call *K, size_t need, int64_t *count, int64_t tasks)
{
    if (need > K->buf_floats)
        K->buf_floats = need;
    *count = tasks;
}

/* The direct convolution (conv_direct.c) for this call's forward pass
 * (dx == 0) or input gradient (dx == 1) planned in K: 1 when it applies,
 * else 0 (the paths below run). */
static int plan_direct(conv_call *K, int dx)
{
    const geom *G = &K->G;
    if (G->pointwise)
        return 0;
    nn_dconv *D = dx ? &K->ddx : &K->dfwd;
    memset(D, 0, sizeof *D);
    D->n = G->n, D->groups = G->groups, D->kh = G->kh, D->kw = G->kw;
    D->dh = G->dh, D->dw = G->dw;
    if (!dx) {
        D->c = G->cg, D->h = G->h, D->w = G->w, D->o = G->og, D->oh = G->oh, D->ow = G->ow;
        D->sh = G->sh, D->sw = G->sw, D->ph = G->ph, D->pw = G->pw;
        D->x_img = G->c * G->hw, D->y_img = G->o * G->p;
        D->act = K->act;
        D->res = K->res;
        D->y_nchw16c = (K->layout & NN_NCHW16C_Y) != 0;
        D->res_nchw16c = (K->layout & (NN_NCHW16C_Y | NN_NCHW16C_RES)) != 0;
        D->x_nchw16c = (K->layout & NN_NCHW16C_X) != 0;
        if (K->pool_y) { /* pooled: y is the pooled output */
            D->pool = 1;
            D->arg = K->pool_arg;
            D->y_img = G->o * (G->oh / 2) * (G->ow / 2);
        }
    } else {
        /* dx = dy convolved with the weights transposed and rotated, one
         * phase of dx's rows and columns at a time (conv_direct.h) */
        D->transposed = 1;
        D->c = G->og, D->h = G->oh, D->w = G->ow, D->o = G->cg, D->oh = G->h, D->ow = G->w;
        D->sh = G->sh, D->sw = G->sw, D->ph = G->ph, D->pw = G->pw;
        D->x_img = G->o * G->p, D->y_img = G->c * G->hw;
        D->act = NN_ACT_NONE;
    }
    /* outputs in vector lanes: too few leave most lanes idle */
    if (D->o < NN_CONV_DIRECT_MIN_O || (D->c == 1 && D->o < NN_CONV_DIRECT_MIN_OG))
        return 0;
    if (!nn_dconv_plan(D, K->kt, K->nt))
        return 0;
    plan_tasks(K, nn_dconv_task_floats(D), dx ? &K->t_dx : &K->t_fwd, nn_dconv_tasks(D));
    return 1;
}

static atomic_int winograd_mode = NN_WINOGRAD_AUTO;

int nn_conv_set_winograd(int mode)
{
    return atomic_exchange(&winograd_mode, mode);
}

int nn_conv_winograd_mode(void) { return atomic_load(&winograd_mode); }

/* Whether Winograd F(2x2, 3x3) pays for a 3x3 stride-1 layer of this shape
 * (its forward pass, and its input gradient: the same shape transposed):
 * the shape only, never the batch size. Its 16 products per 2x2 tile are
 * 2.25x fewer multiply-adds than the direct path's; the transforms cost per
 * channel and tile and per output row, and tiles past an odd edge are
 * wasted. So it pays with more channels per transform (h = c o / (c + o):
 * the products' share of the work), on larger planes, with few wasted
 * tiles. An empirical rule, fitted to per-layer measurements
 * (benchmarks/bench_winograd.py, Zen 4, 1 thread, forward and dx, batch 1,
 * 32 and 128; docs/measurements.md), with f = oh ow / (4 th tw) the share
 * of the tiles' outputs inside the plane:
 *   h >= 8  and  h * oh ow * f^2 >= 1000.
 * Taken: 16->16 at 14x14 and larger (1.12-1.5x faster), 32->32 at 8x8 and
 * 14x14 (1.06-1.42x), 32->64 and 64->64 at 14x14 (1.35-1.66x), 24->24
 * 20x20 and 48->48 10x10 (1.1-1.46x), 128->128 7x7 (1.15-1.25x; 0.92x for
 * the forward pass at batch 1); left to the direct path: 64->64 7x7 (its
 * forward pass at batch 1 0.89x, 1.03-1.26x elsewhere: one-image predict
 * would lose), and layers with fewer than 16 channels a side. */
static int wino_pays(const geom *G)
{
    const int mode = atomic_load_explicit(&winograd_mode, memory_order_relaxed);
    if (mode != NN_WINOGRAD_AUTO)
        return mode == NN_WINOGRAD_ALWAYS;
    const double h = (double)G->c * (double)G->o / (double)(G->c + G->o), p = (double)G->p;
    const double tiles = 4.0 * (double)ceil_div(G->oh, 2) * (double)ceil_div(G->ow, 2);
    const double f = p / tiles;
    return h >= 8.0 && h * p * f * f >= 1000.0;
}

/* Winograd F(2x2, 3x3) (winograd.c) for this call's forward pass (dx ==
 * 0) or input gradient (dx == 1) planned in K: 1 when it applies, else 0.
 * It applies to 3x3, stride-1, dilation-1 convolutions without groups (dx:
 * padding at most 2, the transposed convolution's padding 2 - p), where
 * wino_pays; the choice depends on the layer's shape only, never on the
 * batch size, so every row of a batch gets the same bits however the
 * batch is split. */
static int plan_wino(conv_call *K, int dx)
{
    const geom *G = &K->G;
    if (G->kh != 3 || G->kw != 3 || G->sh != 1 || G->sw != 1 || G->dh != 1 || G->dw != 1 ||
        G->groups != 1 || !wino_pays(G))
        return 0;
    nn_wino *W = dx ? &K->wdx : &K->wfwd;
    memset(W, 0, sizeof *W);
    W->n = G->n;
    W->wsrc = K->w;
    if (!dx) {
        W->c = G->c, W->h = G->h, W->w = G->w, W->o = G->o, W->ph = G->ph, W->pw = G->pw;
        W->oh = G->oh, W->ow = G->ow, W->x_img = G->c * G->hw, W->y_img = G->o * G->p;
        W->bias = K->b, W->res = K->res, W->act = K->act;
        W->pool_y = K->pool_y, W->arg = K->pool_arg;
        W->x_nchw16c = (K->layout & NN_NCHW16C_X) != 0;
        W->y_nchw16c = (K->layout & NN_NCHW16C_Y) != 0;
        W->res_nchw16c = (K->layout & (NN_NCHW16C_Y | NN_NCHW16C_RES)) != 0;
    } else {
        if (G->ph > 2 || G->pw > 2)
            return 0;
        W->transposed = 1;
        W->c = G->o, W->h = G->oh, W->w = G->ow, W->o = G->c;
        W->ph = 2 - G->ph, W->pw = 2 - G->pw, W->oh = G->h, W->ow = G->w;
        W->x_img = G->o * G->p, W->y_img = G->c * G->hw;
        W->act = NN_ACT_NONE;
    }
    if (!nn_wino_plan(W, K->kt, K->nt))
        return 0;
    plan_tasks(K, nn_wino_task_floats(W), dx ? &K->t_dx : &K->t_fwd, nn_wino_tasks(W));
    return 1;
}

/* The direct weight gradient planned in K: 1 when it applies, else 0. */
static int plan_direct_dw(conv_call *K)
{
    const geom *G = &K->G;
    if (G->pointwise || G->og < NN_CONV_DIRECT_MIN_O || G->dw != 1 ||
        (G->depthwise && G->og < NN_CONV_DIRECT_MIN_OG))
        return 0;
    nn_dconv_dw *E = &K->ddw;
    memset(E, 0, sizeof *E);
    E->n = G->n, E->groups = G->groups, E->c = G->cg, E->h = G->h, E->w = G->w;
    E->o = G->og, E->kh = G->kh, E->kw = G->kw, E->sh = G->sh, E->sw = G->sw;
    E->dh = G->dh, E->ph = G->ph, E->pw = G->pw, E->oh = G->oh, E->ow = G->ow;
    E->x_img = G->c * G->hw, E->y_img = G->o * G->p;
    E->with_dw = K->dwt != NULL;
    E->with_db = K->db != NULL;
    if (!nn_dconv_dw_plan(E, K->kt))
        return 0;
    plan_tasks(K, nn_dconv_dw_task_floats(E), &K->t_dw, nn_dconv_dw_tasks(E));
    return 1;
}

/* Winograd's weight gradient planned in K: 1 when it applies (a 3x3,
 * stride-1, ungrouped float32 convolution whose shape the rule in
 * winograd_dw.c picks), else 0. */
static int plan_wino_dw(conv_call *K)
{
    const geom *G = &K->G;
    if (G->kh != 3 || G->kw != 3 || G->sh != 1 || G->sw != 1 || G->dh != 1 || G->dw != 1 ||
        G->groups != 1 || G->depthwise)
        return 0;
    nn_wino_dw *E = &K->wdw;
    memset(E, 0, sizeof *E);
    E->n = G->n, E->c = G->c, E->h = G->h, E->w = G->w, E->o = G->o;
    E->ph = G->ph, E->pw = G->pw, E->oh = G->oh, E->ow = G->ow;
    E->with_dw = K->dwt != NULL;
    E->with_db = K->db != NULL;
    if (!nn_wino_dw_plan(E, K->kt))
        return 0;
    plan_tasks(K, nn_wino_dw_task_floats(E), &K->t_dw, nn_wino_dw_tasks(E));
    return 1;
}

/* The direct paths' shared data (packed weights, tap offsets, the weight
 * gradient's parts) in the calling thread's SHARED workspace, read by the
 * whole team, after `front` floats left to the caller (*front_out). */
static int pack_direct(conv_call *K, size_t front, float **front_out)
{
    const size_t a = K->direct_fwd && !K->own_pack ? nn_dconv_shared_floats(&K->dfwd) : 0;
    const size_t b = K->direct_dx ? nn_dconv_shared_floats(&K->ddx) : 0;
    const size_t c = K->direct_dw ? nn_dconv_dw_shared_floats(&K->ddw)
                   : K->wino_dw ? nn_wino_dw_shared_floats(&K->wdw) : 0;
    const size_t d = K->wino_fwd ? nn_wino_shared_floats(&K->wfwd)
                     : K->wino_dx ? nn_wino_shared_floats(&K->wdx) : 0;
    if (front + a + b + c + d == 0)
        return NN_OK;
    front = (front + 15) / 16 * 16;
    const size_t a16 = (a + 15) / 16 * 16, b16 = (b + 15) / 16 * 16, c16 = (c + 15) / 16 * 16;
    float *shared = nn_workspace_get(NN_WS_SHARED, front + a16 + b16 + c16 + d);
    if (shared == NULL)
        return NN_ENOMEM;
    if (front_out)
        *front_out = shared;
    shared += front;
    if (K->direct_fwd && K->packed) {
        nn_dconv_pack_offsets(&K->dfwd, shared);
        K->dfwd.wpk = K->packed;
    } else if (K->direct_fwd && !K->own_pack) {
        nn_dconv_pack(&K->dfwd, shared, K->w, K->b);
    }
    if (K->direct_dx)
        nn_dconv_pack(&K->ddx, shared + a16, K->w, NULL);
    if (K->direct_dw)
        nn_dconv_dw_pack(&K->ddw, shared + a16 + b16);
    if (K->wino_dw)
        nn_wino_dw_pack(&K->wdw, shared + a16 + b16);
    /* the Winograd weights are transformed by the team (prologue) */
    K->wfwd.u = K->wdx.u = shared + a16 + b16 + c16;
    if (K->wino_fwd && K->packed)
        K->wfwd.u = (float *)K->packed;
    return NN_OK;
}

static void plan_forward(conv_call *K)
{
    const geom *G = &K->G;
    if (G->depthwise) {
        K->dcb = block_size(G->c, max64(1, 16384 / max64(G->p * G->kk * G->og, 1)), 1);
        K->ndcb = ceil_div(G->c, K->dcb);
        K->t_fwd = G->n * K->ndcb;
        if (G->shift)
            K->buf_floats = shift_buf_floats(G);
        return;
    }
    K->pb = block_size(G->p, NN_CONV_COL_FLOATS / G->kg, NN_CONV_PIXEL_UNIT);
    K->npb = ceil_div(G->p, K->pb);
    K->t_fwd = G->n * G->groups * K->npb;
    if (!G->pointwise)
        K->buf_floats = (size_t)(G->kg * K->pb);
}

static void plan_dx(conv_call *K)
{
    const geom *G = &K->G;
    if (G->depthwise) {
        K->t_dx = G->n * G->c;
        if (G->shift && shift_buf_floats(G) > K->buf_floats)
            K->buf_floats = shift_buf_floats(G);
        return;
    }
    if (G->pointwise) {
        K->cb = block_size(G->cg, max64(16, ceil_div(G->cg, 4)), 8);
        K->ncb = ceil_div(G->cg, K->cb);
        K->dpc = G->p;
    } else {
        K->cb = block_size(G->cg, NN_CONV_COL_FLOATS / (G->kk * G->p), 1);
        K->ncb = ceil_div(G->cg, K->cb);
        K->dpc = block_size(G->p, NN_CONV_COL_FLOATS / (K->cb * G->kk), NN_CONV_PIXEL_UNIT);
        const size_t need = (size_t)(K->cb * G->kk * K->dpc);
        K->buf_floats = need > K->buf_floats ? need : K->buf_floats;
    }
    K->t_dx = G->n * G->groups * K->ncb;
}

static void plan_dw(conv_call *K)
{
    const geom *G = &K->G;
    if (G->depthwise) {
        K->t_dw = G->o;
        const size_t need = G->shift ? shift_buf_floats(G) : (size_t)(2 * G->kk);
        K->buf_floats = need > K->buf_floats ? need : K->buf_floats;
        return;
    }
    /* K rows per task: as many as the buffer holds for the whole plane, at
     * most a quarter of them (several tasks), at least 16 (GEMM width). */
    K->wpc = G->p;
    int64_t rb = NN_CONV_COL_FLOATS / G->p;
    if (G->groups < NN_CONV_DW_MIN_TASKS)
        rb = min64(rb, ceil_div(G->kg, NN_CONV_DW_MIN_TASKS / G->groups));
    rb = max64(rb, 16);
    K->rb = block_size(G->kg, rb, 16);
    K->nrb = ceil_div(G->kg, K->rb);
    /* Output channels split too when the K rows alone give too few tasks. */
    int64_t ob = G->og;
    if (G->groups * K->nrb < NN_CONV_DW_MIN_TASKS)
        ob = max64(8, ceil_div(G->og, ceil_div(NN_CONV_DW_MIN_TASKS, G->groups * K->nrb)));
    K->ob = block_size(G->og, ob, 8);
    K->nob = ceil_div(G->og, K->ob);
    if (!G->pointwise) {
        K->wpc = block_size(G->p, NN_CONV_COL_FLOATS / K->rb, NN_CONV_PIXEL_UNIT);
        const size_t need = (size_t)(K->rb * K->wpc);
        K->buf_floats = need > K->buf_floats ? need : K->buf_floats;
    }
    K->t_dw = G->groups * K->nob * K->nrb;
}

/* An evaluation-mode BatchNorm2d after the convolution (nn_conv2d_forward_bn). */
typedef struct bn_fold {
    const float *weight, *bias, *mean, *var;
    float eps;
} bn_fold;

/* The BatchNorm's per-channel affine map of the convolution's output
 * (conv bias b included): a[o] and s[o], as nn_batchnorm_forward_eval
 * computes its own. */
static void bn_coefficients(const bn_fold *f, const float *b, int64_t o, float *a, float *s)
{
    for (int64_t j = 0; j < o; j++) {
        const double sc = (f->weight ? (double)f->weight[j] : 1.0) /
                          sqrt((double)f->var[j] + (double)f->eps);
        a[j] = (float)sc;
        s[j] = (float)((f->bias ? (double)f->bias[j] : 0.0) +
                       ((b ? (double)b[j] : 0.0) - (double)f->mean[j]) * sc);
    }
}

/* y = act(y * a + s) per channel plane, for the paths that do not fold. */
static void apply_affine(const geom *G, const float *a, const float *s, int act, float *y)
{
    const int64_t planes = G->n * G->o, P = G->p;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * P >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t q = 0; q < planes; q++) {
        float *yq = y + q * P;
        const float aq = a[q % G->o], sq = s[q % G->o];
        for (int64_t j = 0; j < P; j++)
            yq[j] = nn_act_scalar(yq[j] * aq + sq, act);
    }
}

/* y = act(y + res), for the paths that do not add res as they write y:
 * the sum and activation of the unfused steps (an add, then the activation
 * layer), element by element. */
static void add_residual(const geom *G, const float *res, int act, float *y)
{
    const int64_t planes = G->n * G->o, P = G->p;
#pragma omp parallel for schedule(static) num_threads(nn_max_threads()) \
    if (planes * P >= NN_PARALLEL_MIN_ELEMENTS)
    for (int64_t q = 0; q < planes; q++) {
        float *yq = y + q * P;
        const float *rq = res + q * P;
        for (int64_t j = 0; j < P; j++)
            yq[j] = nn_act_scalar(yq[j] + rq[j], act);
    }
}

/* K planned for a forward pass (the direct, Winograd or GEMM path), the
 * arrays set; n == 0 leaves K->G.n == 0 and nothing planned. */
static int plan_forward_call(conv_call *K, const nn_conv2d_params *p, const float *x,
                             const float *w, const float *b, const float *res, float *y,
                             int act, float *pool_y, int32_t *pool_arg, int layout)
{
    memset(K, 0, sizeof *K);
    int status = geom_init(p, &K->G);
    if (status != NN_OK)
        return status;
    if (!nn_epilogue_supports(act))
        return NN_EINVAL;
    if (K->G.n == 0)
        return NN_OK;
    K->x = x, K->w = w, K->b = b, K->y = y, K->act = act, K->res = res;
    K->pool_y = pool_y, K->pool_arg = pool_arg, K->layout = layout;
    K->kt = nn_kernels();
    K->gemm = p->bf16 ? nn_gemm_bf16_unprofiled : nn_sgemm_unprofiled;
    K->nt = call_threads(forward_flops(&K->G));
    /* Winograd and the direct path are float32; both pool as they write
     * (the GEMM paths leave a pooling to nn_maxpool2d_forward) */
    if (layout) {
        /* Winograd and the direct path (ungrouped) read and write either
         * layout; no other path */
        const geom *G = &K->G;
        if (p->bf16 || pool_y || ((layout & NN_NCHW16C_X) && G->c % 16 != 0) ||
            ((layout & (NN_NCHW16C_Y | NN_NCHW16C_RES)) && G->o % 16 != 0))
            return NN_EINVAL;
        K->wino_fwd = plan_wino(K, 0);
        if (!K->wino_fwd && G->groups == 1)
            K->direct_fwd = plan_direct(K, 0);
        return K->wino_fwd || K->direct_fwd ? NN_OK : NN_EINVAL;
    }
    K->wino_fwd = !p->bf16 && plan_wino(K, 0);
    K->direct_fwd = !K->wino_fwd && !p->bf16 && plan_direct(K, 0);
    return NN_OK;
}

/* The BatchNorm's a and s (o16 floats apart in ab; b the conv's bias) for
 * K's forward pass, folded into the direct path's packed weights (unless
 * packed earlier) or into Winograd's as they are transformed. */
static void fold_bn(conv_call *K, const bn_fold *bn, const float *b, float *ab, int64_t o16)
{
    bn_coefficients(bn, b, K->G.o, ab, ab + o16);
    K->fold_scale = ab, K->fold_shift = ab + o16;
    if (K->direct_fwd && K->packed == NULL && !K->own_pack)
        nn_dconv_fold(&K->dfwd, ab, ab + o16);
    K->wfwd.scale = ab, K->wfwd.bias = ab + o16;
}

/* ---- weights packed once for many forward passes ----
 * nn_conv2d_pack_forward's header (int64 values): a magic number, the path
 * (1 direct, 2 Winograd), the kernel table, the layout (direct: groups,
 * taps, ldw; Winograd: ldu, ldk, nr), the flags (1: a bias, 2: a
 * BatchNorm folded), the payload's floats (after the header). */
#define PACK_MAGIC INT64_C(0x316b63617076636e) /* "ncvpack1" */
#define PACK_HEADER_FLOATS 16

/* The header's flags: 1 a bias, 2 a BatchNorm folded. */
static int pack_flags(const float *b, int bn) { return (b != NULL) | (bn != 0) << 1; }

static void pack_header(const conv_call *K, int flags, int64_t h[8])
{
    memset(h, 0, 8 * sizeof *h);
    h[0] = PACK_MAGIC;
    h[2] = (int64_t)(intptr_t)K->kt;
    h[6] = flags;
    if (K->direct_fwd) {
        const nn_dconv *D = &K->dfwd;
        h[1] = 1, h[3] = D->groups, h[4] = D->taps, h[5] = D->ldw;
        h[7] = (int64_t)nn_dconv_packed_floats(D);
    } else if (K->wino_fwd) {
        const nn_wino *W = &K->wfwd;
        h[1] = 2, h[3] = W->ldu, h[4] = W->ldk, h[5] = W->nr;
        h[7] = (int64_t)nn_wino_shared_floats(W);
    }
}

/* The payload of `packed` (floats of them) when its header is the one K's
 * plan would write, else NULL (the call packs its weights itself). */
static const float *packed_payload(const conv_call *K, int flags, const float *packed,
                                   int64_t floats)
{
    if (packed == NULL || floats < PACK_HEADER_FLOATS || !(K->direct_fwd || K->wino_fwd))
        return NULL;
    int64_t want[8], got[8];
    pack_header(K, flags, want);
    memcpy(got, packed, sizeof got);
    if (memcmp(want, got, sizeof want) != 0 ||
        want[7] > floats - PACK_HEADER_FLOATS)
        return NULL;
    return packed + PACK_HEADER_FLOATS;
}

/* pool_y != NULL (no bn, no res): MaxPool2d(2) of the activated output
 * into pool_y and its argmax into pool_arg (NULL: not kept), y written only
 * when neither the direct nor the Winograd path runs (then y is pooled by
 * nn_maxpool2d_forward). packed: see nn_conv2d_forward_packed. */
static int conv2d_forward(const nn_conv2d_params *p, const float *x, const float *w,
                          const float *b, const bn_fold *bn, const float *res, float *y,
                          int act, float *pool_y, int32_t *pool_arg, const float *packed,
                          int64_t packed_floats, int layout)
{
    conv_call K;
    int status = plan_forward_call(&K, p, x, w, b, res, y, act, pool_y, pool_arg, layout);
    const geom *G = &K.G;
    if (status != NN_OK || G->n == 0)
        return status;
    if (K.direct_fwd && pool_y)
        K.y = pool_y; /* the tasks write the pooled output */
    const int flags = pack_flags(b, bn != NULL);
    K.packed = packed_payload(&K, flags, packed, packed_floats);
    K.own_pack = own_pack_floats(&K);
    /* the paths other than the direct and Winograd ones apply the
     * BatchNorm's affine map and the residual in passes of their own, the
     * activation in the last */
    const int fused = K.direct_fwd || K.wino_fwd;
    const int act_affine = res ? NN_ACT_NONE : act;
    if (!fused) {
        if (bn) /* the bias and activation come after the BatchNorm's scale */
            K.b = NULL, K.act = NN_ACT_NONE;
        if (res)
            K.act = NN_ACT_NONE;
        plan_forward(&K);
    }
    float *ab = NULL; /* the BatchNorm's a and s: o floats each */
    const int64_t o16 = round_up(G->o, 16);
    if ((status = pack_direct(&K, bn ? (size_t)(2 * o16) : 0, &ab)) != NN_OK)
        return status;
    if (K.packed && K.direct_fwd && flags)
        K.dfwd.bias = K.packed + K.dfwd.groups * K.dfwd.taps * K.dfwd.ldw;
    /* weights packed ahead have the BatchNorm folded in already (the
     * coefficients' square roots and divisions cost ~0.2 us a call) */
    if (bn && K.packed == NULL)
        fold_bn(&K, bn, b, ab, o16);
    status = run_tasks(&K);
    if (status == NN_OK && bn && !fused)
        apply_affine(G, ab, ab + o16, act_affine, y);
    if (status == NN_OK && res && !fused)
        add_residual(G, res, act, y);
    if (status == NN_OK && pool_y && !fused) {
        const nn_pool2d_params pp = {.h = G->oh, .w = G->ow, .kh = 2, .kw = 2, .sh = 2,
                                     .sw = 2, .oh = G->oh / 2, .ow = G->ow / 2};
        nn_maxpool2d_forward(G->n * G->o, &pp, y, pool_y, pool_arg);
    }
    return status;
}

int nn_conv2d_pack_forward(const nn_conv2d_params *p, const float *w, const float *b,
                           const float *bn_weight, const float *bn_bias, const float *mean,
                           const float *var, float eps, float *packed, int64_t capacity,
                           int64_t *needed)
{
    *needed = 0;
    nn_conv2d_params one = *p;
    one.n = 1; /* the packing does not depend on the batch */
    conv_call K;
    int status = plan_forward_call(&K, &one, NULL, w, b, NULL, NULL, NN_ACT_NONE, NULL, NULL,
                                   0);
    if (status != NN_OK || !(K.direct_fwd || K.wino_fwd))
        return status; /* the GEMM paths pack nothing ahead */
    const bn_fold bn = {bn_weight, bn_bias, mean, var, eps};
    const int flags = pack_flags(b, mean != NULL);
    int64_t h[8];
    pack_header(&K, flags, h);
    *needed = PACK_HEADER_FLOATS + h[7];
    if (packed == NULL || capacity < *needed)
        return NN_OK;
    float *ab = NULL;
    const int64_t o16 = round_up(K.G.o, 16);
    if ((status = pack_direct(&K, mean ? (size_t)(2 * o16) : 0, &ab)) != NN_OK)
        return status;
    if (mean)
        fold_bn(&K, &bn, b, ab, o16);
    prologue(&K, 0, 1); /* Winograd's transform */
    const float *payload = K.direct_fwd ? K.dfwd.wpk : K.wfwd.u;
    memset(packed, 0, PACK_HEADER_FLOATS * sizeof(float));
    memcpy(packed, h, sizeof h);
    memcpy(packed + PACK_HEADER_FLOATS, payload, (size_t)h[7] * sizeof(float));
    if (K.direct_fwd && !flags) /* the bias row: unused, made zero */
        memset(packed + PACK_HEADER_FLOATS + K.dfwd.groups * K.dfwd.taps * K.dfwd.ldw, 0,
               (size_t)(K.dfwd.groups * K.dfwd.ldw) * sizeof(float));
    return NN_OK;
}

static int conv2d_backward(const nn_conv2d_params *p, const float *x, const float *w,
                           const float *dy, float *dx, float *dwt, float *db)
{
    conv_call K;
    memset(&K, 0, sizeof K);
    int status = geom_init(p, &K.G);
    if (status != NN_OK)
        return status;
    const geom *G = &K.G;
    if (G->n == 0) {
        if (dwt)
            memset(dwt, 0, (size_t)(G->o * G->kg) * sizeof(float));
        if (db)
            memset(db, 0, (size_t)G->o * sizeof(float));
        return NN_OK;
    }
    K.x = x, K.w = w, K.dy = dy, K.dx = dx, K.dwt = dwt, K.db = db;
    K.kt = nn_kernels();
    K.gemm = p->bf16 ? nn_gemm_bf16_unprofiled : nn_sgemm_unprofiled;
    const double db_adds = db ? (double)G->n * (double)G->o * (double)G->p : 0.0;
    K.nt = call_threads(forward_flops(G) * ((dx != NULL) + (dwt != NULL)) + db_adds);
    if (dx && !(K.wino_dx = !p->bf16 && plan_wino(&K, 1)) &&
        !(K.direct_dx = !p->bf16 && plan_direct(&K, 1)))
        plan_dx(&K);
    /* the Winograd and the direct weight-gradient tasks also sum db (and
     * run for db alone, which then gets the same bits) */
    K.wino_dw = (dwt || db) && !p->bf16 && plan_wino_dw(&K);
    K.direct_dw = !K.wino_dw && (dwt || db) && !p->bf16 && plan_direct_dw(&K);
    if (dwt && !K.direct_dw && !K.wino_dw)
        plan_dw(&K);
    if ((status = pack_direct(&K, 0, NULL)) != NN_OK)
        return status;
    if (db && !K.direct_dw && !K.wino_dw) { /* else the weight-gradient tasks sum it */
        K.bb = block_size(G->o, max64(1, 65536 / max64(G->n * G->p, 1)), 1);
        K.t_db = ceil_div(G->o, K.bb);
    }
    status = run_tasks(&K);
    if (status == NN_OK && K.direct_dw)
        nn_dconv_dw_reduce(&K.ddw, dwt, db);
    if (status == NN_OK && K.wino_dw)
        nn_wino_dw_reduce(&K.wdw, dwt, db);
    return status;
}

/* forward_flops of a call, 0 for a bad shape: the direct convolution's
 * count whichever algorithm runs (Winograd does fewer multiplications), so
 * the profiler's GFLOP/s of a conv stay comparable across algorithms
 * ("effective" GFLOP/s). */
static double conv_flops(const nn_conv2d_params *p)
{
    geom G;
    if (geom_init(p, &G) != NN_OK)
        return 0.0;
    return forward_flops(&G);
}

static int conv2d_forward_profiled(const nn_conv2d_params *p, const float *x, const float *w,
                                   const float *b, const bn_fold *bn, const float *res,
                                   float *y, int act, float *pool_y, int32_t *pool_arg,
                                   const float *packed, int64_t packed_floats, int layout)
{
    if (!nn_profiling())
        return conv2d_forward(p, x, w, b, bn, res, y, act, pool_y, pool_arg, packed,
                              packed_floats, layout);
    const int64_t t0 = nn_profile_now_ns();
    const int status = conv2d_forward(p, x, w, b, bn, res, y, act, pool_y, pool_arg, packed,
                                      packed_floats, layout);
    if (status == NN_OK)
        nn_profile_record(NN_K_conv2d_forward, t0, conv_flops(p), p->n, p->o, p->c);
    return status;
}

/* Every public forward pass below goes through nn_conv2d_forward_packed:
 * one place checks the pooling's arguments and builds the BatchNorm fold. */
int nn_conv2d_forward(const nn_conv2d_params *p, const float *x, const float *w,
                      const float *b, float *y, int act)
{
    return nn_conv2d_forward_packed(p, NULL, 0, x, w, b, NULL, NULL, NULL, NULL, 0.0f, NULL, y,
                                    act, NULL, NULL);
}

int nn_conv2d_forward_bn(const nn_conv2d_params *p, const float *x, const float *w,
                         const float *b, const float *bn_weight, const float *bn_bias,
                         const float *mean, const float *var, float eps, float *y, int act)
{
    return nn_conv2d_forward_packed(p, NULL, 0, x, w, b, bn_weight, bn_bias, mean, var, eps,
                                    NULL, y, act, NULL, NULL);
}

int nn_conv2d_forward_res(const nn_conv2d_params *p, const float *x, const float *w,
                          const float *b, const float *bn_weight, const float *bn_bias,
                          const float *mean, const float *var, float eps, const float *res,
                          float *y, int act)
{
    return nn_conv2d_forward_packed(p, NULL, 0, x, w, b, bn_weight, bn_bias, mean, var, eps,
                                    res, y, act, NULL, NULL);
}

int nn_conv2d_forward_pool(const nn_conv2d_params *p, const float *x, const float *w,
                           const float *b, float *z, float *y, int32_t *argmax, int act)
{
    return nn_conv2d_forward_packed(p, NULL, 0, x, w, b, NULL, NULL, NULL, NULL, 0.0f, NULL, z,
                                    act, y, argmax);
}

int nn_conv2d_forward_packed(const nn_conv2d_params *p, const float *packed,
                             int64_t packed_floats, const float *x, const float *w,
                             const float *b, const float *bn_weight, const float *bn_bias,
                             const float *mean, const float *var, float eps, const float *res,
                             float *y, int act, float *pool_y, int32_t *pool_arg)
{
    if (pool_y) {
        int64_t oh, ow;
        const int status = nn_conv2d_output_size(p, &oh, &ow);
        if (status != NN_OK)
            return status;
        if (oh < 2 || ow < 2 || mean || res)
            return NN_EINVAL;
    }
    const bn_fold bn = {bn_weight, bn_bias, mean, var, eps};
    return conv2d_forward_profiled(p, x, w, b, mean ? &bn : NULL, res, y, act, pool_y,
                                   pool_arg, packed, packed_floats, 0);
}

#define NN_NCHW16C_ALL (NN_NCHW16C_X | NN_NCHW16C_Y | NN_NCHW16C_RES)

int nn_conv2d_nchw16c_supported(const nn_conv2d_params *p, int layout)
{
    conv_call K;
    return p->n > 0 && (layout & ~NN_NCHW16C_ALL) == 0 && layout != 0 &&
           plan_forward_call(&K, p, NULL, NULL, NULL, NULL, NULL, NN_ACT_NONE, NULL, NULL,
                             layout) == NN_OK;
}

int nn_conv2d_forward_nchw16c(const nn_conv2d_params *p, int layout, const float *packed,
                              int64_t packed_floats, const float *x, const float *w,
                              const float *b, const float *bn_weight, const float *bn_bias,
                              const float *mean, const float *var, float eps, const float *res,
                              float *y, int act)
{
    if ((layout & ~NN_NCHW16C_ALL) != 0 || layout == 0)
        return NN_EINVAL;
    const bn_fold bn = {bn_weight, bn_bias, mean, var, eps};
    return conv2d_forward_profiled(p, x, w, b, mean ? &bn : NULL, res, y, act, NULL, NULL,
                                   packed, packed_floats, layout);
}

int nn_conv2d_backward(const nn_conv2d_params *p, const float *x, const float *w,
                       const float *dy, float *dx, float *dwt, float *db)
{
    if (!nn_profiling())
        return conv2d_backward(p, x, w, dy, dx, dwt, db);
    const int64_t t0 = nn_profile_now_ns();
    const int status = conv2d_backward(p, x, w, dy, dx, dwt, db);
    if (status == NN_OK)
        nn_profile_record(NN_K_conv2d_backward, t0,
                          conv_flops(p) * ((dx != NULL) + (dwt != NULL)), p->n, p->o, p->c);
    return status;
}
