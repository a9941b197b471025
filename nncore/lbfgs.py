"""Full-batch L-BFGS training: SciPy's L-BFGS-B (``scipy.optimize.minimize``,
what scikit-learn's ``MLPClassifier(solver="lbfgs")`` runs) over nncore's own
forward pass, loss and backward pass.

The objective is scikit-learn's MLP objective::

    f(theta) = scale * loss(theta) + alpha / (2 W) * sum of the squared weights

``loss`` is the nncore loss's mean over the samples (weighted by
``sample_weight`` when given: sum(w l) / W), W the number of samples (the sum
of the weights), ``scale`` the factor that turns the nncore loss into the one
scikit-learn minimises (see ``NNClassifier``), and the penalty covers the
parameters passed as ``penalised`` (the weights, not the biases).

SciPy's minimiser works on one float64 vector; the model computes in float32.
Each evaluation copies the vector into the model's parameters, runs forward,
loss and backward over the rows (in chunks when X is sparse: each chunk is
densified on its own, never the whole matrix), and returns the gradient
accumulated in float64.
"""
import math

import numpy as np

from .trainer import _WeightedLoss, _weighted_kind
from .validation import dense_rows

__all__ = ["minimize_lbfgs", "LBFGSResult"]

# Rows densified at a time when X is sparse (a chunk of float32 rows of about
# this many bytes): bounded memory whatever the number of samples.
_SPARSE_CHUNK_BYTES = 8 << 20


def _import_scipy_optimize(who):
    try:
        import scipy.optimize
    except ImportError:       # scipy is optional: only this solver needs it
        raise ImportError(f"{who}: solver='lbfgs' needs SciPy (scipy.optimize.minimize); "
                          "install it with `pip install scipy`, or use solver='adam' or "
                          "'sgd'") from None
    return scipy.optimize


def row_chunks(X):
    """Row ranges (lo, hi) covering X: one for a dense X, chunks of about
    _SPARSE_CHUNK_BYTES of dense rows for a sparse X."""
    n = X.shape[0]
    step = n if isinstance(X, np.ndarray) else max(1, _SPARSE_CHUNK_BYTES // (4 * X.shape[1]))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


class LBFGSResult:
    """What ``minimize_lbfgs`` reports: ``fun`` (the final objective),
    ``nit`` (iterations), ``nfev`` (evaluations), ``status`` (SciPy's: 0
    converged, 1 a limit reached, 2 stopped abnormally) and ``message``."""

    def __init__(self, res):
        self.fun = float(res.fun)
        self.nit = int(res.nit)
        self.nfev = int(res.nfev)
        self.status = int(res.status)
        self.message = res.message.decode("latin1") if isinstance(res.message, bytes) \
            else str(res.message)


class _Objective:
    """f(theta) and its gradient (see the module docstring)."""

    def __init__(self, model, loss, X, y, sample_weight, penalised, alpha, scale):
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self.pairs = model.parameters()
        self.sizes = [p.size for p, _ in self.pairs]
        self.offsets = np.cumsum([0] + self.sizes)
        ids = {id(p) for p in penalised}
        self.penalised = [i for i, (p, _) in enumerate(self.pairs) if id(p) in ids]
        self.alpha, self.scale = float(alpha), float(scale)
        self.w = sample_weight
        self.total = float(sample_weight.sum()) if sample_weight is not None else float(len(y))
        self.chunks = row_chunks(X)
        self.weighted = None
        if sample_weight is not None:
            kind = _weighted_kind(loss)
            if kind is None:
                raise ValueError(f"sample_weight is not supported with {type(loss).__name__}")
            n_out = y.shape[1] if y.ndim == 2 else model.parameters()[-1][0].shape[-1]
            rows = max(hi - lo for lo, hi in self.chunks)
            self.weighted = _WeightedLoss(kind, rows, n_out, loss)
        self.grad = np.zeros(self.offsets[-1])
        self.evaluations = 0

    def pack(self):
        return np.concatenate([p.reshape(-1) for p, _ in self.pairs]).astype(np.float64)

    def unpack(self, theta):
        for (p, _), lo, hi in zip(self.pairs, self.offsets[:-1], self.offsets[1:]):
            p.reshape(-1)[...] = theta[lo:hi]

    def __call__(self, theta):
        self.evaluations += 1
        self.unpack(theta)
        model, loss, grad = self.model, self.loss, self.grad
        grad[...] = 0.0
        value = 0.0
        for lo, hi in self.chunks:
            out = model.forward(dense_rows(self.X, lo, hi))
            yb = self.y[lo:hi]
            chunk_value = loss.forward(out, yb)
            g = loss.backward()
            if self.weighted is None:
                # the chunk's mean loss and gradient, weighted by its share of the rows
                share = (hi - lo) / self.total
                value += chunk_value * share
                if share != 1.0:
                    np.multiply(g, np.float32(share), out=g)
            else:
                wb = self.w[lo:hi]
                value += self.weighted.value(out, yb, wb, self.total)
                self.weighted.scale_gradient(g, wb, self.total)
            model.backward(g, input_grad=False)
            for (_, pg), a, b in zip(self.pairs, self.offsets[:-1], self.offsets[1:]):
                grad[a:b] += pg.reshape(-1)
        if not math.isfinite(value):
            # L-BFGS-B's line search backs off from a non-finite value
            return math.inf, np.zeros_like(grad)
        value *= self.scale
        grad *= self.scale
        penalty = 0.0
        for i in self.penalised:
            a, b = self.offsets[i], self.offsets[i + 1]
            w = theta[a:b]
            penalty += float(np.dot(w, w))
            grad[a:b] += (self.alpha / self.total) * w
        return value + 0.5 * self.alpha * penalty / self.total, grad.copy()


def minimize_lbfgs(model, loss, X, y, *, sample_weight=None, penalised=(), alpha=0.0,
                   scale=1.0, max_iter=200, max_fun=15000, tol=1e-4, callback=None,
                   who="lbfgs"):
    """Train ``model`` in place by L-BFGS-B on the full data (X: float32 dense
    rows or a SciPy CSR matrix; y: the targets ``loss`` takes) and return an
    LBFGSResult. ``max_iter``, ``max_fun`` and ``tol`` are SciPy's
    ``maxiter``, ``maxfun`` and ``gtol``, as scikit-learn passes them.
    ``callback(iteration, objective)`` runs after every iteration. The model
    holds the final parameters (SciPy's ``x``) on return."""
    optimize = _import_scipy_optimize(who)
    objective = _Objective(model, loss, X, y, sample_weight, penalised, alpha, scale)
    model.train()
    iteration = [0]

    def on_iteration(intermediate_result):
        iteration[0] += 1
        callback(iteration[0], float(intermediate_result.fun))

    try:
        res = optimize.minimize(objective, objective.pack(), method="L-BFGS-B", jac=True,
                                callback=on_iteration if callback is not None else None,
                                options={"maxfun": int(max_fun), "maxiter": int(max_iter),
                                         "gtol": float(tol)})
        objective.unpack(res.x)
    finally:
        model.eval()
        forget = getattr(model, "_forget", None)
        if callable(forget):
            forget()
    return LBFGSResult(res)
