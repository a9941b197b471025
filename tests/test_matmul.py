"""nncore.matmul against NumPy float64, on every ISA path."""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import nncore
from nncore import _core, _guard

DIMS = [1, 2, 5, 6, 7, 16, 17, 63, 64, 65, 127, 129]
# Micro-kernel multiples and remainders (avx512 6 x 64, avx2 6 x 16, generic
# 4 x 16), block edges (kc = 256 / 512) and sizes that cross several blocks.
AWKWARD = [1, 2, 5, 6, 7, 16, 17, 63, 64, 65, 127, 129, 255, 257, 1000]
OPS = list(itertools.product([False, True], repeat=2))


def sampled_shapes(count, seed, max_work=2e7):
    """A fixed sample of (m, n, k) from AWKWARD, small enough to stay fast."""
    rng = np.random.default_rng(seed)
    shapes = []
    while len(shapes) < count:
        m, n, k = (int(x) for x in rng.choice(AWKWARD, 3))
        if m * n * k <= max_work:
            shapes.append((m, n, k))
    return shapes


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


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_matmul_awkward_shapes(isa, rng, trans_a, trans_b):
    shapes = sampled_shapes(24, seed=7 + 2 * trans_a + trans_b)
    shapes += [(1000, 257, 1), (1, 1000, 1000), (255, 1, 1000), (6, 64, 1000), (7, 1000, 65)]
    for m, n, k in shapes:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        np.testing.assert_allclose(got, reference(a, b, trans_a, trans_b), rtol=1e-4,
                                   atol=tolerance(k), err_msg=f"m={m} n={n} k={k}")


