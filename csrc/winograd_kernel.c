/* The Winograd F(2x2, 3x3) transform loops (winograd.h), compiled once per
 * ISA (dispatch.h): the flat loops over tiles (input) and channels
 * (output) vectorise with each ISA's flags. Adds and subtractions only
 * (and the output's bias and activation), the same operations per value on
 * every ISA. */
#include "dispatch.h"
#include "winograd.h"

void NN_ISA_FN(wino_input)(int64_t len, const float *d, int64_t ldd, float *v, int64_t ldv)
{
    nn_wino_input_tiles(len, d, ldd, v, ldv);
}

void NN_ISA_FN(wino_weights)(int64_t kn, int64_t c, const float *w, int64_t ldk, int64_t ldc,
                             int flip, const float *scale, float *u, int64_t ldu, int64_t ldcu)
{
    float g[9][16], s[16];
    for (int64_t l = 0; l < 16; l++)
        s[l] = l < kn ? (scale ? scale[l] : 1.0f) : 0.0f;
    for (int64_t ci = 0; ci < c; ci++) {
        /* the 16 kernels (zeros past kn), rotated by 180 degrees with flip */
        for (int i = 0; i < 9; i++)
            for (int64_t l = 0; l < 16; l++)
                g[i][l] = l < kn ? w[l * ldk + ci * ldc + (flip ? 8 - i : i)] : 0.0f;
        nn_wino_weight_lanes((const float(*)[16])g, s, u + ci * ldcu, ldu);
    }
}

void NN_ISA_FN(wino_output)(int64_t tw, int64_t k, const float *m, int64_t ldm, int64_t ldt,
                            const float *bias, int act, float *y0, float *y1, int64_t ldk)
{
    /* one loop per activation: the tile function's loop then has none */
    for (int64_t q = 0; q < tw; q++) {
        float *a = y0 + 2 * q * ldk, *b = y1 + 2 * q * ldk;
        if (act == NN_ACT_RELU)
            nn_wino_output_tile(k, m + q * ldt, ldm, bias, NN_ACT_RELU, a, b, ldk);
        else
            nn_wino_output_tile(k, m + q * ldt, ldm, bias, NN_ACT_NONE, a, b, ldk);
    }
}
