"""Conv-net layers (Conv2d, pooling, BatchNorm, Residual, Flatten) and the
models built of them: finite differences (float64), PyTorch as a reference
when installed, training, files and bad input."""
import numpy as np
import pytest

import nncore as nn
from nncore.errors import FormatError
from nncore.io import read_archive, write_archive
from reference import check_grads, smooth_input

F32 = np.float32


def images(rng, shape):
    return smooth_input(rng, shape)


# ---- finite differences, independent of PyTorch ----

CONV_CASES = [dict(in_channels=2, out_channels=3, kernel_size=3),
              dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1),
              dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", dilation=2,
                   groups=2),
              dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3),
              dict(in_channels=3, out_channels=2, kernel_size=1, bias=False),
              dict(in_channels=1, out_channels=2, kernel_size=(5, 3), padding=(2, 1)),
              dict(in_channels=2, out_channels=3, kernel_size=3, activation="tanh")]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradients(isa, rng, case):
    nn.manual_seed(0)
    conv = nn.Conv2d(**case)
    if conv.bias is not None:
        conv.bias[...] = rng.standard_normal(conv.out_channels) * 0.1
    check_grads(conv, images(rng, (3, case["in_channels"], 7, 6)), rng)


def test_conv2d_relu_epilogue_equals_the_unfused_layers(isa, rng):
    # (ReLU's kinks make finite differences unreliable: compare with the exact
    # composition instead, forward and backward, bit for bit)
    nn.manual_seed(0)
    fused = nn.Conv2d(2, 3, 3, padding=1, activation="relu")
    fused.bias[...] = rng.standard_normal(3)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh())
    conv = plain[0]
    conv.weight, conv.bias = fused.weight, fused.bias
    x = images(rng, (3, 2, 7, 6))
    z = conv.forward(x).copy()
    assert np.array_equal(fused.forward(x), np.maximum(z, 0))
    dy = rng.standard_normal(z.shape).astype(F32)
    dx = fused.backward(dy).copy()
    assert np.array_equal(dx, conv.backward((dy * (z > 0)).astype(F32)))
    assert np.array_equal(fused.grad_weight, conv.grad_weight)
    # and a ReLU layer after a Conv2d folds into its epilogue, with the same bits
    seq = nn.Sequential(conv, nn.ReLU())
    assert np.array_equal(seq.forward(x), np.maximum(z, 0))
    assert np.array_equal(seq.backward(dy), dx)


@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, 1, 1)],
                         ids=["2x2", "3x3-overlapping"])
def test_maxpool_absorbs_the_relu_backward_bitwise(isa, rng, pool):
    """Sequential skips a ReLU's backward step before a MaxPool2d, which masks
    the pooled gradient instead: the same bits as the two steps."""
    x = rng.standard_normal((5, 3, 9, 16)).astype(np.float32)
    x[0, 0, :2] = 0.0                                  # ReLU outputs of exactly zero
    results = []
    for absorb in (True, False):
        nn.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), pool(), nn.Flatten())
        model.layers[2].absorbs_relu_backward = absorb
        model._build_plan()
        steps = dict(model._backward_calls(True))
        assert (getattr(steps[1], "__name__", "") == "_take_grad") == absorb
        out = model.forward(x)
        dx = model.backward(np.ones_like(out) * np.arange(out.shape[1], dtype=np.float32))
        results.append([dx.copy()] + [g.copy() for _, g in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_runs_the_relu_after_it_bitwise(isa, rng, training):
    """Sequential folds a ReLU after a BatchNorm into its forward pass and
    skips the ReLU's backward step (the BatchNorm's masks the gradient): the
    same bits as the separate layers, with batch and with running statistics."""
    x = rng.standard_normal((5, 3, 9, 16)).astype(np.float32)
    results = []
    for fuse in (True, False):
        nn.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 2, 3), nn.Flatten())
        if not fuse:
            model.layers[1].epilogue_acts = frozenset()
            model.layers[1].absorbs_act_relu_backward = False
            model._build_plan()
        steps = dict(model._backward_calls(True))
        assert (getattr(steps[2], "__name__", "") == "_take_grad") == fuse
        model.train(training)
        out = model.forward(x)
        dx = model.backward(np.ones_like(out) * np.arange(out.shape[1], dtype=np.float32))
        results.append([out.copy(), dx.copy()] + [g.copy() for _, g in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, 2, 1),
                                  lambda: nn.AvgPool2d(2), lambda: nn.AvgPool2d(3, 2, 1),
                                  nn.GlobalAvgPool2d, nn.Flatten])
