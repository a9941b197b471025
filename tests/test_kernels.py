"""Activation, bias-gradient and dropout kernels against NumPy float64, on
every ISA path, and bitwise identical for 1 and 2 threads."""
import math

import numpy as np
import pytest

import nncore
from nncore import _core

SIZES = [1, 2, 5, 7, 17, 63, 64, 65, 257, 1000]
BIG = 70001  # above NN_PARALLEL_MIN_ELEMENTS, odd
A = _core.ACT_CODES
SLOPE = 0.07

_erfc = np.vectorize(math.erfc)


def gelu64(x):
    # erfc, not 1 + erf: the reference must not cancel for negative x either
    return 0.5 * x * _erfc(-x / math.sqrt(2.0))


def sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax64(x):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


FORWARD = {
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, SLOPE * x),
    "sigmoid": sigmoid64,
    "tanh": np.tanh,
    "gelu": gelu64,
}


def backward64(name, x, y, dy):
    """The reference input gradient, in float64, from the float32 x and y the
    kernel saw (backward passes read y for relu/sigmoid/tanh, x otherwise)."""
    x, y, dy = (a.astype(np.float64) for a in (x, y, dy))
    if name == "relu":
        return np.where(y > 0, dy, 0.0)
    if name == "leaky_relu":
        return np.where(x > 0, dy, SLOPE * dy)
    if name == "sigmoid":
        return dy * y * (1.0 - y)
    if name == "tanh":
        return dy * (1.0 - y * y)
    if name == "gelu":
        cdf = 0.5 * _erfc(-x / math.sqrt(2.0))
        return dy * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    raise AssertionError(name)


def saved_for(name, x, y):
    return y if name in ("relu", "sigmoid", "tanh", "softmax") else x


def assert_ulps(got, want, ulps, atol=0.0):
    """|got - want| <= ulps float32 ulps of want (plus atol)."""
    want = np.asarray(want, np.float64)
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    err = np.abs(got.astype(np.float64) - want)
    bad = err > ulps * spacing + atol
    assert not bad.any(), (f"{bad.sum()} of {bad.size} off by more than {ulps} ulp: got "
                           f"{got.ravel()[bad.ravel()][:3]} want {want.ravel()[bad.ravel()][:3]}")


def inputs(rng, n):
    # wide range including the tails of sigmoid/tanh/gelu and exact zeros
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[::11] = 0.0
    if n > 3:
        x[1], x[2] = 30.0, -30.0
    return x


@pytest.mark.parametrize("name", list(FORWARD))
def test_activation_forward(isa, rng, name):
    for n in SIZES:
        x = inputs(rng, n)
        y = np.full_like(x, np.nan)
        _core.act_forward(A[name], x, y, SLOPE)
        # GELU's vectorised normal CDF: measured <= 12 ulp (in the far tail)
        assert_ulps(y, FORWARD[name](x.astype(np.float64)), ulps=16 if name == "gelu" else 4,
                    atol=1e-37)


@pytest.mark.parametrize("name", list(FORWARD))
def test_activation_backward(isa, rng, name):
    for n in SIZES:
        x = inputs(rng, n)
        y = np.empty_like(x)
        _core.act_forward(A[name], x, y, SLOPE)
        dy = rng.standard_normal(n).astype(np.float32)
        dx = np.full_like(x, np.nan)
        _core.act_backward(A[name], saved_for(name, x, y), dy, dx, SLOPE)
        want = backward64(name, x, y, dy)
        np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-6 * np.abs(dy).max(),
                                   err_msg=f"{name} n={n}")


@pytest.mark.parametrize("name", list(FORWARD))
def test_activation_in_place(isa, rng, name):
    x = inputs(rng, 257)
    y = np.empty_like(x)
    _core.act_forward(A[name], x, y, SLOPE)
    _core.act_forward(A[name], x, x, SLOPE)
    np.testing.assert_array_equal(x, y)


def test_activation_nan_propagates(isa):
    x = np.array([np.nan, 1.0, -1.0], np.float32)
    for name in FORWARD:
        y = np.empty_like(x)
        _core.act_forward(A[name], x, y, SLOPE)
        assert np.isnan(y[0]), name


