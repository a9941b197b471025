"""_core.dense_backward (nn_dense_backward): the Dense layer's backward pass in
one C call, with the optional ReLU backward before it and the folded plain-SGD
steps of w and b. Against NumPy float64, bitwise equal to the kernels called
one by one, bitwise equal for 1 and 2 threads, on every ISA path; every
argument checked."""
import math

import numpy as np
import pytest

import nncore
from nncore import _core

F32 = np.float32
RELU = _core.ACT_CODES["relu"]
LR = 0.03

# (batch, in, out): a rank-1 update (batch 1), in = 1, a narrow output
# computed transposed (out <= 16, in >= 64), packed and in-place blocks, an
# empty batch.
SHAPES = [(1, 784, 256), (1, 1, 1), (5, 1, 7), (2, 5, 7), (17, 63, 65), (32, 300, 10),
          (70, 129, 65), (64, 17, 1), (0, 4, 5)]


def arrays(rng, m, k, n):
    x = rng.standard_normal((m, k)).astype(F32)
    w = rng.standard_normal((k, n)).astype(F32)
    b = rng.standard_normal(n).astype(F32)
    z = np.maximum(rng.standard_normal((m, n)), 0).astype(F32)  # a ReLU's output
    dy = rng.standard_normal((m, n)).astype(F32)
    return x, w, b, z, dy


def nans(*shape):
    return np.full(shape, np.nan, F32)


def close(got, want, scale):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * math.sqrt(max(scale, 1)))


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_against_float64(isa, rng, m, k, n):
    x, w, b, z, dy = arrays(rng, m, k, n)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    g64 = np.where(z > 0, dy64, 0.0)
    # gradients through the ReLU
    dx, dw, db, dz = nans(m, k), nans(k, n), nans(n), nans(m, n)
    _core.dense_backward(x, w, dy, dx, dw, db, z=z, dz=dz)
    np.testing.assert_array_equal(dz, g64)
    close(dx, g64 @ w64.T, n)
    close(dw, x64.T @ g64, m)
    close(db, g64.sum(axis=0), m)
    # skipped outputs: only dw
    dw2 = nans(k, n)
    _core.dense_backward(x, w, dy, None, dw2, None)
    close(dw2, x64.T @ dy64, m)
    # the folded SGD steps of w and b, through the ReLU
    w2, b2, dx3, db3, dz3 = w.copy(), b.copy(), nans(m, k), nans(n), nans(m, n)
    _core.dense_backward(x, w2, dy, dx3, None, db3, LR, b2, z, dz3)
    close(dx3, g64 @ w64.T, n)
    close(w2, w64 - LR * (x64.T @ g64), m)
    close(b2, b64 - LR * g64.sum(axis=0), m)
    # the folded step without dx, bias or ReLU
    w3 = w.copy()
    _core.dense_backward(x, w3, dy, None, None, None, sgd_lr=LR)
    close(w3, w64 - LR * (x64.T @ dy64), m)


def one_by_one(x, w, b, z, dy, sgd):
    """The backward pass as the Python layer made it before nn_dense_backward:
    the ReLU backward, dense_backward, then sgd_step on the bias."""
    m, k = x.shape
    n = w.shape[1]
    w = w.copy()
    dz = np.empty_like(dy)
    if dz.size:
        _core.act_backward(RELU, z, dy, dz)
    dx, db = nans(m, k), nans(n)
    dw = None if sgd else nans(k, n)
    _core.dense_backward(x, w, dz, dx, dw, db, LR if sgd else None)
    b = b.copy()
    if sgd:
        _core.sgd_step(b, db, None, LR, 0.0, 0.0, 0.0, False, True)
    return dz, dx, dw, db, w, b


def in_one_call(x, w, b, z, dy, sgd):
    m, k = x.shape
    n = w.shape[1]
    w, b = w.copy(), b.copy()
    dz, dx, db = nans(m, n), nans(m, k), nans(n)
    dw = None if sgd else nans(k, n)
    _core.dense_backward(x, w, dy, dx, dw, db, LR if sgd else None, b if sgd else None, z, dz)
    return dz, dx, dw, db, w, b


