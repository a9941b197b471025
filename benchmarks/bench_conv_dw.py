"""The Conv2d weight gradient: Winograd F(2x2, 3x3) (csrc/winograd_dw.c)
against the direct path it replaces, in one process.

    python benchmarks/bench_conv_dw.py [--threads 1] [--reps 11] [--batches 32,128]
    python benchmarks/bench_conv_dw.py --train resnet20 [--threads 2] [--batch 128]
                                       [--rounds 5]

Per layer: `_core.conv2d_backward` with dw and db only (no dx), on the 3x3
stride-1 layers of ResNet-20 (16->16 28x28, 32->32 14x14, 64->64 7x7) and
the small CNN (32->64 14x14), with `_core.set_winograd_dw` switching
between "never" (the direct path, as on main) and "always"; the two sides
alternate, a pause before each, medians and 10th percentiles. With one
thread the clock is the thread's CPU time (the machine is shared: it
leaves out the time the process waited for a core), else the wall clock.
GFLOP/s are the direct convolution's FLOPs over the time (effective, as
nncore.profile() counts them).

--train: one epoch of Trainer.fit per round (nncore.bench.conv's
contender, as `python -m nncore bench conv` runs it) with the switch at
"never" and at "auto", beside PyTorch's loop; samples/s, medians.
"""
import argparse
import time

import numpy as np

import nncore
from nncore import _core

SHAPES = [(16, 28, 16), (32, 14, 32), (64, 7, 64), (32, 14, 64)]   # c, h = w, o


def per_layer(threads, reps, batches):
    nncore.set_num_threads(threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    for batch in batches:
        for c, hw, o in SHAPES:
            x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
            w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
            dy = rng.standard_normal((batch, o, hw, hw)).astype(np.float32)
            dw, db = np.empty_like(w), np.empty(o, np.float32)
            times = {"never": [], "always": []}
            for r in range(reps + 1):            # round 0 warms up
                for mode in times:
                    _core.set_winograd_dw(mode)
                    time.sleep(0.02)
                    t0 = clock()
                    _core.conv2d_backward(x, w, dy, None, dw, db, 1, 1)
                    if r:
                        times[mode].append(clock() - t0)
            flops = 2.0 * batch * o * hw * hw * c * 9
            med = {m: float(np.median(t)) for m, t in times.items()}
            p10 = {m: float(np.percentile(t, 10)) for m, t in times.items()}
            print(f"b{batch:<3d} {c:2d}->{o:2d} {hw:2d}x{hw:<2d} "
                  f"direct {med['never'] * 1e3:7.3f} ms {flops / med['never'] / 1e9:6.1f} GF/s  "
                  f"winograd {med['always'] * 1e3:7.3f} ms "
                  f"{flops / med['always'] / 1e9:6.1f} GF/s  x{med['never'] / med['always']:.2f}"
                  f"  (p10 x{p10['never'] / p10['always']:.2f})", flush=True)
    _core.set_winograd_dw("auto")


def training(net, threads, batch, rounds):
    from nncore.bench.cnn import images
    from nncore.bench.conv import conv_train_contender
    from nncore.bench.harness import thread_limits, time_epochs

    def in_mode(mode, run):
        def epoch(X, y):
            _core.set_winograd_dw(mode)
            return run(X, y)
        return epoch

    with thread_limits(threads):
        X, y = images(2048, 28)
        runs = {"direct": in_mode("never", conv_train_contender("nncore", net, batch)),
                "winograd": in_mode("auto", conv_train_contender("nncore", net, batch)),
                "torch": conv_train_contender("torch", net, batch)}
        times, counts = time_epochs(runs, X, y, batch, 1.0, 2048, rounds, 0.2)
    _core.set_winograd_dw("auto")
    for side, t in times.items():
        rates = " ".join(f"{counts[side] / v:.0f}" for v in t)
        print(f"{net} b{batch} {side:9s} {counts[side] / np.median(t):8.1f} samples/s "
              f"(rounds: {rates})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--train", choices=["cnn", "resnet20"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.train:
        training(a.train, a.threads, a.batch, a.rounds)
    else:
        per_layer(a.threads, a.reps, [int(b) for b in a.batches.split(",")])


if __name__ == "__main__":
    main()