def test_pooling_gradients(isa, rng, make):
    check_grads(make(), images(rng, (2, 3, 7, 6)), rng)


@pytest.mark.parametrize("shape, cls", [((6, 4), nn.BatchNorm1d), ((5, 3, 4), nn.BatchNorm1d),
                                        ((3, 4, 5, 3), nn.BatchNorm2d)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(isa, rng, shape, cls, training):
    bn = cls(shape[1])
    bn.weight[...] = 1 + 0.3 * rng.standard_normal(shape[1])
    bn.bias[...] = 0.1 * rng.standard_normal(shape[1])
    bn.running_mean[...] = 0.2 * rng.standard_normal(shape[1])
    bn.running_var[...] = 1 + rng.random(shape[1])
    bn.train(training)
    bn.momentum = 0.0        # repeated forwards of the check must not move the statistics
    check_grads(bn, images(rng, shape), rng, h=1e-2, rtol=3e-2, atol=2e-3)


def test_residual_gradients(isa, rng):
    nn.manual_seed(3)
    block = nn.Residual(nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
                                      nn.Conv2d(3, 3, 3, padding=1)),
                        nn.Sequential(nn.Conv2d(2, 3, 1, stride=2)))
    check_grads(block, images(rng, (2, 2, 6, 6)), rng)
    identity = nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh()))
    check_grads(identity, images(rng, (2, 2, 5, 5)), rng)


@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_then_relu_trains_in_one_pass(isa, rng, num_threads, shortcut):
    """A ReLU after a Residual runs in the block's sum (Residual.forward_act)
    and its backward in the block's (relu_after): the bits of the block and
    the ReLU run as separate steps, which the finite differences check."""
    def block():
        nn.manual_seed(4)
        return nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh()),
                           nn.Conv2d(3, 3, 1) if shortcut else None)

    x = images(rng, (2, 3, 5, 5))
    dy = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    model, alone = nn.Sequential(block(), nn.ReLU()), block()
    y = model.forward(x)
    ya = alone.forward(x)
    assert np.array_equal(y, np.maximum(ya, 0))
    assert (ya < 0).any() and (ya > 0).any()
    dx = model.backward(dy)
    assert np.array_equal(dx, alone.backward(np.where(ya > 0, dy, 0).astype(np.float32)))
    for (p, g), (pa, ga) in zip(model.parameters(), alone.parameters()):
        assert np.array_equal(g, ga)
    check_grads(model, x, rng, h=1e-3)      # at the default 1e-2 an output crossed the kink


@pytest.mark.parametrize("n", [7, 200_003])      # one range; ranges over the threads
def test_add_relu_backward_kernel(isa, rng, num_threads, n):
    """dx = relu_backward(y, a + b): the bits of the sum, then the mask."""
    from nncore import _core
    a, b, y = (rng.standard_normal(n).astype(F32) for _ in range(3))
    a[:4], y[:4] = [np.nan, -0.0, 1.0, 2.0], [1.0, 1.0, np.nan, 0.0]
    b[1] = -0.0
    want = np.where(y > 0, a + b, F32(0))
    for threads in (1, 2):
        nn.set_num_threads(threads)
        dx = np.empty_like(a)
        _core.add_relu_backward(a, b, y, dx)
        assert np.array_equal(dx.view(np.uint32), want.view(np.uint32))  # -0.0 kept where y > 0
        inplace = a.copy()
        _core.add_relu_backward(inplace, b, y, inplace)
        assert np.array_equal(inplace.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="must match"):
        _core.add_relu_backward(a, b, y[:3], dx)


