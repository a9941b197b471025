"""The layers family: the building blocks of a training step (Dense forward
and backward, activations, softmax cross-entropy, optimizer steps) through
nncore's Python API, against the same work in NumPy and PyTorch."""
import math

import numpy as np

from ..layers import GELU, Dense, ReLU, Sigmoid, Tanh
from ..losses import CrossEntropyLoss
from ..optim import SGD, Adam
from .harness import available_peers, summarize, thread_limits, time_many
from .machine import memory_bandwidth, peak_gflops
from .mlp import _arch_name
from .registry import family

# The activation layers timed, by the name in their rows.
ACTIVATIONS = {"ReLU": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh, "GELU": GELU}


def _np_erf(x):
    """erf in NumPy float32 operations (NumPy has none): Abramowitz and
    Stegun 7.1.26, absolute error below 1.5e-7, what a NumPy user would
    write for an exact GELU."""
    t = 1.0 / (1.0 + np.float32(0.3275911) * np.abs(x))
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _torch_views(*arrays):
    import torch
    return [torch.from_numpy(a) for a in arrays]


def _dense_case(m, k, n, phase):
    """Dense(k, n) on a batch of m: forward y = x W + b; backward dW = x^T dy,
    db = sum dy, dx = dy W^T."""
    def make(peers):
        rng = np.random.default_rng(0)
        layer = Dense(k, n)
        x = rng.standard_normal((m, k), dtype=np.float32)
        dy = rng.standard_normal((m, n), dtype=np.float32)
        W, b = layer.weight.copy(), layer.bias.copy()
        y, gw, gb, dx = (np.empty((m, n), np.float32), np.empty((k, n), np.float32),
                         np.empty(n, np.float32), np.empty((m, k), np.float32))
        layer.forward(x)
        if phase == "forward":
            fns = {"nncore": lambda: layer.forward(x),
                   "numpy": lambda: np.add(np.matmul(x, W, out=y), b, out=y)}
        else:
            def np_backward():
                np.matmul(x.T, dy, out=gw)
                np.sum(dy, axis=0, out=gb)
                np.matmul(dy, W.T, out=dx)
            fns = {"nncore": lambda: layer.backward(dy), "numpy": np_backward}
        if "torch" in peers:
            import torch
            tx, tdy, tW, tb, ty, tgw, tgb, tdx = _torch_views(x, dy, W, b, y, gw, gb, dx)
            if phase == "forward":
                fns["torch"] = lambda: torch.addmm(tb, tx, tW, out=ty)
            else:
                def torch_backward():
                    torch.mm(tx.t(), tdy, out=tgw)
                    torch.sum(tdy, 0, out=tgb)
                    torch.mm(tdy, tW.t(), out=tdx)
                fns["torch"] = torch_backward
        return fns
    flop = (2.0 if phase == "forward" else 4.0) * m * k * n
    return {"group": "dense", "case": f"Dense {phase} {m}x{k}->{n}", "work": flop,
            "metric": "GFLOP/s", "limit": "peak", "make": make}


