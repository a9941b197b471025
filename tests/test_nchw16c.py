"""The blocked layout nChw16c (csrc/layout.c) and the Winograd convolution
reading and writing it (nn_conv2d_forward_nchw16c): the conversions
against NumPy's reshape and transpose, and the convolution bit for bit
against the NCHW one (itself checked against float64 in test_winograd.py),
on every ISA path, for any thread count, with every epilogue."""
import numpy as np
import pytest

import nncore
from nncore import _core


def blocked(a):
    """NumPy's nChw16c of an NCHW array: (n, c // 16, h, w, 16)."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, c // 16, 16, h, w).transpose(0, 1, 3, 4, 2))


def bits(a):
    return a.view(np.uint32)


@pytest.fixture
def always():
    previous = _core.set_winograd("always")
    yield
    _core.set_winograd(previous)


@pytest.mark.parametrize("shape", [(1, 16, 28, 28), (3, 32, 7, 5), (2, 64, 1, 1),
                                   (1, 48, 13, 9), (0, 16, 4, 4), (5, 16, 2, 3)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conversions_match_numpy(shape, threads, num_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    nncore.set_num_threads(threads)
    xb = np.full(blocked(x).shape, np.nan, np.float32)
    _core.to_nchw16c(x, xb)
    np.testing.assert_array_equal(bits(xb), bits(blocked(x)))
    back = np.full_like(x, np.nan)
    _core.from_nchw16c(xb, back)
    np.testing.assert_array_equal(bits(back), bits(x))


def test_conversions_reject_bad_arrays():
    x = np.zeros((1, 16, 4, 4), np.float32)
    xb = np.zeros((1, 1, 4, 4, 16), np.float32)
    with pytest.raises(ValueError, match="multiple of 16"):
        _core.to_nchw16c(np.zeros((1, 8, 4, 4), np.float32), xb)
    with pytest.raises(ValueError, match=r"y has shape \(1, 1, 4, 5, 16\)"):
        _core.to_nchw16c(x, np.zeros((1, 1, 4, 5, 16), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        _core.from_nchw16c(xb, np.zeros((16, 4, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        _core.to_nchw16c(x.astype(np.float64), xb)
    with pytest.raises(ValueError, match="read-only|writable"):
        ro = xb.copy()
        ro.flags.writeable = False
        _core.to_nchw16c(x, ro)
    whole = np.zeros(2 * x.size, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        _core.to_nchw16c(whole[:x.size].reshape(x.shape), whole[8:8 + x.size].reshape(xb.shape))


# (n, c, h, w, o, padding): ResNet-20's stages at batch 1 and odd batches,
# odd sizes (partial tiles), padding 0 and 2, several channel blocks a side
CASES = [
    (1, 16, 28, 28, 16, 1),
    (3, 32, 14, 14, 32, 1),
    (1, 64, 7, 7, 64, 1),
    (2, 16, 9, 5, 48, 1),
    (1, 32, 13, 14, 16, 1),      # 7 tile rows: on 2 threads, ranges of tiles
    (2, 16, 6, 7, 32, 0),
    (1, 48, 5, 8, 16, 2),
    (1, 16, 1, 1, 16, 1),        # one pixel: all but the centre is padding
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("act,res", [(0, False), (1, False), (1, True), (0, True)])
def test_convolution_gives_the_nchw_bits(case, act, res, isa, always, num_threads):
    n, c, h, w, o, p = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    oh, ow = h + 2 * p - 2, w + 2 * p - 2
    r = rng.standard_normal((n, o, oh, ow)).astype(np.float32) if res else None
    want = np.empty((n, o, oh, ow), np.float32)
    _core.conv2d_forward(x, wt, b, want, padding=p, act=act, res=r)
    packed = _core.conv2d_pack(x.shape, wt, b, padding=p)
    for threads in (1, 2, 3):
        nncore.set_num_threads(threads)
        for pk in (None, packed):
            yb = np.full((n, o // 16, oh, ow, 16), np.nan, np.float32)
            _core.conv2d_forward_nchw16c(blocked(x), wt, b, yb, padding=p, act=act,
                                         res=None if r is None else blocked(r), packed=pk)
            np.testing.assert_array_equal(bits(yb), bits(blocked(want)),
                                          err_msg=f"{threads} threads")


def test_convolution_rejects_what_winograd_does_not_run(always):
    x = np.zeros((1, 1, 8, 8, 16), np.float32)
    y = np.zeros((1, 1, 8, 8, 16), np.float32)
    with pytest.raises(ValueError, match="does not run the Winograd path"):
        _core.conv2d_forward_nchw16c(x, np.zeros((16, 16, 5, 5), np.float32), None,
                                     np.zeros((1, 1, 6, 6, 16), np.float32), padding=1)
    with pytest.raises(ValueError, match="does not run the Winograd path"):
        _core.conv2d_forward_nchw16c(x, np.zeros((8, 16, 3, 3), np.float32), None, y)
    previous = _core.set_winograd("never")
    try:
        with pytest.raises(ValueError, match="does not run the Winograd path"):
            _core.conv2d_forward_nchw16c(x, np.zeros((16, 16, 3, 3), np.float32), None, y)
    finally:
        _core.set_winograd(previous)
    with pytest.raises(ValueError, match=r"\(n, c // 16, h, w, 16\)"):
        _core.conv2d_forward_nchw16c(np.zeros((1, 1, 8, 8, 8), np.float32),
                                     np.zeros((16, 16, 3, 3), np.float32), None, y)
    with pytest.raises(ValueError, match="y has shape"):
        _core.conv2d_forward_nchw16c(x, np.zeros((16, 16, 3, 3), np.float32), None,
                                     np.zeros((1, 1, 6, 6, 16), np.float32))


# ---- predict plans (nncore/_predict_plan.pxi, _use_nchw16c) ----

def python_steps(model, x):
    """The model's predict pass through its Python steps (no plan)."""
    from nncore.layers.base import Buffers
    return model._infer(np.ascontiguousarray(x, np.float32), Buffers("reference")).copy()


