"""nncore.matmul(..., precision="bf16") against a float64 reference on the
bfloat16-rounded operands, on every ISA path (the avx512 path runs the
AVX512_BF16 kernel where the CPU has it, the others the portable kernel,
which must give the same bits)."""
import itertools
import warnings

import numpy as np
import pytest

import nncore
from nncore import _core

AWKWARD = [1, 2, 5, 7, 17, 63, 64, 65, 257]
OPS = list(itertools.product([False, True], repeat=2))
U = 2.0 ** -24  # float32's unit roundoff


def to_bf16(x):
    """float32 -> bfloat16 -> float32: round to nearest even, denormals to
    signed zero, NaN stays (quiet) NaN: what the packing does."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    denormal = (u & 0x7F800000) == 0
    h = np.where(nan, (u >> 16) | 0x40, np.where(denormal, (u >> 16) & 0x8000, rounded))
    return (h.astype(np.uint32) << 16).view(np.float32).reshape(np.shape(x))


def reference(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c=None, bias=None,
              activation=None):
    """The float64 result on the bf16-rounded operands, and a bound on what
    float32 accumulation may add to it: (k + blocks + 8) roundings of at most
    U relative to the sum of the magnitudes involved."""
    a64 = to_bf16(a).astype(np.float64)
    b64 = to_bf16(b).astype(np.float64)
    a64 = a64.T if trans_a else a64
    b64 = b64.T if trans_b else b64
    k = a64.shape[1]
    r = alpha * (a64 @ b64)
    mag = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0.0:
        r += beta * c.astype(np.float64)
        mag += abs(beta) * np.abs(c.astype(np.float64))
    if bias is not None:
        r += bias
        mag += np.abs(bias.astype(np.float64))
    if activation == "relu":
        r = np.maximum(r, 0.0)
    bound = (k + 2 * (k // 512 + 1) + 8) * U * mag + 1e-30
    return r, bound


def assert_close(got, want, bound, msg=""):
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert (err <= bound).all(), (f"{msg}: error {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                  f"at {worst}")


def operands(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def run_on(isa_name, fn):
    previous = _core.get_isa()
    _core.set_isa(isa_name)
    try:
        return fn()
    finally:
        _core.set_isa(previous)


def test_kernel_follows_isa(isa):
    info = nncore.info()
    if isa == "avx512" and info["bf16"]:
        assert info["bf16_kernel"] == "avx512_bf16"
    else:
        assert info["bf16_kernel"] == "generic"


def test_info_reports_bf16_and_amx():
    info = nncore.info()
    assert isinstance(info["bf16"], bool) and isinstance(info["amx"], bool)
    assert info["bf16_kernel"] in ("avx512_bf16", "generic")
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    if flags and "avx512" in _core.isa_available():
        assert info["bf16"] == (" avx512_bf16" in flags)
        assert info["amx"] <= (" amx_bf16" in flags)


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_bf16_awkward_shapes(isa, rng, trans_a, trans_b):
    for m, n, k in itertools.product(AWKWARD[::2], AWKWARD[1::2], AWKWARD):
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, precision="bf16")
        want, bound = reference(a, b, trans_a, trans_b)
        assert_close(got, want, bound, f"m={m} n={n} k={k}")


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_bf16_deep_and_wide(isa, rng, trans_a, trans_b):
    # several depth blocks (512), odd depths, column blocks and masked strips
    for m, n, k in [(7, 65, 1025), (65, 257, 513), (257, 63, 1000), (1, 1000, 257),
                    (300, 1100, 64)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, precision="bf16")
        want, bound = reference(a, b, trans_a, trans_b)
        assert_close(got, want, bound, f"m={m} n={n} k={k}")


@pytest.mark.parametrize("trans_a,trans_b", OPS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0), (0.0, 0.75)])
def test_bf16_epilogue(isa, rng, trans_a, trans_b, alpha, beta):
    for m, n, k in [(1, 65, 17), (5, 7, 2), (17, 64, 63), (65, 257, 600)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        for act in (None, "relu"):
            out = c0.copy()
            got = nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha,
                                beta=beta, out=out, bias=bias, activation=act,
                                precision="bf16")
            assert got is out
            want, bound = reference(a, b, trans_a, trans_b, alpha, beta, c0, bias, act)
            assert_close(got, want, bound, f"m={m} n={n} k={k} act={act}")


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_bf16_leading_dimensions_larger_than_width(isa, rng, trans_a, trans_b):
    for m, n, k in [(5, 7, 17), (65, 63, 257), (17, 130, 65)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        abig = np.full((a.shape[0], a.shape[1] + 9), np.nan, np.float32)
        bbig = np.full((b.shape[0], b.shape[1] + 3), np.nan, np.float32)
        cbig = np.full((m, n + 5), 7.0, np.float32)
        abig[:, :a.shape[1]] = a
        bbig[:, :b.shape[1]] = b
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        cbig[:, :n] = c0
        bias = rng.standard_normal(n).astype(np.float32)
        _core.sgemm(trans_a, trans_b, 0.5, abig[:, :a.shape[1]], bbig[:, :b.shape[1]], 2.0,
                    cbig[:, :n], bias, _core.ACTIVATIONS["relu"], True)
        want, bound = reference(a, b, trans_a, trans_b, 0.5, 2.0, c0, bias, "relu")
        assert_close(cbig[:, :n], want, bound, f"m={m} n={n} k={k}")
        assert (cbig[:, n:] == 7.0).all(), "wrote outside the view"


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_bf16_same_bits_on_every_path(rng, trans_a, trans_b):
    """The portable kernel computes vdpbf16ps's arithmetic exactly."""
    for m, n, k in itertools.product([1, 5, 7, 65], [2, 63, 65], [1, 17, 64, 1025]):
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)

        def product():
            out = c0.copy()
            return nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, alpha=0.75, beta=-1.5,
                                 out=out, bias=bias, activation="relu", precision="bf16")
        results = {name: run_on(name, product) for name in _core.isa_available()}
        for name, got in results.items():
            np.testing.assert_array_equal(got.view(np.uint32),
                                          results["generic"].view(np.uint32),
                                          err_msg=f"{name} m={m} n={n} k={k}")


