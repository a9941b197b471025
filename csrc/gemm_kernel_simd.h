/* The GEMM and GEMV kernels of the SIMD ISAs, written once in terms of
 * vector operations (vf, v_load, v_fma, ...) that gemm_kernel_avx512.c and
 * gemm_kernel_avx2.c map to their intrinsics before including this file.
 * Each ISA file defines MR (rows of the tile), NV and VL (vectors per strip
 * and floats per vector), GV (the widest gemv_n chunk, in vectors), NN_INLINE
 * and the v_* operations.
 *
 * gemm_block computes an m x n block of C (m <= MR rows) over k: it walks the
 * n columns in strips of NR = NV * VL (the JR loop) and runs the register
 * micro-kernel on each strip. The loops around it and the threads live in
 * gemm.c, the packing in gemm_pack.c, the block sizes in gemm_blocking.c.
 * One micro-kernel per ISA serves every transpose case: the driver describes
 * A and B by strides (packed or in place).
 *
 * Edges: the last strip uses masked loads and stores, rows beyond m are never
 * touched, so no kernel reads or writes outside its block. Each C element is
 * computed by the same sequence of operations whichever tile or thread it
 * falls in (acc = fma(a, b, acc) for p = 0..k-1, then the epilogue), which is
 * what makes results independent of the thread count. */
#ifndef NN_GEMM_KERNEL_SIMD_H
#define NN_GEMM_KERNEL_SIMD_H

/* Unroll the short loops over rows and vectors completely: an accumulator
 * array indexed by a loop variable would be kept in memory, not registers. */
#define NN_UNROLL _Pragma("GCC unroll 16")

#define NR (NV * VL)
#define PF_ROWS 8
/* Beyond this depth the C tile's load and store are amortised already; a
 * deeper block only makes the A micro-panel crowd L1. */
#define KC_MAX 512

/* The activation applied in registers. To fuse a new one, add a case here
 * (and in nn_act_scalar in dispatch.h) and list it in nn_epilogue_supports
 * (nncore.h). */
NN_INLINE vf act_vec(vf x, int act)
{
    switch (act) {
    case NN_ACT_RELU:
        return v_max(v_zero(), x); /* max(0, NaN) is NaN: NaN propagates */
    default:
        return x;
    }
}

/* alpha * acc + beta * C + bias, then the activation; masked lanes of C and
 * bias are not read. */
NN_INLINE vf epilogue(vf acc, vf valpha, float beta, vf vbeta, const float *cp,
                      const float *bias, int act, int masked, vm mask)
{
    vf x = v_mul(acc, valpha);
    if (beta != 0.0f)
        x = v_fma(masked ? v_loadm(cp, mask) : v_load(cp), vbeta, x);
    if (bias)
        x = v_add(x, masked ? v_loadm(bias, mask) : v_load(bias));
    return act_vec(x, act);
}

/* The micro-kernel: R rows x V vectors of C, the last vector masked to
 * `ncols` valid columns of the strip when `masked`. R, V, masked are
 * constants at every call site, so the accumulators live in registers. */
NN_INLINE void tile(const int R, const int V, const int masked, const nn_gemm_args *g,
                    const float *b, float *c, const float *bias, int64_t ncols)
{
    vf acc[MR][NV];
    const vm mask = masked ? v_mask((int)(ncols - (V - 1) * VL)) : v_full();
    NN_UNROLL
    for (int i = 0; i < R; i++)
        NN_UNROLL
        for (int v = 0; v < V; v++)
            acc[i][v] = v_zero();
    const float *ap[MR];
    NN_UNROLL
    for (int i = 0; i < R; i++)
        ap[i] = g->a + i * g->rsa;
    const int64_t csa = g->csa, rsb = g->rsb, k = g->k;
    int64_t off = 0;
    for (int64_t p = 0; p < k; p++) {
        vf bv[NV];
        /* B streams from L2: fetch the row PF_ROWS ahead into L1. */
        if (!masked && p + PF_ROWS < k)
            for (int v = 0; v < V * VL; v += 16)
                _mm_prefetch((const char *)(b + PF_ROWS * rsb + v), _MM_HINT_T0);
        NN_UNROLL
        for (int v = 0; v < V; v++)
            bv[v] = (masked && v == V - 1) ? v_loadm(b + v * VL, mask) : v_load(b + v * VL);
        NN_UNROLL
        for (int i = 0; i < R; i++) {
            const vf av = v_set1(ap[i][off]);
            NN_UNROLL
            for (int v = 0; v < V; v++)
                acc[i][v] = v_fma(av, bv[v], acc[i][v]);
        }
        off += csa;
        b += rsb;
    }
    const vf valpha = v_set1(g->alpha), vbeta = v_set1(g->beta);
    NN_UNROLL
    for (int i = 0; i < R; i++) {
        float *ci = c + i * g->ldc;
        NN_UNROLL
        for (int v = 0; v < V; v++) {
            const int mv = masked && v == V - 1;
            vf x = epilogue(acc[i][v], valpha, g->beta, vbeta, ci + v * VL,
                            bias ? bias + v * VL : NULL, g->act, mv, mask);
            if (mv)
                v_storem(ci + v * VL, mask, x);
            else
                v_store(ci + v * VL, x);
        }
    }
}

