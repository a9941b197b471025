/* SGEMM: the driver. The blocking loops, the threads and the choice of path
 * and of what to pack. The packing routines are in gemm_pack.c, the block
 * sizes (from the micro-kernel and the caches) in gemm_blocking.c, the
 * register kernels in gemm_kernel_<isa>.c (one per ISA, reached through the
 * dispatch table).
 *
 * C = alpha * op(A) op(B) + beta * C, then bias per column, then activation,
 * all row-major. The loops, outermost first (BLIS order with the roles of A
 * and B swapped, because the kernel broadcasts A and loads rows of B):
 *   JC  columns of C in blocks of ncb      (packed B block: kc x ncb, in L2)
 *   PC  depth in blocks of kc              (the only loop that splits k)
 *   IC  rows of C in blocks of mcb         (bounds the packed A buffer)
 *   IR  rows in micro-panels of mr         (A micro-panel mr x kc, in L1)
 *   JR  columns in strips of nr            (inside the kernel, gemm_block)
 * The epilogue (alpha, beta, bias, activation) is applied in registers by the
 * kernel: beta on the first PC block only (later blocks accumulate into C),
 * bias and activation on the last one.
 *
 * Packing copies a block of op(A) or op(B) into the layout the kernel reads
 * fastest, so transposes are absorbed here. It is skipped when it cannot pay
 * for itself: A without a transpose is read in place (its micro-panel is mr
 * contiguous row segments), and B without a transpose is read in place when
 * few rows of C will reuse it.
 *
 * Paths (chosen from the shape only, so they never depend on the thread
 * count): m == 1 is a matrix-vector product (gemv_n, or the dot products of
 * gemv_t when B is transposed); a narrow C (n <= nr/4) with a transposed A is
 * computed transposed (gemm_narrow); everything else takes the loops above.
 *
 * Threads: one OpenMP parallel region per call. Threads split only the
 * columns (strips) or the rows (micro-panels) of C, never k, and every C
 * element goes through the same operations whichever thread computes it, so
 * results are bitwise identical for any thread count. Small problems run on
 * the calling thread: a fork/join costs microseconds.
 *
 * Packing buffers come from the calling thread's workspace (workspace.h:
 * several Python threads may call nn_sgemm at once, each with its own OpenMP
 * team), shared with that call's team. */
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>
#include "dispatch.h"
#include "profile.h"
#include "gemm.h"
#include "workspace.h"

/* Below this many flops (2mnk) a GEMM runs on one thread. */
#define NN_GEMM_PARALLEL_MIN_FLOPS 1500000.0
/* B without a transpose is packed when at least this many rows of C reuse it
 * (and it is wider than one strip: a single strip is read as it is). */
#define NN_GEMM_PACK_B_MIN_M 48
/* A transposed is read in place unless packing pays. Read in place, a panel
 * of A^T takes a cache line per depth step (mr floats of one row of A), kept
 * in L1 while the panel runs across its strips of C and reused by the next
 * panels (which read the rest of those lines). That works while the lines
 * stay in cache, so A^T is packed only when (1) its depth is at least
 * NN_GEMM_PACK_A_MIN_K, (2) each thread runs a panel across at least
 * NN_GEMM_PACK_A_MIN_STRIPS strips of C (over fewer, the copy is not repaid),
 * and (3) either A's row stride is a multiple of NN_GEMM_ALIAS_BYTES (a
 * panel's lines then crowd into a few L1 sets and evict each other), or a
 * depth block of A (kc x m floats) is larger than the blocking's inplace_a
 * (its lines no longer stay in L2). */
#define NN_GEMM_PACK_A_MIN_K 64
#define NN_GEMM_PACK_A_MIN_STRIPS 4
#define NN_GEMM_ALIAS_BYTES 512
/* C is narrow when n * NN_GEMM_NARROW <= nr and m >= NN_GEMM_NARROW_MIN_M:
 * then, if A is transposed (so op(A)^T is read in place), its transpose is
 * computed (gemm_narrow). Without a transposed A the transpose would need a
 * transposing pack of A, which costs more than it saves (measured). */
#define NN_GEMM_NARROW 4
#define NN_GEMM_NARROW_MIN_M 64
/* Rows of op(A) packed at once: bounds the A buffer to NN_GEMM_MC_MAX * kc floats. */
#define NN_GEMM_MC_MAX 2048

