/* Internal: the per-ISA kernel table.
 *
 * Sources listed in NN_ISA_SOURCES (CMakeLists.txt) are compiled once per ISA
 * with that ISA's flags and -DNN_ISA=<name>. Each kernel in them is defined as
 * NN_ISA_FN(name), which becomes nn_<name>_<isa>. cpu.c gathers the three sets
 * into tables and defines the nn_<name>() trampolines of the public kernels,
 * so callers never see an ISA suffix.
 *
 * To add a kernel: add one X(name, parameter list, argument list) line to an
 * NN_KERNELS_* list in nncore.h (which declares nn_<name> from it), or to
 * NN_GEMM_KERNELS below if it is internal, then define NN_ISA_FN(name) in an
 * NN_ISA_SOURCES file and declare it in nncore/_core.pxd if Python calls it.
 * Kernels return void: they trust their arguments and cannot fail. */
#ifndef NN_DISPATCH_H
#define NN_DISPATCH_H

#include <stdint.h>
#include "nncore.h"

/* One call of the GEMM kernel (gemm_kernel_*.c), set up by the driver (gemm.c):
 *   C[0:m, 0:n] = epilogue(alpha * A B + beta * C),  m <= mr, n any, over k.
 * A(i, p) = a[i*rsa + p*csa]: packed panels have rsa = 1, csa = mr; in place,
 * rsa = lda, csa = 1 (or the reverse for a transposed A).
 * B(p, j) = b[(j / nr) * sb + p * rsb + j % nr]: B is read in strips of nr
 * columns; packed strips have rsb = nr, sb = k * nr; in place, rsb = ldb, sb = nr.
 * beta == 0: C is not read. bias: NULL or n values added per column, then
 * act (NN_ACT_*). Edges are masked: nothing outside the m x n block of C, the
 * m rows of A or the n columns of B is read or written. */
typedef struct nn_gemm_args {
    int64_t m, n, k;
    const float *a;
    int64_t rsa, csa;
    const float *b;
    int64_t rsb, sb;
    float *c;
    int64_t ldc;
    float alpha, beta;
    const float *bias;
    int act;
} nn_gemm_args;

/* The GEMM epilogue's activation on one value, for the scalar and edge paths
 * of the driver and the kernels (act_vec in gemm_kernel_simd.h is its SIMD
 * twin); a case for every activation nn_epilogue_supports (nncore.h). */
static inline float nn_act_scalar(float x, int act)
{
    switch (act) {
    case NN_ACT_RELU:
        return x < 0.0f ? 0.0f : x;
    default:
        return x;
    }
}

/* What one ISA's micro-kernel is written for (gemm_kernel_*.c); the block
 * sizes for a machine are derived from it in gemm_blocking.c. */
typedef struct nn_gemm_tile {
    int mr, nr;       /* register tile: mr rows x nr columns of C */
    int64_t kc_max;   /* the deepest block it is run with */
} nn_gemm_tile;

/* Matrix-vector products for m == 1, with the same epilogue:
 *   gemv_n: y[j] = epi(alpha * sum_p x[p*incx] * b[p*ldb + j] + beta * y[j]), j < n
 *   gemv_t: y[j] = epi(alpha * sum_p x[p] * b[j*ldb + p] + beta * y[j]),        j < n
 * work: n floats of scratch for gemv_n (partial sums), 64-byte aligned. */
typedef struct nn_gemv_args {
    int64_t n, k;
    const float *x;
    int64_t incx;
    const float *b;
    int64_t ldb;
    float *y;
    float alpha, beta;
    const float *bias;
    int act;
    float *work;
} nn_gemv_args;

/* Every dispatched kernel: the public ones (nncore.h) and the GEMM's. */
#define NN_GEMM_KERNELS(X) \
    X(gemm_tile, (nn_gemm_tile *tile), (tile)) \
    X(gemm_block, (const nn_gemm_args *g), (g)) \
    X(gemv_n, (const nn_gemv_args *g), (g)) \
    X(gemv_t, (const nn_gemv_args *g), (g))