def _activation_case(name, rows, cols, phase):
    """An activation layer on (rows, cols): forward reads x and writes y (8
    bytes per element), backward reads the saved array and dy and writes dx (12)."""
    def make(peers):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, cols), dtype=np.float32)
        dy = rng.standard_normal((rows, cols), dtype=np.float32)
        y, dx = np.empty_like(x), np.empty_like(x)
        layer = ACTIVATIONS[name]()
        layer.forward(x)
        if phase == "forward":
            fns = {"nncore": lambda: layer.forward(x)}
        else:
            fns = {"nncore": lambda: layer.backward(dy)}
        inv_sqrt2 = np.float32(1 / math.sqrt(2))

        def np_sigmoid():
            np.negative(x, out=y)
            np.exp(y, out=y)
            np.add(y, 1.0, out=y)
            np.reciprocal(y, out=y)

        def np_sigmoid_backward():     # dx = dy y (1 - y), y the forward output
            np.subtract(1.0, y, out=dx)
            np.multiply(dx, y, out=dx)
            np.multiply(dx, dy, out=dx)

        def np_tanh_backward():        # dx = dy (1 - y^2)
            np.multiply(y, y, out=dx)
            np.subtract(1.0, dx, out=dx)
            np.multiply(dx, dy, out=dx)

        def np_gelu():                 # y = x Phi(x)
            np.multiply(x, 0.5, out=y)
            np.multiply(y, 1.0 + _np_erf(x * inv_sqrt2), out=y)

        def np_gelu_backward():        # dx = dy (Phi(x) + x phi(x))
            cdf = 0.5 * (1.0 + _np_erf(x * inv_sqrt2))
            pdf = np.exp(-0.5 * x * x) * np.float32(1 / math.sqrt(2 * math.pi))
            np.multiply(dy, cdf + x * pdf, out=dx)
        numpy_fns = {
            "ReLU": (lambda: np.maximum(x, 0.0, out=y), lambda: np.multiply(dy, x > 0, out=dx)),
            "Sigmoid": (np_sigmoid, np_sigmoid_backward),
            "Tanh": (lambda: np.tanh(x, out=y), np_tanh_backward),
            "GELU": (np_gelu, np_gelu_backward),
        }
        fns["numpy"] = numpy_fns[name][0 if phase == "forward" else 1]
        numpy_fns[name][0]()    # y: a forward output, as the backward passes read
        if "torch" in peers:
            import torch
            tx, tdy, ty, tdx = _torch_views(x, dy, y, dx)
            aten = torch.ops.aten
            torch_fns = {   # what autograd runs for each
                "ReLU": (lambda: torch.clamp_min(tx, 0.0, out=ty),
                         lambda: aten.threshold_backward(tdy, ty, 0.0)),
                "Sigmoid": (lambda: torch.sigmoid(tx, out=ty),
                            lambda: aten.sigmoid_backward(tdy, ty)),
                "Tanh": (lambda: torch.tanh(tx, out=ty), lambda: aten.tanh_backward(tdy, ty)),
                "GELU": (lambda: torch.nn.functional.gelu(tx),
                         lambda: aten.gelu_backward(tdy, tx)),
            }
            fns["torch"] = torch_fns[name][0 if phase == "forward" else 1]
        return fns
    count = rows * cols
    return {"group": "activation", "case": f"{name} {phase} {rows}x{cols}",
            "work": (8 if phase == "forward" else 12) * count, "metric": "GB/s",
            "limit": "bandwidth", "make": make}


def _cross_entropy_case(m, c):
    """Softmax cross-entropy, loss and gradient: nncore computes both in one
    pass; NumPy the usual stable way; PyTorch forward + autograd backward.
    Traffic: logits read, gradient written, labels read."""
    def make(peers):
        rng = np.random.default_rng(0)
        logits = rng.standard_normal((m, c), dtype=np.float32)
        labels = rng.integers(0, c, m)
        loss = CrossEntropyLoss()
        rows_idx = np.arange(m)
        grad = np.empty_like(logits)

        def np_ce():
            z = logits - logits.max(axis=1, keepdims=True)
            np.exp(z, out=grad)
            s = grad.sum(axis=1, keepdims=True)
            value = float(np.mean(np.log(s[:, 0]) - z[rows_idx, labels]))
            np.divide(grad, s * m, out=grad)
            grad[rows_idx, labels] -= 1.0 / m
            return value
        fns = {"nncore": lambda: loss.forward(logits, labels), "numpy": np_ce}
        if "torch" in peers:
            import torch
            tl = torch.from_numpy(logits.copy()).requires_grad_()
            tt = torch.from_numpy(labels)

            def torch_ce():
                tl.grad = None
                value = torch.nn.functional.cross_entropy(tl, tt)
                value.backward()
                return value
            fns["torch"] = torch_ce
        return fns
    return {"group": "loss", "case": f"softmax CE fwd+grad {m}x{c}", "work": 8 * m * c + 8 * m,
            "metric": "GB/s", "limit": "bandwidth", "make": make}


