"""Optimizer kernels (csrc/optim.c) over several steps against a float64
NumPy transcription of torch.optim's documented algorithms, on every ISA."""
import math

import numpy as np
import pytest

import nncore
from nncore import _core

SIZES = [1, 7, 17, 64, 65, 257]
STEPS = 6


def grads(rng, n):
    return [rng.standard_normal(n).astype(np.float32) for _ in range(STEPS)]


def sgd64(w, gs, lr, momentum, dampening, wd, nesterov):
    w = w.astype(np.float64)
    buf = None
    for t, g in enumerate(gs):
        d = g + wd * w
        if momentum:
            buf = d.copy() if t == 0 else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


def adam64(w, gs, lr, b1, b2, eps, wd, decoupled):
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(gs, start=1):
        if decoupled:
            w = w * (1 - lr * wd)
            d = g.astype(np.float64)
        else:
            d = g + wd * w
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        mhat = m / (1 - b1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        w = w - lr * mhat / denom
    return w


def rmsprop64(w, gs, lr, alpha, eps, wd, momentum, centered):
    w = w.astype(np.float64)
    sq = np.zeros_like(w)
    ga = np.zeros_like(w)
    buf = np.zeros_like(w)
    for g in gs:
        d = g + wd * w
        sq = alpha * sq + (1 - alpha) * d * d
        if centered:
            ga = alpha * ga + (1 - alpha) * d
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + d / avg
            w = w - lr * buf
        else:
            w = w - lr * d / avg
    return w


@pytest.mark.parametrize("momentum,dampening,wd,nesterov", [
    (0.0, 0.0, 0.0, False), (0.0, 0.0, 0.01, False), (0.9, 0.0, 0.0, False),
    (0.9, 0.0, 0.05, True), (0.5, 0.3, 0.0, False)])
def test_sgd_kernel(isa, rng, momentum, dampening, wd, nesterov):
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        buf = np.full(n, np.nan, np.float32) if momentum else None
        for t, g in enumerate(gs):
            _core.sgd_step(w, g, buf, 0.1, momentum, dampening, wd, nesterov, t == 0)
        want = sgd64(w0, gs, 0.1, momentum, dampening, wd, nesterov)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_kernel(isa, rng, wd, decoupled):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        m = np.zeros(n, np.float32)
        v = np.zeros(n, np.float32)
        for t, g in enumerate(gs, start=1):
            _core.adam_step(w, g, m, v, b1, b2, eps, 0.0 if decoupled else wd,
                            1 - lr * wd if decoupled else 1.0, lr / (1 - b1 ** t),
                            math.sqrt(1 - b2 ** t))
        want = adam64(w0, gs, lr, b1, b2, eps, wd, decoupled)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wd,momentum,centered", [
    (0.0, 0.0, False), (0.01, 0.0, False), (0.0, 0.9, False), (0.0, 0.0, True),
    (0.02, 0.5, True)])
def test_rmsprop_kernel(isa, rng, wd, momentum, centered):
    lr, alpha, eps = 0.01, 0.99, 1e-8
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        sq = np.zeros(n, np.float32)
        ga = np.zeros(n, np.float32) if centered else None
        buf = np.zeros(n, np.float32) if momentum else None
        for g in gs:
            _core.rmsprop_step(w, g, sq, ga, buf, lr, alpha, eps, wd, momentum)
        want = rmsprop64(w0, gs, lr, alpha, eps, wd, momentum, centered)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-5)


def all_steps(seed):
    rng = np.random.default_rng(seed)
    n = 100003
    w = rng.standard_normal((3, n)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    s = [np.zeros(n, np.float32) for _ in range(5)]
    for first in (True, False):
        _core.sgd_step(w[0], g, s[0], 0.1, 0.9, 0.0, 0.01, True, first)
        _core.adam_step(w[1], g, s[1], s[2], 0.9, 0.999, 1e-8, 0.0, 0.999, 0.01, 0.1)
        _core.rmsprop_step(w[2], g, s[3], s[4], s[0], 0.01, 0.99, 1e-8, 0.0, 0.9)
    return [w] + s


def test_optim_threads_bitwise_identical(isa, num_threads):
    nncore.set_num_threads(1)
    one = all_steps(5)
    nncore.set_num_threads(2)
    two = all_steps(5)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_optim_kernel_arguments_are_checked():
    w = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="expected 4"):
        _core.sgd_step(w, np.zeros(3, np.float32), None, 0.1, 0.0, 0.0, 0.0, False, True)
    with pytest.raises(ValueError, match="buffer"):
        _core.sgd_step(w, w, None, 0.1, 0.9, 0.0, 0.0, False, True)
    with pytest.raises(TypeError):
        _core.adam_step(w, w, w, None, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.1, 0.1)
