/* Per-thread scratch buffers (see workspace.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include "workspace.h"

typedef struct workspace {
    float *buf[NN_WS_SLOTS];
    size_t cap[NN_WS_SLOTS]; /* floats */
} workspace;

static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static int ws_key_ok;

/* Runs when a thread that used a workspace exits. */
static void ws_free(void *p)
{
    workspace *w = p;
    for (int s = 0; s < NN_WS_SLOTS; s++)
        free(w->buf[s]);
    free(w);
}

static void ws_init(void) { ws_key_ok = pthread_key_create(&ws_key, ws_free) == 0; }

float *nn_workspace_get(int slot, size_t nfloats)
{
    if (slot < 0 || slot >= NN_WS_SLOTS)
        return NULL;
    pthread_once(&ws_once, ws_init);
    if (!ws_key_ok)
        return NULL;
    workspace *w = pthread_getspecific(ws_key);
    if (w == NULL) {
        w = calloc(1, sizeof *w);
        if (w == NULL)
            return NULL;
        if (pthread_setspecific(ws_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    if (w->cap[slot] < nfloats) {
        /* Free first: the old contents are not kept, and peak memory stays
         * one buffer per slot. */
        free(w->buf[slot]);
        w->buf[slot] = NULL;
        w->cap[slot] = 0;
        if (nfloats > (SIZE_MAX - 64) / sizeof(float))
            return NULL;
        size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
        w->buf[slot] = aligned_alloc(64, bytes);
        if (w->buf[slot] == NULL)
            return NULL;
        w->cap[slot] = nfloats;
    }
    return w->buf[slot];
}