/* The direct convolution's tap loops (conv_kernel.c, called by conv.c):
 * stride-1 taps as constant shifts of flat, padded planes. The forward and
 * backward loops run whole blocks of NN_CONV_TAPS_SLACK elements: their
 * buffers hold that many floats past the end. */
#define NN_CONV_TAPS_SLACK 32
/* One register tile of the direct convolution (conv_direct_kernel.c, laid
 * out by conv_direct.c): r pixels of one output row times v blocks of 16
 * output channels,
 *   y[i*ldy + j] = act(bias[j] + sum over p < k of x[koff[p] + i] * w[p*ldw + j])
 * for i < r, j < 16 v (bias NULL: none). With beta, the sum starts from
 * y[i*ldy + j] instead of 0 (and bias must be NULL, act NN_ACT_NONE). r and
 * v within conv_direct_limits: v <= vmax, r <= rmax[v - 1]. rh = 3 (ISAs
 * with v3max > 0, v <= v3max, r = 3): three rows of three pixels, pixel
 * (a, i) at x[koff[p] + a*ldx2 + i], output row 3a + i (3x3 taps).
 * nseg > 0: the k taps are instead nseg segments in order, seg[s].k taps
 * each, whose sums leave out the first pixel (skip bit 1) and/or the last
 * one (bit 2), or with rh = 3 the first and/or last row of pixels: taps
 * that would read the zero padding there.
 * conv_transpose: dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols;
 * conv_transpose_res: dst[c*ldd + r] = act(src[r*lds + c] + res[c*ldd + r])
 * (res may be dst itself: each element is read before it is written).
 * conv_store_nchw16c: nx pixels of a row buffer (pixel x's o channels at
 * src + x lds, o a multiple of 16) into a row of an nChw16c image (see
 * layout.c): dst[b ldb + 16 x + l] = src[x lds + 16 b + l], with res:
 * act(src + res[b ldb + 16 x + l]) (as conv_transpose_res);
 * conv_add_nchw16c: the sum alone, in place: src[x lds + 16 b + l] =
 * act(src[x lds + 16 b + l] + res[b ldb + 16 x + l]).
 * conv_split_rows: rows of the direct convolution's padded, phase-split
 * input band (conv_direct.c): for r < rows, b < s, q < wq,
 *   dst[r*ldd + b*ldp + q] = src[r*lds + q*s + b] when lo <= q*s + b < hi, else 0
 * (nothing outside [lo, hi) of a source row is read). */
typedef struct nn_conv_seg {
    int64_t k;
    int skip;
} nn_conv_seg;
typedef struct nn_conv_tile {
    int64_t k;
    const int64_t *koff;
    const float *x;
    const float *w;
    int64_t ldw;
    float *y;
    int64_t ldy;
    const float *bias;
    int64_t ldx2;
    int r, v, act, beta, rh;
    int nseg;
    const nn_conv_seg *seg;
} nn_conv_tile;
#define NN_CONV_KERNELS(X) \
    X(conv_direct_tile, (const nn_conv_tile *t), (t)) \
    X(conv_direct_limits, (int *vmax, int *rmax, int *v3max), (vmax, rmax, v3max)) \
    X(conv_transpose, (int64_t rows, int64_t cols, const float *src, int64_t lds, float *dst, \
                       int64_t ldd), (rows, cols, src, lds, dst, ldd)) \
    X(conv_transpose_res, (int64_t rows, int64_t cols, const float *src, int64_t lds, \
                           float *dst, int64_t ldd, const float *res, int act), \
      (rows, cols, src, lds, dst, ldd, res, act)) \
    X(conv_store_nchw16c, (int64_t nx, int64_t o, const float *src, int64_t lds, float *dst, \
                           int64_t ldb, const float *res, int act), \
      (nx, o, src, lds, dst, ldb, res, act)) \
    X(conv_add_nchw16c, (int64_t nx, int64_t o, float *src, int64_t lds, const float *res, \
                         int64_t ldb, int act), (nx, o, src, lds, res, ldb, act)) \
    X(conv_split_rows, (int64_t rows, int64_t s, int64_t wq, const float *src, int64_t lds, \
                        int64_t lo, int64_t hi, float *dst, int64_t ldd, int64_t ldp), \
      (rows, s, wq, src, lds, lo, hi, dst, ldd, ldp)) \
    X(conv_taps_forward, (int64_t len, int64_t taps, const int64_t *off, const float *w, \
                          const float *xp, float bias, int act, float *out), \
      (len, taps, off, w, xp, bias, act, out)) \
    X(conv_taps_backward, (int64_t len, int64_t taps, const int64_t *off, const float *w, \
                           const float *dyz, int64_t pad, float *dxp), \
      (len, taps, off, w, dyz, pad, dxp)) \
    X(conv_taps_weight, (int64_t len, int64_t taps, const int64_t *off, const float *dy, \
                         const float *xp, double *acc), (len, taps, off, dy, xp, acc)) \
    X(maxpool2x2_lanes, (int64_t pw, int64_t lanes, const float *r0, const float *r1, \
                         int32_t at0, int32_t w, float *y, int32_t *arg), \
      (pw, lanes, r0, r1, at0, w, y, arg))