/* What thread t of nt computes (and packs) of the whole product. Every
 * thread runs the same loops, so barriers match. */
static void gemm_thread(const nn_gemm_plan *P, int t, int nt)
{
    static const float nothing[1] = {0.0f}; /* A and B when k == 0: never read */
    const int64_t mr = P->mr, nr = P->nr;
    /* Barriers: after packing when a thread computes with what another one
     * packed; after computing when anything is packed, because the next
     * block's packing may reuse buffer space another thread still reads. */
    const int sync_shared = nt > 1 && ((P->split_n && P->pack_a) || (!P->split_n && P->pack_b));
    const int sync_reuse = nt > 1 && (P->pack_a || P->pack_b);
    nn_gemm_args g;
    g.ldc = P->ldc;
    g.alpha = P->alpha;

    for (int64_t jc = 0; jc < P->n; jc += P->ncb) {
        const int64_t nc = min64(P->ncb, P->n - jc);
        /* Columns this thread computes; with split_n, also the strips it packs. */
        const int64_t j0 = P->split_n ? split(nc, nr, t, nt) : 0;
        const int64_t j1 = P->split_n ? split(nc, nr, t + 1, nt) : nc;
        int64_t pc = 0;
        do {
            const int64_t kc = min64(P->kc, P->k - pc);
            const int last = pc + kc >= P->k;
            g.k = kc;
            g.beta = pc == 0 ? P->beta : 1.0f;
            g.act = last ? P->act : NN_ACT_NONE;
            for (int64_t ic = 0; ic < P->m; ic += P->mcb) {
                const int64_t mc = min64(P->mcb, P->m - ic);
                /* Rows this thread computes; without split_n, also the panels it packs. */
                const int64_t i0 = P->split_n ? 0 : split(mc, mr, t, nt);
                const int64_t i1 = P->split_n ? mc : split(mc, mr, t + 1, nt);
                if (P->pack_b && ic == 0) {
                    const int64_t s0 = P->split_n ? j0 : split(nc, nr, t, nt);
                    const int64_t s1 = P->split_n ? j1 : split(nc, nr, t + 1, nt);
                    if (s1 > s0)
                        nn_gemm_pack_b(P, jc + s0, s1 - s0, pc, kc, P->bp + s0 / nr * kc * nr);
                }
                if (P->pack_a) {
                    const int64_t r0 = P->split_n ? split(mc, mr, t, nt) : i0;
                    const int64_t r1 = P->split_n ? split(mc, mr, t + 1, nt) : i1;
                    if (r1 > r0)
                        nn_gemm_pack_a(P, ic + r0, r1 - r0, pc, kc, P->ap + r0 / mr * kc * mr);
                }
                if (sync_shared) {
#pragma omp barrier
                }
                if (j1 > j0) {
                    g.n = j1 - j0;
                    g.bias = last && P->bias ? P->bias + jc + j0 : NULL;
                    if (P->k == 0) {
                        g.b = nothing;
                        g.rsb = g.sb = 0;
                    } else if (P->pack_b) {
                        g.b = P->bp + j0 / nr * kc * nr;
                        g.rsb = nr;
                        g.sb = kc * nr;
                    } else {
                        g.b = P->b + pc * P->ldb + jc + j0;
                        g.rsb = P->ldb;
                        g.sb = nr;
                    }
                    for (int64_t i = i0; i < i1; i += mr) {
                        g.m = min64(mr, i1 - i);
                        g.c = P->c + (ic + i) * P->ldc + jc + j0;
                        if (P->k == 0) {
                            g.a = nothing;
                            g.rsa = g.csa = 0;
                        } else if (P->pack_a) {
                            g.a = P->ap + i / mr * kc * mr;
                            g.rsa = 1;
                            g.csa = mr;
                        } else if (P->trans_a) {
                            g.a = P->a + pc * P->lda + ic + i;
                            g.rsa = 1;
                            g.csa = P->lda;
                        } else {
                            g.a = P->a + (ic + i) * P->lda + pc;
                            g.rsa = P->lda;
                            g.csa = 1;
                        }
                        P->kt->gemm_block(&g);
                    }
                }
                if (sync_reuse) {
#pragma omp barrier
                }
            }
            pc += kc;
        } while (pc < P->k);
    }
}

