"""Conv-net predict on ONE thread, timed in CPU time (time.process_time): for
a shared, loaded machine, where wall-clock medians of two-thread runs
measure the neighbours. nncore alone: run it under two installs (two venvs)
to compare versions, the sides taking turns.

    python benchmarks/bench_predict_cputime.py [--rounds 5] [--json FILE]

Rows (random weights, eval mode; the time does not depend on the values):
ResNet-20 and the small CNN predict at batch 1 and 256 (28x28 images), and
one point of a loss-landscape grid: ResNet-20 predict over 2,000 images in
calls of 256 (loss_landscape's default for images) plus the cross-entropy,
on Fashion-MNIST when installed, else random images. Prints the median
CPU time per call and images per CPU second of each row.
"""
import argparse
import json
import statistics
import time

import numpy as np

import nncore as nn


def landscape_data(rng):
    try:
        (X, y), _ = nn.datasets.load_fashion_mnist(flatten=False)
        return X[:2000], y[:2000]
    except FileNotFoundError:
        return (rng.standard_normal((2000, 1, 28, 28)).astype(np.float32),
                rng.integers(0, 10, 2000))


def rows(rounds):
    nn.set_num_threads(1)
    rng = np.random.default_rng(0)
    nn.manual_seed(0)
    nets = {"ResNet-20": nn.models.resnet(20).eval(), "small CNN": nn.models.small_cnn().eval()}
    cases = []
    for name, model in nets.items():
        for batch, calls in ((1, 100), (256, 1)):
            X = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
            cases.append((f"{name} predict batch {batch}", batch, calls,
                          lambda m=model, X=X, k=calls: [m.predict(X) for _ in range(k)]))
    X, y = landscape_data(rng)
    loss, model = nn.CrossEntropyLoss(), nets["ResNet-20"]
    cases.append(("landscape point: ResNet-20, 2,000 images", len(X), 1,
                  lambda: loss.forward(model.predict(X, batch_size=256), y)))
    times = {name: [] for name, *_ in cases}
    for _ in range(rounds):
        for name, _, calls, run in cases:
            run()                                   # warm: buffers, caches
            start = time.process_time()
            run()
            times[name].append((time.process_time() - start) / calls)
    return [(name, images, statistics.median(times[name])) for name, images, _, _ in cases]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()
    results = rows(args.rounds)
    print(f"nncore {nn.__version__}, {nn.info()['isa']} kernels, 1 thread, CPU time, "
          f"median of {args.rounds}")
    for name, images, seconds in results:
        print(f"{name:44s} {seconds * 1e3:10.3f} ms per call  {images / seconds:8.0f} images/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"case": n, "images": i, "seconds": s} for n, i, s in results], f,
                      indent=1)


if __name__ == "__main__":
    main()
