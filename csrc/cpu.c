/* CPU feature detection, the ISA dispatch table and the NNCORE_ISA override. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "dispatch.h"
#include "profile.h"

/* Declare each ISA's kernels and gather them into a table. */
#define NN_DECL_generic(name, params, args) void nn_##name##_generic params;
#define NN_DECL_avx2(name, params, args) void nn_##name##_avx2 params;
#define NN_DECL_avx512(name, params, args) void nn_##name##_avx512 params;
#define NN_ENTRY_generic(name, params, args) .name = nn_##name##_generic,
#define NN_ENTRY_avx2(name, params, args) .name = nn_##name##_avx2,
#define NN_ENTRY_avx512(name, params, args) .name = nn_##name##_avx512,

NN_ISA_KERNELS(NN_DECL_generic)
static const nn_kernel_table table_generic = {NN_ISA_KERNELS(NN_ENTRY_generic)};
#if NN_HAVE_X86
NN_ISA_KERNELS(NN_DECL_avx2)
NN_ISA_KERNELS(NN_DECL_avx512)
static const nn_kernel_table table_avx2 = {NN_ISA_KERNELS(NN_ENTRY_avx2)};
static const nn_kernel_table table_avx512 = {NN_ISA_KERNELS(NN_ENTRY_avx512)};
#endif

static const char *const isa_names[NN_ISA_COUNT] = {"generic", "avx2", "avx512"};
static int active_isa = NN_ISA_GENERIC;
static const nn_kernel_table *active_table = &table_generic;

const nn_kernel_table *nn_kernels(void) { return active_table; }

/* The public entry points: one trampoline per kernel. While profiling is on
 * each call is timed and recorded with its first two size arguments (the
 * element count n, or rows m and columns n). */
#define NN_ARG0_(a, ...) a
#define NN_ARG1_(a, b, ...) b
#define NN_ARG0(...) NN_ARG0_(__VA_ARGS__, 0)
#define NN_ARG1(...) NN_ARG1_(__VA_ARGS__, 0, 0)
#define NN_SIZE_ARG(v) _Generic((v), int64_t: (v), default: (int64_t)0)
#define NN_TRAMPOLINE(name, params, args)                                        \
    void nn_##name params                                                        \
    {                                                                            \
        if (nn_profiling()) {                                                    \
            int64_t nn_t0_ = nn_profile_now_ns();                                \
            active_table->name args;                                             \
            nn_profile_record(NN_K_##name, nn_t0_, 0.0, NN_SIZE_ARG(NN_ARG0 args), \
                              NN_SIZE_ARG(NN_ARG1 args), 0);                     \
        } else {                                                                 \
            active_table->name args;                                             \
        }                                                                        \
    }
NN_PUBLIC_KERNELS(NN_TRAMPOLINE)

int nn_isa_available(int isa)
{
    switch (isa) {
    case NN_ISA_GENERIC:
        return 1;
#if NN_HAVE_X86
    case NN_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case NN_ISA_AVX512:
        /* __builtin_cpu_supports also checks that the OS saves zmm state. */
        __builtin_cpu_init();
        return nn_isa_available(NN_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq");
#endif
    default:
        return 0;
    }
}

const char *nn_isa_name(int isa)
{
    return (isa >= 0 && isa < NN_ISA_COUNT) ? isa_names[isa] : "unknown";
}

int nn_isa_from_name(const char *name)
{
    for (int i = 0; i < NN_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0)
            return i;
    return -1;
}

int nn_set_isa(int isa)
{
    if (!nn_isa_available(isa))
        return NN_EISA;
#if NN_HAVE_X86
    active_table = isa == NN_ISA_AVX512 ? &table_avx512
                 : isa == NN_ISA_AVX2   ? &table_avx2
                                        : &table_generic;
#endif
    active_isa = isa;
    return NN_OK;
}

int nn_get_isa(void) { return active_isa; }

int nn_init(void)
{
    int best = NN_ISA_GENERIC;
    for (int isa = NN_ISA_COUNT - 1; isa > NN_ISA_GENERIC; isa--)
        if (nn_isa_available(isa)) {
            best = isa;
            break;
        }
    nn_set_isa(best);
    const char *forced = getenv("NNCORE_ISA");
    if (forced == NULL || forced[0] == '\0')
        return NN_OK;
    int isa = nn_isa_from_name(forced);
    if (isa < 0)
        return NN_EINVAL;
    return nn_set_isa(isa);
}

const char *nn_compiler(void) { return NN_COMPILER; }
const char *nn_build_flags(void) { return NN_BUILD_FLAGS; }
int nn_openmp_version(void) { return _OPENMP; }

/* The count nn_set_num_threads set (0: never called). OpenMP's own count
 * (omp_set_num_threads) belongs to the calling thread only; this one binds
 * every thread, so a limit set from the main thread also holds for kernels
 * called from a thread pool. */
static _Atomic int thread_limit;

void nn_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    if (n > NN_MAX_THREADS)
        n = NN_MAX_THREADS;
    atomic_store_explicit(&thread_limit, n, memory_order_relaxed);
    omp_set_num_threads(n);
}

int nn_max_threads(void)
{
    int n = omp_get_max_threads();
    int limit = atomic_load_explicit(&thread_limit, memory_order_relaxed);
    if (limit > 0 && limit < n)
        n = limit;
    /* An absurd OMP_NUM_THREADS would make libgomp exit the process when
     * thread creation fails; stay at a count that is merely wasteful. */
    return n < NN_MAX_THREADS ? n : NN_MAX_THREADS;
}

int nn_get_num_threads(void) { return nn_max_threads(); }

int nn_set_local_num_threads(int n)
{
    const int previous = omp_get_max_threads();
    omp_set_num_threads(n < 1 ? 1 : n > NN_MAX_THREADS ? NN_MAX_THREADS : n);
    return previous;
}

/* Half the round trip of a cache line between the first two threads of a
 * team (each waits for the other's store, then stores): what a core pays to
 * read a line the other just wrote. 0 with fewer than two threads. On the
 * development VM it measured 25-47 ns, or 151-167 ns when the host had put
 * the two vCPUs on distant cores; splitting one image between the two
 * threads is then slower than one thread (docs/measurements.md). */
double nn_core_to_core_ns(int64_t rounds)
{
    if (rounds < 1 || nn_max_threads() < 2)
        return 0.0;
    struct {
        _Alignas(64) _Atomic int64_t flag;
        char pad[64 - sizeof(int64_t)];
    } line;
    atomic_init(&line.flag, 0);
    int team = 0;
    double seconds = 0.0;
#pragma omp parallel num_threads(2)
    {
        const int me = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
        if (team == 2) {
            double t0 = 0.0;
            /* a tenth more rounds, the first untimed (wake-up) */
            const int64_t warm = rounds / 10 + 1;
            for (int64_t i = 0; i < warm + rounds; i++) {
                if (i == warm)
                    t0 = omp_get_wtime();
                if (me == 0) {
                    atomic_store_explicit(&line.flag, 2 * i + 1, memory_order_release);
                    while (atomic_load_explicit(&line.flag, memory_order_acquire) != 2 * i + 2)
                        ;
                } else {
                    while (atomic_load_explicit(&line.flag, memory_order_acquire) != 2 * i + 1)
                        ;
                    atomic_store_explicit(&line.flag, 2 * i + 2, memory_order_release);
                }
            }
            if (me == 0)
                seconds = omp_get_wtime() - t0;
        }
    }
    return team == 2 ? seconds * 1e9 / (2.0 * (double)rounds) : 0.0;
}
