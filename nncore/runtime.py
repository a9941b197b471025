"""The run time: the OpenMP threads nncore's kernels use, and what this
build found on this machine."""
import numpy as np

from . import _core
from ._version import __version__

__all__ = ["set_num_threads", "get_num_threads", "info"]


def set_num_threads(n):
    """Set the number of OpenMP threads every nncore kernel uses
    (1 <= n <= 1024), in every Python thread of the process.

    The default follows ``OMP_NUM_THREADS`` (else the number of cores).
    ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` lowers the count
    for the thread that enters it; kernels never use more threads than either
    says. Results are bitwise identical for any thread count.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if not 1 <= n <= _core.MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {_core.MAX_THREADS}], got {n}")
    _core.set_num_threads(int(n))


def get_num_threads():
    """The number of OpenMP threads nncore's kernels will use."""
    return _core.get_num_threads()


def info():
    """A dict describing this build and machine: version, the ISA in use, the
    ISAs available, thread count, OpenMP version, compiler and flags, and the
    bfloat16 GEMM's hardware: ``bf16`` (this CPU runs ``precision="bf16"`` on
    AVX512_BF16; without it a portable kernel gives the same results, more
    slowly), ``bf16_kernel`` (the kernel in use: ``"avx512_bf16"`` or
    ``"generic"``; ``NNCORE_ISA`` below avx512 selects the portable one) and
    ``amx`` (AMX-BF16 tiles present; nncore has no AMX kernel yet)."""
    build = _core.build_info()
    bf16 = _core.bf16_info()
    return {
        "version": __version__,
        "isa": _core.get_isa(),
        "isa_available": _core.isa_available(),
        "num_threads": get_num_threads(),
        "openmp": build["openmp"],
        "compiler": build["compiler"],
        "flags": build["flags"],
        "bf16": bf16["native"],
        "bf16_kernel": bf16["kernel"],
        "amx": bf16["amx"],
    }