@pytest.mark.parametrize("m,n", [(1, 1), (1, 10), (3, 7), (17, 65), (64, 1), (5, 257)])
def test_softmax(isa, rng, m, n):
    x = (rng.standard_normal((m, n)) * 5).astype(np.float32)
    y = np.empty_like(x)
    _core.act_forward(A["softmax"], x, y)
    want = softmax64(x.astype(np.float64))
    np.testing.assert_allclose(y, want, rtol=4e-7 * max(4, math.log2(n + 1)), atol=1e-30)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    dx = np.empty_like(x)
    _core.act_backward(A["softmax"], y, dy, dx)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    want = y64 * (dy64 - (dy64 * y64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_huge_logits(isa):
    x = np.array([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]], np.float32)
    y = np.empty_like(x)
    _core.act_forward(A["softmax"], x, y)
    np.testing.assert_allclose(y, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)


@pytest.mark.parametrize("m,n", [(1, 1), (1, 7), (7, 1), (5, 63), (64, 64), (65, 65), (257, 3),
                                 (3, 257), (1000, 130)])
def test_bias_backward(isa, rng, m, n):
    dy = rng.standard_normal((m, n)).astype(np.float32)
    db = np.full(n, np.nan, np.float32)
    _core.bias_backward(dy, db)
    want = dy.astype(np.float64).sum(axis=0)
    # summed in double, rounded once: within an ulp of the exact sum
    assert_ulps(db, want, ulps=1, atol=1e-30)


def test_bias_backward_empty_batch(isa):
    db = np.full(4, np.nan, np.float32)
    _core.bias_backward(np.zeros((0, 4), np.float32), db)
    np.testing.assert_array_equal(db, 0.0)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout(isa, rng, p):
    for n in SIZES + [BIG]:
        x = rng.standard_normal(n).astype(np.float32)
        y = np.empty_like(x)
        _core.dropout_forward(x, y, p, 1234567)
        kept = y != 0
        np.testing.assert_array_equal(y[kept], x[kept] * np.float32(1 / (1 - p)))
        dy = rng.standard_normal(n).astype(np.float32)
        dx = np.empty_like(dy)
        _core.dropout_backward(dy, dx, p, 1234567)
        np.testing.assert_array_equal(dx != 0, kept)
        np.testing.assert_array_equal(dx[kept], dy[kept] * np.float32(1 / (1 - p)))
        if n == BIG:
            rate = 1.0 - kept.mean()
            assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_dropout_keys_differ_and_repeat(isa):
    x = np.ones(10000, np.float32)
    a, b, c = (np.empty_like(x) for _ in range(3))
    _core.dropout_forward(x, a, 0.5, 1)
    _core.dropout_forward(x, b, 0.5, 2)
    _core.dropout_forward(x, c, 0.5, 1)
    np.testing.assert_array_equal(a, c)
    agree = ((a != 0) == (b != 0)).mean()
    assert 0.45 < agree < 0.55  # independent masks agree about half the time


def test_dropout_rejects_bad_p():
    x = np.ones(3, np.float32)
    for p in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="p must be in"):
            _core.dropout_forward(x, x, p, 0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,n", [(0, 5), (1, 1), (7, 3), (83, 784), (300, 257)])
def test_gather_rows_matches_take(rng, num_threads, threads, m, n):
    # (83, 784) and (300, 257) are above the threaded-copy threshold (64 KiB).
    nncore.set_num_threads(threads)
    src = rng.standard_normal((1000, n)).astype(np.float32)
    index = rng.integers(0, 1000, m)
    index[:2] = [0, 999][:m]                     # both ends of the range
    dst = np.full((m, n), np.nan, np.float32)
    _core.gather_rows(src, index, dst)
    np.testing.assert_array_equal(dst, src[index])


def test_gather_rows_checks_its_arguments():
    src = np.ones((10, 4), np.float32)
    dst = np.zeros((3, 4), np.float32)
    for bad in ([0, 10, 1], [-1, 0, 1]):
        with pytest.raises(IndexError, match=r"outside \[0, 10\)"):
            _core.gather_rows(src, np.array(bad, np.int64), dst)
        assert not dst.any()                     # nothing copied
    with pytest.raises(ValueError, match="index must be 1-D with 3"):
        _core.gather_rows(src, np.arange(4), dst)
    with pytest.raises(TypeError, match="index has dtype int32"):
        _core.gather_rows(src, np.arange(3, dtype=np.int32), dst)
    with pytest.raises(ValueError, match="dst has 5 columns, src 4"):
        _core.gather_rows(src, np.arange(3), np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="src has dtype float64"):
        _core.gather_rows(src.astype(np.float64), np.arange(3), dst)
    with pytest.raises(ValueError, match="dst overlaps"):
        _core.gather_rows(src, np.arange(3), src[5:8])


@pytest.mark.parametrize("threads", [1, 2])
def test_all_finite_matches_isfinite(rng, num_threads, threads):
    # Sizes on both sides of the parallel threshold (64k floats) and of the
    # 4096-float blocks; one bad value at the edges of blocks and thread halves.
    nncore.set_num_threads(threads)
    f32 = np.finfo(np.float32)
    for n in (1, 7, 4096, 4097, 65535, 65536, 200_003):
        x = rng.standard_normal(n).astype(np.float32)
        x[np.linspace(0, n - 1, 5).astype(int)] = [f32.max, -f32.max, f32.tiny,
                                                   f32.smallest_subnormal, -0.0]
        assert _core.all_finite(x)
        for pos in sorted({0, n // 2 - 1, n // 2, 4095 % n, 4096 % n, n - 1}):
            for bad in (np.nan, np.inf, -np.inf, np.float32(np.nan) * -1):
                y = x.copy()
                y[pos] = bad
                assert _core.all_finite(y) == bool(np.isfinite(y).all()) is False
    assert _core.all_finite(np.zeros((0, 3), np.float32))
    nan_payload = np.array([0x7FC00001, 0xFF800000, 0x7F7FFFFF], np.uint32).view(np.float32)
    assert [_core.all_finite(nan_payload[i:i + 1]) for i in range(3)] == [False, False, True]
    with pytest.raises(TypeError, match="all_finite: a has dtype float64"):
        _core.all_finite(np.zeros(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.all_finite(np.zeros((4, 4), np.float32)[:, ::2])


def run_all_kernels(rng):
    """Every kernel of this file on inputs above the parallel threshold."""
    out = []
    x = inputs(rng, BIG)
    dy = rng.standard_normal(BIG).astype(np.float32)
    for name in FORWARD:
        y = np.empty_like(x)
        dx = np.empty_like(x)
        _core.act_forward(A[name], x, y, SLOPE)
        _core.act_backward(A[name], saved_for(name, x, y), dy, dx, SLOPE)
        out += [y, dx]
    xm = x[:70000].reshape(700, 100)
    y = np.empty_like(xm)
    dx = np.empty_like(xm)
    _core.act_forward(A["softmax"], xm, y)
    _core.act_backward(A["softmax"], y, dy[:70000].reshape(700, 100), dx)
    db = np.empty(100, np.float32)
    _core.bias_backward(dx, db)
    y2 = np.empty_like(x)
    _core.dropout_forward(x, y2, 0.3, 99)
    out += [y, dx, db, y2]
    return out


def test_threads_bitwise_identical(isa, num_threads):
    nncore.set_num_threads(1)
    one = run_all_kernels(np.random.default_rng(7))
    nncore.set_num_threads(2)
    two = run_all_kernels(np.random.default_rng(7))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_kernel_arguments_are_checked():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="dtype float64"):
        _core.act_forward(A["relu"], np.ones(4), x)
    with pytest.raises(ValueError, match="elements, expected 4"):
        _core.act_forward(A["relu"], x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.act_forward(A["relu"], np.ones(8, np.float32)[::2], x)
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _core.act_forward(A["relu"], x, ro)
    with pytest.raises(TypeError):
        _core.act_forward(A["relu"], [1.0], x)
    with pytest.raises(TypeError):
        _core.act_forward(A["relu"], None, x)
    with pytest.raises(ValueError, match="unknown activation"):
        _core.act_forward(99, x, x)
    with pytest.raises(ValueError, match="2-D"):
        _core.bias_backward(x, x)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 784, 10), (2, 5, 7), (17, 63, 65),
                                   (64, 17, 1), (65, 7, 257)])
def test_dense_kernels(isa, rng, m, k, n):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    for act in (A[None], A["relu"]):
        y = np.full((m, n), np.nan, np.float32)
        _core.dense_forward(x, w, b, y, act)
        want = x.astype(np.float64) @ w + b
        if act == A["relu"]:
            want = np.maximum(want, 0)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * math.sqrt(k))
    dy = rng.standard_normal((m, n)).astype(np.float32)
    dx = np.full((m, k), np.nan, np.float32)
    dw = np.full((k, n), np.nan, np.float32)
    db = np.full(n, np.nan, np.float32)
    _core.dense_backward(x, w, dy, dx, dw, db)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    np.testing.assert_allclose(dx, dy64 @ w64.T, rtol=1e-4, atol=1e-4 * math.sqrt(n))
    np.testing.assert_allclose(dw, x64.T @ dy64, rtol=1e-4, atol=1e-4 * math.sqrt(m))
    np.testing.assert_allclose(db, dy64.sum(axis=0), rtol=1e-5, atol=1e-5)
    dw2 = np.empty_like(dw)
    _core.dense_backward(x, w, dy, None, dw2, None)  # dx and db are optional
    np.testing.assert_array_equal(dw2, dw)


# (batch, in, out): every path the weight-gradient GEMM X^T dY can take --
# a rank-1 update (batch 1), matrix-vector (in = 1), narrow output computed
# transposed (out <= 16, in >= 64), packed blocks, small in-place blocks.
@pytest.mark.parametrize("m,k,n", [(1, 784, 256), (5, 1, 7), (32, 300, 10), (70, 129, 65),
                                   (3, 2, 3), (0, 4, 5)])
def test_dense_backward_sgd_fold_is_bitwise_sgd(isa, rng, num_threads, m, k, n):
    """w -= lr * x^T dy folded into the GEMM equals dw then sgd_step, bit for
    bit, and dx still comes from the old w."""
    nncore.set_num_threads(2)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    dw = np.empty_like(w)
    dx, db = np.empty((m, k), np.float32), np.empty(n, np.float32)
    _core.dense_backward(x, w, dy, dx, dw, db)
    stepped = w.copy()
    _core.sgd_step(stepped, dw, None, 0.03, 0.0, 0.0, 0.0, False, True)
    folded, dx2, db2 = w.copy(), np.full_like(dx, np.nan), np.full_like(db, np.nan)
    _core.dense_backward(x, folded, dy, dx2, None, db2, 0.03)
    np.testing.assert_array_equal(folded, stepped)
    np.testing.assert_array_equal(dx2, dx)
    np.testing.assert_array_equal(db2, db)


def test_dense_backward_takes_dw_or_sgd_lr():
    x, w, dy = (np.ones(s, np.float32) for s in ((3, 4), (4, 5), (3, 5)))
    for dw, lr in ((None, None), (np.empty((4, 5), np.float32), 0.1)):
        with pytest.raises(ValueError, match="either dw or sgd_lr"):
            _core.dense_backward(x, w, dy, None, dw, None, lr)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="w must be writable"):
        _core.dense_backward(x, w, dy, None, None, None, 0.1)


