/* Internal: a barrier for the threads of one OpenMP team that waits by
 * spinning on shared memory, for regions with several barriers each a few
 * microseconds apart (dense.c's one-sample chain).
 *
 * Why not `#pragma omp barrier`: libgomp's barrier makes a futex_wake
 * system call every time the last thread arrives, whether anyone sleeps or
 * not, a cost of the order of the chain's smaller layers (measured in
 * docs/measurements.md).
 *
 * A waiter spins for NN_BARRIER_SPINS pauses (~0.1 ms on Zen 4; teammates
 * normally arrive within microseconds), then sleeps between checks. Sleep,
 * not sched_yield: a teammate preempted by another process waits in the
 * queue of its own core, and a yielding waiter keeps this core busy, so
 * the scheduler does not move the teammate here; the wait then lasted a
 * time slice (milliseconds; docs/measurements.md). Memory: everything a
 * thread wrote before the barrier is visible to every thread after it (the
 * arrival is a release, the wait ends with an acquire). */
#ifndef NN_BARRIER_H
#define NN_BARRIER_H

#include <stdatomic.h>
#include <time.h>

#define NN_BARRIER_SPINS 4096

/* Zero-initialise (NN_BARRIER_INIT) before the parallel region; one per
 * region, shared by its team. */
typedef struct nn_barrier {
    _Alignas(64) atomic_int arrived;
    _Alignas(64) atomic_int generation; /* on its own line: the waiters read it */
} nn_barrier;

#define NN_BARRIER_INIT {0, 0}

static inline void nn_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until all `team` threads of the region have called this (every
 * thread of the team must call it the same number of times). */
static inline void nn_barrier_wait(nn_barrier *bar, int team)
{
    const int generation = atomic_load_explicit(&bar->generation, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&bar->arrived, 1, memory_order_acq_rel) == team - 1) {
        /* The last one: reset the count for the next barrier before anyone
         * can leave this one, then release the waiters. */
        atomic_store_explicit(&bar->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&bar->generation, generation + 1, memory_order_release);
        return;
    }
    for (int spins = 0;
         atomic_load_explicit(&bar->generation, memory_order_acquire) == generation;) {
        if (spins < NN_BARRIER_SPINS) {
            nn_cpu_relax();
            spins++;
        } else {
            const struct timespec nap = {0, 1000}; /* the timer's slack makes it ~60 us */
            nanosleep(&nap, NULL);
        }
    }
}

#endif
