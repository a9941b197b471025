"""The blocked layout nChw16c (csrc/layout.c), the convolutions reading and
writing it (nn_conv2d_forward_nchw16c: Winograd and the direct path on either
side) and the predict plans that use it: the conversions against
NumPy's reshape and transpose; the convolutions bit for bit against the
NCHW ones (themselves checked against float64 in test_winograd.py and
test_conv_kernels.py) on every ISA path, for 1-3 threads, with every
epilogue; plans of fixed and random nets bit for bit against the Python
steps."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

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


def run_both(x, wt, b, r, act, stride, padding, layout, packed):
    """conv2d_forward in NCHW and conv2d_forward_nchw16c with `layout`
    (which of x, y and the residual r are nChw16c: "xy" has r too), its
    output in NCHW."""
    n, o = x.shape[0], wt.shape[0]
    want = np.empty((n, o) + tuple(_core.conv2d_output_shape(
        x.shape, wt.shape, stride, padding, 1, 1)[2:]), np.float32)
    _core.conv2d_forward(x, wt, b, want, stride=stride, padding=padding, act=act, res=r)
    y = np.full(blocked(want).shape if "y" in layout else want.shape, np.nan, np.float32)
    res = None if r is None else blocked(r) if "y" in layout or "r" in layout else r
    _core.conv2d_forward_nchw16c(blocked(x) if "x" in layout else x, wt, b, y, stride=stride,
                                 padding=padding, act=act, res=res, packed=packed)
    got = y
    if "y" in layout:
        got = np.empty_like(want)
        _core.from_nchw16c(y, got)
    return got, want


def make(case, res, k=3):
    n, c, h, w, o, p = case[:6]
    stride = case[6] if len(case) > 6 else 1
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    oh, ow = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    r = rng.standard_normal((n, o, oh, ow)).astype(np.float32) if res else None
    return x, wt, b, r, stride, p


# (layout, act, res): every side in nChw16c or not, with and without ReLU
# and a residual ("r": the residual alone in nChw16c)
EPILOGUES = [(layout, act, res) for layout in ("xy", "x", "y") for act in (0, 1)
             for res in (False, True)] + [(layout, act, True) for layout in ("xr", "r")
                                          for act in (0, 1)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("layout,act,res", EPILOGUES)
def test_winograd_gives_the_nchw_bits(case, layout, act, res, isa, always, num_threads):
    x, wt, b, r, stride, p = make(case, res)
    packed = _core.conv2d_pack(x.shape, wt, b, padding=p)
    for threads in (1, 2, 3):
        nncore.set_num_threads(threads)
        for pk in (None, packed):
            got, want = run_both(x, wt, b, r, act, stride, p, layout, pk)
            np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{threads} threads")


# (n, c, h, w, o, padding, stride, kernel) on the direct path: ResNet's stem
# (one input channel), its stride-2 3x3 and 1x1 layers, a 5x5 kernel, odd
# sizes, more than one tile of output channels, output channel tiles split
# between threads (64 channels on 7x7)
DIRECT = [
    (1, 1, 28, 28, 16, 1, 1, 3),
    (1, 16, 28, 28, 32, 1, 2, 3),
    (2, 16, 28, 28, 32, 0, 2, 1),
    (1, 32, 14, 14, 64, 1, 2, 3),
    (1, 64, 7, 7, 64, 1, 1, 3),
    (3, 5, 9, 11, 48, 2, 1, 5),
    (1, 3, 13, 6, 80, 1, 2, 3),
    (2, 32, 11, 9, 16, 2, 1, 5),
    (1, 16, 70, 66, 32, 1, 1, 3),    # several bands of rows per image
    (2, 48, 13, 13, 48, 1, 3, 3),
]


# (layout, act, res) as EPILOGUES; "x" only where c is a multiple of 16
DIRECT_EPILOGUES = [(layout, act, res) for layout in ("y", "x", "xy")
                    for act, res in ((0, False), (1, False), (1, True))] + [
                   (layout, 1, True) for layout in ("xr", "r")]


@pytest.mark.parametrize("case,layout,act,res",
                         [(c,) + e for c in DIRECT for e in DIRECT_EPILOGUES
                          if "x" not in e[0] or c[1] % 16 == 0],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_direct_path_gives_the_nchw_bits(case, layout, act, res, isa, num_threads):
    x, wt, b, r, stride, p = make(case, res, k=case[7])
    previous = _core.set_winograd("never")
    try:
        for threads in (1, 2, 3):
            nncore.set_num_threads(threads)
            got, want = run_both(x, wt, b, r, act, stride, p, layout, None)
            np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{threads} threads")
    finally:
        _core.set_winograd(previous)


def test_convolution_rejects_what_no_path_runs(always):
    x = np.zeros((1, 1, 8, 8, 16), np.float32)
    y = np.zeros((1, 1, 8, 8, 16), np.float32)
    w3 = np.zeros((16, 16, 3, 3), np.float32)
    nope = "runs on no path that reads or writes nChw16c"
    with pytest.raises(ValueError, match=nope):       # 8 output channels
        _core.conv2d_forward_nchw16c(np.zeros((1, 16, 8, 8), np.float32),
                                     np.zeros((8, 16, 3, 3), np.float32), None, y, padding=1)
    with pytest.raises(ValueError, match=nope):       # 1x1 stride 1: the GEMM path
        _core.conv2d_forward_nchw16c(np.zeros((1, 16, 8, 8), np.float32),
                                     np.zeros((16, 16, 1, 1), np.float32), None, y)
    with pytest.raises(ValueError, match="res 5-D with y"):
        _core.conv2d_forward_nchw16c(x, w3, None, y, padding=1,
                                     res=np.zeros((1, 16, 8, 8), np.float32))
    with pytest.raises(ValueError, match="5-D"):
        _core.conv2d_forward_nchw16c(np.zeros((1, 16, 8, 8), np.float32), w3, None,
                                     np.zeros((1, 16, 8, 8), np.float32), padding=1)
    with pytest.raises(ValueError, match=r"\(n, c // 16, h, w, 16\)"):
        _core.conv2d_forward_nchw16c(np.zeros((1, 1, 8, 8, 8), np.float32), w3, None, y,
                                     padding=1)
    with pytest.raises(ValueError, match="y has shape"):
        _core.conv2d_forward_nchw16c(x, w3, None, np.zeros((1, 1, 6, 6, 16), np.float32),
                                     padding=1)
    with pytest.raises(TypeError):
        _core.conv2d_forward_nchw16c(None, w3, None, y, padding=1)
    with pytest.raises(TypeError, match="must be a NumPy array"):
        _core.to_nchw16c(np.zeros((1, 16, 4, 4), np.float32), [0.0] * 256)


# ---- predict plans (nncore/_predict_plan.pxi, _use_nchw16c) ----

def python_steps(model, x):
    """The model's predict pass through its Python steps (no plan)."""
    from nncore.layers.base import Buffers
    return model._infer(np.ascontiguousarray(x, np.float32), Buffers("reference")).copy()


