"""The estimator rows of the train family: NNClassifier against
scikit-learn's MLPClassifier, the same data, the same parameters, whole
``fit`` calls of a fixed number of iterations (epochs for 'sgd' and 'adam',
L-BFGS iterations for 'lbfgs')."""
import warnings

from ..estimators import NNClassifier
from .harness import summarize, time_epochs
from .mlp import _arch_name, _data

ARCH = (784, 256, 128, 10)
BATCH = 200             # MLPClassifier's default batch size, min(200, n_samples)
SOLVERS = ("sgd", "adam", "lbfgs")
GROUP = "NNClassifier"     # the rows' group in the train family


def estimator_params(solver, sizes, batch, max_iter):
    """scikit-learn's defaults (momentum 0.9 with Nesterov for 'sgd', alpha
    1e-4, learning_rate_init 1e-3) but a fixed amount of work: ``tol=0`` and
    ``n_iter_no_change`` past ``max_iter`` never stop a run early."""
    return dict(hidden_layer_sizes=tuple(sizes[1:-1]), solver=solver, batch_size=batch,
                max_iter=max_iter, tol=0.0, n_iter_no_change=max_iter + 1, random_state=0)


def estimator_contender(name, params):
    """A function run(X, y) that fits a new estimator of side `name`
    ("nncore": NNClassifier, "sklearn": MLPClassifier) with `params` and
    records its ``n_iter_`` in ``run.n_iter``."""
    if name == "nncore":
        cls = NNClassifier
    elif name == "sklearn":
        from sklearn.neural_network import MLPClassifier as cls
    else:
        raise ValueError(f"unknown estimator contender {name!r}")

    def run(X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # ConvergenceWarning: max_iter is reached
            run.n_iter = cls(**params).fit(X, y).n_iter_
    run.n_iter = 0
    return run


def bench_estimators(peers, threads, quick=False, tiny=False, log=None):
    """One row per solver: whole fits, the sides taking turns with a pause
    before each; the rate is samples x iterations per second (for 'lbfgs'
    an iteration is at least one pass over all the samples), medians."""
    names = ["nncore"] + [p for p in peers if p == "sklearn"]
    if tiny:
        sizes, batch, n, iters, rounds, gap = (16, 8, 4), 16, 64, {"lbfgs": 2}, 2, 0.0
    elif quick:
        sizes, batch, n, iters, rounds, gap = ARCH, BATCH, 2000, {"lbfgs": 3}, 2, 0.05
    else:
        sizes, batch, n, iters, rounds, gap = ARCH, BATCH, 12000, {"lbfgs": 10}, 5, 0.3
    X, y = _data(n, sizes, seed=1)
    rows = []
    for solver in SOLVERS:
        max_iter = iters.get(solver, 2)
        params = estimator_params(solver, sizes, batch, max_iter)
        runs = {name: estimator_contender(name, params) for name in names}
        times, _ = time_epochs(runs, X, y, batch, 0.0, n, rounds, gap, min_n=n)
        per_call = {name: max(run.n_iter, 1) * n for name, run in runs.items()}
        shown = f"batch {batch}" if solver != "lbfgs" else "full batch"
        row = summarize("train", GROUP, f"{solver} {_arch_name(sizes)} {shown}", times,
                        threads, work=1, metric="samples/s", per_call=per_call)
        row.update({"arch": list(sizes), "batch": batch if solver != "lbfgs" else n,
                    "solver": solver, "samples": {name: n for name in names},
                    "max_iter": max_iter,
                    "n_iter": {name: run.n_iter for name, run in runs.items()},
                    "fit_s": {name: row[f"{name}_s"] * per_call[name] for name in names}})
        rows.append(row)
        if log:
            log(row)
    return rows