def extreme_floats(rng, shape):
    """Random bit patterns over the whole float32 range: zeros, denormals,
    huge values, infinities and NaNs, the edges of vdpbf16ps's rounding,
    denormal flushing and overflow."""
    exponent = rng.integers(0, 256, size=shape, dtype=np.uint32)
    exponent = np.where(rng.random(shape) < 0.5, rng.integers(100, 150, size=shape), exponent)
    bits = (rng.integers(0, 2 ** 32, size=shape, dtype=np.uint64).astype(np.uint32)
            & np.uint32(0x807FFFFF)) | (exponent.astype(np.uint32) << 23)
    return bits.view(np.float32)


def test_bf16_same_bits_on_extreme_values(rng):
    with np.errstate(all="ignore"):
        for m, n, k in [(7, 65, 33), (6, 64, 600)]:
            a = extreme_floats(rng, (m, k))
            b = extreme_floats(rng, (k, n))
            # tiny operands: products and sums in the denormal range
            ta = (rng.standard_normal((m, k)) * 1e-20).astype(np.float32)
            tb = (rng.standard_normal((k, n)) * 1e-19).astype(np.float32)
            for x, y in [(a, b), (ta, tb)]:
                results = {name: run_on(name, lambda: nncore.matmul(x, y, precision="bf16"))
                           for name in _core.isa_available()}
                for name, got in results.items():
                    same = (got.view(np.uint32) == results["generic"].view(np.uint32)) | (
                        np.isnan(got) & np.isnan(results["generic"]))
                    assert same.all(), f"{name} m={m} n={n} k={k}"


def test_bf16_rounds_to_nearest_even(isa):
    one = np.ones((1, 1), np.float32)
    values = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -(1 + 2 ** -8),
                       3.0e38, 1e-39, -1e-39, 65504.0, np.pi], np.float32)
    # a denormal reads as zero; the product -0 * 1 added to the accumulator's
    # +0 is +0, as in IEEE arithmetic (and vdpbf16ps)
    want = [1.0, 1 + 2 ** -6, 1 + 2 ** -7, -1.0, to_bf16(np.float32(3.0e38)), 0.0, 0.0,
            65536.0, 3.140625]
    for v, w in zip(values, want):
        got = nncore.matmul(np.array([[v]], np.float32), one, precision="bf16")[0, 0]
        assert got == np.float32(w) and np.signbit(got) == np.signbit(np.float32(w)), (v, got)