@pytest.mark.parametrize("trans_a,trans_b", OPS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0), (0.0, 0.75)])
def test_matmul_alpha_beta_epilogue_all_paths(isa, rng, trans_a, trans_b, alpha, beta):
    # m = 1 (matrix-vector; n = 16*16 + 8*16 + 4*16 + 9 crosses every chunk
    # width of gemv_n and a masked tail), small (in place), large (packed),
    # narrow (n <= 16: computed transposed when A is transposed); k across blocks.
    for m, n, k in [(1, 129, 65), (1, 17, 1000), (1, 457, 37), (5, 70, 33), (65, 129, 700),
                    (130, 257, 129),
                    (200, 5, 70), (64, 16, 600), (65, 1, 17)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        c = rng.standard_normal((m, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        for act in (None, "relu"):
            for use_bias in (False, True):
                out = c.copy()
                got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha,
                                    beta=beta, out=out, bias=bias if use_bias else None,
                                    activation=act)
                want = reference(a, b, trans_a, trans_b, alpha, beta, c,
                                 bias if use_bias else None, act)
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance(k) * 2,
                                           err_msg=f"m={m} n={n} k={k} act={act} "
                                                   f"bias={use_bias}")


def placed(arr, byte_offset):
    """A copy of ``arr`` starting ``byte_offset`` bytes after a 64-byte boundary."""
    raw = np.empty(arr.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + byte_offset
    out = raw[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def test_gemv_same_bits_for_any_alignment_of_b(isa, rng):
    # gemv_n prefetches rows into L1 only when they start off a vector
    # boundary (misaligned base or row stride): both paths must agree.
    for n, k in [(457, 37), (256, 784), (96, 130)]:
        a, b = operands(rng, 1, n, k, False, False)
        bias = rng.standard_normal(n).astype(np.float32)
        want = reference(a, b, False, False, bias=bias, activation="relu")
        results = []
        for offset in (0, 4, 16, 32):
            got = nncore.matmul(a, placed(b, offset), bias=bias, activation="relu")
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance(k))
            results.append(got)
        for got in results[1:]:
            np.testing.assert_array_equal(got, results[0])


def test_nncore_allocations_start_on_a_cache_line():
    assert _guard.empty(np.int64(5), np.float32, "test").shape == (5,)
    for shape in [(0,), (1,), (3, 5), (784, 256), (0, 7)]:
        for dtype in (np.float32, np.float64, np.int64):
            arr = _guard.zeros(shape, dtype, "test")
            assert arr.shape == shape and arr.dtype == dtype and arr.flags.c_contiguous
            assert not arr.any() and (arr.size == 0 or arr.ctypes.data % 64 == 0)
    dense = nncore.Dense(5, 3)
    adam = nncore.Adam()
    adam.step(dense.parameters())
    for _, p, g in dense.named_parameters():
        assert p.ctypes.data % 64 == 0 and g.ctypes.data % 64 == 0
        assert all(buf.ctypes.data % 64 == 0 for buf in adam._state[id(p)].bufs)


@pytest.mark.parametrize("threads", [1, 2])
def test_transposed_a_packed_or_read_in_place(isa, rng, num_threads, threads):
    # A^T (the weight gradient X^T dY) is read in place unless its rows alias
    # in L1 (m a multiple of 128 floats) or a depth block of it is large
    # (kc x m floats over 512 KB): both choices, with beta = 1 as the SGD
    # fold uses it, against float64 and bitwise across thread counts.
    nncore.set_num_threads(threads)
    for m, n, k in [(200, 300, 70),      # in place
                    (128, 300, 70),      # aliasing rows: packed
                    (1100, 260, 130),    # large depth block: packed
                    (784, 256, 128)]:    # the 784-256 layer at batch 128: in place
        a, b = operands(rng, m, n, k, True, False)
        c = rng.standard_normal((m, n)).astype(np.float32)
        got = nncore.matmul(a, b, trans_a=True, alpha=-0.01, beta=1.0, out=c.copy())
        np.testing.assert_allclose(got, reference(a, b, True, False, -0.01, 1.0, c),
                                   rtol=1e-4, atol=tolerance(k))
        nncore.set_num_threads(3 - threads)
        np.testing.assert_array_equal(
            nncore.matmul(a, b, trans_a=True, alpha=-0.01, beta=1.0, out=c.copy()), got)
        nncore.set_num_threads(threads)


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


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_beta_zero_ignores_nan(isa, rng, trans_a, trans_b):
    for m, n, k in [(9, 11, 13), (1, 70, 20), (200, 130, 600)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        out = np.full((m, n), np.nan, np.float32)
        nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out)
        np.testing.assert_allclose(out, reference(a, b, trans_a, trans_b), rtol=1e-4,
                                   atol=tolerance(k))


def test_relu_propagates_nan(isa, rng):
    # Like nncore's ReLU layer (and PyTorch): relu(NaN) is NaN, not 0.
    for m, n, k in [(1, 40, 8), (12, 70, 8)]:
        a, b = operands(rng, m, n, k, False, False)
        a[0, 3] = np.nan
        got = nncore.matmul(a, b, activation="relu")
        assert np.isnan(got[0]).all()
        assert not np.isnan(got[1:]).any()
        assert (got[1:] >= 0).all()


def test_zero_k(isa):
    for m, n in [(3, 4), (1, 5), (70, 130)]:
        a = np.zeros((m, 0), np.float32)
        b = np.zeros((0, n), np.float32)
        out = np.full((m, n), np.nan, np.float32)
        bias = np.arange(n, dtype=np.float32) - 2
        got = nncore.matmul(a, b, out=out, bias=bias)
        np.testing.assert_array_equal(got, np.tile(bias, (m, 1)))
        c = np.full((m, n), -3.0, np.float32)
        got = nncore.matmul(a.T, b.T, trans_a=True, trans_b=True, beta=0.5, out=c.copy(),
                            bias=bias, activation="relu")
        np.testing.assert_array_equal(got, np.maximum(0.5 * c + bias, 0))


def test_zero_m_n():
    assert nncore.matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)
    assert nncore.matmul(np.zeros((2, 3)), np.zeros((3, 0))).shape == (2, 0)


def test_converts_array_likes(rng):
    a = [[1, 2], [3, 4]]
    b = np.asfortranarray(np.array([[1.0, 0.5], [2.0, -1.0]]))
    np.testing.assert_allclose(nncore.matmul(a, b), np.array(a) @ b)


@pytest.mark.parametrize("m,k,n", [(1, 300, 40), (7, 5, 3), (33, 1000, 17), (64, 257, 129)])
def test_fortran_ordered_float32_is_read_transposed_without_a_copy(rng, num_threads,
                                                                   monkeypatch, m, k, n):
    """A float32 matrix in Fortran order (x.T of a C-contiguous x) is read
    as the flipped transpose flag of x: nothing converted, the bits of that
    call, the values of float64 NumPy."""
    a = rng.standard_normal((m, k)).astype(np.float32)
    bt = rng.standard_normal((n, k)).astype(np.float32)
    want = {(ta, tb): nncore.matmul(a.T.copy() if ta else a, bt if tb else bt.T.copy(),
                                    trans_a=ta, trans_b=tb) for ta in (0, 1) for tb in (0, 1)}

    def no_copy(*args, **kwargs):
        raise AssertionError("an operand was converted")
    monkeypatch.setattr(_guard, "c_array", no_copy)
    reference = a.astype(np.float64) @ bt.T.astype(np.float64)
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        # b.T (Fortran order) reads as bt with trans_b; a in Fortran order as a.T with trans_a
        got_b = nncore.matmul(a, bt.T)
        got_ab = nncore.matmul(np.asfortranarray(a), bt.T)
        got_t = nncore.matmul(np.asfortranarray(a.T), bt.T, trans_a=True)
        assert np.array_equal(got_b, want[0, 1])
        assert np.array_equal(got_ab, want[1, 1])
        assert np.array_equal(got_t, want[0, 1])
        for got in (got_b, got_ab, got_t):
            np.testing.assert_allclose(got, reference, rtol=0,
                                       atol=1e-5 * np.abs(a).sum(1).max() * np.abs(bt).max())
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(6, 5\) do not align"):
        nncore.matmul(np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32).T)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(6, 5\)\.T do not align"):
        nncore.matmul(np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32).T, trans_b=True)


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


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_leading_dimensions_larger_than_width(isa, rng, trans_a, trans_b):
    """Row-strided views reach C unchanged (lda, ldb, ldc > width); the
    padding columns of C are never written."""
    for m, n, k in [(1, 70, 33), (7, 17, 5), (65, 130, 600), (129, 64, 63)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        pad = 13
        abig = np.full((a.shape[0], a.shape[1] + pad), np.nan, np.float32)
        bbig = np.full((b.shape[0], b.shape[1] + pad), np.nan, np.float32)
        abig[:, :a.shape[1]] = a
        bbig[:, :b.shape[1]] = b
        cbig = np.full((m, n + pad), 7.0, np.float32)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        cbig[:, :n] = c0
        bias = rng.standard_normal(n).astype(np.float32)
        _core.sgemm(trans_a, trans_b, 0.5, abig[:, :a.shape[1]], bbig[:, :b.shape[1]], 2.0,
                    cbig[:, :n], bias, _core.ACTIVATIONS["relu"])
        want = reference(a, b, trans_a, trans_b, 0.5, 2.0, c0, bias, "relu")
        np.testing.assert_allclose(cbig[:, :n], want, rtol=1e-4, atol=tolerance(k) * 2,
                                   err_msg=f"m={m} n={n} k={k}")
        assert (cbig[:, n:] == 7.0).all(), "wrote outside the view"


# Shapes that take every threading decision: m = 1 (split columns), narrow
# N (split rows), wide N (split columns), packed and in place operands.
THREAD_SHAPES = [(1, 1000, 300), (1, 257, 1000), (300, 10, 256), (64, 1000, 129),
                 (257, 255, 600), (1000, 130, 64), (17, 1000, 1000)]


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_thread_count_does_not_change_results(isa, num_threads, rng, trans_a, trans_b):
    for m, n, k in THREAD_SHAPES:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        bias = rng.standard_normal(n).astype(np.float32)
        results = []
        for threads in (1, 2, 3):
            nncore.set_num_threads(threads)
            results.append(nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias,
                                         activation="relu"))
        np.testing.assert_array_equal(results[0], results[1], err_msg=f"m={m} n={n} k={k}")
        np.testing.assert_array_equal(results[0], results[2], err_msg=f"m={m} n={n} k={k}")
        np.testing.assert_allclose(results[0], reference(a, b, trans_a, trans_b, bias=bias,
                                                         activation="relu"),
                                   rtol=1e-4, atol=tolerance(k))


