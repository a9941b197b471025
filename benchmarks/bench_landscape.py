"""Time of a loss landscape: a 21x21 grid over 10k samples of a 784-256-128-10 MLP.

    python benchmarks/bench_landscape.py [--steps 21] [--samples 10000] [--repeats 3]
                                         [--threads 1,2]

Uses the first 10k Fashion-MNIST training images when installed, else
synthetic data of that shape (the time does not depend on the values). For
each thread count it prints the median of ``repeats`` full grids with the
default path (the first Dense layer's GEMMs precomputed), one full forward
pass + loss for scale, and the plain path (``batch_size`` < n turns the
precomputation off) timed on a 5x5 grid and scaled to steps^2 points.
"""
import argparse
import time

import numpy as np

import nncore as nn


def data(samples):
    try:
        (X, y), _ = nn.datasets.load_fashion_mnist()
        return X[:samples], y[:samples], "Fashion-MNIST"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        return (rng.random((samples, 784), dtype=np.float32), rng.integers(0, 10, samples),
                "synthetic")


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    X, y, source = data(args.samples)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(),
                          nn.Dense(128, 10))
    loss = nn.CrossEntropyLoss()
    points = args.steps ** 2
    print(f"{args.steps}x{args.steps} grid, {len(X)} {source} samples, 784-256-128-10, "
          f"{nn.info()['isa']} kernels")
    for threads in (int(t) for t in args.threads.split(",")):
        nn.set_num_threads(threads)
        forward, _ = median_time(lambda: loss.forward(model.forward(X), y), 5)
        grid, times = median_time(
            lambda: nn.loss_landscape(model, loss, X, y, steps=args.steps), args.repeats)
        plain, _ = median_time(
            lambda: nn.loss_landscape(model, loss, X, y, steps=5, batch_size=len(X) // 2 + 1),
            1)
        print(f"{threads} thread(s): grid {grid:.2f} s (runs: "
              f"{', '.join(f'{t:.2f}' for t in times)}), {1e3 * grid / points:.1f} ms/point; "
              f"one forward+loss {1e3 * forward:.0f} ms; plain path {1e3 * plain / 25:.0f} "
              f"ms/point -> {points * plain / 25:.1f} s")


if __name__ == "__main__":
    main()
