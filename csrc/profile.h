/* Internal: the profiler's hooks into the C entry points (see profile.c).
 *
 * Every profiled entry point (the trampolines in cpu.c, nn_sgemm, the loss
 * functions) is written as
 *
 *     if (nn_profiling()) { t0 = nn_profile_now_ns(); call; nn_profile_record(...); }
 *     else call;
 *
 * so when profiling is off it costs one relaxed load and a predictable branch.
 * A profiled entry point that runs GEMMs (conv2d) calls nn_sgemm_unprofiled
 * inside, so its time is counted once, as its own event with its FLOPs. */
#ifndef NN_PROFILE_H
#define NN_PROFILE_H

#include <stdatomic.h>
#include <stdint.h>
#include "dispatch.h"

/* Kernel ids: every dispatched kernel (NN_ISA_KERNELS), then the entry points
 * compiled once. sgemm is split by transpose case, so a profile separates the
 * forward (NN), input-gradient (NT) and weight-gradient (TN) products. */
#define NN_PROFILE_EXTRA(X) \
    X(sgemm_nn) X(sgemm_nt) X(sgemm_tn) X(sgemm_tt) \
    X(conv2d_forward) X(conv2d_backward) \
    X(mse_forward) X(mse_backward) X(huber_forward) X(huber_backward) \
    X(bce_logits_forward) X(bce_logits_backward) \
    X(cross_entropy_forward) X(cross_entropy_backward) \
    X(gemm_bf16) X(to_nchw16c) X(from_nchw16c)

#define NN_KID_ISA(name, params, args) NN_K_##name,
#define NN_KID_EXTRA(name) NN_K_##name,
enum {
    NN_ISA_KERNELS(NN_KID_ISA)
    NN_PROFILE_EXTRA(NN_KID_EXTRA)
    NN_K_COUNT
};
#undef NN_KID_ISA
#undef NN_KID_EXTRA

extern atomic_int nn_profile_on;

static inline int nn_profiling(void)
{
    return __builtin_expect(atomic_load_explicit(&nn_profile_on, memory_order_relaxed), 0);
}

/* Record one call of kernel `id` that started at t0 (nn_profile_now_ns) and
 * ends now. flops: floating-point operations of the call (0 when not
 * counted); m, n, k: its sizes (unused ones 0). */
void nn_profile_record(int id, int64_t t0, double flops, int64_t m, int64_t n, int64_t k);

#endif
