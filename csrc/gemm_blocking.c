/* GEMM block sizes: every size the driver (gemm.c) blocks by, chosen here
 * from the micro-kernel's register tile and this machine's caches.
 *
 * The register tile (mr x nr) and the deepest block (kc_max) belong to the
 * micro-kernel of each ISA (gemm_kernel_<isa>.c). The cache blocks around
 * it come from the cache sizes, read at run time (users' machines differ
 * from the developers'):
 *
 *   kc  an mr x kc micro-panel of A is reused across a whole row of strips of
 *       C, next to the rows of B streaming past it: at most half of L1d,
 *       rounded down to a multiple of 64, and at most kc_max.
 *   nc  a kc x nc block of packed B is reused by every micro-panel of A: half
 *       of the (per-core) L2, the other half left to A and C; a multiple of nr.
 *   inplace_a  a transposed A read in place keeps the lines of a kc x m depth
 *       block cached while the strips of C pass; above half of L2 it is
 *       packed instead.
 *
 * kc also sets the bits of a result (the sum over k restarts at each block),
 * so it depends on the ISA and the L1 size only, never on the thread count.
 * Sapphire Rapids (48 KiB L1d, 2 MiB L2) and Zen 4 (32 KiB, 1 MiB) both get
 * kc = 512 on the SIMD kernels, and nc = 512 and 256. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "gemm.h"

/* When the caches cannot be read: the smaller of the known machines. */
#define NN_L1D_DEFAULT (32 * 1024)
#define NN_L2_DEFAULT (1024 * 1024)
#define NN_KC_UNIT 64

static int64_t l1d_bytes, l2_bytes;
static pthread_once_t caches_once = PTHREAD_ONCE_INIT;

/* The size in bytes of cpu0's level-`level` data or unified cache from
 * sysfs, or 0. */
static int64_t sysfs_cache_size(int level)
{
    for (int index = 0; index < 16; index++) {
        char path[96], type[32] = "", size[32] = "";
        int lvl = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return 0;
        int ok = fscanf(f, "%d", &lvl) == 1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
        if (ok && (f = fopen(path, "r")) != NULL) {
            ok = fscanf(f, "%31s", type) == 1;
            fclose(f);
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        if (ok && (f = fopen(path, "r")) != NULL) {
            ok = fscanf(f, "%31s", size) == 1;
            fclose(f);
        }
        if (!ok || lvl != level || type[0] == 'I') /* "Instruction" */
            continue;
        char *end;
        int64_t bytes = strtoll(size, &end, 10);
        if (*end == 'K')
            bytes *= 1024;
        else if (*end == 'M')
            bytes *= 1024 * 1024;
        return bytes;
    }
    return 0;
}

static void read_caches(void)
{
    int64_t l1 = 0, l2 = 0;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (l1 <= 0)
        l1 = sysfs_cache_size(1);
    if (l2 <= 0)
        l2 = sysfs_cache_size(2);
    /* Absurd answers (a hypervisor's, say) count as unknown. */
    l1d_bytes = l1 >= 4096 && l1 <= (1 << 20) ? l1 : NN_L1D_DEFAULT;
    l2_bytes = l2 >= (64 << 10) && l2 <= (256 << 20) ? l2 : NN_L2_DEFAULT;
}

void nn_gemm_blocking_for(const nn_kernel_table *kt, nn_gemm_blocking *out)
{
    pthread_once(&caches_once, read_caches);
    nn_gemm_tile tile;
    kt->gemm_tile(&tile);
    out->mr = tile.mr;
    out->nr = tile.nr;
    const int64_t kc = l1d_bytes / 2 / (tile.mr * (int64_t)sizeof(float)) / NN_KC_UNIT * NN_KC_UNIT;
    out->kc = max64(NN_KC_UNIT, min64(kc, tile.kc_max));
    const int64_t nc = l2_bytes / 2 / (out->kc * (int64_t)sizeof(float)) / tile.nr * tile.nr;
    out->nc = max64(tile.nr, nc);
    out->inplace_a = l2_bytes / 2;
}

void nn_cache_sizes(int64_t *l1d, int64_t *l2)
{
    pthread_once(&caches_once, read_caches);
    *l1d = l1d_bytes;
    *l2 = l2_bytes;
}
