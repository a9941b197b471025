"""One-image forward calls of ResNet-20's convolution shapes, 1 and 2 threads,
with the weights packed ahead (as a frozen model's) and packed by the call
(as ``model.predict``'s).

    python benchmarks/bench_conv_one_image.py [--rounds 9] [--calls 200]

Per shape (28x28 input, ReLU, a bias), the four cases take turns in one
process; each round times `calls` calls, and the median per call over the
rounds is printed. Two threads split one image among themselves, so these
rows show what that split costs: compare a row's 2-thread time with half its
1-thread time.
"""
import argparse
import time

import numpy as np

import nncore as nn
from nncore import _core

# (in, out, size, stride, kernel): ResNet-20's convolutions on 28x28 images
SHAPES = [(1, 16, 28, 1, 3), (16, 16, 28, 1, 3), (16, 32, 28, 2, 3), (16, 32, 28, 2, 1),
          (32, 32, 14, 1, 3), (32, 64, 14, 2, 3), (32, 64, 14, 2, 1), (64, 64, 7, 1, 3)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    previous = nn.get_num_threads()
    print("in->out size stride kernel | 1 thread: packed, by the call | "
          "2 threads: packed, by the call (us per call)")
    try:
        for c, o, s, stride, k in SHAPES:
            pad = k // 2
            x = rng.standard_normal((1, c, s, s)).astype(np.float32)
            w = rng.standard_normal((o, c, k, k)).astype(np.float32)
            b = rng.standard_normal(o).astype(np.float32)
            side = (s + 2 * pad - k) // stride + 1
            y = np.empty((1, o, side, side), np.float32)
            cases = []
            for threads in (1, 2):
                nn.set_num_threads(threads)
                pack = _core.conv2d_pack(x.shape, w, b, stride=stride, padding=pad)
                for packed in (pack, None):
                    cases.append((threads, lambda p=packed: _core.conv2d_forward(
                        x, w, b, y, stride, pad, act=_core.ACT_CODES["relu"], packed=p)))
            times = [[] for _ in cases]
            for _ in range(args.rounds):
                for i, (threads, call) in enumerate(cases):
                    nn.set_num_threads(threads)
                    time.sleep(0.01)
                    for _ in range(20):
                        call()
                    t0 = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    times[i].append((time.perf_counter() - t0) / args.calls)
            us = [np.median(t) * 1e6 for t in times]
            print(f"{c}->{o} {s}x{s} s{stride} k{k} | {us[0]:.1f}, {us[1]:.1f} | "
                  f"{us[2]:.1f}, {us[3]:.1f}")
    finally:
        nn.set_num_threads(previous)


if __name__ == "__main__":
    main()
