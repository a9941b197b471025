"""Conv2d, pooling and BatchNorm kernels (csrc/conv.c, pool.c, batchnorm.c)
against NumPy float64 references written here (and torch.nn.functional when
torch is importable), on every ISA path, bitwise identical for 1 and 2
threads, and bad arguments raising clear errors."""
import numpy as np
import pytest

import nncore
from nncore import _core

U = 2.0 ** -24   # float32 unit roundoff
RELU = _core.ACTIVATIONS["relu"]


# ---- float64 references ----------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _windows(xp, kh, kw, oh, ow, s, d):
    """For each (i, j) of the kernel, the strided view of the padded input
    that tap multiplies: shape (n, c, oh, ow)."""
    for i in range(kh):
        for j in range(kw):
            a, b = i * d[0], j * d[1]
            yield i, j, (slice(None), slice(None),
                         slice(a, a + s[0] * (oh - 1) + 1, s[0]),
                         slice(b, b + s[1] * (ow - 1) + 1, s[1]))


def conv_ref(x, w, b, stride, padding, dilation, groups):
    """y, and yabs = the same convolution of |x| and |w| (an error scale)."""
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    oh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    y = np.zeros((n, o, oh, ow))
    yabs = np.zeros_like(y)
    for i, j, sl in _windows(xp, kh, kw, oh, ow, s, d):
        v = xp[sl]
        for g in range(groups):
            vg = v[:, g * cg:(g + 1) * cg]
            wg = w[g * og:(g + 1) * og, :, i, j]
            y[:, g * og:(g + 1) * og] += np.einsum("ncij,oc->noij", vg, wg)
            yabs[:, g * og:(g + 1) * og] += np.einsum("ncij,oc->noij", np.abs(vg), np.abs(wg))
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
        yabs += np.abs(b.astype(np.float64))[None, :, None, None]
    return y, yabs


def conv_backward_ref(x, w, dy, stride, padding, dilation, groups):
    """dx, dw, db and their error scales (the same sums of absolute values)."""
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    x, w, dy = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    _, _, oh, ow = dy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    dxp, dxa = np.zeros_like(xp), np.zeros_like(xp)
    dw, dwa = np.zeros_like(w), np.zeros_like(w)
    for i, j, sl in _windows(xp, kh, kw, oh, ow, s, d):
        v = xp[sl]
        for g in range(groups):
            cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
            dyg, wg = dy[:, os_], w[os_, :, i, j]
            dxp[sl[0], cs, sl[2], sl[3]] += np.einsum("noij,oc->ncij", dyg, wg)
            dxa[sl[0], cs, sl[2], sl[3]] += np.einsum("noij,oc->ncij", np.abs(dyg), np.abs(wg))
            dw[os_, :, i, j] = np.einsum("noij,ncij->oc", dyg, v[:, cs])
            dwa[os_, :, i, j] = np.einsum("noij,ncij->oc", np.abs(dyg), np.abs(v[:, cs]))
    crop = (slice(None), slice(None), slice(p[0], p[0] + h), slice(p[1], p[1] + wd))
    return (dxp[crop], dxa[crop], dw, dwa, dy.sum(axis=(0, 2, 3)),
            np.abs(dy).sum(axis=(0, 2, 3)))


def assert_sum_close(got, want, scale, terms, what):
    """|got - want| within a float32 summation bound: a few ulps of the sum
    of absolute values per sqrt(terms) (blocked sums stay well inside)."""
    tol = 8 * U * (2 + np.sqrt(terms)) * scale + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} off; worst err "
                           f"{err.max():.3g} (tol there {tol.ravel()[err.argmax()]:.3g})")


# ---- conv helpers ------------------------------------------------------------

