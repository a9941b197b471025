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