/* Winograd F(2x2, 3x3)'s transform loops (winograd_kernel.c, laid out by
 * winograd.c; the transforms are in winograd.h):
 * wino_input: the input transform of tile rows [r0, r0 + rows) (tw tiles
 * each) of one input plane xc (h x w, padding ph, pw), V[xi][f] at
 * v + xi ldv + f, f = r tw + q (the sums of nn_wino_input_tiles); scratch:
 * 16 rows tw floats;
 * wino_output: nn_wino_output_tile for a row of tw tiles (tile q's
 * positions at m + q ldt, ldm between positions), its two output rows
 * pixel-major into y0 and y1: pixel x's k channels at y0 + x ldk;
 * wino_weights: nn_wino_weight_lanes for kn <= 16 output channels l and c
 * input channels ci: kernel (l, ci) at w + l ldk + ci ldc (flip: rotated
 * by 180 degrees), times scale[l] (scale NULL: 1), into u + ci ldcu (ldu
 * between positions); the lanes past kn are written as zeros;
 * wino_input_blocked: wino_input's transform from an image in blocks of 16
 *   channels (nChw16c: channel 16 b + l of pixel p at xb[(b h w + p) 16 + l],
 *   c a multiple of 16), tile f's c channels at v + xi ldv + f c (its
 *   channels a GEMM row). */
#define NN_WINO_KERNELS(X) \
    X(wino_input, (const float *xc, int64_t h, int64_t w, int64_t ph, int64_t pw, int64_t r0, \
                   int64_t rows, int64_t tw, float *v, int64_t ldv, float *scratch), \
      (xc, h, w, ph, pw, r0, rows, tw, v, ldv, scratch)) \
    X(wino_output, (int64_t tw, int64_t k, const float *m, int64_t ldm, int64_t ldt, \
                    const float *bias, int act, float *y0, float *y1, int64_t ldk), \
      (tw, k, m, ldm, ldt, bias, act, y0, y1, ldk)) \
    X(wino_weights, (int64_t kn, int64_t c, const float *w, int64_t ldk, int64_t ldc, int flip, \
                     const float *scale, float *u, int64_t ldu, int64_t ldcu), \
      (kn, c, w, ldk, ldc, flip, scale, u, ldu, ldcu)) \
    X(wino_input_blocked, (const float *xb, int64_t c, int64_t h, int64_t w, int64_t ph, \
                           int64_t pw, int64_t r0, int64_t rows, int64_t tw, float *v, \
                           int64_t ldv), (xb, c, h, w, ph, pw, r0, rows, tw, v, ldv))
/* The Winograd F(2x2, 3x3) weight gradient's transforms (winograd_dw_kernel.c,
 * laid out by winograd_dw.c), one row of tw tiles each, vectorised over
 * channels (c and k multiples of 16), xi = 4a + b the position in the 4x4:
 * wino_dw_input: V = B^T d B of the 4x4 input tile j whose pixel (a, b)
 *   holds c channels at x[a*ldr + (2j + b)*c]: v[xi*ldxi + j*c + ch] = V[ch][xi]
 * wino_dw_grad: W = A g A^T of the 2x2 output-gradient tile j whose pixels
 *   (0, b) hold k channels at r0[(2j + b)*k] and (1, b) at r1[(2j + b)*k]
 *   (r1 NULL, or a column 2j + b >= ow: the k zeros at zero):
 *   w[xi*ldxi + j*k + kk] = W[kk][xi]
 * wino_dw_output: the 3x3 G^T U G of n 4x4 U at u[xi*ldxi + i], i < n (a
 *   multiple of 16), its taps at part[tap*ldtap + i] */