# (n, c, h, w, o, kernel, stride, padding, dilation, groups)
CASES = [
    (1, 3, 7, 7, 4, 3, 1, 1, 1, 1),
    (3, 4, 9, 11, 6, 3, 2, 1, 1, 1),
    (2, 5, 8, 7, 3, 5, 1, 2, 1, 1),
    (3, 4, 13, 9, 8, 3, 1, 2, 2, 2),          # dilation 2, groups 2
    (1, 6, 9, 9, 6, 3, 2, 0, 1, 6),           # depthwise, stride 2
    (5, 8, 10, 9, 8, 3, 1, 1, 1, 8),          # depthwise
    (2, 4, 11, 11, 8, 5, 2, 2, 2, 4),         # depthwise x2 multiplier, 5x5, dilation 2
    (3, 16, 7, 7, 24, 1, 1, 0, 1, 1),         # 1x1: straight GEMM on x
    (2, 8, 9, 9, 12, 1, 2, 0, 1, 2),          # 1x1 stride 2, groups 2
    (1, 6, 5, 5, 4, 1, 1, 1, 1, 1),           # 1x1 with padding
    (3, 2, 6, 10, 3, (3, 1), (1, 2), (1, 0), (2, 1), 1),   # rectangular everything
    (2, 3, 5, 5, 2, 5, 1, 0, 1, 1),           # kernel = input: 1x1 output
    (1, 1, 28, 28, 32, 3, 1, 1, 1, 1),        # the small CNN's first layer, batch 1
    (3, 17, 15, 15, 65, 3, 1, 1, 1, 1),       # 65 outputs: packed GEMM path, odd sizes
    (2, 16, 30, 30, 8, 3, 1, 1, 1, 1),        # several pixel / channel blocks
    (3, 4, 9, 9, 1, 3, 1, 1, 1, 1),           # one output channel (a GEMV per task)
    (1, 2, 4, 4, 3, 3, 2, 2, 1, 1),           # padding 2 on a tiny input
    # the direct path (conv_direct.c): tiles of channels and pixels, bands, fallbacks
    (2, 8, 9, 9, 80, 3, 1, 1, 1, 1),          # 5 blocks of 16 outputs: two channel tiles
    (2, 3, 6, 40, 16, 3, 1, 1, 1, 1),         # rows wider than a tile
    (1, 64, 40, 100, 3, 3, 1, 1, 1, 1),       # input band past its bound: bands of rows
    (1, 16, 3, 3000, 2, 3, 1, 1, 1, 1),       # one row past the bound: im2col instead
    (2, 5, 11, 12, 7, 3, (2, 1), (1, 2), (2, 1), 1),   # stride and dilation per axis
    (2, 4, 8, 8, 5, 3, 1, 3, 1, 1),           # padding > kernel - 1: dy's copy starts inside
    (2, 4, 9, 9, 5, 3, 1, 2, (1, 2), 1),      # width dilation: dw by im2col
    (19, 3, 5, 5, 17, 3, 1, 1, 1, 1),         # 19 images: chunks of the weight gradient
    (2, 3, 12, 12, 40, 5, 1, 2, 1, 1),        # 5 wide kernel rows, 3 channel blocks
    (3, 6, 7, 7, 12, 3, 2, 1, 1, 3),          # groups with stride 2
    (1, 16, 28, 28, 32, 1, 2, 0, 1, 1),       # ResNet's 1x1 stride-2 projection
    # the direct input gradient by phases of the stride (conv_direct.h, transposed)
    (2, 6, 13, 11, 8, 5, 3, 2, 1, 1),         # stride 3: nine phases of 4, 2 and 1 taps
    (2, 4, 15, 15, 8, 3, 2, 3, 3, 1),         # dilation 3: tap shifts 0, 1, 3 rows
    (2, 8, 12, 10, 16, 3, 2, 2, 2, 2),        # dilation 2: every tap in phase 0, groups
    (2, 5, 9, 3, 6, 3, (2, 3), 4, 1, 1),      # padding > kernel, stride > width: empty phases
    (1, 4, 100, 200, 40, 3, 2, 1, 1, 1),      # dy band past its bound: bands of dx rows
    # taps in the zero padding left out (rows, and a tile's first / last pixel)
    (2, 4, 5, 1, 8, 3, 1, 1, 1, 1),           # one-pixel rows: both ends skip in one pixel
    (1, 6, 9, 8, 20, 5, 1, 4, 2, 1),          # padding 4, dilation 2: whole kernel rows out
    (2, 5, 7, 30, 36, 3, 1, 1, 1, 1),         # 36 outputs (v 3): rows in two tiles
    # depthwise stride 1 (conv_kernel.c's tap loops): blocks of 64 and 32, taps by tap
    (2, 6, 12, 11, 6, 5, 1, 2, 1, 6),         # 5x5: the weight gradient tap by tap
    (2, 4, 9, 13, 8, 3, 1, 1, 1, 4),          # two outputs per channel: dx sums both
]


def case_id(case):
    return "x".join(str(v).replace(" ", "") for v in case)


