/* The bfloat16 GEMM: C = act(alpha * op(A) op(B) + beta * C + bias) with the
 * operands rounded to bfloat16 (round to nearest even) as they are packed,
 * float32 accumulation, and the float32 GEMM's epilogue and output. The
 * arithmetic, and why every kernel gives the same bits, is in gemm_bf16.h.
 *
 * The loops, per thread, outermost first:
 *   JC  the thread's columns of C in blocks of nc  (packed B block kc x nc, L2)
 *   PC  depth in blocks of NN_BF16_KC              (the only loop that splits k)
 *   IR  the thread's rows in panels of MR          (packed A panel MR x kc, L1)
 *   JR  strips of NR columns                       (inside the kernel)
 * As in the float32 GEMM, beta applies on the first depth block (later ones
 * accumulate into C) and bias and activation on the last; alpha scales every
 * block. The depth block is a constant, never derived from the machine or the
 * thread count, so the bits depend on neither.
 *
 * Threads split only the columns (whole strips) or the rows (whole panels) of
 * C, never k: each C element goes through the same operations whichever
 * thread computes it. Each thread packs the parts of A and B it reads into
 * its own buffers, so the threads never wait for each other (a thread's share
 * of packing the other operand is repeated across threads; it is small next
 * to the products).
 *
 * Kernels: the AVX512_BF16 one (vdpbf16ps) when the CPU has the instruction
 * and the active ISA is avx512, else the portable one (NNCORE_ISA=avx2 or
 * generic forces it). There is no AMX kernel; nn_amx_available only reports
 * the hardware. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <omp.h>
#include "dispatch.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "profile.h"
#include "workspace.h"
#if NN_HAVE_X86
#include <cpuid.h>
#endif

#define MR NN_BF16_MR
#define NR NN_BF16_NR
/* The depth block (even, so pairs never straddle blocks). It sets the bits. */
#define NN_BF16_KC 512
/* Below this many flops (2mnk) the product runs on one thread. */
#define NN_BF16_PARALLEL_MIN_FLOPS 1500000.0
#define NN_BF16_L2_DEFAULT (1024 * 1024)

/* One kernel's functions (gemm_bf16.h). */
typedef struct bf16_kernel_set {
    void (*block)(const nn_bf16_args *g);
    void (*pack_a)(const float *a, int64_t lda, int trans, int64_t h, int64_t kc, uint16_t *dst);
    void (*pack_b)(const float *b, int64_t ldb, int trans, int64_t w, int64_t kc, uint16_t *dst);
} bf16_kernel_set;

static const bf16_kernel_set kernels_generic = {
    nn_gemm_bf16_block_generic, nn_bf16_pack_a_generic, nn_bf16_pack_b_generic};
#if NN_HAVE_X86 && NN_HAVE_AVX512BF16
static const bf16_kernel_set kernels_avx512bf16 = {
    nn_gemm_bf16_block_avx512bf16, nn_bf16_pack_a_avx512bf16, nn_bf16_pack_b_avx512bf16};
#endif

