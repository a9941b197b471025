"""Losses: the kernels (csrc/loss.c) and the classes, against NumPy float64
references: values, gradients, finite differences, extreme logits, target
forms, errors, 1 vs 2 threads, and PyTorch (when installed)."""
import numpy as np
import pytest

import nncore
import nncore as nn
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


def test_fused_forward_gradient_equals_backward(rng):
    x = rng.standard_normal((65, 7)).astype(np.float32)
    t = rng.random((65, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 65)
    for kind, target in ((_core.LOSS_MSE, t), (_core.LOSS_HUBER, t),
                         (_core.LOSS_BCE_LOGITS, t), (_core.LOSS_CROSS_ENTROPY, labels)):
        g1, g2 = np.empty_like(x), np.empty_like(x)
        loss = _core.loss_forward(kind, x, target, 0.5, g1)
        assert loss == _core.loss_forward(kind, x, target, 0.5)
        _core.loss_backward(kind, x, target, g2, 0.5)
        np.testing.assert_array_equal(g1, g2)


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


# ---- the loss classes ----


def numeric_check(loss, pred, target, rng, h=1e-2, n_checks=10):
    loss.forward(pred, target)
    grad = loss.backward().copy()
    flat = pred.reshape(-1)
    for i in rng.choice(flat.size, size=min(n_checks, flat.size), replace=False):
        old = flat[i]
        flat[i] = old + h
        up = loss.forward(pred, target)
        flat[i] = old - h
        down = loss.forward(pred, target)
        flat[i] = old
        step = np.float64(np.float32(old + h)) - np.float64(np.float32(old - h))
        num = (up - down) / step
        ana = grad.reshape(-1)[i]
        assert abs(num - ana) <= 1e-4 + 2e-2 * abs(ana), (loss, i, num, ana)


def cases(rng):
    pred = rng.standard_normal((6, 3)).astype(np.float32)
    target = rng.standard_normal((6, 3)).astype(np.float32)
    probs = rng.random((6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 6)
    p64, t64 = pred.astype(np.float64), target.astype(np.float64)
    return [
        (nn.MSELoss(), pred, target, mse64(p64, t64)),
        (nn.HuberLoss(), pred, target, huber64(p64, t64, 1.0)),
        (nn.HuberLoss(delta=0.3), pred, target, huber64(p64, t64, 0.3)),
        (nn.BCEWithLogitsLoss(), pred, probs, bce64(p64, probs.astype(np.float64))),
        (nn.CrossEntropyLoss(), pred, labels, ce64(p64, labels)),
    ]


def test_loss_values_and_gradients(rng):
    for loss, pred, target, (want, want_grad) in cases(rng):
        assert loss.forward(pred, target) == pytest.approx(want, rel=1e-6)
        grad = loss.backward()
        assert grad.shape == pred.shape and grad.dtype == np.float32
        np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
        assert loss(pred, target) == loss.forward(pred, target)   # __call__


def test_finite_differences(rng):
    for loss, pred, target, _ in cases(rng):
        numeric_check(loss, pred.copy(), target, rng)


def test_target_forms(rng):
    pred = rng.standard_normal((5, 1)).astype(np.float32)
    t = rng.random(5)
    loss = nn.BCEWithLogitsLoss()
    a = loss.forward(pred, t)                           # (n,) float64 against (n, 1)
    b = loss.forward(pred, t.reshape(5, 1).astype(np.float32))
    assert a == pytest.approx(b, rel=1e-7)
    ce = nn.CrossEntropyLoss()
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    v = ce.forward(logits, labels)
    assert ce.forward(logits, labels.astype(np.int32)) == v
    assert ce.forward(logits, labels.reshape(4, 1)) == v
    assert ce.forward(logits.astype(np.float64), list(labels)) == v


def test_loss_errors(rng):
    pred = np.zeros((4, 3), np.float32)
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"label 3 at index 2 is outside \[0, 3\)"):
        ce.forward(pred, np.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="label -1 at index 0"):
        ce.forward(pred, np.array([-1, 1, 0, 2]))
    with pytest.raises(TypeError, match="integer class labels, got dtype float64"):
        ce.forward(pred, np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(4,\)"):
        ce.forward(pred, np.array([0, 1, 2]))
    mse = nn.MSELoss()
    with pytest.raises(ValueError, match=r"MSELoss: target has shape \(4, 1\), expected \(4, 3\)"):
        mse.forward(pred, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="MSELoss: backward\\(\\) called before forward"):
        nn.MSELoss().backward()
    with pytest.raises(ValueError, match="empty"):
        mse.forward(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(TypeError, match="real numbers"):
        mse.forward(pred, np.array([["a"] * 3] * 4))
    for delta in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError, match="delta"):
            nn.HuberLoss(delta)


def test_cross_entropy_huge_logits_through_the_class():
    ce = nn.CrossEntropyLoss()
    logits = np.array([[1e4, -1e4], [-1e4, 1e4]], np.float32)
    assert ce.forward(logits, np.array([0, 1])) == 0.0
    assert ce.forward(logits, np.array([1, 1])) == pytest.approx(1e4)
    assert np.isfinite(ce.backward()).all()


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for loss, pred, target, _ in cases(rng):
        tp = torch.tensor(pred, requires_grad=True)
        tt = torch.tensor(target)
        tl = {"MSELoss": torch.nn.MSELoss(), "HuberLoss": torch.nn.HuberLoss(
            delta=getattr(loss, "delta", 1.0)), "BCEWithLogitsLoss": torch.nn.BCEWithLogitsLoss(),
              "CrossEntropyLoss": torch.nn.CrossEntropyLoss()}[type(loss).__name__]
        want = tl(tp, tt)
        want.backward()
        assert loss.forward(pred, target) == pytest.approx(want.item(), rel=1e-5)
        np.testing.assert_allclose(loss.backward(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)