void nn_gemv_part(const nn_kernel_table *kt, int trans_b, int64_t n, int64_t k, float alpha,
                  const float *x, int64_t incx, const float *b, int64_t ldb, float beta,
                  float *c, const float *bias, int act, float *work, int t, int team)
{
    const int64_t j0 = split(n, NN_GEMV_UNIT, t, team);
    const int64_t j1 = split(n, NN_GEMV_UNIT, t + 1, team);
    if (j1 <= j0)
        return;
    nn_gemv_args g = {
        .n = j1 - j0, .k = k, .x = x, .incx = incx,
        .b = trans_b ? b + j0 * ldb : b + j0, .ldb = ldb,
        .y = c + j0, .alpha = alpha, .beta = beta,
        .bias = bias ? bias + j0 : NULL, .act = act,
        .work = work ? work + j0 : NULL,
    };
    if (trans_b)
        kt->gemv_t(&g);
    else
        kt->gemv_n(&g);
}

/* m == 1: y = op(A) row 0 times op(B), a matrix-vector product. */
static int gemv(const nn_kernel_table *kt, int trans_a, int trans_b, int64_t n, int64_t k,
                float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                float beta, float *c, const float *bias, int act)
{
    const float *x = a;
    int64_t incx = trans_a ? lda : 1;
    float *work = NULL;
    if (!trans_b) {
        work = nn_workspace_get(NN_WS_AUX, (size_t)n);
        if (work == NULL)
            return NN_ENOMEM;
    } else if (incx != 1) {
        /* The dot-product kernel wants x contiguous. */
        float *xs = nn_workspace_get(NN_WS_AUX, (size_t)k);
        if (xs == NULL)
            return NN_ENOMEM;
        for (int64_t p = 0; p < k; p++)
            xs[p] = a[p * incx];
        x = xs;
        incx = 1;
    }
    int nt = (double)k * (double)n >= NN_GEMV_PARALLEL_MIN ? nn_max_threads() : 1;
    nt = (int)min64(nt, ceil_div(n, NN_GEMV_UNIT));
    if (nt == 1) { /* no region: libgomp sets up a team even for one thread */
        nn_gemv_part(kt, trans_b, n, k, alpha, x, incx, b, ldb, beta, c, bias, act, work, 0, 1);
        return NN_OK;
    }
#pragma omp parallel num_threads(nt)
    nn_gemv_part(kt, trans_b, n, k, alpha, x, incx, b, ldb, beta, c, bias, act, work,
                 omp_get_thread_num(), omp_get_num_threads());
    return NN_OK;
}

/* The blocked product (m >= 1, n >= 1, k >= 0). */
static int gemm(const nn_kernel_table *kt, int trans_a, int trans_b, int64_t m, int64_t n,
                int64_t k, float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                float beta, float *c, int64_t ldc, const float *bias, int activation)
{
    nn_gemm_blocking info;
    nn_gemm_blocking_for(kt, &info);
    nn_gemm_plan P = {
        .kt = kt, .mr = info.mr, .nr = info.nr, .trans_a = trans_a, .trans_b = trans_b,
        .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta, .a = a, .b = b, .bias = bias,
        .lda = lda, .ldb = ldb, .ldc = ldc, .c = c, .act = activation,
    };
    int nt = 2.0 * (double)m * (double)n * (double)k >= NN_GEMM_PARALLEL_MIN_FLOPS
                 ? nn_max_threads() : 1;
    const int64_t strips = ceil_div(n, P.nr), panels = ceil_div(m, P.mr);
    nt = (int)min64(nt, max64(strips, panels));
    /* Columns when there are many strips; rows when C is much taller than
     * wide. Splitting columns makes every thread read all of A, splitting
     * rows all of B: the larger side should be the one split. */
    P.split_n = strips >= 4 * nt || (strips >= nt && (panels < 2 * nt || m < 2 * n));

    P.kc = k > 0 ? ceil_div(k, ceil_div(k, info.kc)) : 0;
    P.pack_b = k > 0 && (trans_b || (m >= NN_GEMM_PACK_B_MIN_M && n > P.nr));
    P.ncb = balanced_block(n, info.nc * (P.split_n ? nt : 1), P.nr);
    P.pack_a = trans_a && k >= NN_GEMM_PACK_A_MIN_K &&
               ceil_div(P.ncb, P.nr) / (P.split_n ? nt : 1) >= NN_GEMM_PACK_A_MIN_STRIPS &&
               ((lda * (int64_t)sizeof(float)) % NN_GEMM_ALIAS_BYTES == 0 ||
                (double)P.kc * (double)m * sizeof(float) > (double)info.inplace_a);
    P.mcb = P.pack_a ? balanced_block(m, NN_GEMM_MC_MAX, P.mr) : m;

    const size_t a_floats = P.pack_a ? (size_t)(round_up(P.mcb, P.mr) * P.kc) : 0;
    const size_t b_floats = P.pack_b ? (size_t)(round_up(P.ncb, P.nr) * P.kc) : 0;
    if (a_floats + b_floats > 0) {
        float *ws = nn_workspace_get(NN_WS_PACK, round_up((int64_t)a_floats, 16) + b_floats);
        if (ws == NULL)
            return NN_ENOMEM;
        P.ap = ws;
        P.bp = ws + round_up((int64_t)a_floats, 16);
    }

    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        gemm_thread(&P, omp_get_thread_num(), omp_get_num_threads());
    } else {
        gemm_thread(&P, 0, 1);
    }
    return NN_OK;
}