def _optimizer_case(opt_name, arch):
    """One optimizer step over the parameters of an MLP: SGD with momentum
    reads w, g, buf and writes w, buf (20 bytes per parameter); Adam reads w,
    g, m, v and writes w, m, v (28)."""
    shapes = [s for k, n in zip(arch[:-1], arch[1:]) for s in ((k, n), (n,))]
    count = sum(int(np.prod(s)) for s in shapes)

    def make(peers):
        rng = np.random.default_rng(0)
        params = [(rng.standard_normal(s, dtype=np.float32) * 0.01,
                   rng.standard_normal(s, dtype=np.float32) * 0.01) for s in shapes]
        opt = SGD(lr=0.01, momentum=0.9) if opt_name == "SGD" else Adam(lr=1e-3)
        np_params = [(p.copy(), g.copy(), np.zeros_like(p), np.zeros_like(p), np.empty_like(p))
                     for p, g in params]
        state = {"t": 0}

        def np_sgd():
            for w, g, buf, _, tmp in np_params:
                np.multiply(buf, 0.9, out=buf)
                np.add(buf, g, out=buf)
                np.multiply(buf, 0.01, out=tmp)
                np.subtract(w, tmp, out=w)

        def np_adam(b1=0.9, b2=0.999, lr=1e-3, eps=1e-8):
            state["t"] += 1
            t = state["t"]
            step, bc2 = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
            for w, g, m_, v, tmp in np_params:
                np.multiply(m_, b1, out=m_)
                np.multiply(g, 1 - b1, out=tmp)
                np.add(m_, tmp, out=m_)
                np.multiply(v, b2, out=v)
                np.multiply(g, g, out=tmp)
                np.multiply(tmp, 1 - b2, out=tmp)
                np.add(v, tmp, out=v)
                np.sqrt(v, out=tmp)
                np.divide(tmp, bc2, out=tmp)
                np.add(tmp, eps, out=tmp)
                np.divide(m_, tmp, out=tmp)
                np.multiply(tmp, step, out=tmp)
                np.subtract(w, tmp, out=w)
        fns = {"nncore": lambda: opt.step(params),
               "numpy": np_sgd if opt_name == "SGD" else np_adam}
        if "torch" in peers:
            import torch
            tparams = []
            for p, g in params:
                tp = torch.from_numpy(p.copy()).requires_grad_()
                tp.grad = torch.from_numpy(g.copy())
                tparams.append(tp)
            topt = (torch.optim.SGD(tparams, lr=0.01, momentum=0.9) if opt_name == "SGD"
                    else torch.optim.Adam(tparams, lr=1e-3))
            fns["torch"] = topt.step
        return fns
    label = "SGD momentum" if opt_name == "SGD" else opt_name
    return {"group": "optimizer", "case": f"{label} step {_arch_name(arch)} ({count / 1e6:.2f}M)",
            "work": (20 if opt_name == "SGD" else 28) * count, "metric": "GB/s",
            "limit": "bandwidth", "make": make}


def layer_cases(quick=False, tiny=False):
    """The layers family's cases: dicts with group, case, work (FLOPs or
    bytes per call), metric, limit ("peak" or "bandwidth") and make(peers) ->
    {side: fn}, which builds the data (call it just before timing)."""
    if tiny:
        dense, act, ce, arch = [(4, 8, 8)], (4, 8), [(4, 3)], (8, 4)
    elif quick:
        dense, act, ce, arch = [(128, 784, 256)], (256, 1024), [(128, 10)], (784, 256, 128, 10)
    else:
        dense, act = [(128, 784, 256), (128, 1024, 1024)], (1024, 1024)
        ce, arch = [(128, 10), (1024, 1000)], (784, 1024, 1024, 10)
    cases = [_dense_case(m, k, n, phase) for m, k, n in dense for phase in ("forward", "backward")]
    cases += [_activation_case(name, *act, phase) for name in ("ReLU", "Sigmoid", "Tanh", "GELU")
              for phase in ("forward", "backward")]
    cases += [_cross_entropy_case(m, c) for m, c in ce]
    cases += [_optimizer_case(name, arch) for name in ("SGD", "Adam")]
    return cases


@family("layers", "Dense forward/backward, activations, softmax cross-entropy, optimizer steps")
def bench_layers(quick=False, threads=2, budget=None, peers=None, tiny=False, log=None):
    """The building blocks of a training step, through nncore's Python API
    (so each includes its call overhead) against the same work in NumPy and
    PyTorch. Dense rows report GFLOP/s and % of the FMA peak; the
    elementwise ones (activations, loss, optimizers) GB/s (the bytes each call
    must move at least) and % of the triad memory bandwidth; arrays that fit
    in cache can exceed 100%."""
    peers = available_peers(peers, ("numpy", "torch"))
    budget = budget if budget is not None else (0.002 if tiny else 0.1 if quick else 0.4)
    gap = 0.0 if tiny else 0.05
    rows = []
    with thread_limits(threads) as nthreads:
        limits = {"peak": (peak_gflops(nthreads, quick or tiny), "FMA peak"),
                  "bandwidth": (memory_bandwidth(nthreads, quick or tiny), "memory bandwidth")}
        for case in layer_cases(quick, tiny):
            fns = case["make"](peers)
            limit, limit_name = limits[case["limit"]]
            row = summarize("layers", case["group"], case["case"],
                            time_many(fns, budget, gap=gap), nthreads, work=case["work"],
                            metric=case["metric"], scale=1e-9, limit=limit,
                            limit_name=limit_name)
            rows.append(row)
            if log:
                log(row)
    return rows