def plan_kinds(model):
    return [k for ws in model._workspaces for p in ws.plans.values() if p is not None
            for k in p.kinds]


def layout_net():
    """16- and 32-channel 3x3 convolutions between calls that read NCHW: a
    stem of 3 channels, Residuals fused into their last conv (the sum read
    in nChw16c: the block's input, or a 1x1 projection's NCHW output
    converted), one summed apart after an activation (its summands in NCHW),
    pooling and a Dense head."""
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


@pytest.mark.parametrize("threads,images", [(1, 1), (2, 1), (2, 3)])
def test_plan_runs_convolutions_in_nchw16c(threads, images, isa, always, num_threads):
    nncore.set_num_threads(threads)
    rng = np.random.default_rng(4)
    model = layout_net()
    for _, a in model.named_tensors():       # statistics away from 0 and 1
        a[...] = rng.uniform(0.5, 1.5, a.shape) if a.ndim == 1 else a
    x = rng.standard_normal((images, 3, 11, 10)).astype(np.float32)
    want = python_steps(model, x)
    for _ in range(3):                        # recorded, then replayed
        np.testing.assert_array_equal(bits(model.predict(x)), bits(want))
    # the stem writes nChw16c for the first block; the 1x1 projection (the
    # GEMM path) reads and writes NCHW, converted from and to; the sum apart
    # reads NCHW, its body's conv writing it; the conv after the pooling
    # reads NCHW
    assert plan_kinds(model) == [
        "conv_nchw16c y", "conv_nchw16c xy", "conv_nchw16c xyr", "from_nchw16c", "conv",
        "conv_nchw16c xy", "to_nchw16c", "conv_nchw16c xyr", "conv_nchw16c x", "from_nchw16c",
        "other", "other", "conv", "other", "other"]
    frozen = model.freeze()
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(want))


