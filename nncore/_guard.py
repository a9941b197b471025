"""What stands between user input and the C core: converting arrays to what
the kernels take, and refusing allocations the machine cannot back.

Conversion: the kernels read float32 (or int64 labels), C-contiguous and
aligned memory. ``c_array`` returns its argument when it already is that, else
one copy; a ragged list or anything NumPy cannot make an array of raises
TypeError naming the argument.

Memory: on Linux a large ``np.empty``/``np.zeros`` succeeds whatever its size
(memory is overcommitted) and the kernel kills the process later, when the
pages are first written. So before nncore allocates anything that could be
large (layer parameters and buffers, matmul and predict outputs, optimizer
state, converted copies of the input) it compares the size with the memory
available and raises MemoryError naming what the memory was for. Small
allocations (below ``CHECK_ABOVE``) are never checked: no file is read on the
hot path.
"""
import numpy as np

__all__ = ["available_bytes", "check_memory", "empty", "zeros", "c_array", "as_array"]

CHECK_ABOVE = 64 << 20
# Arrays nncore allocates start on a cache line: a misaligned vector load
# touches two lines, which slows the L2-bound matrix-vector products of a
# batch-1 forward (docs/measurements.md).
ALIGN = 64

_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # v2
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",                   # v1
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _read_int(path):
    with open(path, "rb") as f:
        return int(f.read().split()[0])


def available_bytes():
    """Memory this process can still get: MemAvailable + SwapFree from
    /proc/meminfo, capped by the cgroup's remaining limit; None when unknown
    (not Linux)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        available = (int(fields[b"MemAvailable"].split()[0])
                     + int(fields.get(b"SwapFree", b"0").split()[0])) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit, usage = _read_int(limit_file), _read_int(usage_file)
        except (OSError, ValueError, IndexError):
            continue      # absent, or "max" (no limit)
        available = min(available, max(limit - usage, 0))
        break
    return available


def _gib(nbytes):
    return f"{nbytes / 2**30:,.1f} GiB"


def check_memory(nbytes, what):
    """Raise MemoryError when ``nbytes`` exceeds the memory available.
    ``what`` (a str, or a function returning one, called only then) says
    what the memory was for."""
    if nbytes < CHECK_ABOVE:
        return
    available = available_bytes()
    if available is not None and nbytes > available:
        what = what() if callable(what) else what
        raise MemoryError(f"{what} needs {_gib(nbytes)}, more than the {_gib(available)} "
                          "of memory available")


def _nbytes(shape, dtype):
    n = np.dtype(dtype).itemsize
    for d in shape:
        n *= int(d)      # Python ints: no overflow
    return n


def empty(shape, dtype, what):
    """``np.empty(shape, dtype)``, starting on an ``ALIGN``-byte boundary,
    after ``check_memory`` (``what`` as there)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape) if np.iterable(shape) else (shape,)
    nbytes = _nbytes(shape, dtype)
    if nbytes >= CHECK_ABOVE:
        check_memory(nbytes, what)
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype, what):
    """``empty`` filled with zeros."""
    arr = empty(shape, dtype, what)
    arr.fill(0)
    return arr


def as_array(x, who, what):
    """``np.asarray(x)``, with a TypeError naming ``who`` and ``what`` when
    NumPy cannot make an array of it (ragged nesting, odd objects)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - NumPy raises ValueError, TypeError, ...
        raise TypeError(f"{who}: {what} must be an array of numbers, got "
                        f"{type(x).__name__} ({exc})") from None


def c_array(arr, dtype, who, what):
    """``arr`` (an ndarray of real numbers) as a C-contiguous, aligned array of
    ``dtype``: itself when it already is one, else one checked copy."""
    flags = arr.flags
    if arr.dtype == dtype and flags.c_contiguous and flags.aligned:
        return arr
    check_memory(_nbytes(arr.shape, dtype), f"{who}: a {np.dtype(dtype).name} copy of {what}")
    return np.require(arr, dtype, ["C", "A"])
