/* Two threads writing one NCHW tensor (16 planes of 28x28 floats, a one-image
 * ResNet-20 stage-1 output): by halves of every plane's rows, as a one-image
 * convolution split into bands of rows writes it, against by halves of the
 * planes (each thread's part one contiguous run).
 *
 *     gcc -O2 -march=native -fopenmp benchmarks/interleaved_writes.c -o /tmp/iw
 *     /tmp/iw
 *
 * Prints the best of 5 runs of 20,000 parallel regions per case, in us per
 * region (rdtsc at the nominal 2596 MHz of the development VM's TSC: set
 * TSC_MHZ for another machine), an empty region for the fork/join, and the
 * core-to-core latency the cases ran with (half a round trip of a cache
 * line; what the interleaved case pays depends on it). */
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>

#ifndef TSC_MHZ
#define TSC_MHZ 2596.0
#endif
#define C 16
#define H 28
#define W 28
#define CALLS 20000

static float *y;

static void write_rows(int c, int r0, int r1, float v)
{
    for (int r = r0; r < r1; r++) {
        float *p = y + (c * H + r) * W;
        for (int j = 0; j < W; j++)
            p[j] = v + (float)j;
    }
}

/* case 0: empty; 1: rows 0-13 / 14-27 of every plane; 2: the same with a gap
 * of 4 rows at the boundary; 3: planes 0-7 / 8-15 */
static double run(int which)
{
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        const unsigned long long t0 = __rdtsc();
        for (int it = 0; it < CALLS; it++) {
#pragma omp parallel num_threads(2)
            {
                const int me = omp_get_thread_num();
                for (int c = 0; c < C; c++) {
                    if (which == 1)
                        write_rows(c, me * 14, me * 14 + 14, (float)it);
                    else if (which == 2)
                        write_rows(c, me ? 18 : 0, me ? 28 : 14, (float)it);
                    else if (which == 3 && c / 8 == me)
                        write_rows(c, 0, H, (float)it);
                }
            }
        }
        const double us = (double)(__rdtsc() - t0) / TSC_MHZ / CALLS;
        best = us < best ? us : best;
    }
    return best;
}

/* Half the round trip of a cache line between the team's two threads, ns. */
static double core_to_core_ns(void)
{
    static _Alignas(64) _Atomic long flag;
    const long rounds = 100000;
    unsigned long long t0 = 0;
#pragma omp parallel num_threads(2)
    {
        const int me = omp_get_thread_num();
#pragma omp barrier
        if (me == 0)
            t0 = __rdtsc();
        for (long i = 0; i < rounds; i++) {
            if (me == 0) {
                atomic_store(&flag, 2 * i + 1);
                while (atomic_load(&flag) != 2 * i + 2)
                    ;
            } else {
                while (atomic_load(&flag) != 2 * i + 1)
                    ;
                atomic_store(&flag, 2 * i + 2);
            }
        }
    }
    return (double)(__rdtsc() - t0) / TSC_MHZ * 1000.0 / (2.0 * rounds);
}

int main(void)
{
    y = aligned_alloc(64, sizeof(float) * C * H * W);
    if (y == NULL)
        return 1;
    static const char *names[] = {"empty region", "halves of every plane's rows",
                                  "the same, a gap of 4 rows", "halves of the planes"};
    for (int which = 0; which < 4; which++)
        printf("%-30s %.2f us\n", names[which], run(which));
    printf("%-30s %.0f ns\n", "core to core", core_to_core_ns());
    free(y);
    return 0;
}