def make(rng, case, bias=True):
    n, c, h, w, o, k, s, p, d, g = case
    kh, kw = _pair(k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


def forward(x, w, b, kw, act=0):
    shape = _core.conv2d_output_shape(x.shape, w.shape, **kw)
    y = np.full(shape, np.nan, np.float32)
    _core.conv2d_forward(x, w, b, y, kw["stride"], kw["padding"], kw["dilation"],
                         kw["groups"], act)
    return y


def backward(x, w, dy, kw, want=("dx", "dw", "db")):
    dx = np.full_like(x, np.nan) if "dx" in want else None
    dw = np.full_like(w, np.nan) if "dw" in want else None
    db = np.full(w.shape[0], np.nan, np.float32) if "db" in want else None
    _core.conv2d_backward(x, w, dy, dx, dw, db, kw["stride"], kw["padding"], kw["dilation"],
                          kw["groups"])
    return dx, dw, db


# ---- conv tests ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_forward(isa, rng, case):
    for bias, act in [(True, 0), (False, RELU)]:
        x, w, b, kw = make(rng, case, bias)
        y = forward(x, w, b, kw, act)
        want, scale = conv_ref(x, w, b, **kw)
        if act == RELU:
            want = np.maximum(want, 0.0)
        assert_sum_close(y, want, scale, w[0].size, f"y bias={bias} act={act}")
        if act == RELU:
            assert (y >= 0).all()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv2d_backward(isa, rng, case):
    x, w, b, kw = make(rng, case)
    y = forward(x, w, b, kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = backward(x, w, dy, kw)
    rdx, sdx, rdw, sdw, rdb, sdb = conv_backward_ref(x, w, dy, **kw)
    n, o, oh, ow = y.shape
    assert_sum_close(dx, rdx, sdx, o // kw["groups"] * w.shape[2] * w.shape[3], "dx")
    assert_sum_close(dw, rdw, sdw, n * oh * ow, "dw")
    assert_sum_close(db, rdb, sdb, n * oh * ow, "db")
    # any subset gives the same bits
    for want in [("dx",), ("dw",), ("db",), ("dw", "db")]:
        got = backward(x, w, dy, kw, want)
        for name, a, full in zip(("dx", "dw", "db"), got, (dx, dw, db)):
            if name in want:
                np.testing.assert_array_equal(a, full, err_msg=f"{name} alone")


# the direct path, 1x1 (a GEMM on x), depthwise and the im2col fallback
BN_CASES = [CASES[0], CASES[1], CASES[5], CASES[7], (1, 16, 3, 3000, 2, 3, 1, 1, 1, 1),
            (2, 16, 14, 14, 32, 3, 1, 1, 1, 1)]


@pytest.mark.parametrize("case", BN_CASES, ids=case_id)
def test_conv2d_forward_bn(isa, rng, case):
    """conv2d_forward_bn = the convolution, then BatchNorm with running
    statistics, then the activation: against float64."""
    for bias, affine, act in [(True, True, 0), (False, True, RELU), (True, False, RELU)]:
        x, w, b, kw = make(rng, case, bias)
        o = w.shape[0]
        gamma = rng.uniform(0.5, 2.0, o).astype(np.float32) if affine else None
        beta = rng.standard_normal(o).astype(np.float32) if affine else None
        mean = rng.standard_normal(o).astype(np.float32)
        var = rng.uniform(0.2, 3.0, o).astype(np.float32)
        shape = _core.conv2d_output_shape(x.shape, w.shape, **kw)
        y = np.full(shape, np.nan, np.float32)
        _core.conv2d_forward_bn(x, w, b, gamma, beta, mean, var, 1e-5, y, kw["stride"],
                                kw["padding"], kw["dilation"], kw["groups"], act)
        z, scale = conv_ref(x, w, b, **kw)
        a = (gamma.astype(np.float64) if affine else 1.0) / np.sqrt(var.astype(np.float64) + 1e-5)
        want = (z - mean[None, :, None, None]) * a[None, :, None, None]
        if affine:
            want += beta.astype(np.float64)[None, :, None, None]
        if act == RELU:
            want = np.maximum(want, 0.0)
        err_scale = (scale + np.abs(mean)[None, :, None, None]) * np.abs(a)[None, :, None, None]
        assert_sum_close(y, want, 2 * err_scale + (np.abs(beta)[None, :, None, None]
                                                   if affine else 0), w[0].size,
                         f"y bias={bias} affine={affine} act={act}")


def test_conv2d_empty_batch(rng):
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = np.zeros((0, 4, 3, 3), np.float32)
    _core.conv2d_forward(x, w, None, y)
    dw = np.full_like(w, np.nan)
    db = np.full(4, np.nan, np.float32)
    _core.conv2d_backward(x, w, y, np.zeros_like(x), dw, db)
    assert (dw == 0).all() and (db == 0).all()


# Shapes large enough that every call runs in a parallel region, plus batch 1
# (one forward task: the GEMM threads itself) and a depthwise layer.
THREAD_CASES = [
    (5, 32, 14, 14, 64, 3, 1, 1, 1, 1),
    (3, 1, 28, 28, 32, 3, 1, 1, 1, 1),
    (1, 64, 7, 7, 64, 3, 1, 1, 1, 1),
    (3, 16, 15, 15, 32, 1, 1, 0, 1, 1),
    (4, 32, 15, 15, 32, 3, 2, 1, 1, 32),
    (3, 8, 16, 16, 16, 5, 1, 2, 2, 2),
    (1, 16, 28, 28, 16, 3, 1, 1, 1, 1),      # batch 1: bands of rows
    (19, 16, 14, 14, 32, 3, 2, 1, 1, 1),     # stride 2, chunks of images in dw
    (1, 32, 14, 14, 64, 3, 2, 1, 1, 1),      # batch 1, stride 2: bands of dx rows in phases
    (3, 24, 9, 9, 32, 5, 1, 2, 1, 1),        # 9 rows, 3 images: a channel tile per task
]


@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_conv2d_threads_bitwise(isa, rng, num_threads, case):
    x, w, b, kw = make(rng, case)
    results = []
    for threads in (1, 2, 1):
        nncore.set_num_threads(threads)
        y = forward(x, w, b, kw, RELU)
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        results.append((y,) + backward(x, w, dy, kw))
    for a, b2, name in zip(results[0], results[1], ("y", "dx", "dw", "db")):
        np.testing.assert_array_equal(a, b2, err_msg=f"{name}: 1 vs 2 threads")
    for a, b2, name in zip(results[0], results[2], ("y", "dx", "dw", "db")):
        np.testing.assert_array_equal(a, b2, err_msg=f"{name}: repeated call")


def test_conv2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for case in CASES[:8] + THREAD_CASES[:2]:
        x, w, b, kw = make(rng, case)
        y = forward(x, w, b, kw, RELU)
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        yt = F.relu(F.conv2d(xt, wt, bt, **kw))
        _, scale = conv_ref(x, w, b, **kw)
        assert_sum_close(y, yt.detach().numpy().astype(np.float64), 2 * scale, w[0].size,
                         f"y vs torch {case}")
        dy = rng.standard_normal(y.shape).astype(np.float32)
        yt.backward(torch.tensor(dy))
        # the ReLU's gradient first (it is not part of conv2d_backward)
        dx, dw, db = backward(x, w, np.where(y > 0, dy, 0).astype(np.float32), kw)
        _, sdx, _, sdw, _, sdb = conv_backward_ref(x, w, np.where(y > 0, dy, 0), **kw)
        n, o, oh, ow = y.shape
        assert_sum_close(dx, xt.grad.numpy().astype(np.float64), 2 * sdx, o * w[0, 0].size,
                         "dx vs torch")
        assert_sum_close(dw, wt.grad.numpy().astype(np.float64), 2 * sdw, n * oh * ow,
                         "dw vs torch")
        assert_sum_close(db, bt.grad.numpy().astype(np.float64), 2 * sdb, n * oh * ow,
                         "db vs torch")


def test_conv2d_output_shape():
    assert _core.conv2d_output_shape((2, 3, 28, 28), (8, 3, 3, 3), 1, 1) == (2, 8, 28, 28)
    assert _core.conv2d_output_shape((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 0), (2, 3),
                                     2) == (2, 6, 4, 5)


def test_conv2d_bad_arguments(rng):
    x, w, b, kw = make(rng, (2, 4, 8, 8, 6, 3, 1, 1, 1, 2))
    y = forward(x, w, b, kw)
    dy = np.ones_like(y)
    fwd = _core.conv2d_forward

    def raises(exc, match, fn, *args, **kwargs):
        with pytest.raises(exc, match=match):
            fn(*args, **kwargs)

    raises(TypeError, "conv2d_forward: x has dtype float64", fwd, x.astype(np.float64), w, b,
           y, 1, 1, 1, 2)
    raises(ValueError, "conv2d_forward: x must be 4-D", fwd, x[0], w, b, y, 1, 1, 1, 2)
    raises(ValueError, "conv2d_forward: x must be C-contiguous", fwd,
           np.asfortranarray(x), w, b, y, 1, 1, 1, 2)
    raises(ValueError, "groups=3 must divide", fwd, x, w, b, y, 1, 1, 1, 3)
    raises(ValueError, "input channels per group", fwd, x, w, b, y, 1, 1, 1, 1)
    raises(ValueError, "stride must be >= 1", fwd, x, w, b, y, 0, 1, 1, 2)
    raises(ValueError, "padding must be >= 0", fwd, x, w, b, y, 1, -1, 1, 2)
    raises(ValueError, "dilation must be >= 1", fwd, x, w, b, y, 1, 1, 0, 2)
    raises(TypeError, "stride must be an int or a pair", fwd, x, w, b, y, (1, 2, 3), 1, 1, 2)
    raises(ValueError, "larger than the padded input", fwd, x, w, b, y, 1, 0, 5, 2)
    raises(ValueError, "conv2d_forward: y has shape", fwd, x, w, b, y[:, :, 1:].copy(), 1, 1,
           1, 2)
    raises(ValueError, "conv2d_forward: bias has shape", fwd, x, w, b[:3], y, 1, 1, 1, 2)
    raises(ValueError, "conv2d_forward: act must be", fwd, x, w, b, y, 1, 1, 1, 2, 3)
    ro = y.copy()
    ro.flags.writeable = False
    raises(ValueError, "conv2d_forward: y must be writable", fwd, x, w, b, ro, 1, 1, 1, 2)
    x2 = np.zeros(x.size + y.size, np.float32)
    raises(ValueError, "y overlaps x", fwd, x2[:x.size].reshape(x.shape), w, b,
           x2[x.size - 8:x.size - 8 + y.size].reshape(y.shape), 1, 1, 1, 2)
    bwd = _core.conv2d_backward
    raises(ValueError, "conv2d_backward: dy has shape", bwd, x, w, dy[:1], None, None, None,
           1, 1, 1, 2)
    raises(ValueError, "conv2d_backward: dw has shape", bwd, x, w, dy, None, w[:1].copy(),
           None, 1, 1, 1, 2)
    raises(ValueError, "dx overlaps dy", bwd, x, w, dy, dy.reshape(-1)[:x.size].reshape(x.shape),
           None, None, 1, 1, 1, 2)
    raises(TypeError, "conv2d_backward: dx must be a NumPy array", bwd, x, w, dy, [1.0],
           None, None, 1, 1, 1, 2)
    with pytest.raises(ValueError, match="conv2d: x and weight must be 4-D"):
        _core.conv2d_output_shape((1, 2, 3), (1, 2, 3, 3))


# ---- pooling -----------------------------------------------------------------

def maxpool_ref(x, k, s, p):
    """y and the index (ih * w + iw) of each window's first maximum (padding
    -inf), scanning row-major."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    y = np.empty((n, c, oh, ow), np.float32)
    arg = np.empty((n, c, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
            hs, he = max(h0, 0), min(h0 + k[0], h)
            ws, we = max(w0, 0), min(w0 + k[1], w)
            win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            first = np.argmax(win, axis=2)    # numpy's argmax: the first maximum
            y[:, :, i, j] = np.take_along_axis(win, first[..., None], 2)[..., 0]
            arg[:, :, i, j] = (hs + first // (we - ws)) * w + ws + first % (we - ws)
    return y, arg


def avgpool_ref(x, k, s, p):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    y = np.zeros((n, c, oh, ow))
    for i, j, sl in _windows(xp, k[0], k[1], oh, ow, s, (1, 1)):
        y += xp[sl]
    return y / (k[0] * k[1])


def avgpool_backward_ref(dy, xshape, k, s, p):
    n, c, h, w = xshape
    _, _, oh, ow = dy.shape
    dxp = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]))
    for i, j, sl in _windows(dxp, k[0], k[1], oh, ow, s, (1, 1)):
        dxp[sl] += dy / (k[0] * k[1])
    return dxp[:, :, p[0]:p[0] + h, p[1]:p[1] + w]


# (n, c, h, w, kernel, stride, padding)
POOLS = [
    (1, 1, 4, 4, 2, 2, 0),
    (3, 5, 7, 9, 2, 2, 0),       # odd sizes: the last row/column dropped
    (2, 3, 9, 9, 3, 2, 1),
    (1, 4, 8, 7, 3, 1, 1),       # overlapping windows
    (2, 2, 11, 6, (3, 2), (2, 1), (1, 1)),
    (3, 2, 5, 5, 5, 1, 2),       # large padding
    (1, 2, 6, 6, 2, None, 0),    # stride None = kernel
    (2, 3, 17, 19, 2, 2, 0),     # 2x2 in vectors of 8 columns: an overlapping last block
    (1, 2, 6, 40, 2, 2, 0),      # two whole blocks of 8 and one overlapping
    (2, 3, 14, 14, 2, 2, 0),     # 2x2 rows narrower than 8 (ResNet/CNN 14 -> 7)
    (1, 2, 15, 15, 2, 2, 0),     # narrow with a dropped column
]


@pytest.mark.parametrize("case", POOLS, ids=case_id)
def test_maxpool2d(isa, rng, case):
    n, c, h, w, k, s, p = case
    k2, s2, p2 = _pair(k), _pair(k if s is None else s), _pair(p)
    # small integers: many ties; all negative: padding must act as -inf
    for x in [rng.integers(0, 3, (n, c, h, w)).astype(np.float32),
              -rng.integers(1, 4, (n, c, h, w)).astype(np.float32)]:
        shape = _core.pool2d_output_shape(x.shape, k, s, p)
        y = np.full(shape, np.nan, np.float32)
        arg = np.full(shape, -1, np.int32)
        _core.maxpool2d_forward(x, y, arg, k, s, p)
        want, want_arg = maxpool_ref(x, k2, s2, p2)
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(arg, want_arg)
        y2 = np.empty_like(y)
        _core.maxpool2d_forward(x, y2, None, k, s, p)
        np.testing.assert_array_equal(y2, y)
        dy = rng.standard_normal(shape).astype(np.float32)
        dx = np.full_like(x, np.nan)
        _core.maxpool2d_backward(dy, arg, dx, k, s, p)
        ref = np.zeros((n * c, h * w), np.float64)
        for plane in range(n * c):
            np.add.at(ref[plane], want_arg.reshape(n * c, -1)[plane],
                      dy.reshape(n * c, -1)[plane].astype(np.float64))
        np.testing.assert_allclose(dx, ref.reshape(x.shape), rtol=1e-6, atol=1e-6)
        # through a ReLU before the pooling: dy counts where y > 0, the bits
        # of relu_backward's mask followed by the plain backward
        masked = np.empty_like(dy)
        _core.act_backward(_core.ACT_CODES["relu"], y, dy, masked)
        two = np.full_like(x, np.nan)
        _core.maxpool2d_backward(masked, arg, two, k, s, p)
        one = np.full_like(x, np.nan)
        _core.maxpool2d_backward(dy, arg, one, k, s, p, relu_y=y)
        np.testing.assert_array_equal(one, two)
        ref = np.zeros((n * c, h * w), np.float64)
        for plane in range(n * c):
            np.add.at(ref[plane], want_arg.reshape(n * c, -1)[plane],
                      np.where(want > 0, dy, 0).reshape(n * c, -1)[plane])
        np.testing.assert_allclose(one, ref.reshape(x.shape), rtol=1e-6, atol=1e-6)


def test_maxpool2d_nan_propagates():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    y = np.empty((1, 1, 2, 2), np.float32)
    _core.maxpool2d_forward(x, y, None, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1]).any()
    x = np.zeros((1, 1, 4, 36), np.float32)   # the vector path (ow >= 8)
    x[0, 0, 1, 1] = x[0, 0, 2, 35] = np.nan
    y = np.empty((1, 1, 2, 18), np.float32)
    arg = np.empty(y.shape, np.int32)
    _core.maxpool2d_forward(x, y, arg, 2)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, 17])
    assert np.isnan(y).sum() == 2 and arg[0, 0, 0, 0] == 37 and arg[0, 0, 1, 17] == 2 * 36 + 35
    x = np.zeros((1, 1, 4, 14), np.float32)   # narrow rows (ow < 8): two NaNs, the last wins
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[0, 0, 3, 13] = np.nan
    y = np.empty((1, 1, 2, 7), np.float32)
    arg = np.empty(y.shape, np.int32)
    _core.maxpool2d_forward(x, y, arg, 2)
    assert np.isnan(y).sum() == 2 and arg[0, 0, 0, 0] == 14 and arg[0, 0, 1, 6] == 3 * 14 + 13


@pytest.mark.parametrize("case", POOLS, ids=case_id)
def test_avgpool2d(isa, rng, case):
    n, c, h, w, k, s, p = case
    k2, s2, p2 = _pair(k), _pair(k if s is None else s), _pair(p)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    shape = _core.pool2d_output_shape(x.shape, k, s, p)
    y = np.full(shape, np.nan, np.float32)
    _core.avgpool2d_forward(x, y, k, s, p)
    np.testing.assert_allclose(y, avgpool_ref(x, k2, s2, p2), rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = np.full_like(x, np.nan)
    _core.avgpool2d_backward(dy, dx, k, s, p)
    np.testing.assert_allclose(dx, avgpool_backward_ref(dy.astype(np.float64), x.shape, k2,
                                                        s2, p2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 7), (2, 64, 8, 8), (1, 3, 1, 33)])
def test_global_avgpool(isa, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.full(shape[:2], np.nan, np.float32)
    _core.global_avgpool_forward(x, y)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6,
                               atol=1e-7)
    dy = rng.standard_normal(shape[:2]).astype(np.float32)
    dx = np.full_like(x, np.nan)
    _core.global_avgpool_backward(dy, dx)
    np.testing.assert_allclose(dx, np.broadcast_to((dy / (shape[2] * shape[3]))[..., None,
                                                                                None], shape),
                               rtol=1e-6)


def test_pooling_matches_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for n, c, h, w, k, s, p in POOLS:
        x = rng.integers(-2, 3, (n, c, h, w)).astype(np.float32)
        shape = _core.pool2d_output_shape(x.shape, k, s, p)
        y, arg = np.empty(shape, np.float32), np.empty(shape, np.int32)
        _core.maxpool2d_forward(x, y, arg, k, s, p)
        yt, it = F.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(arg, it.numpy())
        xt = torch.tensor(x, requires_grad=True)
        dy = rng.standard_normal(shape).astype(np.float32)
        F.max_pool2d(xt, k, s, p).backward(torch.tensor(dy))
        dx = np.empty_like(x)
        _core.maxpool2d_backward(dy, arg, dx, k, s, p)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
        xt = torch.tensor(x, requires_grad=True)
        yt = F.avg_pool2d(xt, k, s, p, count_include_pad=True)
        _core.avgpool2d_forward(x, y, k, s, p)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
        yt.backward(torch.tensor(dy))
        _core.avgpool2d_backward(dy, dx, k, s, p)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_pooling_threads_bitwise(isa, rng, num_threads):
    x = rng.standard_normal((6, 16, 28, 28)).astype(np.float32)
    out = []
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        y, arg = np.empty((6, 16, 14, 14), np.float32), np.empty((6, 16, 14, 14), np.int32)
        _core.maxpool2d_forward(x, y, arg, 3, 2, 1)
        dx = np.empty_like(x)
        _core.maxpool2d_backward(y, arg, dx, 3, 2, 1)
        ya = np.empty_like(y)
        _core.avgpool2d_forward(x, ya, 3, 2, 1)
        dxa = np.empty_like(x)
        _core.avgpool2d_backward(ya, dxa, 3, 2, 1)
        g = np.empty((6, 16), np.float32)
        _core.global_avgpool_forward(x, g)
        y2, arg2 = np.empty((6, 16, 14, 14), np.float32), np.empty((6, 16, 14, 14), np.int32)
        _core.maxpool2d_forward(x, y2, arg2, 2)       # the 2x2 paths, with a ReLU mask
        dx2 = np.empty_like(x)
        _core.maxpool2d_backward(ya, arg2, dx2, 2, relu_y=y2)
        out.append((y, arg, dx, ya, dxa, g, y2, arg2, dx2))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_pooling_bad_arguments(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = np.empty((2, 3, 4, 4), np.float32)
    arg = np.empty((2, 3, 4, 4), np.int32)
    with pytest.raises(ValueError, match="padding .* at most half the kernel"):
        _core.maxpool2d_forward(x, y, arg, 2, 2, 2)
    with pytest.raises(ValueError, match="maxpool2d_forward: y has shape"):
        _core.maxpool2d_forward(x, y[:, :, :3].copy(), arg, 2)
    with pytest.raises(TypeError, match="maxpool2d_forward: argmax has dtype int64"):
        _core.maxpool2d_forward(x, y, arg.astype(np.int64), 2)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        _core.avgpool2d_forward(x, y, 0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        _core.avgpool2d_forward(x, y, 9)
    _core.maxpool2d_forward(x, y, arg, 2)
    arg[0, 0, 0, 0] = 64
    with pytest.raises(ValueError, match="argmax holds an index outside"):
        _core.maxpool2d_backward(y, arg, np.empty_like(x), 2)
    arg[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="argmax holds an index outside"):
        _core.maxpool2d_backward(y, arg, np.empty_like(x), 2)
    arg[0, 0, 0, 0] = 0
    with pytest.raises(ValueError, match="maxpool2d_backward: relu_y has shape"):
        _core.maxpool2d_backward(y, arg, np.empty_like(x), 2, relu_y=y[:, :2].copy())
    with pytest.raises(TypeError, match="maxpool2d_backward: relu_y has dtype float64"):
        _core.maxpool2d_backward(y, arg, np.empty_like(x), 2, relu_y=y.astype(np.float64))
    with pytest.raises(ValueError, match="global_avgpool_forward: y has shape"):
        _core.global_avgpool_forward(x, np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="y overlaps x"):
        _core.avgpool2d_forward(x, x.reshape(-1)[:96].reshape(2, 3, 4, 4), 2)


# ---- batch norm ----------------------------------------------------------------

def bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def bcast(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


# planes of 1, 2, 9, 24, 25, 40, 49, 64, 196 values: the sums' blocks of 16
# and 8 lanes, whole and with every kind of tail; the last is large enough
# for threads (split by images on 2-4)
BN_SHAPES = [(2, 3), (7, 5), (5, 70), (3, 4, 9), (2, 3, 5, 5), (5, 8, 7, 7), (1, 3, 2, 1),
             (2, 3, 3, 8), (3, 2, 40), (2, 3, 8, 8), (3, 4, 14, 14), (8, 16, 17, 15)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_train_and_eval(isa, rng, shape):
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    for affine in (True, False):
        w = rng.standard_normal(c).astype(np.float32) if affine else None
        b = rng.standard_normal(c).astype(np.float32) if affine else None
        rm = rng.standard_normal(c).astype(np.float32)
        rv = (rng.random(c) + 0.5).astype(np.float32)
        rm0, rv0 = rm.copy(), rv.copy()
        y = np.full_like(x, np.nan)
        sm, si = np.empty(c, np.float32), np.empty(c, np.float32)
        _core.batchnorm_forward_train(x, w, b, rm, rv, y, sm, si, 0.1, 1e-5)
        x64 = x.astype(np.float64)
        m = x.size // c
        mean = x64.mean(axis=bn_axes(x))
        var = x64.var(axis=bn_axes(x))
        invstd = 1 / np.sqrt(var + 1e-5)
        w64 = w.astype(np.float64) if affine else np.ones(c)
        b64 = b.astype(np.float64) if affine else np.zeros(c)
        want = (x64 - bcast(mean, x)) * bcast(invstd * w64, x) + bcast(b64, x)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sm, mean, rtol=1e-6)
        np.testing.assert_allclose(si, invstd, rtol=1e-6)
        np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * m / (m - 1), rtol=1e-6)
        # without running stats: same output
        y2 = np.empty_like(y)
        _core.batchnorm_forward_train(x, w, b, None, None, y2, sm, si, 0.1, 1e-5)
        np.testing.assert_array_equal(y, y2)
        # evaluation
        _core.batchnorm_forward_eval(x, w, b, rm, rv, y, 1e-5)
        want = ((x64 - bcast(rm.astype(np.float64), x))
                / np.sqrt(bcast(rv.astype(np.float64), x) + 1e-5) * bcast(w64, x)
                + bcast(b64, x))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_backward(isa, rng, shape):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    sm, si = np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batchnorm_forward_train(x, w, None, None, None, np.empty_like(x), sm, si, 0.1, 1e-5)
    dx, dwt, dbs = np.full_like(x, np.nan), np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batchnorm_backward(x, dy, w, sm, si, dx, dwt, dbs, True)
    ax = bn_axes(x)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, invstd = x64.mean(axis=ax), 1 / np.sqrt(x64.var(axis=ax) + 1e-5)
    xhat = (x64 - bcast(mean, x)) * bcast(invstd, x)
    db_ref, dw_ref = dy64.sum(axis=ax), (dy64 * xhat).sum(axis=ax)
    m = x.size // c
    dx_ref = (bcast(w * invstd, x) / m) * (m * dy64 - bcast(db_ref, x) - xhat * bcast(dw_ref, x))
    scale = np.abs(dy64).sum(axis=ax) + 1e-3
    np.testing.assert_allclose(dbs, db_ref, atol=1e-6 * scale.max())
    np.testing.assert_allclose(dwt, dw_ref, atol=1e-5 * scale.max())
    # dx cancels (to ~0 for two values per channel): tolerance on the terms' scale
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4,
                               atol=1e-5 * np.abs(bcast(w * invstd, x) * dy64).max())
    # evaluation-mode backward: statistics held constant
    rm = rng.standard_normal(c).astype(np.float32)
    ri = (rng.random(c) + 0.5).astype(np.float32)
    _core.batchnorm_backward(x, dy, w, rm, ri, dx, dwt, dbs, False)
    np.testing.assert_allclose(dx, dy64 * bcast(w.astype(np.float64) * ri, x), rtol=1e-6)
    np.testing.assert_allclose(dwt, (dy64 * (x64 - bcast(rm, x)) * bcast(ri, x)).sum(axis=ax),
                               rtol=1e-4, atol=1e-4)
    # parts skipped
    dx2 = np.empty_like(x)
    _core.batchnorm_backward(x, dy, None, sm, si, dx2, None, None, True)
    _core.batchnorm_backward(x, dy, np.ones(c, np.float32), sm, si, dx, None, None, True)
    np.testing.assert_array_equal(dx, dx2)


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm_relu_fused(isa, rng, shape):
    """A ReLU after the BatchNorm inside its passes (act, relu_y): the bits of
    the separate act_forward / act_backward steps, in training and with
    constant statistics, and the float64 reference of the masked gradient."""
    c = shape[1]
    relu = _core.ACT_CODES["relu"]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    x.flat[0] = np.nan if x.size > 40 else x.flat[0]     # NaN: stays NaN, masks nothing
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    sm, si = np.empty(c, np.float32), np.empty(c, np.float32)
    y = np.empty_like(x)
    _core.batchnorm_forward_train(x, w, b, None, None, y, sm, si, 0.1, 1e-5)
    two = np.empty_like(x)
    _core.act_forward(relu, y, two)
    one = np.full_like(x, 7.0)
    _core.batchnorm_forward_train(x, w, b, None, None, one, sm, si, 0.1, 1e-5, relu)
    np.testing.assert_array_equal(one, two)
    masked = np.empty_like(dy)
    _core.act_backward(relu, one, dy, masked)
    for train in (True, False):
        got = [np.full_like(x, np.nan), np.empty(c, np.float32), np.empty(c, np.float32)]
        want = [np.full_like(x, np.nan), np.empty(c, np.float32), np.empty(c, np.float32)]
        _core.batchnorm_backward(x, masked, w, sm, si, *want, train)
        _core.batchnorm_backward(x, dy, w, sm, si, *got, train, relu_y=one)
        for a, b2 in zip(got, want):
            np.testing.assert_array_equal(a, b2)
    if x.size <= 40:          # no NaN: the masked gradient against float64
        ax = bn_axes(x)
        g = np.where(one > 0, dy, 0).astype(np.float64)
        np.testing.assert_allclose(got[2], g.sum(axis=ax), rtol=1e-5, atol=1e-5)


def test_batchnorm_relu_bad_arguments(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    v = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="act must be none or relu"):
        _core.batchnorm_forward_train(x, v, v, None, None, np.empty_like(x), v.copy(), v.copy(),
                                      0.1, 1e-5, _core.ACT_CODES["tanh"])
    with pytest.raises(ValueError, match="batchnorm_backward: relu_y has shape"):
        _core.batchnorm_backward(x, x, v, v, v, np.empty_like(x), None, None, True,
                                 relu_y=x[:2].copy())


def test_batchnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for shape in [(7, 5), (3, 4, 9), (5, 8, 7, 7)]:
        c = shape[1]
        x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
        bn = (torch.nn.BatchNorm1d if len(shape) < 4 else torch.nn.BatchNorm2d)(c, momentum=0.3)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(rng.standard_normal(c).astype(np.float32)))
            bn.bias.copy_(torch.tensor(rng.standard_normal(c).astype(np.float32)))
        w, b = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        xt = torch.tensor(x, requires_grad=True)
        yt = bn(xt)
        y, sm, si = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        _core.batchnorm_forward_train(x, w, b, rm, rv, y, sm, si, 0.3, 1e-5)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-6)
        dy = rng.standard_normal(shape).astype(np.float32)
        yt.backward(torch.tensor(dy))
        dx, dw, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        _core.batchnorm_backward(x, dy, w, sm, si, dx, dw, db, True)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dw, bn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(db, bn.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
        bn.eval()
        _core.batchnorm_forward_eval(x, w, b, rm, rv, y, 1e-5)
        with torch.no_grad():
            np.testing.assert_allclose(y, bn(torch.tensor(x)).numpy(), rtol=1e-5, atol=2e-5)


# training passes split by channels (1 thread, BatchNorm1d, few images) or
# by images (bn_image_team): odd batches and channel counts, every plane
# tail, fewer images than twice the threads
BN_THREAD_SHAPES = [(16, 64, 12, 12), (2048, 130), (7, 33, 15, 11), (32, 16, 28, 28),
                    (5, 64, 7, 7), (9, 3, 70, 70)]


@pytest.mark.parametrize("shape", BN_THREAD_SHAPES, ids=str)
def test_batchnorm_threads_bitwise(isa, rng, num_threads, shape):
    out = []
    c = shape[1]
    x = (rng.standard_normal(shape) + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    for threads in (1, 2, 3, 4):
        nncore.set_num_threads(threads)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        y, sm, si = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        _core.batchnorm_forward_train(x, w, b, rm, rv, y, sm, si, 0.1, 1e-5)
        dx, dw, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        _core.batchnorm_backward(x, dy, w, sm, si, dx, dw, db, True)
        yr, dxr = np.empty_like(x), np.empty_like(x)       # with a ReLU inside
        _core.batchnorm_forward_train(x, w, b, None, None, yr, sm, si, 0.1, 1e-5,
                                      _core.ACT_CODES["relu"])
        _core.batchnorm_backward(x, dy, w, sm, si, dxr, dw, db, True, relu_y=yr)
        out.append((y, sm, si, rm, rv, dx, dw, db, yr, dxr))
    for other in out[1:]:
        for a, b2 in zip(out[0], other):
            np.testing.assert_array_equal(a, b2)


def test_batchnorm_bad_arguments(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    v = np.ones(3, np.float32)
    y = np.empty_like(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _core.batchnorm_forward_train(x[:1, :, :1, :1].copy(), v, v, None, None,
                                      np.empty((1, 3, 1, 1), np.float32), v.copy(), v.copy())
    with pytest.raises(ValueError, match="batchnorm_forward_train: weight has shape"):
        _core.batchnorm_forward_train(x, v[:2], v, None, None, y, v.copy(), v.copy())
    with pytest.raises(ValueError, match="pass both running_mean and running_var"):
        _core.batchnorm_forward_train(x, v, v, v.copy(), None, y, v.copy(), v.copy())
    with pytest.raises(ValueError, match="must be 2-D, 3-D or 4-D"):
        _core.batchnorm_forward_eval(x[0, 0, 0], v, v, v, v, y)
    with pytest.raises(TypeError, match="batchnorm_forward_eval: x has dtype float64"):
        _core.batchnorm_forward_eval(x.astype(np.float64), v, v, v, v, y)
    with pytest.raises(ValueError, match="y overlaps x"):
        _core.batchnorm_forward_eval(x, v, v, v, v, x)
    with pytest.raises(ValueError, match="batchnorm_backward: dy has shape"):
        _core.batchnorm_backward(x, x[:2], v, v, v, y, None, None)
