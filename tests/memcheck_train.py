"""A short training run for valgrind memcheck (CI: .ci/run; not a pytest file).

    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full \\
        --errors-for-leak-kinds=definite --error-exitcode=1 \\
        --suppressions=tests/memcheck.supp python -P tests/memcheck_train.py

Exercises every C path once on a small problem -- the GEMM paths (GEMV,
small in place, packed, narrow transposed), every activation forward and
backward, the losses, the optimizers, Dropout -- then a few dozen training
steps through Trainer.fit, predict from two Python threads (per-thread GEMM
workspaces freed at thread exit), save/load, and the bad-input paths that
raise. Prints what it did; memcheck's exit status is the verdict.
"""
import os
import sys
import tempfile
import threading

import numpy as np

import nncore as nn
from nncore import _core


def main():
    rng = np.random.default_rng(0)
    f32 = np.float32
    # GEMM paths: m = 1 (GEMV, both orientations), small, packed, narrow with a transposed A.
    for m, n, k in ((1, 37, 20), (5, 7, 3), (70, 130, 300), (200, 3, 150)):
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((k, m) if ta else (m, k)).astype(f32)
                b = rng.standard_normal((n, k) if tb else (k, n)).astype(f32)
                nn.matmul(a, b, trans_a=ta, trans_b=tb, bias=np.ones(n, f32), activation="relu")
    for isa in _core.isa_available():
        _core.set_isa(isa)
        nn.manual_seed(1)
        model = nn.Sequential(nn.Dense(12, 16), nn.ReLU(), nn.Dense(16, 16, activation="gelu"),
                              nn.LeakyReLU(), nn.Dropout(0.2), nn.Dense(16, 8), nn.Tanh(),
                              nn.Dense(8, 8), nn.Sigmoid(), nn.Dense(8, 4), nn.Softmax())
        x = rng.standard_normal((9, 12)).astype(f32)
        model.backward(model.forward(x).copy())
    _core.set_isa(_core.isa_available()[-1])

    X = rng.standard_normal((256, 12)).astype(f32)
    y = rng.integers(0, 3, 256)
    losses = [(nn.CrossEntropyLoss(), y, 3), (nn.BCEWithLogitsLoss(), (y > 0).astype(f32), 1),
              (nn.MSELoss(), X[:, :2], 2), (nn.HuberLoss(0.5), X[:, :2], 2)]
    optimizers = [nn.SGD(0.05, momentum=0.9, nesterov=True), nn.Adam(0.01), nn.AdamW(0.01),
                  nn.RMSprop(0.01, momentum=0.5, centered=True)]
    steps = 0
    for (loss, target, outputs), opt in zip(losses, optimizers):
        nn.manual_seed(2)
        model = nn.Sequential(nn.Dense(12, 32), nn.ReLU(), nn.Dropout(0.1), nn.Dense(32, outputs))
        trainer = nn.Trainer(model, loss, opt, batch_size=32, seed=0)
        trainer.fit(X, target, 1, validation_split=0.25, verbose=0)
        steps += 6
    print(f"trained {steps} steps over 4 losses and 4 optimizers")

    def predict_in_thread():
        model.predict(X)
        nn.matmul(X, X.T)
    threads = [threading.Thread(target=predict_in_thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.nnc")
        nn.save(model, path)
        assert np.array_equal(nn.load(path).predict(X), model.predict(X))

    for bad in (lambda: nn.matmul(X, X), lambda: model.forward(X[:, :5]),
                lambda: nn.CrossEntropyLoss().forward(X[:, :3], y + 5),
                lambda: nn.Dense(10**6, 10**6)):
        try:
            bad()
        except (ValueError, TypeError, MemoryError):
            pass
        else:
            raise AssertionError("bad input accepted")
    print("memcheck run done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