def test_dense_kernel_shapes_are_checked():
    x = np.ones((3, 4), np.float32)
    w = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        _core.dense_forward(x, np.ones((5, 5), np.float32), None, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        _core.dense_forward(x, w, None, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="expected 5"):
        _core.dense_forward(x, w, np.ones(4, np.float32), np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="epilogue"):
        _core.dense_forward(x, w, None, np.empty((3, 5), np.float32), A["tanh"])
    with pytest.raises(ValueError, match="do not match"):
        _core.dense_backward(x, w, np.ones((3, 4), np.float32), None,
                             np.empty((4, 5), np.float32), None)


def test_vector_exp_and_tanh_sweep(isa):
    """vmath.h's exp, tanh and normal CDF, through Sigmoid, Tanh, Softmax and
    GELU, over a dense sweep of the float range that matters, against float64
    (within 3 ulp, GELU 16; results below FLT_MIN are judged in absolute
    terms)."""
    x = np.concatenate([np.linspace(-110, 100, 200001), np.linspace(-1, 1, 100001),
                        np.geomspace(1e-30, 1, 5001), -np.geomspace(1e-30, 1, 5001)])
    x = x.astype(np.float32)
    x64 = x.astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    y = np.empty_like(x)
    _core.act_forward(A["sigmoid"], x, y)
    with np.errstate(over="ignore"):
        assert_ulps(y, 1 / (1 + np.exp(-x64)), ulps=3, atol=tiny)
    _core.act_forward(A["tanh"], x, y)
    assert_ulps(y, np.tanh(x64), ulps=3)
    rows = np.stack([x, np.zeros_like(x)], axis=1)
    out = np.empty_like(rows)
    _core.act_forward(A["softmax"], rows, out)
    with np.errstate(over="ignore"):
        assert_ulps(out[:, 0], 1 / (1 + np.exp(-x64)), ulps=3, atol=tiny)
    xg = x[np.abs(x) < 20]
    _core.act_forward(A["gelu"], xg, yg := np.empty_like(xg))
    assert_ulps(yg, gelu64(xg.astype(np.float64)), ulps=16, atol=tiny)
    special = np.array([np.nan, np.inf, -np.inf, 88.7, -88.7, -104.0, 0.0, -0.0], np.float32)
    y = np.empty_like(special)
    _core.act_forward(A["sigmoid"], special, y)
    np.testing.assert_array_equal(y[1:], [1, 0, 1, 1 / (1 + np.exp(np.float32(88.7))), 0,
                                          0.5, 0.5])
    assert np.isnan(y[0])
    _core.act_forward(A["tanh"], special, y)
    np.testing.assert_array_equal(y[1:], [1, -1, 1, -1, -1, 0, 0])
    assert np.isnan(y[0]) and np.signbit(y[-1])