#if NV == 4
#define NN_TAIL_CASES(R, ...) \
    case 3: tile(R, 3, 1, __VA_ARGS__); break; \
    case 4: tile(R, 4, 1, __VA_ARGS__); break;
#else
#define NN_TAIL_CASES(R, ...)
#endif

/* R rows of C across all n columns: full strips, then one masked strip. */
#define NN_ROWS(R) \
    static void rows_##R(const nn_gemm_args *g) \
    { \
        const float *b = g->b; \
        int64_t j = 0; \
        for (; j + NR <= g->n; j += NR, b += g->sb) \
            tile(R, NV, 0, g, b, g->c + j, g->bias ? g->bias + j : NULL, NR); \
        const int64_t rem = g->n - j; \
        if (rem <= 0) \
            return; \
        const float *bias = g->bias ? g->bias + j : NULL; \
        switch ((rem + VL - 1) / VL) { \
        case 1: tile(R, 1, 1, g, b, g->c + j, bias, rem); break; \
        case 2: tile(R, 2, 1, g, b, g->c + j, bias, rem); break; \
        NN_TAIL_CASES(R, g, b, g->c + j, bias, rem) \
        } \
    }
NN_ROWS(1)
NN_ROWS(2)
NN_ROWS(3)
NN_ROWS(4)
NN_ROWS(5)
NN_ROWS(6)

void NN_ISA_FN(gemm_block)(const nn_gemm_args *g)
{
    switch (g->m) {
    case 1: rows_1(g); break;
    case 2: rows_2(g); break;
    case 3: rows_3(g); break;
    case 4: rows_4(g); break;
    case 5: rows_5(g); break;
    case 6: rows_6(g); break;
    default: break;
    }
}

/* gemv_n streams B in blocks of GP rows across the whole width, so each row
 * is read contiguously (whole pages, which the hardware prefetchers follow,
 * unlike a walk down a column block). Partial sums of y wait in g->work
 * between row blocks; each y[j] still sums p = 0..k-1 in order. Chunks are
 * up to GV vectors wide: that many independent FMA chains keep the loads,
 * not the FMA latency, the limit. Rows that start off a vector boundary make
 * every load straddle two cache lines; only then do software prefetches into
 * L1 pay (on aligned rows they slow the stream down). */
#define GP 16
#define GV_PF_ROWS 4
NN_INLINE void gemv_n_chunk(const int V, const int masked, const int prefetch,
                            const nn_gemv_args *g, int64_t p0, int64_t p1, int64_t j,
                            int64_t ncols)
{
    const vm mask = masked ? v_mask((int)(ncols - (V - 1) * VL)) : v_full();
    const int first = p0 == 0, last = p1 == g->k;
    float *w = g->work + j;
    vf acc[GV];
    NN_UNROLL
    for (int v = 0; v < V; v++)
        acc[v] = first ? v_zero() : (masked && v == V - 1) ? v_loadm(w + v * VL, mask)
                                                            : v_load(w + v * VL);
    const float *x = g->x, *b = g->b + p0 * g->ldb + j;
    for (int64_t p = p0; p < p1; p++, b += g->ldb) {
        const vf xv = v_set1(x[p * g->incx]);
        if (prefetch && !masked && p + GV_PF_ROWS < p1) /* into L1 a few rows ahead */
            for (int v = 0; v < V * VL; v += 16)
                _mm_prefetch((const char *)(b + GV_PF_ROWS * g->ldb + v), _MM_HINT_T0);
        NN_UNROLL
        for (int v = 0; v < V; v++)
            acc[v] = v_fma(xv, (masked && v == V - 1) ? v_loadm(b + v * VL, mask)
                                                      : v_load(b + v * VL), acc[v]);
    }
    const vf valpha = v_set1(g->alpha), vbeta = v_set1(g->beta);
    NN_UNROLL
    for (int v = 0; v < V; v++) {
        const int mv = masked && v == V - 1;
        float *dst = last ? g->y + j + v * VL : w + v * VL;
        vf r = acc[v];
        if (last)
            r = epilogue(r, valpha, g->beta, vbeta, dst, g->bias ? g->bias + j + v * VL : NULL,
                         g->act, mv, mask);
        if (mv)
            v_storem(dst, mask, r);
        else
            v_store(dst, r);
    }
}

