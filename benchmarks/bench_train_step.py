"""One training step of a 784-256-128-10 ReLU MLP: time per step and where it goes.

    python benchmarks/bench_train_step.py [--batches 1,32,128,1024] [--threads N] [--json]

A step is what a training loop does per batch:

    out = model.forward(X); loss.forward(out, y)
    model.backward(loss.backward(), input_grad=False); opt.step(model.parameters())

with Sequential(Dense(784,256), ReLU(), Dense(256,128), ReLU(), Dense(128,10)),
CrossEntropyLoss and SGD(lr=0.01, momentum=0.9). The Dense+ReLU pairs run fused
(bias and ReLU in the GEMM epilogue).

The breakdown replays the same C kernels on the model's own buffers, one at a
time, through the bindings the layers use (so each includes its ~0.1 us call):
GEMMs (forward, dW = X^T dY, dX = dY W^T), ReLU backward, bias gradients, the
loss and the optimizer. "outside GEMM" is the step time minus the GEMM kernels;
"other" is the step time minus the sum of all kernels: Python, plus memory
effects the isolated (cache-warm) kernel timings do not see.

The Python overhead per step is measured on the same architecture shrunk to
2-2-2-2 at batch 1, where every kernel is a few nanoseconds of arithmetic:
that step's time minus its kernels' replay is what the Python layers cost, and
it does not depend on the layer sizes. Every time is the median over repeats of
a timed loop; the machine may be shared, so compare numbers from one run.
"""
import argparse
import json
import sys
import time

import numpy as np

import nncore as nn
from nncore import _core

SIZES = (784, 256, 128, 10)


def timeit(fn, min_time=0.02, repeats=7):
    """Median seconds per call of fn()."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 4:
            break
        n *= 4
    n = max(1, int(n * min_time / max(dt, 1e-9)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return float(np.median(samples))


def build(batch, sizes=SIZES, seed=0):
    nn.manual_seed(seed)
    rng = np.random.default_rng(seed)
    a, b, c, d = sizes
    model = nn.Sequential(nn.Dense(a, b), nn.ReLU(), nn.Dense(b, c), nn.ReLU(), nn.Dense(c, d))
    X = rng.random((batch, a), dtype=np.float32)
    y = rng.integers(0, d, batch)
    return model, nn.CrossEntropyLoss(), nn.SGD(lr=0.01, momentum=0.9), X, y


def kernel_breakdown(model, loss, opt, X, y):
    """Seconds per kernel group, replaying one step's C calls."""
    d1, r1, d2, r2, d3 = model.layers
    relu, ce = _core.ACT_CODES["relu"], _core.LOSS_CROSS_ENTROPY
    h1, h2, out = d1._z, d2._z, d3._z
    grad = loss.backward()
    g2, g1 = r2._dx, r1._dx
    times = {}
    times["gemm forward"] = (timeit(lambda: _core.dense_forward(X, d1._w, d1._b, h1, relu))
                             + timeit(lambda: _core.dense_forward(h1, d2._w, d2._b, h2, relu))
                             + timeit(lambda: _core.dense_forward(h2, d3._w, d3._b, out, 0)))
    # dense_backward without db is the GEMMs only: dW, and dX where needed
    times["gemm backward"] = (
        timeit(lambda: _core.dense_backward(h2, d3._w, grad, d3._dx, d3.grad_weight, None))
        + timeit(lambda: _core.dense_backward(h1, d2._w, g2, d2._dx, d2.grad_weight, None))
        + timeit(lambda: _core.dense_backward(X, d1._w, g1, None, d1.grad_weight, None)))
    times["bias grad"] = (timeit(lambda: _core.bias_backward(grad, d3.grad_bias))
                          + timeit(lambda: _core.bias_backward(g2, d2.grad_bias))
                          + timeit(lambda: _core.bias_backward(g1, d1.grad_bias)))
    times["relu backward"] = (timeit(lambda: _core.act_backward(relu, h2, d3._dx, g2))
                              + timeit(lambda: _core.act_backward(relu, h1, d2._dx, g1)))
    times["loss (fused)"] = timeit(lambda: _core.loss_forward(ce, out, y, 0.0, grad))
    st = [opt._state[id(p)] for p, _ in model.parameters()]
    times["sgd update"] = sum(
        timeit(lambda p=p, g=g, s=s: _core.sgd_step(p, g, s.bufs[0], 0.01, 0.9, 0.0, 0.0,
                                                    False, False))
        for (p, g), s in zip(model.parameters(), st))
    return times


def bench(batch, sizes=SIZES):
    model, loss, opt, X, y = build(batch, sizes)

    def step():
        loss.forward(model.forward(X), y)
        model.backward(loss.backward(), input_grad=False)
        opt.step(model.parameters())

    step()
    t_step = timeit(step, min_time=0.05)
    kernels = kernel_breakdown(model, loss, opt, X, y)
    t_gemm = kernels["gemm forward"] + kernels["gemm backward"]
    result = {
        "batch": batch,
        "step_us": t_step * 1e6,
        "samples_per_s": batch / t_step,
        "kernels_us": {k: v * 1e6 for k, v in kernels.items()},
        "gemm_us": t_gemm * 1e6,
        "outside_gemm_share": (t_step - t_gemm) / t_step,
        "other_us": (t_step - sum(kernels.values())) * 1e6,
    }
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32,128,1024")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        nn.set_num_threads(args.threads)
    results = [bench(int(b)) for b in args.batches.split(",")]
    tiny = bench(1, (2, 2, 2, 2))
    info = nn.info()
    if args.json:
        print(json.dumps({"info": info, "results": results, "python_overhead": tiny}, indent=2))
        return 0
    print(f"nncore {info['version']}  isa={info['isa']}  threads={info['num_threads']}  "
          f"model 784-256-128-10 ReLU, CrossEntropyLoss, SGD(momentum=0.9)")
    groups = list(results[0]["kernels_us"])
    head = f"{'batch':>6} {'step us':>10} {'samples/s':>11} " + " ".join(
        f"{g:>14}" for g in groups) + f" {'outside GEMM':>13} {'other us':>10}"
    print(head)
    for r in results:
        print(f"{r['batch']:>6} {r['step_us']:>10.1f} {r['samples_per_s']:>11.0f} "
              + " ".join(f"{r['kernels_us'][g]:>14.1f}" for g in groups)
              + f" {100 * r['outside_gemm_share']:>12.1f}% {r['other_us']:>10.1f}")
    print(f"Python overhead per step (2-2-2-2 network, batch 1): {tiny['other_us']:.1f} us "
          f"(step {tiny['step_us']:.1f} us, kernels {tiny['step_us'] - tiny['other_us']:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
