/* Internal: per-thread scratch buffers any kernel may borrow (workspace.c).
 *
 * Each calling thread has one buffer per slot, 64-byte aligned, grown on
 * demand and kept for the thread's lifetime, so hot kernels allocate nothing
 * once warm. Several Python threads may run kernels at once: each gets its
 * own buffers (an OpenMP team shares its calling thread's). A buffer stays
 * valid until the same thread asks for the same slot again. */
#ifndef NN_WORKSPACE_H
#define NN_WORKSPACE_H

#include <stddef.h>

/* Slots: one per user that may hold a buffer while another runs.
 *   PACK:  the GEMM's packed panels of A and B
 *   AUX:   the GEMM's transposed result or gathered vector (live with PACK)
 *   LAYER: a layer kernel's own buffer (e.g. an im2col matrix), live while
 *          the GEMMs it calls use PACK and AUX
 *   SHARED: data of a layer kernel that its whole OpenMP team reads (the
 *          direct convolution's packed weights), live while the team's
 *          threads use their own LAYER, PACK and AUX slots */
enum { NN_WS_PACK, NN_WS_AUX, NN_WS_LAYER, NN_WS_SHARED, NN_WS_SLOTS };

/* At least nfloats floats in `slot` for the calling thread, 64-byte aligned;
 * the contents are undefined. NULL when it cannot be had. */
float *nn_workspace_get(int slot, size_t nfloats);

#endif
