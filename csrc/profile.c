/* The profiler's C side: an event buffer that the entry points write into
 * while profiling is on (see profile.h for the hook, nncore.h for the API).
 *
 * Writers claim a slot with one atomic increment, fill it, then publish it by
 * storing its kernel id (plus one) with release order; a reader copies only
 * published slots. The buffer grows but is never freed, so a caller still
 * finishing a kernel as profiling stops writes into valid memory (and its
 * late event is ignored by the next session, which starts later). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include "profile.h"

atomic_int nn_profile_on = 0;

static nn_profile_event *buffer;
static int64_t buffer_size;       /* slots allocated */
static int64_t capacity;          /* slots in use by this session */
static atomic_llong next_slot;    /* slots claimed (may exceed capacity) */
static atomic_llong dropped;

#define NN_KNAME_ISA(name, params, args) #name,
#define NN_KNAME_EXTRA(name) #name,
static const char *const kernel_names[NN_K_COUNT] = {
    NN_ISA_KERNELS(NN_KNAME_ISA)
    NN_PROFILE_EXTRA(NN_KNAME_EXTRA)
};

int64_t nn_profile_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int32_t thread_id(void)
{
    static _Thread_local int32_t id;
    if (id == 0) {
#if defined(__linux__)
        id = (int32_t)syscall(SYS_gettid);
#else
        static atomic_int counter = 0;
        id = atomic_fetch_add(&counter, 1) + 1;
#endif
    }
    return id;
}

void nn_profile_record(int id, int64_t t0, double flops, int64_t m, int64_t n, int64_t k)
{
    int64_t t1 = nn_profile_now_ns();
    int64_t slot = atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed);
    if (slot >= capacity) {
        atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
        return;
    }
    nn_profile_event *e = &buffer[slot];
    e->thread = thread_id();
    e->start_ns = t0;
    e->dur_ns = t1 - t0;
    e->flops = flops;
    e->m = m;
    e->n = n;
    e->k = k;
    __atomic_store_n(&e->kernel, id + 1, __ATOMIC_RELEASE);
}

int nn_profile_start(int64_t cap)
{
    if (cap < 1 || atomic_load(&nn_profile_on))
        return NN_EINVAL;
    /* Clear what the previous session used (the rest is still zero). */
    int64_t used = atomic_load(&next_slot);
    if (used > capacity)
        used = capacity;
    if (used > 0)
        memset(buffer, 0, (size_t)used * sizeof *buffer);
    if (cap > buffer_size) {
        /* calloc: pages are touched only as events fill them. */
        nn_profile_event *grown = calloc((size_t)cap, sizeof *grown);
        if (grown == NULL)
            return NN_ENOMEM;
        free(buffer);
        buffer = grown;
        buffer_size = cap;
    }
    capacity = cap;
    atomic_store(&next_slot, 0);
    atomic_store(&dropped, 0);
    atomic_store(&nn_profile_on, 1);
    return NN_OK;
}

void nn_profile_stop(void) { atomic_store(&nn_profile_on, 0); }

int nn_profile_enabled(void) { return atomic_load(&nn_profile_on); }

int64_t nn_profile_count(void)
{
    int64_t used = atomic_load(&next_slot);
    return used < capacity ? used : capacity;
}

int64_t nn_profile_dropped(void) { return atomic_load(&dropped); }

int64_t nn_profile_read(int64_t max, nn_profile_event *out)
{
    int64_t used = nn_profile_count(), copied = 0;
    for (int64_t i = 0; i < used && copied < max; i++) {
        int32_t id = __atomic_load_n(&buffer[i].kernel, __ATOMIC_ACQUIRE);
        if (id == 0)
            continue;   /* claimed, not yet published */
        out[copied] = buffer[i];
        out[copied].kernel = id - 1;
        copied++;
    }
    return copied;
}

int nn_profile_kernel_count(void) { return NN_K_COUNT; }

const char *nn_profile_kernel_name(int id)
{
    return (id >= 0 && id < NN_K_COUNT) ? kernel_names[id] : "unknown";
}
