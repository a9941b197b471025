/* Input validation: are all floats finite?
 *
 * Trainer.fit checks its whole training set once per call (Fashion-MNIST's
 * 60k x 784 floats are 188 MB), so the check is a memory-bound pass split
 * between the threads. A float is NaN or infinite exactly when its exponent
 * bits are all ones; the test on the bits has no overflow to rule out (as a
 * sum would) and vectorises to compare-and-or. */
#include <stdint.h>
#include <string.h>
#include <omp.h>
#include "dispatch.h"
#include "nncore.h"

/* Below this many floats the check runs on the calling thread. */
#define NN_CHECK_PARALLEL_MIN (64 * 1024)
/* Each thread stops at the end of the block in which it finds a bad value. */
#define NN_CHECK_BLOCK 4096

static int range_all_finite(const float *x, int64_t lo, int64_t hi)
{
    for (int64_t b = lo; b < hi; b += NN_CHECK_BLOCK) {
        const int64_t e = b + NN_CHECK_BLOCK < hi ? b + NN_CHECK_BLOCK : hi;
        uint32_t bad = 0;
        for (int64_t i = b; i < e; i++) {
            uint32_t bits;
            memcpy(&bits, x + i, sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            return 0;
    }
    return 1;
}

int nn_all_finite(int64_t n, const float *x)
{
    if (n <= 0)
        return 1;
    const int nt = n >= NN_CHECK_PARALLEL_MIN ? nn_max_threads() : 1;
    if (nt == 1)
        return range_all_finite(x, 0, n);
    int ok = 1;
#pragma omp parallel num_threads(nt) reduction(&& : ok)
    {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        ok = range_all_finite(x, n * t / team, n * (t + 1) / team);
    }
    return ok;
}
