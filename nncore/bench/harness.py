"""Measuring: thread limits shared by every side, timing in turns with a
pause before each block, and the row a family reports for one case (medians,
spread, rates, ratios)."""
import contextlib
import statistics
import sys
import time

import numpy as np

from .. import _core
from ..runtime import set_num_threads

# A row is flagged noisy when a side's interquartile range exceeds this
# fraction of its median.
SPREAD_LIMIT = 0.25
PEERS = ("numpy", "torch", "sklearn", "onnxruntime")
# Every side a row may hold besides "nncore", in the order the reports show
# them: with --precision bf16, "nncore" is nncore in bf16 and two more sides
# run, nncore in float32 and PyTorch under torch.autocast(bfloat16).
SIDES = ("nncore_f32", "numpy", "torch", "torch_bf16", "sklearn", "onnxruntime")


@contextlib.contextmanager
def thread_limits(threads):
    """Run both sides with `threads` threads (None: leave the defaults)."""
    if threads is None:
        yield _core.get_num_threads()
        return
    previous = _core.get_num_threads()
    set_num_threads(threads)
    torch = sys.modules.get("torch")   # PyTorch's own pool, when a family imported it
    torch_previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # NumPy keeps its own default
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(threads, user_api="blas")
    try:
        with limits:
            yield threads
    finally:
        set_num_threads(previous)
        if torch is not None:
            torch.set_num_threads(torch_previous)


def available_peers(peers=None, relevant=PEERS):
    """The peers to run among `relevant` (default: all that import). NumPy is
    always there; "torch", "sklearn" and "onnxruntime" (which needs onnx too,
    to write the model) are imported here, before any thread limits are set,
    so their thread pools can be limited too."""
    wanted = [p for p in (peers if peers is not None else relevant) if p in relevant]
    out = []
    for name in wanted:
        if name == "numpy":
            out.append(name)
            continue
        try:
            if name == "torch":
                import torch  # noqa: F401
            elif name == "sklearn":
                import sklearn  # noqa: F401
            elif name == "onnxruntime":
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
            else:
                raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
        except ImportError:
            continue
        out.append(name)
    return out


def time_many(fns, budget, rounds=4, gap=0.15):
    """Time each of fns (a dict name -> callable) in blocks, taking turns
    (the order rotates each round); return name -> list of seconds per call.

    Each block starts after a pause and an untimed call: every library keeps
    idle worker threads spinning for a while after a call (OpenBLAS for
    ~0.1 s, OpenMP for up to milliseconds), and on a machine with few cores
    those spinning threads would be timed as part of the next side's call.
    The pause lets them go to sleep; medians then compare steady states."""
    names = list(fns)
    for name in names:     # warm caches and buffers
        fns[name]()
    repeats = {}
    for name in names:
        t0 = time.perf_counter()
        fns[name]()
        once = max(time.perf_counter() - t0, 1e-7)
        repeats[name] = int(min(max(budget / rounds / once, 2), 400))
    times = {name: [] for name in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            fn = fns[name]
            if gap:
                time.sleep(gap)
            fn()
            for _ in range(repeats[name]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def time_epochs(runs, X, y, batch, target, max_n, rounds, gap, min_n=64):
    """Time whole training epochs: runs maps a side to run(X, y), one epoch
    over (X, y) at this batch size. Each side gets its own amount of data,
    grown from max(2 batch, min_n) samples until one epoch takes about
    `target` seconds (or max_n samples), warmed up at that size; then the
    sides take turns, `rounds` epochs each, with a pause of `gap` seconds
    before each. Returns (name -> seconds per epoch, name -> samples per
    epoch)."""
    calls, counts = {}, {}
    for name, run in runs.items():
        n = min(max(2 * batch, min_n), len(X))
        while True:       # warm up at this size, then time one epoch
            run(X[:n], y[:n])
            t0 = time.perf_counter()
            run(X[:n], y[:n])
            dt = time.perf_counter() - t0
            if dt >= target or n >= min(max_n, len(X)):
                break
            n = min(max_n, len(X), int(n * min(16.0, max(2.0, 1.2 * target / max(dt, 1e-6)))))
        calls[name] = (lambda run=run, n=n: run(X[:n], y[:n]))
        counts[name] = n
    names = list(runs)
    times = {name: [] for name in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return times, counts


def spread(times):
    """Interquartile range over the median: how noisy a set of timings is."""
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


def summarize(family, group, case, times, threads, *, work=None, metric=None, scale=1.0,
              limit=None, limit_name=None, per_call=None):
    """A row from name -> seconds per call. work: what one call does (FLOPs,
    bytes, samples; per_call[name] overrides it per side), reported as
    `<name>_rate` = work / median * scale in `metric` units, and as
    `<name>_pct` of `limit` (same units). ratio_<peer> = peer time / nncore
    time per unit of work (> 1: nncore faster); `ratio` is the NumPy one."""
    row = {"family": family, "group": group, "case": case, "threads": threads,
           "isa": _core.get_isa(), "contenders": list(times), "metric": metric,
           "work": work, "limit": limit, "limit_name": limit_name, "repeats": {}}
    noisy = False
    for name, ts in times.items():
        per = (per_call or {}).get(name, 1)
        ts = [t / per for t in ts]          # seconds per unit (per sample for train)
        med = statistics.median(ts)
        row[f"{name}_s"] = med
        row[f"{name}_min_s"] = min(ts)
        row[f"{name}_max_s"] = max(ts)
        row[f"{name}_spread"] = sp = spread(ts)
        row["repeats"][name] = len(ts)
        noisy = noisy or sp > SPREAD_LIMIT
        if work is not None:
            row[f"{name}_rate"] = work / med * scale if med > 0 else float("inf")
            if limit:
                row[f"{name}_pct"] = 100.0 * row[f"{name}_rate"] / limit
    row["noisy"] = noisy
    if "nncore" in times:
        for name in times:
            if name != "nncore":
                row[f"ratio_{name}"] = row[f"{name}_s"] / row["nncore_s"]
        if "numpy" in times:
            row["ratio"] = row["ratio_numpy"]
    return row


def torch_epoch(model, optimizer, batch, autocast=False):
    """PyTorch's ordinary training loop as a function run(X, y): one epoch
    of softmax cross-entropy over a random permutation, in batches of
    `batch` (the peer side of the train and conv families). autocast: the
    forward pass and loss under torch.autocast("cpu", dtype=torch.bfloat16),
    the backward pass outside it, as PyTorch's AMP recipe does."""
    import torch
    loss_fn = torch.nn.CrossEntropyLoss()
    mixed = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast \
        else contextlib.nullcontext

    def run(X, y):
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt), batch):
            idx = perm[i:i + batch]
            optimizer.zero_grad()
            with mixed():
                loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return run
