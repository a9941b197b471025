"""Winograd F(2x2, 3x3) against the direct convolution, per layer: the
forward pass and the input gradient of 3x3 stride-1 convolutions, the two
algorithms forced in turn (_core.set_winograd "never" / "always") in one
process, a pause before each side, medians over the rounds.

    python benchmarks/bench_winograd.py [--threads 1] [--batch 1 32 128] [--rounds 3]

One thread is timed in the calling thread's CPU time (time.thread_time: the
time it waited for a core on a shared machine is left out), two threads in
wall-clock time. The "auto" column says which one the default mode takes
for that shape (conv.c's wino_pays; it never depends on the batch size).
"""
import argparse
import time

import numpy as np

import nncore
from nncore import _core

# (in, out, plane): ResNet-20's and the small CNN's 3x3 stride-1 shapes,
# and others around the rule's boundary
SHAPES = [(16, 16, 28), (32, 32, 14), (64, 64, 7), (32, 64, 14), (16, 16, 14), (16, 16, 20),
          (24, 24, 20), (32, 32, 8), (48, 48, 10), (64, 64, 14), (128, 128, 7)]


def median_time(fn, clock, budget):
    fn()
    times, end = [], time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 5:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per side and round")
    args = ap.parse_args()
    nncore.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    previous = _core.set_winograd("auto")
    print(f"threads={args.threads}, {clock.__name__}, median us per call; x = direct / winograd")
    print(f"{'layer':>15} {'batch':>5} {'auto':>6} | {'fwd direct':>10} {'winograd':>9} {'x':>5}"
          f" | {'dx direct':>10} {'winograd':>9} {'x':>5}")
    try:
        for n in args.batch:
            for c, o, hw in SHAPES:
                x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
                w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
                b = rng.standard_normal(o).astype(np.float32)
                y = np.empty((n, o, hw, hw), np.float32)
                dy = rng.standard_normal(y.shape).astype(np.float32)
                dx = np.empty_like(x)
                passes = {"fwd": lambda: _core.conv2d_forward(x, w, b, y, 1, 1, 1, 1, 1),
                          "dx": lambda: _core.conv2d_backward(x, w, dy, dx, None, None, 1, 1)}
                _core.set_winograd("auto")
                auto = "wino" if _wino_taken(x, w, b) else "direct"
                t = {}
                for _ in range(args.rounds):
                    for mode in ("never", "always"):
                        _core.set_winograd(mode)
                        for name, fn in passes.items():
                            time.sleep(0.05)
                            t.setdefault((name, mode), []).append(
                                median_time(fn, clock, args.budget))
                m = {k: np.median(v) * 1e6 for k, v in t.items()}
                row = [f"{f'{c}->{o} {hw}x{hw}':>15} {n:>5} {auto:>6}"]
                for name in passes:
                    a, b2 = m[name, "never"], m[name, "always"]
                    row.append(f"{a:10.1f} {b2:9.1f} {a / b2:5.2f}")
                print(" | ".join(row), flush=True)
    finally:
        _core.set_winograd(previous)


def _wino_taken(x, w, b):
    """Whether the default mode runs Winograd here: its output bits equal
    the forced Winograd's (and differ from the direct path's)."""
    y = {}
    for mode in ("auto", "always", "never"):
        _core.set_winograd(mode)
        y[mode] = np.empty((1, w.shape[0]) + x.shape[2:], np.float32)
        _core.conv2d_forward(x[:1], w, b, y[mode], 1, 1, 1, 1)
    _core.set_winograd("auto")
    return np.array_equal(y["auto"], y["always"]) and not np.array_equal(y["auto"], y["never"])


if __name__ == "__main__":
    main()
