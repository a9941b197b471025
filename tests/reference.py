"""NumPy float64 references for the activations, shared by the test files
(importable because pyproject.toml puts tests/ on pytest's pythonpath)."""
import math

import numpy as np

ACTS = [None, "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax"]
_erfc = np.vectorize(math.erfc)


def act64(name, z):
    """Activation `name` (None: the identity) of z, row-wise for softmax."""
    if name is None:
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * _erfc(-z / math.sqrt(2))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise AssertionError(name)


def act64_backward(name, z, y, dy):
    """The gradient through activation `name`, from its input z and output y."""
    if name is None:
        return dy
    if name == "relu":
        return dy * (z > 0)
    if name == "leaky_relu":
        return dy * np.where(z > 0, 1.0, 0.01)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "gelu":
        return dy * (0.5 * _erfc(-z / math.sqrt(2)) + z * np.exp(-z * z / 2) / math.sqrt(2 * np.pi))
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    raise AssertionError(name)


# ---- finite-difference gradient checks ----

def loss_of(layer, x, upstream):
    """sum(upstream * layer(x)) in float64 from the float32 output."""
    return float((layer.forward(x).astype(np.float64) * upstream).sum())


def numeric_grad(f, arr, idx, h):
    """Central difference of f() in arr[idx], perturbing arr in place."""
    old = arr[idx]
    arr[idx] = old + h
    up = f()
    arr[idx] = old - h
    down = f()
    arr[idx] = old
    # the perturbation actually applied, after rounding to float32
    return (up - down) / (np.float64(np.float32(old + h)) - np.float64(np.float32(old - h)))


def check_grads(layer, x, rng, h=1e-2, rtol=2e-2, atol=1e-3, n_checks=12):
    y = layer.forward(x)
    upstream = rng.standard_normal(y.shape)
    layer.forward(x)
    dx = layer.backward(upstream.astype(np.float32)).copy()
    grads = [(p, g.copy()) for p, g in layer.parameters()]
    f = lambda: loss_of(layer, x, upstream)  # noqa: E731
    for arr, analytic in [(x, dx)] + grads:
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(n_checks, flat.size), replace=False):
            num = numeric_grad(f, flat, i, h)
            ana = analytic.reshape(-1)[i]
            assert abs(num - ana) <= atol + rtol * abs(ana), (
                f"{layer!r}: d/d[{i}] numeric {num} vs analytic {ana}")


def smooth_input(rng, shape):
    """Inputs kept away from ReLU kinks (|x| > 0.05) so differences are clean."""
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < 0.05, 0.05 + np.abs(x), x)
    return x.astype(np.float32)
