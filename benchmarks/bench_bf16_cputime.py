"""bf16 against float32 on ONE thread, timed in CPU time: for a shared, loaded
machine, where wall-clock medians of two-thread runs measure the neighbours.

    python benchmarks/bench_bf16_cputime.py [--rounds 7] [--gemm 1024] [--batch 1024]

On one thread every side (nncore's OpenMP, OpenBLAS, PyTorch's intra-op pool)
runs its work in the calling thread, so time.thread_time() counts that
thread's CPU time only: time it spent descheduled while other processes ran
is not counted. (What load still changes: caches shared with the neighbours,
and their context switches; compare numbers from one run.)

Cases, the sides taking turns in every round, medians over the rounds:
- GEMM n x n x n (NN): nncore float32, nncore bf16, NumPy (OpenBLAS float32);
  GFLOP/s and the bf16 side's % of the bf16 peak (vdpbf16ps probe, CPU time).
- One training epoch of 784-256-128-10 (ReLU, softmax cross-entropy, SGD
  lr=0.01) at batch `batch`: nncore float32, nncore bf16
  (Trainer(precision="bf16")), PyTorch float32, PyTorch with
  torch.autocast("cpu", dtype=torch.bfloat16); samples per CPU second.
"""
import argparse
import statistics
import time

import numpy as np

import nncore
from nncore import _core
from nncore.bench.harness import thread_limits
from nncore.bench.mlp import _data
from nncore.bench.train import train_contender

SIZES = (784, 256, 128, 10)


def cpu_time(fn):
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def take_turns(fns, rounds):
    """name -> list of CPU seconds per call, the sides alternating."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            times[name].append(cpu_time(fns[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


def best_rate(probe, iters=2_000_000, repeats=5):
    """GFLOP/s of a C peak probe (flops per CPU second), the best of
    `repeats`; 0 when the probe does nothing on this CPU."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.thread_time()
        flops = probe(iters)
        best = max(best, flops / max(time.thread_time() - t0, 1e-9) / 1e9)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--gemm", type=int, default=1024, help="GEMM size n (0: skip)")
    p.add_argument("--batch", type=int, default=1024, help="training batch size (0: skip)")
    p.add_argument("--samples", type=int, default=16384, help="samples per training epoch")
    args = p.parse_args(argv)
    info = nncore.info()
    print(f"nncore {info['version']}: isa {info['isa']}, bf16 kernel {info['bf16_kernel']}, "
          f"amx {info['amx']}; 1 thread, CPU time (time.thread_time)")
    with thread_limits(1):
        fma = best_rate(_core.fma_peak)
        bf16 = best_rate(_core.bf16_peak)
        print(f"peaks (CPU time): float32 FMA {fma:.0f} GFLOP/s, bf16 (vdpbf16ps) "
              + (f"{bf16:.0f} GFLOP/s" if bf16 else "none"))
        if args.gemm:
            n = args.gemm
            rng = np.random.default_rng(0)
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            outs = [np.empty((n, n), np.float32) for _ in range(3)]
            med = take_turns({
                "nncore f32": lambda: nncore.matmul(a, b, out=outs[0]),
                "nncore bf16": lambda: nncore.matmul(a, b, out=outs[1], precision="bf16"),
                "numpy f32": lambda: np.matmul(a, b, out=outs[2]),
            }, 3 * args.rounds)
            flop = 2.0 * n ** 3
            print(f"GEMM {n}x{n}x{n}: " + ", ".join(
                f"{name} {flop / s / 1e9:.0f} GFLOP/s" for name, s in med.items()))
            print(f"  bf16 / nncore f32 {med['nncore f32'] / med['nncore bf16']:.2f}x, "
                  f"bf16 / numpy {med['numpy f32'] / med['nncore bf16']:.2f}x"
                  + (f", bf16 at {100 * flop / med['nncore bf16'] / 1e9 / bf16:.0f}% of the "
                     f"bf16 peak" if bf16 else ""))
        if args.batch:
            X, y = _data(args.samples, SIZES)
            sides = {"nncore f32": ("nncore", "float32"), "nncore bf16": ("nncore", "bf16"),
                     "torch f32": ("torch", "float32"), "torch autocast": ("torch_bf16", None)}
            fns = {}
            for label, (name, precision) in sides.items():
                run = train_contender(name, SIZES, args.batch, precision or "float32")
                fns[label] = (lambda run=run: run(X, y))
            med = take_turns(fns, args.rounds)
            rate = {name: args.samples / s for name, s in med.items()}
            print(f"train {'-'.join(map(str, SIZES))} batch {args.batch}, {args.samples} "
                  f"samples per epoch: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rate.items()))
            r = rate["nncore bf16"]
            print(f"  nncore bf16 vs nncore f32 {r / rate['nncore f32']:.2f}x, vs torch f32 "
                  f"{r / rate['torch f32']:.2f}x, vs torch autocast "
                  f"{r / rate['torch autocast']:.2f}x (torch autocast vs torch f32 "
                  f"{rate['torch autocast'] / rate['torch f32']:.2f}x)")


if __name__ == "__main__":
    main()