def test_bf16_nan_and_inf_propagate(isa, rng):
    a = rng.standard_normal((7, 9)).astype(np.float32)
    b = rng.standard_normal((9, 70)).astype(np.float32)
    a[2, 3] = np.nan
    b[4, 66] = np.inf
    got = nncore.matmul(a, b, precision="bf16")
    assert np.isnan(got[2]).all()
    assert np.isinf(got[np.arange(7) != 2, 66]).all()
    assert np.isfinite(np.delete(np.delete(got, 2, 0), 66, 1)).all()


def test_bf16_zero_k_and_empty(isa):
    c = np.full((3, 4), 2.0, np.float32)
    got = nncore.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), beta=0.5,
                        out=c, bias=np.ones(4, np.float32), precision="bf16")
    np.testing.assert_array_equal(got, np.full((3, 4), 2.0))
    assert nncore.matmul(np.zeros((0, 5)), np.zeros((5, 3)), precision="bf16").shape == (0, 3)


@pytest.mark.parametrize("trans_a,trans_b", OPS)
def test_bf16_thread_count_does_not_change_results(isa, num_threads, rng, trans_a, trans_b):
    # wide (threads split columns), tall (rows), square, and several blocks
    for m, n, k in [(65, 1000, 257), (1000, 65, 257), (257, 257, 513), (129, 1300, 100)]:
        a, b = operands(rng, m, n, k, trans_a, trans_b)
        bias = rng.standard_normal(n).astype(np.float32)
        results = []
        for threads in (1, 2, 3):
            nncore.set_num_threads(threads)
            results.append(nncore.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias,
                                         activation="relu", precision="bf16"))
        for r in results[1:]:
            np.testing.assert_array_equal(r.view(np.uint32), results[0].view(np.uint32),
                                          err_msg=f"m={m} n={n} k={k}")


def test_float32_is_the_default(rng):
    a, b = operands(rng, 33, 70, 129, False, False)
    np.testing.assert_array_equal(nncore.matmul(a, b), nncore.matmul(a, b, precision="float32"))
    # float32 keeps the bits bf16 drops
    assert not np.array_equal(nncore.matmul(a, b), nncore.matmul(a, b, precision="bf16"))


@pytest.mark.parametrize("bad", ["fp16", "BF16", "bfloat16", "float64", "", None, 16, np.float32])
def test_other_precisions_are_refused(rng, bad):
    a, b = operands(rng, 3, 4, 5, False, False)
    with pytest.raises(ValueError, match="precision must be one of"):
        nncore.matmul(a, b, precision=bad)


# ---- mixed-precision training: Trainer(..., precision="bf16") ----