def test_concurrent_calls_from_python_threads(rng):
    """Several Python threads in nn_sgemm at once (each with its own OpenMP
    team and packing buffers) all get the single-caller results."""
    cases = []
    for i, (m, n, k) in enumerate(THREAD_SHAPES * 2):
        trans_a, trans_b = OPS[i % 4]
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        cases.append((a, b, trans_a, trans_b,
                      nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b)))
    start = threading.Barrier(4)

    def work(offset):
        start.wait()
        bad = 0
        for r in range(3):
            for a, b, ta, tb, want in cases[offset:] + cases[:offset]:
                got = nncore.matmul(a, b, trans_a=ta, trans_b=tb)
                bad += not np.array_equal(got, want)
        return bad

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, range(4))) == [0, 0, 0, 0]


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", "")
                    and _guard.available_bytes() is None,
                    reason="AddressSanitizer aborts on a failed huge malloc by default (where "
                           "nncore cannot read the memory available and refuse first)")
def test_absurd_size_is_a_memory_error():
    a = np.ones((1 << 20, 1), np.float32)
    with pytest.raises(MemoryError):
        nncore.matmul(a, a.T)


def test_sgemm_binding_rejects_strided_columns():
    a = np.ones((4, 6), np.float32)
    c = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="contiguous last axis"):
        _core.sgemm(False, False, 1.0, a[:, ::2], np.ones((3, 4), np.float32), 0.0, c)
