"""The Winograd F(2x2, 3x3) weight gradient (csrc/winograd_dw.c) of 3x3,
stride-1 Conv2d layers: against the NumPy float64 reference of
test_conv_kernels and against PyTorch, on every ISA path, over odd image
sizes, batches and channel counts, bitwise identical for 1 and 2 threads,
with the bias gradient the direct path's bits."""
import numpy as np
import pytest

import nncore
import nncore as nn
from nncore import _core
from test_conv_kernels import assert_sum_close, conv_backward_ref


@pytest.fixture
def wino():
    """Run the test with Winograd's weight gradient wherever it applies."""
    previous = _core.set_winograd_dw("always")
    yield
    _core.set_winograd_dw(previous)


def grads(x, w, dy, padding, want=("dw", "db"), dx=False):
    """conv2d_backward's (dx,) dw, db (None where not asked for)."""
    gx = np.full_like(x, np.nan) if dx else None
    gw = np.full_like(w, np.nan) if "dw" in want else None
    gb = np.full(w.shape[0], np.nan, np.float32) if "db" in want else None
    _core.conv2d_backward(x, w, dy, gx, gw, gb, 1, padding)
    return (gx, gw, gb) if dx else (gw, gb)


def make(rng, n, c, h, w, o, padding):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    return x, wt, dy


def in_mode(mode, fn, *args, **kwargs):
    previous = _core.set_winograd_dw(mode)
    try:
        return fn(*args, **kwargs)
    finally:
        _core.set_winograd_dw(previous)


# (n, c, h, w, o, padding): odd and tiny images (one tile, odd last tile
# rows and columns, a padding larger than the kernel), batch 1 and odd
# batches (chunks of images: 19 = 7 chunks of 3 and one of 1), channels off
# multiples of 16, blocks of tile rows across images (many small images)
CASES = [(1, 2, 1, 1, 3, 1), (2, 3, 2, 2, 2, 1), (1, 4, 3, 3, 5, 0), (3, 5, 4, 4, 7, 1),
         (2, 3, 5, 5, 4, 2), (1, 6, 6, 6, 3, 1), (3, 2, 7, 7, 9, 1), (2, 7, 8, 8, 2, 0),
         (1, 3, 9, 9, 6, 2), (2, 5, 9, 4, 3, 1), (3, 4, 3, 8, 5, 1), (2, 3, 7, 1, 4, 1),
         (1, 2, 1, 9, 2, 2), (5, 17, 5, 9, 33, 1), (19, 16, 7, 7, 16, 1),
         (2, 3, 6, 5, 2, 3), (40, 20, 3, 3, 24, 1), (3, 48, 11, 13, 80, 1)]


def case_id(case):
    return "x".join(map(str, case))


def kernel_scale(sdw):
    """The error scale of Winograd's weight gradient: per (k, c), the sum
    of the nine taps' scales (sums of |dy| |x|). Each of a (k, c) pair's
    nine gradients comes out of the same 16 transformed sums, whose
    rounding errors are relative to all nine taps' terms: a tap whose own
    terms are small (a border tap of a tiny image: 1x1 outputs measured an
    error of 144x the per-tap tolerance on avx512) gets the others' error.
    Against this scale every case measured within 0.3x the tolerance."""
    return np.broadcast_to(sdw.sum(axis=(2, 3), keepdims=True), sdw.shape)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_winograd_dw_matches_float64(isa, rng, wino, case):
    n, c, h, w, o, p = case
    x, wt, dy = make(rng, *case)
    dw, db = grads(x, wt, dy, p)
    _, _, rdw, sdw, rdb, sdb = conv_backward_ref(x, wt, dy, 1, p, 1, 1)
    terms = n * dy.shape[2] * dy.shape[3]
    assert_sum_close(dw, rdw, kernel_scale(sdw), terms, "dw")
    assert_sum_close(db, rdb, sdb, terms, "db")
    # the bias gradient is the direct weight gradient's, bit for bit (that
    # path runs from 4 output channels on: NN_CONV_DIRECT_MIN_O in conv.c)
    dw_direct, db_direct = in_mode("never", grads, x, wt, dy, p)
    if o >= 4:
        np.testing.assert_array_equal(db, db_direct)
    assert_sum_close(dw, dw_direct, 2 * kernel_scale(sdw), terms, "dw against the direct path")
    # each of dw and db asked for alone gets the same bits
    np.testing.assert_array_equal(grads(x, wt, dy, p, ("dw",))[0], dw)
    np.testing.assert_array_equal(grads(x, wt, dy, p, ("db",))[1], db)


@pytest.mark.parametrize("case", [(1, 16, 28, 28, 16, 1), (7, 32, 14, 14, 32, 1),
                                  (3, 64, 7, 7, 64, 1), (20, 33, 9, 10, 17, 0)], ids=case_id)