int nn_bf16_native(void)
{
#if NN_HAVE_X86 && NN_HAVE_AVX512BF16
    __builtin_cpu_init();
    return nn_isa_available(NN_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

static const bf16_kernel_set *bf16_kernel(void)
{
#if NN_HAVE_X86 && NN_HAVE_AVX512BF16
    if (nn_get_isa() == NN_ISA_AVX512 && nn_bf16_native())
        return &kernels_avx512bf16;
#endif
    return &kernels_generic;
}

const char *nn_bf16_kernel(void)
{
    return bf16_kernel() == &kernels_generic ? "generic" : "avx512_bf16";
}

void nn_bf16_peak(int64_t iters, float *sink, double *flops)
{
    sink[0] = 0.0f;
    *flops = 0.0;
#if NN_HAVE_X86 && NN_HAVE_AVX512BF16
    if (nn_bf16_native())
        nn_bf16_peak_avx512bf16(iters, sink, flops);
#endif
}

int nn_amx_available(void)
{
#if NN_HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (!amx_bf16 || !amx_tile)
        return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) /* OSXSAVE */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((lo >> 17) & 3) == 3; /* XTILECFG and XTILEDATA state enabled */
#else
    return 0;
#endif
}

/* Columns of packed B per thread: a kc x nc block of bf16 fills half of L2. */
static int64_t block_columns(void)
{
    static _Atomic int64_t cached; /* every caller computes the same value */
    int64_t nc = atomic_load_explicit(&cached, memory_order_relaxed);
    if (nc == 0) {
        int64_t l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        if (l2 < (64 << 10) || l2 > (256 << 20))
            l2 = NN_BF16_L2_DEFAULT;
        nc = max64(NR, l2 / 2 / (NN_BF16_KC * 2) / NR * NR);
        atomic_store_explicit(&cached, nc, memory_order_relaxed);
    }
    return nc;
}

typedef struct bf16_plan {
    const bf16_kernel_set *kernel;
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b, *bias;
    int64_t lda, ldb, ldc;
    float *c;
    int act;
    int64_t nc;
    int split_n;
} bf16_plan;

static void bf16_thread(const bf16_plan *P, int t, int nt, uint16_t *ap, uint16_t *bp)
{
    const int64_t i0 = P->split_n ? 0 : split(P->m, MR, t, nt);
    const int64_t i1 = P->split_n ? P->m : split(P->m, MR, t + 1, nt);
    const int64_t j0 = P->split_n ? split(P->n, NR, t, nt) : 0;
    const int64_t j1 = P->split_n ? split(P->n, NR, t + 1, nt) : P->n;
    nn_bf16_args g;
    g.ldc = P->ldc;
    g.alpha = P->alpha;
    g.a = ap;
    g.b = bp;
    for (int64_t jc = j0; jc < j1; jc += P->nc) {
        const int64_t w = min64(P->nc, j1 - jc);
        int64_t pc = 0;
        do {
            const int64_t kc = min64(NN_BF16_KC, P->k - pc);
            const int last = pc + kc >= P->k;
            if (kc > 0)
                P->kernel->pack_b(P->trans_b ? P->b + jc * P->ldb + pc : P->b + pc * P->ldb + jc,
                                  P->ldb, P->trans_b, w, kc, bp);
            g.n = w;
            g.kp = (kc + 1) / 2;
            g.beta = pc == 0 ? P->beta : 1.0f;
            g.bias = last && P->bias ? P->bias + jc : NULL;
            g.act = last ? P->act : NN_ACT_NONE;
            for (int64_t i = i0; i < i1; i += MR) {
                g.m = min64(MR, i1 - i);
                if (kc > 0)
                    P->kernel->pack_a(P->trans_a ? P->a + pc * P->lda + i
                                                 : P->a + i * P->lda + pc,
                                      P->lda, P->trans_a, g.m, kc, ap);
                g.c = P->c + i * P->ldc + jc;
                P->kernel->block(&g);
            }
            pc += kc;
        } while (pc < P->k);
    }
}

static int gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     float *c, int64_t ldc, const float *bias, int act)
{
    if (!nn_epilogue_supports(act) || m < 0 || n < 0 || k < 0)
        return NN_EINVAL;
    if (m == 0 || n == 0)
        return NN_OK;
    bf16_plan P = {
        .kernel = bf16_kernel(), .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n,
        .k = k, .alpha = alpha, .beta = beta, .a = a, .b = b, .bias = bias, .lda = lda,
        .ldb = ldb, .ldc = ldc, .c = c, .act = act, .nc = block_columns(),
    };
    int nt = 2.0 * (double)m * (double)n * (double)k >= NN_BF16_PARALLEL_MIN_FLOPS
                 ? nn_max_threads() : 1;
    const int64_t strips = ceil_div(n, NR), panels = ceil_div(m, MR);
    nt = (int)min64(nt, max64(strips, panels));
    P.split_n = strips >= 4 * nt || (strips >= nt && (panels < 2 * nt || m < 2 * n));
    const int64_t kc = min64(NN_BF16_KC, round_up(k, 2));
    /* Per thread: one A panel and one B block, in uint16 units, rounded to
     * 64 bytes. */
    const int64_t a_halves = round_up(MR * kc, 32);
    const int64_t b_halves = round_up(round_up(min64(P.nc, n), NR) * kc, 32);
    const int64_t per_thread = max64(a_halves + b_halves, 32);
    float *ws = nn_workspace_get(NN_WS_PACK, (size_t)(per_thread * nt / 2));
    if (ws == NULL)
        return NN_ENOMEM;
    uint16_t *base = (uint16_t *)ws;
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), team = omp_get_num_threads();
            uint16_t *mine = base + t * per_thread;
            bf16_thread(&P, t, team, mine, mine + a_halves);
        }
    } else {
        bf16_thread(&P, 0, 1, base, base + a_halves);
    }
    return NN_OK;
}

int nn_gemm_bf16_unprofiled(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float beta, float *c, int64_t ldc, const float *bias,
                            int activation)
{
    return gemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias,
                     activation);
}

int nn_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                 float *c, int64_t ldc, const float *bias, int activation)
{
    const int profiling = nn_profiling();
    const int64_t t0 = profiling ? nn_profile_now_ns() : 0;
    int status = gemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                           bias, activation);
    if (profiling && status == NN_OK)
        nn_profile_record(NN_K_gemm_bf16, t0, 2.0 * (double)m * (double)n * (double)k, m, n, k);
    return status;
}
