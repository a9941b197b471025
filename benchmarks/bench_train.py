"""Training throughput of Trainer.fit against PyTorch, scikit-learn and NumPy.

    python benchmarks/bench_train.py [--batches 1,32,128,1024] [--threads 2]
                                     [--min-time 0.5] [--repeats 3] [--json out.json]

Every framework trains the same network, 784-256-128-10 with ReLU, softmax
cross-entropy and plain SGD (lr 0.01, no momentum), for whole epochs over
synthetic Fashion-MNIST-shaped data (float32 in [0, 1], 10 classes), with a
fresh shuffle per epoch, on the same number of threads:

- nncore: ``Trainer(model, CrossEntropyLoss(), SGD(lr=0.01), batch_size=b,
  seed=0).fit(X, y, epochs, verbose=0)``, default metrics (it also counts
  training accuracy);
- PyTorch (when installed): the ordinary loop, ``perm = torch.randperm(n)``,
  ``X[idx]``, ``zero_grad``, ``cross_entropy``, ``backward``, ``step``, with
  ``torch.set_num_threads(threads)``;
- scikit-learn (when installed): ``MLPClassifier(solver="sgd", momentum=0,
  alpha=0, batch_size=b).partial_fit`` (one epoch per call) on float32 data,
  BLAS threads limited with threadpoolctl;
- NumPy: a hand-written float32 MLP loop (``@`` for the GEMMs, in-place
  updates), BLAS threads limited with threadpoolctl.

Each contender's data grows until one run takes ``--min-time`` seconds; then
the contenders take turns, one run each per round with a ``--pause`` before
each (so no library's spinning thread pool is timed as part of another's
run), and the median samples/s of ``--repeats`` rounds is reported. The
ratios compare numbers from this one run (the machine may be shared: rerun
to see the spread). Then the latency of ``model.predict`` on one sample (median of
many calls), against PyTorch's ``model(x)`` under ``torch.no_grad()``.
"""
import argparse
import json
import math
import platform
import sys
import time
import warnings

import numpy as np

import nncore as nn

SIZES = (784, 256, 128, 10)
LR = 0.01


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, 10, n)


# ---- the contenders: each returns a function run(X, y) that trains one epoch --


def nncore_trainer(batch):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(),
                          nn.Dense(128, 10))
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=LR), batch_size=batch,
                         seed=0)
    return lambda X, y: trainer.fit(X, y, 1, verbose=0)


def torch_loop(batch):
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    cache = {}

    def run(X, y):
        key = id(X)
        if key not in cache:
            cache.clear()
            cache[key] = (torch.from_numpy(X), torch.from_numpy(y))
        Xt, yt = cache[key]
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return run


def sklearn_mlp(batch):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256, 128), solver="sgd", momentum=0.0, alpha=0.0,
                        learning_rate_init=LR, batch_size=batch, shuffle=True, random_state=0)
    classes = np.arange(10)

    def run(X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.partial_fit(X, y, classes=classes)
    return run


def numpy_mlp(batch):
    rng = np.random.default_rng(0)
    Ws = [rng.uniform(-1, 1, (a, b)).astype(np.float32) * np.float32(math.sqrt(6 / a))
          for a, b in zip(SIZES[:-1], SIZES[1:])]
    bs = [np.zeros(b, np.float32) for b in SIZES[1:]]
    lr = np.float32(LR)

    def run(X, y):
        perm = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            x, t = X[idx], y[idx]
            h1 = np.maximum(x @ Ws[0] + bs[0], 0)
            h2 = np.maximum(h1 @ Ws[1] + bs[1], 0)
            z = h2 @ Ws[2] + bs[2]
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(t)), t] -= 1
            dz = p / np.float32(len(t))
            d2 = (dz @ Ws[2].T) * (h2 > 0)
            d1 = (d2 @ Ws[1].T) * (h1 > 0)
            for W, b, a, d in ((Ws[2], bs[2], h2, dz), (Ws[1], bs[1], h1, d2),
                               (Ws[0], bs[0], x, d1)):
                W -= lr * (a.T @ d)
                b -= lr * d.sum(axis=0)
    return run


CONTENDERS = {"nncore": nncore_trainer, "PyTorch": torch_loop, "scikit-learn": sklearn_mlp,
              "NumPy": numpy_mlp}


