/* Optimizer update kernels: fused, in place, one pass over each parameter.
 * Compiled once per ISA (see dispatch.h). */
#include "dispatch.h"