@pytest.mark.parametrize("shortcut", [False, True])
def test_relu_before_a_residual_runs_in_its_gradient_sum(isa, rng, num_threads, monkeypatch,
                                                         shortcut):
    """The backward of a ReLU before a Residual runs in the block's sum of
    its branches' input gradients (relu_before), not as a pass of its own
    nor in the previous block's (relu_after): the bits of those steps."""
    def model():
        nn.manual_seed(6)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))), nn.ReLU(),
            nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
                        nn.Conv2d(4, 4, 1) if shortcut else None), nn.ReLU(),
            nn.GlobalAvgPool2d(), nn.Dense(4, 3))

    x = images(rng, (3, 3, 6, 6))
    dy = rng.standard_normal((3, 3)).astype(F32)
    fused = model()
    steps = dict(fused._backward_calls(True))
    assert steps[2].__name__ == steps[4].__name__ == "_take_grad"
    assert steps[3].keywords == {"relu_before": True}
    assert steps[5].keywords == {"relu_after": True, "relu_before": True}
    assert not hasattr(steps[1], "keywords")        # the first ReLU is no longer BatchNorm's
    monkeypatch.setattr(nn.Residual, "absorbs_relu_backward", False)
    unfused = model()
    assert "relu_before" not in getattr(dict(unfused._backward_calls(True))[3], "keywords", {})
    monkeypatch.undo()
    for threads in (1, 2):
        nn.set_num_threads(threads)
        results = []
        for m in (fused, unfused):
            m.train()
            m.forward(x)
            dx = m.backward(dy)
            results.append([dx.copy()] + [g.copy() for _, g in m.parameters()])
        for a, b in zip(*results):
            assert np.array_equal(a, b)
        assert np.abs(results[0][0]).max() > 0


# ---- the same numbers as PyTorch ----

def torch_conv(torch, layer):
    t = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                        layer.stride, layer._padding, layer.dilation, layer.groups,
                        bias=layer.bias is not None)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(layer.weight))
        if layer.bias is not None:
            t.bias.copy_(torch.from_numpy(layer.bias))
    return t


TORCH_CONV = [(1, 1, 8, 8, 4, 3, 1, 0, 1, 1), (5, 3, 9, 7, 6, 3, 2, 1, 1, 1),
              (2, 4, 11, 11, 4, 3, 1, 2, 2, 2), (3, 6, 9, 9, 6, 3, 2, 1, 1, 6),
              (4, 8, 7, 7, 16, 1, 1, 0, 1, 1), (2, 3, 13, 10, 5, 5, 1, 2, 1, 1),
              (3, 16, 14, 14, 32, 3, 2, 1, 1, 1), (1, 32, 7, 7, 32, 3, 1, 1, 1, 32)]


@pytest.mark.parametrize("n, c, h, w, o, k, stride, padding, dilation, groups", TORCH_CONV)
def test_conv2d_equals_torch(isa, rng, n, c, h, w, o, k, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    nn.manual_seed(1)
    layer = nn.Conv2d(c, o, k, stride, padding, dilation, groups)
    layer.bias[...] = rng.standard_normal(o)
    ref = torch_conv(torch, layer)
    x = rng.standard_normal((n, c, h, w)).astype(F32)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = ref(tx)
    y = layer.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y.shape).astype(F32)
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grad_weight, ref.weight.grad.numpy(), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(layer.grad_bias, ref.bias.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_pooling_equals_torch_with_ties(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.integers(0, 3, (2, 3, 7, 9)).astype(F32)        # many ties
    dy_shape = None
    for layer, ref in ((nn.MaxPool2d(2), lambda t: F.max_pool2d(t, 2)),
                       (nn.MaxPool2d(3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1)),
                       (nn.AvgPool2d(3, 2, 1), lambda t: F.avg_pool2d(t, 3, 2, 1)),
                       (nn.GlobalAvgPool2d(), lambda t: t.mean(dim=(2, 3)))):
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = ref(tx)
        y = layer.forward(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        dy_shape = y.shape
        dy = rng.standard_normal(dy_shape).astype(F32)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm2d, (4, 3, 5, 5)),
                                        (nn.BatchNorm1d, (7, 5)), (nn.BatchNorm1d, (3, 4, 6))])
