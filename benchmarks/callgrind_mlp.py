"""A fixed workload for comparing instruction counts between two builds,
where wall-clock timings are too noisy (a shared machine):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -P benchmarks/callgrind_mlp.py fit 1 256     # then ... fit 1 512

The difference of the two totals divided by 256 is the instruction count of
one training step (the import and set-up cancel out); likewise `forward N`,
`backward N` (with the folded SGD update) and `predict N` for one-sample
calls. One thread; note that under valgrind the CPU reports no AVX-512 and
smaller caches, so the counts are of the AVX2 path."""
import sys

import numpy as np

import nncore as nn


def main(what, a, b=0):
    nn.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = max(int(b), 4)
    X = rng.standard_normal((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(),
                          nn.Dense(128, 10))
    loss = nn.CrossEntropyLoss()
    x1, y1 = X[:1], y[:1]
    loss.forward(model.forward(x1), y1)
    grad = loss.backward().copy()
    if what == "fit":                       # fit BATCH SAMPLES: one epoch
        nn.Trainer(model, loss, nn.SGD(0.01), batch_size=int(a), seed=0).fit(
            X, y, epochs=1, verbose=0)
    elif what == "forward":                 # forward CALLS
        for _ in range(int(a)):
            model.forward(x1)
    elif what == "backward":
        for _ in range(int(a)):
            model.backward(grad, input_grad=False, sgd_lr=0.01)
    elif what == "predict":
        for _ in range(int(a)):
            model.predict(x1)
    else:
        raise SystemExit(f"unknown workload {what!r}: fit, forward, backward or predict")


if __name__ == "__main__":
    main(*sys.argv[1:])