@pytest.mark.parametrize("sgd", [False, True])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_one_call_is_bitwise_the_kernels_one_by_one(isa, rng, num_threads, m, k, n, sgd):
    x, w, b, z, dy = arrays(rng, m, k, n)
    results = {}
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        want = one_by_one(x, w, b, z, dy, sgd)
        got = in_one_call(x, w, b, z, dy, sgd)
        for g, e in zip(got, want):
            np.testing.assert_array_equal(g, e)
        results[threads] = got
    for g1, g2 in zip(results[1], results[2]):
        np.testing.assert_array_equal(g1, g2)


def test_large_batch_threads_bitwise(isa, rng, num_threads):
    """Big enough that the ReLU, bias and SGD kernels run on several threads."""
    x, w, b, z, dy = arrays(rng, 300, 257, 300)
    runs = []
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        runs.append(in_one_call(x, w, b, z, dy, True) + in_one_call(x, w, b, z, dy, False))
    for g1, g2 in zip(*runs):
        if g1 is not None:
            np.testing.assert_array_equal(g1, g2)


def test_dz_may_be_dy(rng):
    x, w, b, z, dy = arrays(rng, 9, 6, 5)
    dz, dx, dw, db = nans(9, 5), nans(9, 6), nans(6, 5), nans(5)
    _core.dense_backward(x, w, dy, dx, dw, db, z=z, dz=dz)
    g = dy.copy()
    dx2, dw2, db2 = nans(9, 6), nans(6, 5), nans(5)
    _core.dense_backward(x, w, g, dx2, dw2, db2, z=z, dz=g)
    for a, e in ((g, dz), (dx2, dx), (dw2, dw), (db2, db)):
        np.testing.assert_array_equal(a, e)


def test_empty_batch_zeroes_the_gradients_and_keeps_the_weights():
    x, dy = np.ones((0, 4), F32), np.ones((0, 3), F32)
    w, b = np.full((4, 3), 2.0, F32), np.full(3, -1.5, F32)
    dw, db = nans(4, 3), nans(3)
    _core.dense_backward(x, w, dy, np.ones((0, 4), F32), dw, db)
    assert not dw.any() and not db.any()
    db = nans(3)
    _core.dense_backward(x, w, dy, None, None, db, 0.5, b)
    assert (w == 2.0).all() and (b == -1.5).all() and not db.any()


def good(m=3, k=4, n=5):
    return dict(x=np.ones((m, k), F32), w=np.ones((k, n), F32), dy=np.ones((m, n), F32),
                dx=np.empty((m, k), F32), dw=np.empty((k, n), F32), db=np.empty(n, F32))


def call(**kw):
    args = good()
    args.update(kw)
    _core.dense_backward(**args)