NN_INLINE void gemv_n_rows(const int prefetch, const nn_gemv_args *g)
{
    for (int64_t p0 = 0; p0 < g->k; p0 += GP) {
        const int64_t p1 = p0 + GP < g->k ? p0 + GP : g->k;
        int64_t j = 0;
        for (; j + GV * VL <= g->n; j += GV * VL)
            gemv_n_chunk(GV, 0, prefetch, g, p0, p1, j, GV * VL);
        for (; j + 8 * VL <= g->n; j += 8 * VL)
            gemv_n_chunk(8, 0, prefetch, g, p0, p1, j, 8 * VL);
        for (; j + 4 * VL <= g->n; j += 4 * VL)
            gemv_n_chunk(4, 0, prefetch, g, p0, p1, j, 4 * VL);
        const int64_t rem = g->n - j;
        switch ((rem + VL - 1) / VL) {
        case 1: gemv_n_chunk(1, 1, prefetch, g, p0, p1, j, rem); break;
        case 2: gemv_n_chunk(2, 1, prefetch, g, p0, p1, j, rem); break;
        case 3: gemv_n_chunk(3, 1, prefetch, g, p0, p1, j, rem); break;
        case 4: gemv_n_chunk(4, 1, prefetch, g, p0, p1, j, rem); break;
        default: break;
        }
    }
}

void NN_ISA_FN(gemv_n)(const nn_gemv_args *g)
{
    const size_t vector_bytes = VL * sizeof(float);
    if (((uintptr_t)g->b | (uintptr_t)g->ldb * sizeof(float)) % vector_bytes != 0)
        gemv_n_rows(1, g);
    else
        gemv_n_rows(0, g);
}

/* gemv_t: R dot products of x with rows j..j+R-1 of b, two vectors at a time. */
NN_INLINE void gemv_t_rows(const int R, const nn_gemv_args *g, int64_t j)
{
    vf acc[4][2];
    NN_UNROLL
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = v_zero();
    const float *x = g->x, *b = g->b + j * g->ldb;
    const int64_t ldb = g->ldb, k = g->k;
    int64_t p = 0;
    for (; p + 2 * VL <= k; p += 2 * VL) {
        const vf x0 = v_load(x + p), x1 = v_load(x + p + VL);
        NN_UNROLL
        for (int r = 0; r < R; r++) {
            acc[r][0] = v_fma(x0, v_load(b + r * ldb + p), acc[r][0]);
            acc[r][1] = v_fma(x1, v_load(b + r * ldb + p + VL), acc[r][1]);
        }
    }
    for (; p < k; p += VL) {
        const vm mask = p + VL <= k ? v_full() : v_mask((int)(k - p));
        const vf x0 = v_loadm(x + p, mask);
        NN_UNROLL
        for (int r = 0; r < R; r++)
            acc[r][0] = v_fma(x0, v_loadm(b + r * ldb + p, mask), acc[r][0]);
    }
    NN_UNROLL
    for (int r = 0; r < R; r++) {
        float s = g->alpha * v_hsum(v_add(acc[r][0], acc[r][1]));
        if (g->beta != 0.0f)
            s += g->beta * g->y[j + r];
        if (g->bias)
            s += g->bias[j + r];
        g->y[j + r] = nn_act_scalar(s, g->act);
    }
}

void NN_ISA_FN(gemv_t)(const nn_gemv_args *g)
{
    int64_t j = 0;
    for (; j + 4 <= g->n; j += 4)
        gemv_t_rows(4, g, j);
    switch (g->n - j) {
    case 1: gemv_t_rows(1, g, j); break;
    case 2: gemv_t_rows(2, g, j); break;
    case 3: gemv_t_rows(3, g, j); break;
    default: break;
    }
}

void NN_ISA_FN(gemm_tile)(nn_gemm_tile *tile)
{
    tile->mr = MR;
    tile->nr = NR;
    tile->kc_max = KC_MAX;
}

#endif
