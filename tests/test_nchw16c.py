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