def read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("kw,error,match", [
    (dict(dx=np.empty((3, 5), F32)), ValueError, r"dx has shape \(3, 5\), expected \(3, 4\)"),
    (dict(dx=np.empty(12, F32)), ValueError, r"dx has shape \(12,\), expected \(3, 4\)"),
    (dict(dw=np.empty((5, 4), F32)), ValueError, r"dw has shape .*expected \(4, 5\)"),
    (dict(db=np.empty(4, F32)), ValueError, r"db has shape \(4,\), expected \(5,\)"),
    (dict(db=np.empty((1, 5), F32)), ValueError, r"db has shape"),
    (dict(dx=np.empty((3, 4))), TypeError, "dx has dtype float64"),
    (dict(dx=[[0.0] * 4] * 3), TypeError, "dx must be a NumPy array"),
    (dict(dw=np.empty((5, 4), F32).T), ValueError, "dw must be C-contiguous"),
    (dict(db=read_only(np.empty(5, F32))), ValueError, "db must be writable"),
    (dict(x=np.ones((3, 4), np.float64)), TypeError, "x has dtype float64"),
    (dict(dy=np.ones((3, 6), F32)), ValueError, "do not match"),
    (dict(dy=np.ones(15, F32)), ValueError, "dy must be 2-D"),
    (dict(dw=None), ValueError, "either dw or sgd_lr"),
    (dict(dw=None, sgd_lr=float("nan")), ValueError, "sgd_lr must be a finite"),
    (dict(dw=None, sgd_lr=1e300), ValueError, "sgd_lr must be a finite"),
    (dict(dw=None, sgd_lr="0.1"), TypeError, ""),
    (dict(dw=None, sgd_lr=0.1, w=read_only(np.ones((4, 5), F32))), ValueError,
     "w must be writable"),
    (dict(b=np.zeros(5, F32)), ValueError, "b is stepped only with sgd_lr"),
    (dict(dw=None, sgd_lr=0.1, db=None, b=np.zeros(5, F32)), ValueError, "needs db"),
    (dict(dw=None, sgd_lr=0.1, b=np.zeros(4, F32)), ValueError, r"b has shape \(4,\)"),
    (dict(z=np.ones((3, 5), F32)), ValueError, "z and dz together"),
    (dict(dz=np.ones((3, 5), F32)), ValueError, "z and dz together"),
    (dict(z=np.ones((5, 3), F32), dz=np.ones((3, 5), F32)), ValueError,
     r"z has shape \(5, 3\)"),
    (dict(z=np.ones((3, 5), F32), dz=read_only(np.ones((3, 5), F32))), ValueError,
     "dz must be writable"),
])
def test_bad_arguments(kw, error, match):
    with pytest.raises(error, match="dense_backward: .*" + match if match else None):
        call(**kw)


def test_overlapping_arrays_are_refused():
    buf = np.zeros(64, F32)
    w = np.ones((4, 5), F32)
    with pytest.raises(ValueError, match="dense_backward: dw overlaps w"):
        call(w=w, dw=w)
    x = np.ones((3, 4), F32)
    with pytest.raises(ValueError, match="dense_backward: dx overlaps x"):
        call(x=x, dx=x)
    with pytest.raises(ValueError, match="dense_backward: dx overlaps db"):
        call(dx=buf[:12].reshape(3, 4), db=buf[10:15])
    with pytest.raises(ValueError, match="dense_backward: w overlaps x"):
        call(w=buf[:20].reshape(4, 5), x=buf[8:20].reshape(3, 4), dw=None, sgd_lr=0.1)
    db = np.zeros(5, F32)
    with pytest.raises(ValueError, match="dense_backward: db overlaps b"):
        call(dw=None, sgd_lr=0.1, db=db, b=db)
    with pytest.raises(ValueError, match="dense_backward: dz overlaps dy"):
        call(dy=buf[:15].reshape(3, 5), z=np.ones((3, 5), F32), dz=buf[1:16].reshape(3, 5))
    # reading one array twice is fine
    a = np.ones((4, 4), F32)
    call(x=a, w=a, dy=a, dx=np.empty((4, 4), F32), dw=np.empty((4, 4), F32),
         db=np.empty(4, F32))


def test_epilogue_acts_come_from_c():
    """One list (nn_epilogue_supports) decides what the GEMM epilogue fuses:
    the bindings take exactly those codes and refuse the others."""
    codes = _core.ACT_CODES
    assert _core.EPILOGUE_ACTS == frozenset({codes[None], codes["relu"]})
    assert set(_core.ACTIVATIONS.values()) == _core.EPILOGUE_ACTS
    x, w = np.ones((3, 4), F32), np.ones((4, 5), F32)
    for code in codes.values():
        y = np.empty((3, 5), F32)
        if code in _core.EPILOGUE_ACTS:
            _core.dense_forward(x, w, None, y, code)
            _core.sgemm(False, False, 1.0, x, w, 0.0, y, None, code)
            assert (y == 4).all()
        else:
            with pytest.raises(ValueError, match="not an epilogue activation"):
                _core.dense_forward(x, w, None, y, code)
            with pytest.raises(ValueError, match="not an epilogue activation"):
                _core.sgemm(False, False, 1.0, x, w, 0.0, y, None, code)
