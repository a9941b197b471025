"""Conv2d in mixed precision: the im2col GEMMs of the forward pass, dx and
dw on the bfloat16 GEMM, against a float64 reference on the bf16-rounded
operands; every ISA path gives the same bits, for any thread count; and
Trainer(precision="bf16") on conv nets (the layer protocol's
``supports_bf16`` / ``sublayers()``)."""
import itertools

import numpy as np
import pytest

import nncore
from nncore import _core
from nncore.trainer import mixed_precision

from test_bf16 import U, run_on, to_bf16

RELU = _core.ACT_CODES["relu"]

# (n, c, h, w, o, k, stride, padding, dilation, groups): a 3x3 "same" conv,
# stride 2, dilation, grouped, pointwise (col is x itself), a deep one
# (several 512-deep blocks of the bf16 GEMM) and wide images (several pixel
# blocks).
SHAPES = [
    (2, 3, 9, 7, 5, 3, 1, 1, 1, 1),
    (3, 4, 11, 10, 6, 3, 2, 1, 1, 1),
    (2, 6, 9, 9, 4, 3, 1, 2, 2, 2),
    (2, 8, 5, 6, 7, 1, 1, 0, 1, 1),
    (2, 64, 6, 5, 9, 3, 1, 1, 1, 1),
    (1, 16, 40, 37, 17, 3, 1, 1, 1, 1),
]


def _windows(xp, i, j, oh, ow, stride, dilation):
    return xp[:, :, i * dilation:i * dilation + stride * (oh - 1) + 1:stride,
              j * dilation:j * dilation + stride * (ow - 1) + 1:stride]


