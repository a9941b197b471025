"""Loss kernels (csrc/loss.c) against NumPy float64 references: the mean loss
and its gradient, on awkward sizes, extreme logits, and 1 vs 2 threads."""
import numpy as np
import pytest

import nncore
from nncore import _core

SIZES = [1, 2, 5, 7, 17, 63, 64, 65, 257, 1000]
CLASSES = [1, 2, 3, 10, 17, 65]


def mse64(x, t):
    d = x - t
    return (d * d).mean(), 2 * d / d.size


def huber64(x, t, delta):
    d = x - t
    a = np.abs(d)
    loss = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)).mean()
    return loss, np.clip(d, -delta, delta) / d.size


def bce64(x, t):
    loss = (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).mean()
    e = np.exp(-np.abs(x))
    s = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return loss, (s - t) / x.size


def ce64(x, y):
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    rows = np.arange(len(y))
    loss = (lse - x[rows, y]).mean()
    p = np.exp(x - lse[:, None])
    p[rows, y] -= 1
    return loss, p / len(y)


def run(kind, x, t, param=0.0):
    loss = _core.loss_forward(kind, x, t, param)
    grad = np.full(x.shape, np.nan, np.float32)
    _core.loss_backward(kind, x, t, grad, param)
    return loss, grad


def check(got, want, gscale):
    loss, grad = got
    wloss, wgrad = want
    assert loss == pytest.approx(wloss, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(grad, wgrad, rtol=2e-6, atol=1e-7 * gscale)


@pytest.mark.parametrize("n", SIZES)
def test_mse_huber_bce(rng, n):
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    t = rng.standard_normal(n).astype(np.float32)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    check(run(_core.LOSS_MSE, x, t), mse64(x64, t64), 10 / n)
    for delta in (0.5, 1.0, 2.0):
        check(run(_core.LOSS_HUBER, x, t, delta), huber64(x64, t64, delta), 1 / n)
    tb = rng.random(n).astype(np.float32)
    tb[::3] = np.round(tb[::3])
    check(run(_core.LOSS_BCE_LOGITS, x, tb), bce64(x64, tb.astype(np.float64)), 1 / n)


def test_bce_logits_extreme(rng):
    x = np.array([1e4, -1e4, 100, -100, 0, 30, -30], np.float32)
    t = np.array([1, 0, 0, 1, 0.5, 1, 0], np.float32)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    loss, grad = run(_core.LOSS_BCE_LOGITS, x, t)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    check((loss, grad), bce64(x64, t64), 1 / 7)


@pytest.mark.parametrize("m", [1, 2, 7, 64, 65, 257])
@pytest.mark.parametrize("c", CLASSES)
def test_cross_entropy(rng, m, c):
    x = (rng.standard_normal((m, c)) * 4).astype(np.float32)
    y = rng.integers(0, c, m)
    check(run(_core.LOSS_CROSS_ENTROPY, x, y), ce64(x.astype(np.float64), y), 1 / m)


def test_cross_entropy_huge_logits():
    x = np.array([[1e4, 0, -1e4], [1e4, 1e4, 0], [-1e4, 1e4, 0], [3e38, -3e38, 0]],
                 np.float32)
    y = np.array([0, 1, 0, 1])
    loss, grad = run(_core.LOSS_CROSS_ENTROPY, x, y)
    # rows: 0; log 2; 2e4; 6e38 (-> the mean is dominated by the last row)
    want = (0 + np.log(2) + 2e4 + 6e38) / 4
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(grad * 4, [[0, 0, 0], [0.5, -0.5, 0], [-1, 1, 0], [1, -1, 0]],
                               atol=1e-7)


def test_cross_entropy_confident_gradient_keeps_precision():
    # p(label) = 1 - 1e-6: the gradient p - 1 must come out as -1e-6, not 0 or -1.2e-6
    x = np.array([[np.log(1e-6), 0.0]], np.float32)
    loss, grad = run(_core.LOSS_CROSS_ENTROPY, x, np.array([1]))
    x64 = x.astype(np.float64)
    check((loss, grad), ce64(x64, np.array([1])), 1e-6)


def test_cross_entropy_bad_labels():
    x = np.zeros((3, 4), np.float32)
    g = np.empty_like(x)
    for bad in ([0, 4, 1], [0, -1, 2]):
        y = np.array(bad)
        with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
            _core.loss_forward(_core.LOSS_CROSS_ENTROPY, x, y)
        with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
            _core.loss_backward(_core.LOSS_CROSS_ENTROPY, x, y, g)
    with pytest.raises(TypeError, match="int64"):
        _core.loss_forward(_core.LOSS_CROSS_ENTROPY, x, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="shape"):
        _core.loss_forward(_core.LOSS_CROSS_ENTROPY, x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="empty"):
        _core.loss_forward(_core.LOSS_MSE, np.zeros(0, np.float32), np.zeros(0, np.float32))


def all_losses(seed):
    rng = np.random.default_rng(seed)
    n = 300001
    x = rng.standard_normal(n).astype(np.float32)
    t = rng.random(n).astype(np.float32)
    out = []
    for kind, param in ((_core.LOSS_MSE, 0), (_core.LOSS_HUBER, 0.7), (_core.LOSS_BCE_LOGITS, 0)):
        out.append(run(kind, x, t, param))
    xc = rng.standard_normal((30001, 10)).astype(np.float32)
    out.append(run(_core.LOSS_CROSS_ENTROPY, xc, rng.integers(0, 10, 30001)))
    return out


def test_losses_threads_bitwise_identical(num_threads):
    nncore.set_num_threads(1)
    one = all_losses(3)
    nncore.set_num_threads(2)
    two = all_losses(3)
    for (l1, g1), (l2, g2) in zip(one, two):
        assert l1 == l2
        np.testing.assert_array_equal(g1, g2)