def plan_kinds(model):
    return [k for ws in model._workspaces for p in ws.plans.values() if p is not None
            for k in p.kinds]


def layout_net():
    """Runs of 16- and 32-channel 3x3 convolutions between calls that read
    NCHW: a stem of 3 channels, Residuals fused into their last conv (the
    sum read in nChw16c: the block's input, or a 1x1 projection's NCHW
    output converted), one summed apart after an activation (its summands
    converted back), pooling and a Dense head."""
    nn = nncore
    nn.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                                  nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)),
                    nn.Conv2d(16, 32, 1)),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())),
        nn.AvgPool2d(2), nn.Conv2d(32, 16, 3, padding=1), nn.GlobalAvgPool2d(),
        nn.Dense(16, 5)).eval()


@pytest.mark.parametrize("threads,images", [(1, 1), (2, 1), (3, 2)])
def test_plan_runs_winograd_layers_in_nchw16c(threads, images, isa, always, num_threads):
    nncore.set_num_threads(threads)
    rng = np.random.default_rng(4)
    model = layout_net()
    for _, a in model.named_tensors():       # statistics away from 0 and 1
        a[...] = rng.uniform(0.5, 1.5, a.shape) if a.ndim == 1 else a
    x = rng.standard_normal((images, 3, 11, 10)).astype(np.float32)
    want = python_steps(model, x)
    for _ in range(3):                        # recorded, then replayed
        np.testing.assert_array_equal(bits(model.predict(x)), bits(want))
    kinds = plan_kinds(model)
    assert kinds.count("conv_nchw16c") == 5 and kinds.count("conv") == 3
    assert kinds.count("to_nchw16c") == 2     # the stem's output, the projection's
    # the projection's input, the sum apart's two summands
    assert kinds.count("from_nchw16c") == 3
    frozen = model.freeze()
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(want))


def test_plan_keeps_nchw_for_batches_and_off(always, num_threads):
    nncore.set_num_threads(2)
    model = layout_net()
    x = np.random.default_rng(5).standard_normal((2, 3, 11, 10)).astype(np.float32)
    np.testing.assert_array_equal(bits(model.predict(x)), bits(python_steps(model, x)))
    assert "conv_nchw16c" not in plan_kinds(model)      # 2 images on 2 threads
    previous = _core.set_plan_nchw16c(False)
    try:
        model = layout_net()
        model.predict(x[:1])
        assert "conv_nchw16c" not in plan_kinds(model)
    finally:
        _core.set_plan_nchw16c(previous)


def test_plan_per_winograd_mode(num_threads):
    """A plan recorded with Winograd on is not replayed with it off (its
    nChw16c convolutions run only on the Winograd path)."""
    nncore.set_num_threads(2)
    model = nncore.models.resnet(8)
    model.eval()
    x = np.random.default_rng(6).random((1, 1, 28, 28), dtype=np.float32)
    for mode in ("auto", "never", "auto"):
        previous = _core.set_winograd(mode)
        try:
            np.testing.assert_array_equal(bits(model.predict(x)), bits(python_steps(model, x)))
        finally:
            _core.set_winograd(previous)
    plans = [p for ws in model._workspaces for p in ws.plans.values()]
    assert sorted(mode for ws in model._workspaces for _, mode in ws.plans) == ["auto", "never"]
    assert ["conv_nchw16c" in p.kinds for p in plans].count(True) == 1