def test_winograd_dw_threads_bitwise(isa, rng, wino, num_threads, case):
    x, wt, dy = make(rng, *case)
    results = []
    for threads in (1, 2, 1):
        nncore.set_num_threads(threads)
        results.append(grads(x, wt, dy, case[-1], dx=True))
    for name, a, b, c in zip(("dx", "dw", "db"), *results):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: 1 vs 2 threads")
        np.testing.assert_array_equal(a, c, err_msg=f"{name}: repeated call")
    # the input gradient is not Winograd's: the same bits either way
    np.testing.assert_array_equal(in_mode("never", grads, x, wt, dy, case[-1], dx=True)[0],
                                  results[0][0])


def test_winograd_dw_long_sums_stay_accurate(rng, wino):
    """A ResNet-20 stage's shape at batch 64 (12,544 tiles per weight), x
    and dy positive (no cancellation to hide behind): the error stays
    within the direct path's per-tap tolerance (measured 0.01x of it; the
    direct path's own 0.1x)."""
    x, wt, dy = make(rng, 64, 16, 28, 28, 16, 1)
    x, dy = np.abs(x), np.abs(dy) + 0.5
    dw, _ = grads(x, wt, dy, 1)
    _, _, rdw, sdw, _, _ = conv_backward_ref(x, wt, dy, 1, 1, 1, 1)
    assert_sum_close(dw, rdw, sdw, 64 * 28 * 28, "dw")


def test_winograd_dw_auto_rule(rng):
    """In the default mode the ResNet-20 and small-CNN shapes take Winograd
    (their bits are the forced mode's); layers with few input channels, or
    with tiles less than 3/4 full (5x5 outputs), do not."""
    for case, takes in [((8, 16, 28, 28, 16, 1), True), ((8, 32, 14, 14, 64, 1), True),
                        ((8, 64, 7, 7, 64, 1), True), ((8, 4, 10, 10, 4, 1), False),
                        ((8, 8, 28, 28, 16, 1), False), ((8, 32, 5, 5, 32, 1), False)]:
        x, wt, dy = make(rng, *case)
        auto = in_mode("auto", grads, x, wt, dy, 1)[0]
        forced = in_mode("always" if takes else "never", grads, x, wt, dy, 1)[0]
        np.testing.assert_array_equal(auto, forced, err_msg=str(case))


def test_winograd_dw_leaves_other_convolutions_alone(rng, wino):
    """Stride 2, dilation 2, groups, 5x5 and bf16 keep their own paths."""
    x = rng.standard_normal((3, 8, 9, 9)).astype(np.float32)
    for w_shape, kw in [((8, 8, 3, 3), dict(stride=2, padding=1)),
                        ((8, 8, 3, 3), dict(dilation=2, padding=2)),
                        ((8, 4, 3, 3), dict(groups=2, padding=1)),
                        ((8, 8, 5, 5), dict(padding=2))]:
        w = rng.standard_normal(w_shape).astype(np.float32)
        shape = _core.conv2d_output_shape(x.shape, w.shape, **kw)
        dy = rng.standard_normal(shape).astype(np.float32)
        got = []
        for mode in ("always", "never"):
            dw = np.empty_like(w)
            in_mode(mode, _core.conv2d_backward, x, w, dy, None, dw, None, **kw)
            got.append(dw)
        np.testing.assert_array_equal(got[0], got[1], err_msg=str(kw))


@pytest.mark.parametrize("mode", ["always", "auto"])
def test_winograd_dw_layer_equals_torch(isa, rng, mode):
    torch = pytest.importorskip("torch")
    previous = _core.set_winograd_dw(mode)
    try:
        for n, c, hw, o in [(4, 16, 14, 16), (3, 32, 7, 64), (2, 5, 6, 3)]:
            layer = nn.Conv2d(c, o, 3, padding=1)
            layer.bias[...] = rng.standard_normal(o)
            ref = torch.nn.Conv2d(c, o, 3, padding=1)
            with torch.no_grad():
                ref.weight.copy_(torch.from_numpy(layer.weight))
                ref.bias.copy_(torch.from_numpy(layer.bias))
            x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
            y = layer.forward(x)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            ref(torch.from_numpy(x)).backward(torch.from_numpy(dy))
            layer.backward(dy)
            np.testing.assert_allclose(layer.grad_weight, ref.weight.grad.numpy(), rtol=1e-4,
                                       atol=1e-3)
            np.testing.assert_allclose(layer.grad_bias, ref.bias.grad.numpy(), rtol=1e-4,
                                       atol=1e-3)
    finally:
        _core.set_winograd_dw(previous)