def _mlp(sizes, seed):
    nncore.manual_seed(seed)
    layers = [nncore.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
    return nncore.Sequential(*layers, nncore.Dense(sizes[-2], sizes[-1]))


def _train(precision, X, y, sizes, steps, batch, lr):
    model = _mlp(sizes, seed=3)
    trainer = nncore.Trainer(model, nncore.CrossEntropyLoss(), nncore.SGD(lr=lr),
                             batch_size=batch, shuffle=False, precision=precision)
    start = [layer.weight.copy() for layer in model.layers]
    trainer.fit(X[:steps * batch], y[:steps * batch], epochs=1, verbose=0)
    return start, [layer.weight.copy() for layer in model.layers], model


def _torch_train(torch, start, X, y, steps, batch, lr, autocast):
    layers = []
    for w in start:
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.zero_()
        layers += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for s in range(steps):
        xb = torch.from_numpy(X[s * batch:(s + 1) * batch])
        yb = torch.from_numpy(y[s * batch:(s + 1) * batch])
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(xb)
        loss = torch.nn.functional.cross_entropy(out.float(), yb)
        loss.backward()
        opt.step()
    return [lin.weight.detach().numpy().T.copy() for lin in net if hasattr(lin, "weight")]


def _drift(ws, ref, start):
    """How far apart two runs end, relative to how far training moved."""
    return max(float(np.linalg.norm(w - r) / np.linalg.norm(r - s))
               for w, r, s in zip(ws, ref, start))


def test_trainer_precision_is_checked():
    model = _mlp([4, 3, 2], seed=0)
    for bad in ("fp16", "BF16", None, 16):
        with pytest.raises(ValueError, match="precision must be one of"):
            nncore.Trainer(model, nncore.CrossEntropyLoss(), nncore.SGD(lr=0.1),
                           precision=bad)
    assert nncore.Trainer(model, nncore.CrossEntropyLoss(),
                          nncore.SGD(lr=0.1)).precision == "float32"


def test_trainer_bf16_uses_bf16_only_while_training(rng):
    X = rng.standard_normal((64, 20)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    _, w16, model = _train("bf16", X, y, [20, 16, 5], steps=4, batch=16, lr=0.1)
    _, w32, _ = _train("float32", X, y, [20, 16, 5], steps=4, batch=16, lr=0.1)
    assert any(not np.array_equal(a, b) for a, b in zip(w16, w32))
    assert not any(layer._bf16 for layer in model.layers)   # float32 again after fit
    for a, b in zip(w16, w32):
        np.testing.assert_allclose(a, b, atol=0.02)


def test_trainer_bf16_close_to_torch_autocast(rng):
    """100 SGD steps of a 64-48-32-10 ReLU net on the same batches and
    initial weights: nncore bf16 against torch.autocast(bf16) ends as close
    as float32 and bf16 runs end to each other, or closer (PyTorch rounds
    every GEMM output to bf16 as well; nncore keeps float32 outputs)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    steps, batch, lr, sizes = 100, 32, 0.05, [64, 48, 32, 10]
    X = rng.standard_normal((steps * batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], steps * batch)
    start, nn16, _ = _train("bf16", X, y, sizes, steps, batch, lr)
    _, nn32, _ = _train("float32", X, y, sizes, steps, batch, lr)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t16 = _torch_train(torch, start, X, y, steps, batch, lr, autocast=True)
        t32 = _torch_train(torch, start, X, y, steps, batch, lr, autocast=False)
    finally:
        torch.set_num_threads(previous)
    d_f32 = _drift(nn32, t32, start)        # float32 vs float32: rounding only
    d_bf16 = _drift(nn16, t16, start)       # nncore bf16 vs torch autocast
    d_mixed = _drift(t16, t32, start)       # what bf16 itself changes, in PyTorch
    print(f"\nweight drift after {steps} steps (relative to the distance trained): "
          f"nncore f32 vs torch f32 {d_f32:.2e}, nncore bf16 vs torch autocast "
          f"{d_bf16:.2e}, torch autocast vs torch f32 {d_mixed:.2e}")
    assert d_f32 < 1e-3
    assert d_bf16 < max(1.5 * d_mixed, 0.02)


# ---- the estimators: NNClassifier / NNRegressor(precision=...) ----

def _blobs(rng, n=240):
    X = rng.standard_normal((n, 12)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y


@pytest.mark.parametrize("cls", [nncore.NNClassifier, nncore.NNRegressor])
def test_estimator_precision_parameter(cls):
    assert cls().get_params()["precision"] == "float32"
    assert cls(precision="bf16").get_params()["precision"] == "bf16"
    X = np.zeros((8, 3), np.float32)
    y = np.arange(8) % 2
    for bad in ("fp16", "BF16", None):
        with pytest.raises(ValueError, match="precision must be one of"):
            cls(precision=bad, max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="precision='bf16' needs solver"):
        cls(precision="bf16", solver="lbfgs", max_iter=1).fit(X, y)


def test_estimator_bf16_trains_in_bf16_and_round_trips(rng, num_threads, tmp_path):
    X, y = _blobs(rng)
    kw = dict(hidden_layer_sizes=(32,), max_iter=5, random_state=0, batch_size=32, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nncore.set_num_threads(1)
        c16 = nncore.NNClassifier(precision="bf16", **kw).fit(X, y)
        nncore.set_num_threads(2)
        c16b = nncore.NNClassifier(precision="bf16", **kw).fit(X, y)
        c32 = nncore.NNClassifier(**kw).fit(X, y)
    for a, b, c in zip(c16.coefs_, c16b.coefs_, c32.coefs_):
        np.testing.assert_array_equal(a, b)             # any thread count, same bits
        assert not np.array_equal(a, c)                  # bf16 really ran
        np.testing.assert_allclose(a, c, atol=0.05)
    assert abs(c16.score(X, y) - c32.score(X, y)) < 0.05
    nncore.save(c16, tmp_path / "clf.nnc")
    back = nncore.load(tmp_path / "clf.nnc")
    assert back.precision == "bf16"
    back.partial_fit(X, y)
    c16.partial_fit(X, y)
    for a, b in zip(back.coefs_, c16.coefs_):
        np.testing.assert_array_equal(a, b)
    # switching precision between partial_fit calls reaches the trainer
    c16.set_params(precision="float32").partial_fit(X, y)
    assert c16._trainer.precision == "float32"
