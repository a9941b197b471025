"""The README's Fashion-MNIST recipe, nncore against PyTorch, epoch by epoch.

    python benchmarks/bench_fashion_cnn.py [--epochs 15] [--threads 2] [--pause 2]

Both sides train the small CNN (nncore.models.small_cnn(); PyTorch gets a
copy with the same initial weights, nncore.bench.cnn.torch_copy) with
Adam(1e-3), softmax cross-entropy, batch 128, a new random order each epoch,
on the 60,000 training images, and are evaluated on the 10,000 test images
after every epoch (evaluation not timed). The sides alternate epoch by epoch
with a pause before each, so a slow moment on a shared machine hits both.
Prints each epoch's wall time and test accuracy per side, then the totals.
Needs the Fashion-MNIST files (see nncore.datasets.load_fashion_mnist) and
PyTorch.
"""
import argparse
import time

import numpy as np

import nncore as nn
from nncore.bench.cnn import torch_copy
from nncore.bench.harness import thread_limits


def torch_side(model, X, y, X_test, y_test, batch):
    """(train one epoch, test accuracy) for PyTorch's ordinary loop."""
    import torch
    tmodel = torch_copy(model).train()
    optimizer = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt, Xv = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(X_test)
    generator = torch.Generator().manual_seed(0)

    def epoch():
        tmodel.train()
        perm = torch.randperm(len(Xt), generator=generator)
        for i in range(0, len(Xt), batch):
            idx = perm[i:i + batch]
            optimizer.zero_grad()
            loss_fn(tmodel(Xt[idx]), yt[idx]).backward()
            optimizer.step()

    def accuracy():
        tmodel.eval()
        with torch.inference_mode():
            pred = torch.cat([tmodel(Xv[i:i + 1000]).argmax(1) for i in range(0, len(Xv), 1000)])
        return float((pred.numpy() == y_test).mean())
    return epoch, accuracy


def nncore_side(model, X, y, X_test, y_test, batch):
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(1e-3), batch_size=batch, seed=0)

    def accuracy():
        return float((model.predict(X_test).argmax(1) == y_test).mean())
    return (lambda: trainer.fit(X, y, 1, verbose=0)), accuracy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pause", type=float, default=2.0)
    args = ap.parse_args()
    (X, y), (X_test, y_test) = nn.datasets.load_fashion_mnist(flatten=False)
    with thread_limits(args.threads):
        nn.manual_seed(0)
        model = nn.models.small_cnn()
        sides = {"torch": torch_side(model, X, y, X_test, y_test, args.batch),
                 "nncore": nncore_side(model, X, y, X_test, y_test, args.batch)}
        times = {name: [] for name in sides}
        print(f"{args.threads} threads, batch {args.batch}, Adam(1e-3), small CNN")
        for e in range(1, args.epochs + 1):
            line = [f"epoch {e:2d}"]
            for name, (epoch, accuracy) in sides.items():
                time.sleep(args.pause)
                t0 = time.perf_counter()
                epoch()
                times[name].append(time.perf_counter() - t0)
                line.append(f"{name} {times[name][-1]:6.1f} s acc {accuracy():.4f}")
            print("  ".join(line), flush=True)
        total = {name: sum(t) for name, t in times.items()}
        print("total: " + ", ".join(f"{name} {t:.0f} s" for name, t in total.items())
              + f"; PyTorch / nncore = {total['torch'] / total['nncore']:.2f}; median epoch "
              + ", ".join(f"{name} {np.median(t):.1f} s" for name, t in times.items()))


if __name__ == "__main__":
    main()