def conv_reference(x, w, dy, stride, pad, dilation, groups):
    """float64 y, dx, dw of PyTorch's Conv2d (no bias), and the sums of
    magnitudes each rounding error is relative to."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, o, oh, ow))
    ymag = np.zeros_like(y)
    dxp = np.zeros_like(xp)
    dxmag = np.zeros_like(xp)
    dw = np.zeros_like(w)
    dwmag = np.zeros_like(w)
    for g, i, j in itertools.product(range(groups), range(kh), range(kw)):
        cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        patch = _windows(xp, i, j, oh, ow, stride, dilation)[:, cs]
        wij = w[os_, :, i, j]
        y[:, os_] += np.einsum("ncpq,oc->nopq", patch, wij)
        ymag[:, os_] += np.einsum("ncpq,oc->nopq", np.abs(patch), np.abs(wij))
        d = dy[:, os_]
        dw[os_, :, i, j] = np.einsum("nopq,ncpq->oc", d, patch)
        dwmag[os_, :, i, j] = np.einsum("nopq,ncpq->oc", np.abs(d), np.abs(patch))
        target = _windows(dxp, i, j, oh, ow, stride, dilation)[:, cs]
        target += np.einsum("nopq,oc->ncpq", d, wij)
        _windows(dxmag, i, j, oh, ow, stride, dilation)[:, cs] += np.einsum(
            "nopq,oc->ncpq", np.abs(d), np.abs(wij))
    crop = (slice(None), slice(None), slice(pad, pad + h), slice(pad, pad + wd))
    return (y, ymag), (dxp[crop], dxmag[crop]), (dw, dwmag)


def _case(rng, shape):
    n, c, h, wd, o, k, stride, pad, dil, groups = shape
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    oh = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dil * (k - 1) - 1) // stride + 1
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    return x, w, dy, (stride, pad, dil, groups)


def _conv(x, w, dy, geometry, bf16, bias=None, act=0):
    stride, pad, dil, groups = geometry
    y = np.empty(dy.shape, np.float32)
    dx, dw = np.empty_like(x), np.empty_like(w)
    _core.conv2d_forward(x, w, bias, y, stride, pad, dil, groups, act, bf16)
    _core.conv2d_backward(x, w, dy, dx, dw, None, stride, pad, dil, groups, bf16)
    return y, dx, dw


def _check(got, want, depth, name):
    ref, mag = want
    bound = (depth + 16) * U * mag + 1e-30
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= bound).all(), f"{name}: error {err.max():.3g} over the bound"


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_bf16_against_float64_on_rounded_operands(isa, rng, shape):
    x, w, dy, geometry = _case(rng, shape)
    y, dx, dw = _conv(x, w, dy, geometry, bf16=True)
    ry, rdx, rdw = conv_reference(to_bf16(x).astype(np.float64), to_bf16(w).astype(np.float64),
                                  to_bf16(dy).astype(np.float64), geometry[0], geometry[1],
                                  geometry[2], geometry[3])
    kg = w.shape[1] * w.shape[2] * w.shape[3]
    _check(y, ry, kg, "y")
    _check(dx, rdx, w.shape[0] + w.shape[2] * w.shape[3], "dx")
    _check(dw, rdw, dy.shape[0] * dy.shape[2] * dy.shape[3], "dw")
    # and it is bf16, not float32: the float32 result is outside these bounds
    y32 = _conv(x, w, dy, geometry, bf16=False)[0]
    assert not np.array_equal(y, y32)


def test_conv_bf16_bias_and_relu_epilogue(isa, rng):
    x, w, dy, geometry = _case(rng, SHAPES[1])
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    y = _conv(x, w, dy, geometry, bf16=True, bias=bias, act=RELU)[0]
    ry, ymag = conv_reference(to_bf16(x).astype(np.float64), to_bf16(w).astype(np.float64),
                              dy.astype(np.float64), *geometry)[0]
    ry = np.maximum(ry + bias[None, :, None, None], 0.0)
    _check(y, (ry, ymag + np.abs(bias)[None, :, None, None]), 36, "y")


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], SHAPES[3], SHAPES[5]])
def test_conv_bf16_same_bits_on_every_path_and_thread_count(rng, num_threads, shape):
    x, w, dy, geometry = _case(rng, shape)
    results = []
    for name in _core.isa_available():
        for threads in (1, 2, 3):
            nncore.set_num_threads(threads)
            results.append((name, threads, run_on(name, lambda: _conv(x, w, dy, geometry,
                                                                      bf16=True))))
    for name, threads, got in results[1:]:
        for a, b, what in zip(got, results[0][2], ("y", "dx", "dw")):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32),
                                          err_msg=f"{what} on {name}, {threads} threads")


def test_depthwise_conv_stays_float32(rng):
    """One input channel per group runs direct loops, not GEMMs: the flag
    changes nothing there."""
    for shape in [(2, 4, 9, 8, 4, 3, 1, 1, 1, 4), (2, 1, 9, 8, 6, 3, 2, 1, 1, 1)]:
        x, w, dy, geometry = _case(rng, shape)
        for a, b in zip(_conv(x, w, dy, geometry, bf16=True),
                        _conv(x, w, dy, geometry, bf16=False)):
            np.testing.assert_array_equal(a, b)


# ---- Trainer(precision="bf16") on conv nets ----

def _cnn(seed):
    nncore.manual_seed(seed)
    return nncore.Sequential(
        nncore.Conv2d(1, 8, 3, padding=1), nncore.ReLU(), nncore.MaxPool2d(2),
        nncore.Conv2d(8, 16, 3, padding=1), nncore.BatchNorm2d(16), nncore.ReLU(),
        nncore.MaxPool2d(2), nncore.Flatten(), nncore.Dense(16 * 4 * 4, 10))


def test_layer_protocol_declares_bf16_and_sublayers():
    assert nncore.Dense.supports_bf16 and nncore.Conv2d.supports_bf16
    for cls in (nncore.BatchNorm2d, nncore.ReLU, nncore.MaxPool2d, nncore.Sequential,
                nncore.Residual, nncore.Flatten):
        assert not cls.supports_bf16, cls
    block = nncore.Residual(nncore.Sequential(nncore.Conv2d(4, 4, 3, padding=1)),
                            nncore.Conv2d(4, 4, 1))
    assert block.sublayers() == (block.body, block.shortcut)
    assert nncore.Residual(nncore.ReLU()).sublayers()[0].__class__ is nncore.ReLU
    seq = nncore.Sequential(nncore.Dense(3, 2), nncore.ReLU())
    assert seq.sublayers() == seq.layers and nncore.ReLU().sublayers() == ()


def test_mixed_precision_reaches_every_gemm_layer_of_a_resnet():
    model = nncore.models.resnet(8)
    gemm_layers, stack = [], [model]
    while stack:
        layer = stack.pop()
        stack.extend(layer.sublayers())
        if isinstance(layer, (nncore.Dense, nncore.Conv2d)):
            gemm_layers.append(layer)
    assert len(gemm_layers) == 1 + 6 + 2 + 1      # stem, 3 blocks x 2, 2 projections, head
    with mixed_precision(model, True):
        assert all(layer._bf16 for layer in gemm_layers)
    assert not any(layer._bf16 for layer in gemm_layers)
    with mixed_precision(model, False):
        assert not any(layer._bf16 for layer in gemm_layers)


def _fit_cnn(precision, X, y, threads=None, steps=6, batch=16):
    model = _cnn(seed=1)
    start = [p.copy() for p, _ in model.parameters()]
    if threads is not None:
        nncore.set_num_threads(threads)
    trainer = nncore.Trainer(model, nncore.CrossEntropyLoss(), nncore.SGD(lr=0.05),
                             batch_size=batch, shuffle=False, precision=precision)
    trainer.fit(X[:steps * batch], y[:steps * batch], epochs=1, verbose=0)
    return model, start, [p.copy() for p, _ in model.parameters()]


def test_trainer_bf16_conv_net_deterministic_and_close(rng, num_threads):
    X = rng.standard_normal((96, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    model, start, w16 = _fit_cnn("bf16", X, y, threads=1)
    _, _, w16b = _fit_cnn("bf16", X, y, threads=2)
    _, _, w32 = _fit_cnn("float32", X, y, threads=2)
    for a, b in zip(w16, w16b):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert any(not np.array_equal(a, b) for a, b in zip(w16, w32))
    for a, b, s in zip(w16, w32, start):
        if a.ndim > 1:     # weights: bf16 and float32 runs end close, next to how far they went
            assert np.linalg.norm(a - b) < 0.3 * np.linalg.norm(b - s)
    # evaluation runs in float32 after training
    assert not any(getattr(layer, "_bf16", False) for layer in model.layers)


def test_trainer_bf16_conv_close_to_torch_autocast(rng):
    """30 Adam steps of the small conv net from the same weights on the same
    batches: nncore bf16 against PyTorch's autocast ends as close as
    autocast ends from PyTorch float32 (bf16 rounding sets that spread)."""
    torch = pytest.importorskip("torch")
    steps, batch = 30, 16
    X = rng.standard_normal((steps * batch, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, steps * batch)
    model = _cnn(seed=2)
    start = [p.copy() for p, _ in model.parameters()]

    def nn_run(precision):
        m = _cnn(seed=2)
        trainer = nncore.Trainer(m, nncore.CrossEntropyLoss(), nncore.SGD(lr=0.05),
                                 batch_size=batch, shuffle=False, precision=precision)
        trainer.fit(X, y, epochs=1, verbose=0)
        return [p.copy() for p, _ in m.parameters()]

    def torch_run(autocast):
        tm = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(256, 10))
        params = [p for p in tm.parameters()]
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(torch.from_numpy(s.T.copy() if s.ndim == 2 else s))
        opt = torch.optim.SGD(params, lr=0.05)
        for s in range(steps):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = tm(torch.from_numpy(X[s * batch:(s + 1) * batch]))
            torch.nn.functional.cross_entropy(
                out.float(), torch.from_numpy(y[s * batch:(s + 1) * batch])).backward()
            opt.step()
        return [p.detach().numpy().T.copy() if p.ndim == 2 else p.detach().numpy().copy()
                for p in params]

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t16, t32 = torch_run(True), torch_run(False)
    finally:
        torch.set_num_threads(previous)
    n16, n32 = nn_run("bf16"), nn_run("float32")

    def drift(ws, ref):
        return max(float(np.linalg.norm(w - r) / np.linalg.norm(r - s))
                   for w, r, s in zip(ws, ref, start) if w.ndim > 1)
    d_f32, d_bf16, d_mixed = drift(n32, t32), drift(n16, t16), drift(t16, t32)
    print(f"\nconv net weight drift after {steps} steps: nncore f32 vs torch f32 {d_f32:.2e}, "
          f"nncore bf16 vs torch autocast {d_bf16:.2e}, torch autocast vs f32 {d_mixed:.2e}")
    assert d_f32 < 1e-3
    assert d_bf16 < max(1.5 * d_mixed, 0.02)