def available(name):
    try:
        if name == "PyTorch":
            import torch  # noqa: F401
        elif name == "scikit-learn":
            import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def calibrate(make, batch, min_time):
    """A one-epoch run function and data sized so that one run takes about
    min_time seconds (after a warm-up run at that size)."""
    run = make(batch)
    n = max(batch * 4, 256)
    while True:
        X, y = data(n)
        run(X, y)                       # warm up (buffers, caches) at this size
        t0 = time.perf_counter()
        run(X, y)
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1 << 20:
            return run, X, y
        n = int(n * min(16.0, max(2.0, 1.2 * min_time / max(dt, 1e-6))))


def side_by_side(names, batch, min_time, repeats, pause):
    """Median samples/s per contender. The contenders take turns, one run
    each per round, after a pause: an OpenMP or BLAS pool keeps spinning for
    a while after its last call, and on a small machine that spinning would
    otherwise be timed as part of the next contender's run."""
    setups = {name: calibrate(CONTENDERS[name], batch, min_time) for name in names}
    rates = {name: [] for name in names}
    for _ in range(repeats):
        for name, (run, X, y) in setups.items():
            time.sleep(pause)
            t0 = time.perf_counter()
            run(X, y)
            rates[name].append(len(X) / (time.perf_counter() - t0))
    return {name: float(np.median(r)) for name, r in rates.items()}


def median_call(fn, calls=2000, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return float(np.median(times))


def predict_latency(have_torch, pause):
    """After a pause each, as the training rounds: no thread pool still
    spinning from the last contender's run shares the cores."""
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 256), nn.ReLU(), nn.Dense(256, 128), nn.ReLU(),
                          nn.Dense(128, 10))
    x = data(1)[0]
    time.sleep(pause)
    out = {"nncore model.predict": median_call(lambda: model.predict(x))}
    if have_torch:
        import torch
        tmodel = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                     torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                     torch.nn.Linear(128, 10)).eval()
        tx = torch.from_numpy(x)

        def call():
            with torch.no_grad():
                return tmodel(tx)
        time.sleep(pause)
        out["PyTorch model(x), no_grad"] = median_call(call)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,32,128,1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds of idle before each timed run (default 0.2)")
    parser.add_argument("--only", default=",".join(CONTENDERS),
                        help="comma-separated subset of " + ", ".join(CONTENDERS))
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    names = [n for n in args.only.split(",") if n in CONTENDERS and available(n)]

    nn.set_num_threads(args.threads)
    limits = None
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(args.threads)      # NumPy's/sklearn's BLAS
    except ImportError:
        pass
    if "PyTorch" in names:
        import torch
        torch.set_num_threads(args.threads)

    info = nn.info()
    versions = {"nncore": nn.__version__, "numpy": np.__version__}
    if "PyTorch" in names:
        versions["PyTorch"] = sys.modules["torch"].__version__
    if "scikit-learn" in names:
        import sklearn
        versions["scikit-learn"] = sklearn.__version__
    print(f"784-256-128-10 ReLU MLP, softmax cross-entropy, plain SGD; {args.threads} "
          f"threads; nncore ISA {info['isa']}; {platform.machine()}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))

    results = {}
    for batch in batches:
        results[batch] = side_by_side(names, batch, args.min_time, args.repeats, args.pause)
        for name, rate in results[batch].items():
            print(f"  batch {batch:5d}  {name:13s} {rate:12,.0f} samples/s", file=sys.stderr)

    others = [n for n in names if n != "nncore"]
    header = "| batch | " + " | ".join(f"{n} samples/s" for n in names)
    header += "".join(f" | nncore / {n}" for n in others) + " |"
    print()
    print(header)
    print("|" + " ---: |" * (header.count("|") - 1))
    for batch in batches:
        row = results[batch]
        cells = [f"{row[n]:,.0f}" for n in names]
        if "nncore" in row:
            cells += [f"{row['nncore'] / row[n]:.1f}x" for n in others]
        print(f"| {batch} | " + " | ".join(cells) + " |")

    latency = predict_latency("PyTorch" in names, args.pause)
    print()
    for name, seconds in latency.items():
        print(f"predict one sample: {name}: {seconds * 1e6:.1f} us")
    if limits is not None:
        limits.restore_original_limits()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "isa": info["isa"], "versions": versions,
                       "samples_per_sec": {str(b): r for b, r in results.items()},
                       "predict_seconds": latency}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
