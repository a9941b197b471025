/* Losses: forward/backward pairs, mean reduction (PyTorch's definitions). */
#include "nncore.h"