/* A narrow C (n much smaller than the kernel's nr) would leave most vector
 * lanes and accumulators idle, and a transposed A would be read one short
 * strided row segment per k. Compute the transpose instead, C^T =
 * op(B)^T op(A)^T (n rows, m wide), into a buffer, then transpose it into C
 * with the epilogue. */
static int gemm_narrow(const nn_kernel_table *kt, int trans_a, int trans_b, int64_t m,
                       int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                       const float *bias, int act)
{
    if ((uint64_t)m > SIZE_MAX / sizeof(float) / (uint64_t)n)
        return NN_ENOMEM;
    float *t = nn_workspace_get(NN_WS_AUX, (size_t)(m * n));
    if (t == NULL)
        return NN_ENOMEM;
    int status = gemm(kt, !trans_b, !trans_a, n, m, k, alpha, b, ldb, a, lda, 0.0f, t, m,
                      NULL, NN_ACT_NONE);
    if (status != NN_OK)
        return status;
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++) {
            float v = t[j * m + i];
            if (beta != 0.0f)
                v += beta * ci[j];
            if (bias)
                v += bias[j];
            ci[j] = nn_act_scalar(v, act);
        }
    }
    return NN_OK;
}

static int sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb,
                 float beta, float *c, int64_t ldc,
                 const float *bias, int activation)
{
    if (!nn_epilogue_supports(activation))
        return NN_EINVAL;
    if (m < 0 || n < 0 || k < 0)
        return NN_EINVAL;
    if (m == 0 || n == 0)
        return NN_OK;
    const nn_kernel_table *kt = nn_kernels();
    if (m == 1 && k > 0)
        return gemv(kt, trans_a, trans_b, n, k, alpha, a, lda, b, ldb, beta, c, bias, activation);
    nn_gemm_tile tile;
    kt->gemm_tile(&tile);
    if (trans_a && k > 0 && n * NN_GEMM_NARROW <= tile.nr && m >= NN_GEMM_NARROW_MIN_M)
        return gemm_narrow(kt, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                           bias, activation);
    return gemm(kt, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias,
                activation);
}

int nn_sgemm_unprofiled(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc, const float *bias, int activation)
{
    return sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias,
                 activation);
}

int nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
             float alpha, const float *a, int64_t lda,
             const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc,
             const float *bias, int activation)
{
    /* One call site, so sgemm is inlined here: no second copy of its fifteen
     * arguments on the way in. */
    const int profiling = nn_profiling();
    const int64_t t0 = profiling ? nn_profile_now_ns() : 0;
    int status = sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias,
                       activation);
    if (profiling && status == NN_OK)
        nn_profile_record(NN_K_sgemm_nn + 2 * (trans_a != 0) + (trans_b != 0), t0,
                          2.0 * (double)m * (double)n * (double)k, m, n, k);
    return status;
}
