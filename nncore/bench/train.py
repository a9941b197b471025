"""The train family: Trainer.fit against PyTorch's own loop, scikit-learn's
MLPClassifier and a hand-written NumPy loop, the same MLPs, one epoch per
timed call; then NNClassifier against MLPClassifier, whole fits per solver
(estimators.py)."""
import math
import warnings

import numpy as np

from ..linalg import check_precision
from ..losses import CrossEntropyLoss
from ..optim import SGD
from ..trainer import Trainer
from .estimators import bench_estimators
from .harness import available_peers, summarize, thread_limits, time_epochs, torch_epoch
from .mlp import ARCHS, _arch_name, _data, _nncore_mlp, _torch_mlp
from .registry import family

BATCHES = [1, 32, 128, 1024]
# With precision="bf16": the case (784-256-128-10 at batch 1024), a
# wide MLP, and batch 128 beside it.
BF16_ARCHS = [(784, 256, 128, 10), (784, 1024, 1024, 10)]
BF16_BATCHES = [128, 1024]
LR = 0.01


def _numpy_weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [(rng.uniform(-1, 1, (a, b)) * math.sqrt(6 / a)).astype(np.float32)
          for a, b in zip(sizes[:-1], sizes[1:])]
    return Ws, [np.zeros(b, np.float32) for b in sizes[1:]]


def train_contender(name, sizes, batch, precision="float32"):
    """A function run(X, y) that trains one epoch of `name`'s MLP `sizes`
    (ReLU, softmax cross-entropy, plain SGD lr=0.01) at this batch size.
    "nncore" trains in `precision`, "nncore_f32" in float32, "torch_bf16"
    under torch.autocast(bfloat16)."""
    if name in ("nncore", "nncore_f32"):
        trainer = Trainer(_nncore_mlp(sizes), CrossEntropyLoss(), SGD(lr=LR), batch_size=batch,
                          seed=0, precision=precision if name == "nncore" else "float32")
        return lambda X, y: trainer.fit(X, y, 1, verbose=0)
    if name in ("torch", "torch_bf16"):
        import torch
        model = _torch_mlp(sizes)
        return torch_epoch(model, torch.optim.SGD(model.parameters(), lr=LR), batch,
                           autocast=name == "torch_bf16")
    if name == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], solver="sgd", momentum=0.0,
                            alpha=0.0, learning_rate_init=LR, batch_size=batch, shuffle=True,
                            random_state=0)
        classes = np.arange(sizes[-1])

        def run(X, y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(X, y, classes=classes)
        return run
    if name == "numpy":
        Ws, bs = _numpy_weights(sizes)
        lr = np.float32(LR)
        rng = np.random.default_rng(0)

        def run(X, y):
            perm = rng.permutation(len(X))
            for i in range(0, len(X), batch):
                idx = perm[i:i + batch]
                acts = [X[idx]]
                for j, (W, b) in enumerate(zip(Ws, bs)):
                    z = acts[-1] @ W + b
                    acts.append(np.maximum(z, 0, out=z) if j < len(Ws) - 1 else z)
                z = acts.pop()
                t = y[idx]
                z -= z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(t)), t] -= 1
                d = p / np.float32(len(t))
                for j in range(len(Ws) - 1, -1, -1):
                    a = acts[j]
                    d_prev = (d @ Ws[j].T) * (a > 0) if j > 0 else None
                    Ws[j] -= lr * (a.T @ d)
                    bs[j] -= lr * d.sum(axis=0)
                    d = d_prev
        return run
    raise ValueError(f"unknown contender {name!r}")


@family("train", "Trainer.fit samples/s: three MLPs at batch 1, 32, 128, 1024; "
        "NNClassifier vs MLPClassifier fits (sgd, adam, lbfgs)")
def bench_train(quick=False, threads=2, budget=None, peers=None, tiny=False, archs=None,
                batches=None, log=None, precision="float32"):
    """One epoch of training per timed call, each framework on its own
    amount of data (grown until one epoch takes about `budget` seconds), the
    frameworks taking turns with a pause before each epoch; rows report
    seconds per sample and samples/s (medians over the rounds). Then one row
    per solver of NNClassifier against MLPClassifier (group "estimator"),
    in float32 only. precision="bf16": nncore trains with Trainer(precision="bf16"), beside
    nncore in float32 ("nncore_f32") and, when torch is a peer, PyTorch
    under torch.autocast(bfloat16) ("torch_bf16"); by default on BF16_ARCHS
    at BF16_BATCHES (mixed precision pays on large GEMMs)."""
    bf16 = check_precision(precision, "bench train")
    peers = available_peers(peers, ("numpy", "torch", "sklearn"))
    names = ["nncore"] + (["nncore_f32"] if bf16 else []) + peers
    if bf16 and "torch" in peers:
        names.insert(names.index("torch") + 1, "torch_bf16")
    if tiny:
        archs, batches = archs or [(16, 8, 4)], batches or [4]
    if bf16:
        archs, batches = archs or BF16_ARCHS, batches or BF16_BATCHES
    archs, batches = archs or ARCHS, batches or BATCHES
    target = budget if budget is not None else (0.001 if tiny else 0.03 if quick else 0.25)
    rounds, gap = (2, 0.0) if tiny else (2, 0.05) if quick else (5, 0.15)
    max_n = 4096 if quick or tiny else 1 << 16
    rows = []
    with thread_limits(threads) as nthreads:
        for sizes in archs:
            X_all, y_all = _data(max(max_n, 2 * max(batches)), sizes)
            for batch in batches:
                runs = {name: train_contender(name, sizes, batch, precision) for name in names}
                times, counts = time_epochs(runs, X_all, y_all, batch, target, max_n, rounds,
                                            gap)
                row = summarize("train", _arch_name(sizes), f"{_arch_name(sizes)} batch {batch}",
                                times, nthreads, work=1, metric="samples/s", per_call=counts)
                row.update({"arch": list(sizes), "batch": batch, "samples": counts,
                            "precision": precision})
                rows.append(row)
                if log:
                    log(row)
        if not bf16:    # the estimator rows compare float32 fits
            rows += bench_estimators(peers, nthreads, quick=quick, tiny=tiny, log=log)
    return rows