def test_plan_keeps_nchw_past_l2_and_when_off(always, num_threads):
    nncore.set_num_threads(2)
    model = layout_net()
    x = np.random.default_rng(5).standard_normal((16, 3, 96, 96)).astype(np.float32)
    np.testing.assert_array_equal(bits(model.predict(x)), bits(python_steps(model, x)))
    # predict's chunks of 8 images of 16 x 96 x 96 channels: 4.7 MB tensors,
    # past half of any L2 up to 8 MB
    assert "conv" in plan_kinds(model) and not any(" " in k for k in plan_kinds(model))
    previous = _core.set_plan_nchw16c("always")
    try:
        model = layout_net()
        np.testing.assert_array_equal(bits(model.predict(x)), bits(python_steps(model, x)))
        assert "conv_nchw16c xyr" in plan_kinds(model)
        _core.set_plan_nchw16c("never")
        model = layout_net()
        model.predict(x[:1])
        assert "conv" in plan_kinds(model) and not any(" " in k for k in plan_kinds(model))
        with pytest.raises(ValueError, match="unknown nChw16c mode 'on'"):
            _core.set_plan_nchw16c("on")
    finally:
        _core.set_plan_nchw16c(previous)


def test_plan_per_winograd_mode(num_threads):
    """A plan recorded with Winograd on is not replayed with it off (its
    convolutions' paths, hence the layouts they take, differ); both keep
    tensors in nChw16c (the direct path reads and writes it too)."""
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
    assert [any(" " in k for k in p.kinds) for p in plans] == [True, True]


@st.composite
def nets(draw):
    """A random conv net on 3-channel images: 16- and 32-channel convs (3x3
    or 1x1, stride 1 or 2, with or without BatchNorm and ReLU), Residuals
    fused into their last conv or summed apart, with and without a 1x1
    projection, and pooling, then a Dense head; and an image size and
    batch it takes."""
    size = draw(st.integers(5, 13))
    layers, c, hw = [nncore.Conv2d(3, 16, 3, padding=1), nncore.ReLU()], 16, size
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "res", "apart", "pool"]))
        o = draw(st.sampled_from([16, 32]))
        if kind == "conv":
            k, s = draw(st.sampled_from([(3, 1), (3, 2), (1, 2)]))
            if hw < 3:
                continue
            layers.append(nncore.Conv2d(c, o, k, stride=s, padding=k // 2))
            if draw(st.booleans()):
                layers.append(nncore.BatchNorm2d(o))
            if draw(st.booleans()):
                layers.append(nncore.ReLU())
            c, hw = o, (hw + 2 * (k // 2) - k) // s + 1
        elif kind in ("res", "apart"):
            body = [nncore.Conv2d(c, o, 3, padding=1), nncore.BatchNorm2d(o)]
            if kind == "res":
                body += [nncore.ReLU(), nncore.Conv2d(o, o, 3, padding=1), nncore.BatchNorm2d(o)]
            else:
                body.append(nncore.ReLU())
            layers.append(nncore.Residual(nncore.Sequential(*body),
                                          nncore.Conv2d(c, o, 1) if o != c else None))
            if draw(st.booleans()):
                layers.append(nncore.ReLU())
            c = o
        elif hw >= 2:
            layers.append(draw(st.sampled_from([nncore.AvgPool2d, nncore.MaxPool2d]))(2))
            hw //= 2
    layers += [nncore.GlobalAvgPool2d(), nncore.Dense(c, 4)]
    return layers, size, draw(st.integers(1, 3)), draw(st.integers(1, 3))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(nets())
def test_random_nets_give_the_python_steps_bits(case):
    layers, size, images, threads = case
    previous = (_core.set_winograd("always"), nncore.get_num_threads())
    discarded = _core.nchw16c_discarded()
    try:
        nncore.set_num_threads(threads)
        nncore.manual_seed(size)
        model = nncore.Sequential(*layers).eval()
        rng = np.random.default_rng(size)
        for name, a in model.named_tensors():
            a[...] = rng.uniform(0.5, 1.5, a.shape) if "running_var" in name else (
                rng.normal(0.0, 0.5, a.shape))
        x = rng.standard_normal((images, 3, size, size)).astype(np.float32)
        want = python_steps(model, x)
        for _ in range(2):
            np.testing.assert_array_equal(bits(model.predict(x)), bits(want))
        np.testing.assert_array_equal(bits(model.freeze().predict(x)), bits(want))
    finally:
        _core.set_winograd(previous[0])
        nncore.set_num_threads(previous[1])
    assert _core.nchw16c_discarded() == discarded
