"""nncore.matmul against NumPy float64, on every ISA path."""
import itertools

import numpy as np
import pytest

import nncore

DIMS = [1, 2, 5, 6, 7, 16, 17, 63, 64, 65, 127, 129]


def reference(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c=None, bias=None,
              activation=None):
    a64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    r = alpha * (a64 @ b64)
    if beta != 0.0:
        r += beta * c.astype(np.float64)
    if bias is not None:
        r += bias
    if activation == "relu":
        r = np.maximum(r, 0.0)
    return r


def tolerance(k):
    return 1e-5 * max(1, k) ** 0.5 * 4


def operands(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_matmul_shapes(isa, rng, trans_a, trans_b):
    for m, n, k in itertools.product(DIMS[::2], DIMS[1::2], DIMS[::3]):
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        want = reference(a, b, trans_a, trans_b)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance(k),
                                   err_msg=f"m={m} n={n} k={k}")


def test_matmul_epilogue_alpha_beta(isa, rng):
    m, n, k = 37, 65, 29
    a, b = operands(rng, m, n, k, False, False)
    c = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out = c.copy()
    got = nncore.matmul(a, b, alpha=0.5, beta=-2.0, out=out, bias=bias, activation="relu")
    assert got is out
    np.testing.assert_allclose(got, reference(a, b, False, False, 0.5, -2.0, c, bias, "relu"),
                               rtol=1e-4, atol=1e-4)


def test_beta_zero_ignores_nan(isa, rng):
    a, b = operands(rng, 9, 11, 13, False, False)
    out = np.full((9, 11), np.nan, np.float32)
    nncore.matmul(a, b, out=out)
    np.testing.assert_allclose(out, reference(a, b, False, False), rtol=1e-4, atol=1e-4)


def test_zero_k(isa):
    a = np.zeros((3, 0), np.float32)
    b = np.zeros((0, 4), np.float32)
    out = np.full((3, 4), np.nan, np.float32)
    got = nncore.matmul(a, b, out=out, bias=np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(got, np.tile(np.arange(4, dtype=np.float32), (3, 1)))


def test_zero_m_n():
    assert nncore.matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)
    assert nncore.matmul(np.zeros((2, 3)), np.zeros((3, 0))).shape == (2, 0)


def test_converts_array_likes(rng):
    a = [[1, 2], [3, 4]]
    b = np.asfortranarray(np.array([[1.0, 0.5], [2.0, -1.0]]))
    np.testing.assert_allclose(nncore.matmul(a, b), np.array(a) @ b)


def test_errors():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        nncore.matmul(a, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="activation"):
        nncore.matmul(a, a.T, activation="swish")
    with pytest.raises(ValueError, match="bias"):
        nncore.matmul(a, a.T, bias=np.ones(3))
    with pytest.raises(ValueError, match="out has shape"):
        nncore.matmul(a, a.T, out=np.empty((3, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        nncore.matmul(a, a.T, out=np.empty((2, 2), np.float64))
    with pytest.raises(ValueError, match="writable"):
        out = np.empty((2, 2), np.float32)
        out.flags.writeable = False
        nncore.matmul(a, a.T, out=out)
    with pytest.raises(TypeError, match="dtype"):
        nncore.matmul(np.array([["a"]]), a)
    with pytest.raises(ValueError, match="2-D"):
        nncore.matmul(np.ones(3), a)