def test_batchnorm_equals_torch_over_steps(rng, cls, shape):
    torch = pytest.importorskip("torch")
    c = shape[1]
    bn = cls(c, momentum=0.2)
    ref = getattr(torch.nn, cls.__name__)(c, momentum=0.2)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(1 + rng.standard_normal(c).astype(F32)))
        ref.bias.copy_(torch.from_numpy(rng.standard_normal(c).astype(F32)))
    bn.weight[...] = ref.weight.detach().numpy()
    bn.bias[...] = ref.bias.detach().numpy()
    for _ in range(4):
        x = (3 * rng.standard_normal(shape) + 1).astype(F32)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = ref(tx)
        y = bn.forward(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(shape).astype(F32)
        ref.weight.grad = ref.bias.grad = None
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(bn.backward(dy), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(bn.grad_weight, ref.weight.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(bn.grad_bias, ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    bn.eval()
    ref.eval()
    x = rng.standard_normal(shape).astype(F32)
    np.testing.assert_allclose(bn.forward(x), ref(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nn.Sequential(bn).predict(x), bn.forward(x), rtol=0, atol=0)


def torch_copy(torch, model):
    """A PyTorch module with the same architecture and weights (its state
    moves between the two by position: the same order and shapes)."""
    def convert(layer):
        if isinstance(layer, nn.Sequential):
            return torch.nn.Sequential(*[convert(inner) for inner in layer])
        if isinstance(layer, nn.Residual):
            return TorchResidual(convert(layer.body),
                                 convert(layer.shortcut) if layer.shortcut else None)
        if isinstance(layer, nn.Conv2d):
            return torch_conv(torch, layer)
        if isinstance(layer, nn.Dense):
            t = torch.nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(layer.weight.T.copy()))
                t.bias.copy_(torch.from_numpy(layer.bias))
            return t
        if isinstance(layer, nn.BatchNorm2d):
            t = torch.nn.BatchNorm2d(layer.num_features)
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(t, name).copy_(torch.from_numpy(getattr(layer, name)))
            return t
        return {"ReLU": torch.nn.ReLU, "MaxPool2d": lambda: torch.nn.MaxPool2d(
            layer.kernel_size, layer.stride, layer.padding), "Flatten": torch.nn.Flatten,
            "GlobalAvgPool2d": lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1),
                                                           torch.nn.Flatten())}[
            type(layer).__name__]()

    class TorchResidual(torch.nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)
    return convert(model)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_small_cnn_trains_like_torch(rng, optimizer):
    torch = pytest.importorskip("torch")
    nn.manual_seed(0)
    model = nn.models.small_cnn(image_size=12)
    ref = torch_copy(torch, model)
    X = rng.standard_normal((40, 1, 12, 12)).astype(F32)
    y = rng.integers(0, 10, 40)
    opt = nn.SGD(0.05, momentum=0.9) if optimizer == "sgd" else nn.Adam(1e-3)
    topt = (torch.optim.SGD(ref.parameters(), 0.05, momentum=0.9) if optimizer == "sgd"
            else torch.optim.Adam(ref.parameters(), 1e-3))
    loss, tloss = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for step in range(20):
        xb, yb = X[step % 5 * 8:][:8], y[step % 5 * 8:][:8]
        value = loss.forward(model.forward(xb), yb)
        model.backward(loss.backward())
        opt.step(model.parameters())
        topt.zero_grad()
        tvalue = tloss(ref(torch.from_numpy(xb)), torch.from_numpy(yb))
        tvalue.backward()
        topt.step()
        assert abs(value - tvalue.item()) < 1e-3 * (1 + step)
    for (p, _), tp in zip(model.parameters(), ref.parameters()):
        want = tp.detach().numpy()
        got = p.T if p.ndim == 2 else p          # Dense keeps (in, out), Linear (out, in)
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("skip", [True, False])
def test_resnet_equals_torch(rng, skip):
    torch = pytest.importorskip("torch")
    nn.manual_seed(2)
    model = nn.models.resnet(8, skip=skip, width=4)
    ref = torch_copy(torch, model)
    assert [tuple(p.shape) for p in ref.parameters()] == [
        tuple(p.T.shape if p.ndim == 2 else p.shape) for p, _ in model.parameters()]
    x = rng.standard_normal((5, 1, 12, 12)).astype(F32)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = ref(tx)
    y = model.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-3, atol=1e-4)
    dy = rng.standard_normal(y.shape).astype(F32)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(model.backward(dy), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    for (p, g), tp in zip(model.parameters(), ref.parameters()):
        got = g.T if g.ndim == 2 else g
        np.testing.assert_allclose(got, tp.grad.numpy(), rtol=1e-3, atol=1e-3)
    model.eval()
    ref.eval()
    np.testing.assert_allclose(model.predict(x), ref(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-3, atol=1e-4)


def test_predict_folds_batchnorm_into_the_conv(isa, rng):
    """predict runs Conv2d-BatchNorm2d(-ReLU) as one conv pass (the BatchNorm's
    running statistics folded in); the result matches the unfused layers."""
    nn.manual_seed(3)
    model = nn.models.resnet(8, width=8)
    x = rng.standard_normal((6, 1, 12, 12)).astype(F32)
    for _ in range(2):          # running statistics away from 0 and 1
        model.forward(x)
    model.eval()
    calls = {"fused": 0}
    real = nn._core.conv2d_forward_bn

    def counting(*args, **kwargs):
        calls["fused"] += 1
        return real(*args, **kwargs)

    nn._core.conv2d_forward_bn = counting
    try:
        got = model.predict(x)
    finally:
        nn._core.conv2d_forward_bn = real
    # stem, 3 blocks x 2 convs, 2 projections: every conv is followed by a BatchNorm
    assert calls["fused"] == 9
    want = model.forward(x)            # eval mode: the layers one by one
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_predict_keeps_batchnorm_that_cannot_fold(rng):
    """A conv with its own activation, or a BatchNorm without running
    statistics, runs as separate layers."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, activation="relu"), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.ReLU())
    x = rng.standard_normal((3, 2, 9, 9)).astype(F32)
    model.forward(x)
    model.eval()
    assert nn.layers.sequential.batchnorm_folds(model.layers) == {}
    np.testing.assert_allclose(model.predict(x), model.forward(x), rtol=1e-6, atol=1e-6)


# ---- the rest of the package ----

def test_resnet_shapes_and_blocks():
    model = nn.models.resnet(20)
    assert model.infer_shapes((1, 28, 28))[-1] == (10,)
    blocks = [layer for layer in model if isinstance(layer, nn.Residual)]
    assert len(blocks) == 9 and sum(b.shortcut is not None for b in blocks) == 2
    plain = nn.models.resnet(20, skip=False)
    assert not any(isinstance(layer, nn.Residual) for layer in plain)
    assert len(plain.parameters()) == len(model.parameters()) - 2 * 3
    with pytest.raises(ValueError, match="6n"):
        nn.models.resnet(21)


def test_cnn_trains_deterministically_saves_and_loads(tmp_path, rng):
    X, y = nn.datasets.load_digits(flatten=False)
    X, y = X[:256], y[:256]
    runs = []
    for threads in (1, 2):
        nn.set_num_threads(threads)
        nn.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Residual(nn.Sequential(
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())),
                              nn.Flatten(), nn.Dense(8 * 4 * 4, 10))
        trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.1, momentum=0.9),
                             batch_size=32, seed=0)
        history = trainer.fit(X, y, epochs=4, verbose=0)
        runs.append(model.state_dict())
    nn.set_num_threads(2)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    for name in runs[0]:
        assert runs[0][name].tobytes() == runs[1][name].tobytes(), name
    path = tmp_path / "cnn.nnc"
    nn.save(model, path)
    loaded = nn.load(path)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert "1.running_var" in read_archive(path)[1]
    with nn.profile(peak_gflops=1.0) as prof:
        trainer.fit(X, y, epochs=1, verbose=0)
    rows = {(r["name"].split("(")[0], r["phase"]) for r in prof.summary()["layers"]}
    for name in ("0 Conv2d", "1 BatchNorm2d", "3 MaxPool2d", "4 Residual"):
        assert {(name, "forward"), (name, "backward")} <= rows


def test_hostile_conv_files(tmp_path):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    path = tmp_path / "m.nnc"
    nn.save(model, path)
    meta, tensors = read_archive(path)
    for key, value, match in (("kernel_size", [10 ** 6, 10 ** 6], "tensor '0.weight'"),
                              ("groups", 3, "groups=3 must divide"),
                              ("stride", [0, 1], "stride must be an int >= 1"),
                              ("in_channels", -1, "in_channels must be a positive int")):
        bad = {**meta, "model": {"layers": [dict(meta["model"]["layers"][0], **{key: value}),
                                            meta["model"]["layers"][1]]}}
        write_archive(path, bad, tensors)
        with pytest.raises(FormatError, match=match):
            nn.load(path)
    bad = {**meta, "model": {"layers": [meta["model"]["layers"][0],
                                        dict(meta["model"]["layers"][1], num_features=10 ** 9)]}}
    write_archive(path, bad, tensors)
    with pytest.raises(FormatError, match="tensor '1.weight'"):
        nn.load(path)


BAD = [
    (lambda: nn.Conv2d(3, 4, 3).forward(np.ones((2, 2, 8, 8), F32)), ValueError,
     r"Conv2d\(3->4, 3x3\): input has 2 channels, expected 3"),
    (lambda: nn.Conv2d(3, 4, 3).forward(np.ones((2, 3, 2, 8), F32)), ValueError,
     r"Conv2d\(3->4, 3x3\): input of shape \(2, 3, 2, 8\) is too small"),
    (lambda: nn.Conv2d(1, 4, 3).forward(np.ones((2, 784), F32)), ValueError,
     r"Conv2d\(1->4, 3x3\): input must be 4-D \(batch, channels, height, width\)"),
    (lambda: nn.Conv2d(0, 4, 3), ValueError, "in_channels must be a positive int"),
    (lambda: nn.Conv2d(4, 4, -1), ValueError, "kernel_size must be an int >= 1"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, "groups=4 must divide"),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding="same"), ValueError, "needs stride 1"),
    (lambda: nn.Conv2d(10 ** 5, 10 ** 5, 99), MemoryError, r"Conv2d\(100000->100000"),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, "at most half the kernel"),
    (lambda: nn.MaxPool2d(5).forward(np.ones((1, 1, 3, 3), F32)), ValueError,
     r"MaxPool2d\(5x5\): input of shape \(1, 1, 3, 3\) does not fit"),
    (lambda: nn.BatchNorm2d(3).forward(np.ones((2, 4, 3, 3), F32)), ValueError,
     r"BatchNorm2d\(3\): input must be \(batch, shape \(C, H, W\) with C = num_features\)"),
    (lambda: nn.BatchNorm1d(3).forward(np.ones((1, 3), F32)), ValueError,
     "more than 1 value per channel"),
    (lambda: nn.BatchNorm1d(3, momentum=None), ValueError, "momentum must be a finite number"),
    (lambda: nn.Residual(nn.Conv2d(2, 3, 3, padding=1)).forward(np.ones((1, 2, 5, 5), F32)),
     ValueError, r"the body gives shape \(1, 3, 5, 5\), the shortcut \(1, 2, 5, 5\)"),
    (lambda: nn.Sequential(nn.Residual(nn.Dense(4, 3))), ValueError,
     r"branches of different shapes: body \(3,\), shortcut \(4,\)"),
    (lambda: nn.Trainer(nn.models.small_cnn(), nn.CrossEntropyLoss(), nn.SGD(0.1)).fit(
        np.ones((4, 1, 20, 20), F32), np.zeros(4, np.int64), verbose=0), ValueError,
     r"layer 7 Dense\(3136->128\) expects samples of shape \(3136,\), but layer 6 Flatten\(\) "
     r"outputs samples of shape \(1600,\)"),
]


@pytest.mark.parametrize("call, error, match", BAD)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