#define NN_WINO_DW_KERNELS(X) \
    X(wino_dw_input, (int64_t c, int64_t tw, const float *x, int64_t ldr, float *v, \
                      int64_t ldxi), (c, tw, x, ldr, v, ldxi)) \
    X(wino_dw_grad, (int64_t k, int64_t tw, int64_t ow, const float *r0, const float *r1, \
                     const float *zero, float *w, int64_t ldxi), \
      (k, tw, ow, r0, r1, zero, w, ldxi)) \
    X(wino_dw_output, (int64_t n, const float *u, int64_t ldxi, float *part, int64_t ldtap), \
      (n, u, ldxi, part, ldtap))
#define NN_ISA_KERNELS(X) \
    NN_PUBLIC_KERNELS(X) NN_GEMM_KERNELS(X) NN_CONV_KERNELS(X) NN_WINO_KERNELS(X) \
    NN_WINO_DW_KERNELS(X)

#define NN_CAT_(a, b) a##b
#define NN_CAT(a, b) NN_CAT_(a, b)
#ifdef NN_ISA
#define NN_ISA_FN(name) NN_CAT(NN_CAT(nn_, name), NN_CAT(_, NN_ISA))
#endif

#define NN_TABLE_FIELD(name, params, args) void (*name) params;
typedef struct nn_kernel_table {
    NN_ISA_KERNELS(NN_TABLE_FIELD)
} nn_kernel_table;
#undef NN_TABLE_FIELD

/* The table of the active ISA. */
const nn_kernel_table *nn_kernels(void);

/* The number of threads a parallel region may use (cpu.c): OpenMP's count
 * for the calling thread, capped by nn_set_num_threads. Every parallel
 * region names it in a num_threads clause, because OpenMP's own count is
 * per thread: set from one Python thread, it would not bind the others. */
int nn_max_threads(void);

/* Elementwise kernels go parallel only above this many elements: below it
 * an OpenMP fork/join (a few microseconds) costs more than it saves. */
#define NN_PARALLEL_MIN_ELEMENTS 65536

/* Elementwise kernels: run `stmt` on [lo, hi) ranges covering [0, n):
 *
 *     NN_FOR_RANGES(n, lo, hi, my_range(lo, hi, x, y));
 *
 * Below NN_PARALLEL_MIN_ELEMENTS it runs once on [0, n) without touching
 * OpenMP (even a parallel region with a false `if` clause costs ~0.3 us);
 * above, on NN_CHUNK-sized ranges spread over the threads. The range code is
 * a plain loop the compiler vectorises (`restrict` pointers avoid alias
 * checks); gcc 12 left some branchy `omp parallel for simd` loops scalar.
 * Each element is computed the same way whichever thread runs it. */
#define NN_CHUNK 16384
#define NN_PRAGMA(x) _Pragma(#x)
#define NN_FOR_RANGES(n, lo, hi, ...)                                                \
    do {                                                                             \
        const int64_t nn_n_ = (n);                                                   \
        if (nn_n_ < NN_PARALLEL_MIN_ELEMENTS) {                                      \
            const int64_t lo = 0, hi = nn_n_;                                        \
            __VA_ARGS__;                                                             \
        } else {                                                                     \
            NN_PRAGMA(omp parallel for schedule(static) num_threads(nn_max_threads()))  \
            for (int64_t nn_c_ = 0; nn_c_ < (nn_n_ + NN_CHUNK - 1) / NN_CHUNK; nn_c_++) { \
                const int64_t lo = nn_c_ * NN_CHUNK;                                 \
                const int64_t hi = nn_n_ - lo < NN_CHUNK ? nn_n_ : lo + NN_CHUNK;    \
                __VA_ARGS__;                                                         \
            }                                                                        \
        }                                                                            \
    } while (0)

#endif
