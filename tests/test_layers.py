"""Layers and Sequential: forward against NumPy float64, finite-difference
gradient checks, buffers, errors, config/state round trips, and learning."""
import copy
import json
import math
import pickle
import tracemalloc

import numpy as np
import pytest

import nncore as nn
from nncore import _core
from nncore import init as nn_init
from nncore import layers as L
from reference import ACTS, act64, check_grads, smooth_input


@pytest.mark.parametrize("activation", ACTS)
def test_dense_forward(isa, rng, activation):
    for m, k, n in [(1, 1, 1), (5, 7, 3), (17, 63, 65), (64, 2, 10)]:
        d = nn.Dense(k, n, activation)
        d.bias[:] = rng.standard_normal(n)
        x = rng.standard_normal((m, k)).astype(np.float32)
        y = d.forward(x)
        want = act64(activation, x.astype(np.float64) @ d.weight + d.bias)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        assert y.dtype == np.float32 and y.flags.c_contiguous


@pytest.mark.parametrize("activation", ACTS)
def test_dense_gradients(isa, rng, activation):
    nn.manual_seed(1)
    d = nn.Dense(6, 5, activation)
    d.bias[:] = rng.standard_normal(5) * 0.1
    x = smooth_input(rng, (4, 6))
    if activation in ("relu", "leaky_relu"):
        # keep pre-activations away from the kink too
        z = x @ d.weight + d.bias
        d.bias[:] += np.where(np.abs(z) < 0.1, 0.2, 0.0).max(axis=0)
    check_grads(d, x, rng)


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh(),
                                   nn.GELU(), nn.Softmax()], ids=repr)
def test_activation_gradients(isa, rng, layer):
    check_grads(layer, smooth_input(rng, (3, 7)), rng)


def test_dropout_gradients(rng, monkeypatch):
    monkeypatch.setattr(nn_init, "next_key", lambda: 12345)  # the same mask every forward
    check_grads(nn.Dropout(0.3), smooth_input(rng, (5, 8)), rng)


def test_sequential_gradients(isa, rng):
    nn.manual_seed(2)
    model = nn.Sequential(nn.Dense(5, 8), nn.ReLU(), nn.Dense(8, 6, "tanh"), nn.GELU(),
                          nn.Dense(6, 3))
    check_grads(model, smooth_input(rng, (4, 5)), rng, n_checks=8)


def test_backward_overwrites_gradients(rng):
    model = nn.Sequential(nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    model.forward(x)
    model.backward(g)
    first = [gr.copy() for _, gr in model.parameters()]
    model.backward(g)
    for a, (_, b) in zip(first, model.parameters()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("input_grad", [True, False])
def test_backward_with_sgd_lr_is_backward_then_sgd_step(rng, input_grad):
    # Dropout first: with input_grad the layers before the first Dense run too.
    def model():
        nn.manual_seed(3)
        return nn.Sequential(nn.Dropout(0.0), nn.Dense(4, 3, activation="tanh"), nn.ReLU(),
                             nn.Dense(3, 2, activation="relu"), nn.Dense(2, 2))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    plain, folded = model(), model()
    plain.forward(x)
    dx = plain.backward(g, input_grad=input_grad)
    dx = None if dx is None else dx.copy()
    nn.SGD(0.1).step(plain.parameters())
    folded.forward(x)
    dx2 = folded.backward(g, input_grad=input_grad, sgd_lr=0.1)
    if input_grad:
        np.testing.assert_array_equal(dx2, dx)
    else:
        assert dx2 is None
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(folded.state_dict()[key], value, err_msg=key)


def test_backward_with_a_changing_sgd_lr(rng):
    # backward keeps the calls of the last rate: a new rate must take effect
    def model():
        nn.manual_seed(3)
        return nn.Sequential(nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    plain, folded, opt = model(), model(), nn.SGD(0.1)
    for lr in (0.1, 0.1, 0.02, 0.3):
        opt.lr = lr
        plain.forward(x)
        plain.backward(g, input_grad=False)
        opt.step(plain.parameters())
        folded.forward(x)
        folded.backward(g, input_grad=False, sgd_lr=lr)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(folded.state_dict()[key], value, err_msg=key)


def test_backward_sgd_lr_is_checked(rng):
    model = nn.Sequential(nn.Dense(4, 3), nn.Sequential(nn.Dense(3, 2)))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    g = np.ones((5, 2), np.float32)
    model.forward(x)
    with pytest.raises(ValueError, match="every layer with parameters to be a Dense"):
        model.backward(g, sgd_lr=0.1)
    flat = nn.Sequential(nn.Dense(4, 2))
    flat.forward(x)
    for bad in (float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="sgd_lr must be a finite number"):
            flat.backward(g, sgd_lr=bad)
        with pytest.raises(ValueError, match="sgd_lr must be a finite number"):
            flat.layers[0].backward(g, sgd_lr=bad)


def test_input_grad_false_gives_same_parameter_grads(rng):
    model = nn.Sequential(nn.Dropout(0.0), nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    model.forward(x)
    dx = model.backward(g)
    assert dx.shape == x.shape
    want = [gr.copy() for _, gr in model.parameters()]
    model.forward(x)
    assert model.backward(g, input_grad=False) is None
    for a, (_, b) in zip(want, model.parameters()):
        np.testing.assert_array_equal(a, b)


def test_fused_relu_matches_unfused(rng):
    nn.manual_seed(3)
    a = nn.Sequential(nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 2))
    b = nn.Sequential(nn.Dense(6, 5, "relu"), nn.Dense(5, 2))
    for (p, _), (q, _) in zip(b.parameters(), a.parameters()):
        p[...] = q
    c1, c2, c3 = nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 2)   # layer by layer, no fusion
    for (p, _), (q, _) in zip(c1.parameters() + c3.parameters(), a.parameters()):
        p[...] = q
    x = rng.standard_normal((7, 6)).astype(np.float32)
    g = rng.standard_normal((7, 2)).astype(np.float32)
    ya, yb = a.forward(x).copy(), b.forward(x).copy()
    yc = c3.forward(c2.forward(c1.forward(x))).copy()
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(ya, yc)
    da, db = a.backward(g).copy(), b.backward(g).copy()
    dc = c1.backward(c2.backward(c3.backward(g)))
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(da, dc)
    for (_, ga), (_, gb) in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(ga, gb)


# ---- buffers and allocations ----

def test_buffers_are_reused(rng):
    model = nn.Sequential(nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 3))
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y1 = model.forward(x)
    y2 = model.forward(x)
    assert y1 is y2
    small = model.forward(x[:5])
    assert small.shape == (5, 3) and np.shares_memory(small, y1)


def train_steps(model, loss, opt, X, y, steps):
    for _ in range(steps):
        out = model.forward(X)
        loss.forward(out, y)
        model.backward(loss.backward(), input_grad=False)
        opt.step(model.parameters())


@pytest.mark.parametrize("batch", [64, 1024])
def test_training_step_allocates_nothing_per_batch(rng, batch):
    """Steady-state steps allocate nothing proportional to the batch: after a
    warm-up, 5 steps at batch 1024 allocate (net and peak) as little as at 64."""
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, 128), nn.ReLU(), nn.Dropout(0.2),
                          nn.Dense(128, 64, "tanh"), nn.Dense(64, 10))
    loss = nn.CrossEntropyLoss()
    opt = nn.Adam(lr=1e-3)
    X = rng.standard_normal((batch, 64)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    train_steps(model, loss, opt, X, y, 2)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        train_steps(model, loss, opt, X, y, 5)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one batch of activations alone would be batch * 128 * 4 bytes >= 32 KiB
    assert after - before < 4096 and peak - before < 8192, (after - before, peak - before)


# ---- inference ----

def test_predict_in_chunks_and_eval_mode(rng):
    nn.manual_seed(4)
    model = nn.Sequential(nn.Dense(3, 16), nn.ReLU(), nn.Dropout(0.5), nn.Dense(16, 4))
    X = rng.standard_normal((103, 3))                    # float64: converted once
    full = model.predict(X, batch_size=1000)
    chunked = model.predict(X, batch_size=10)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-6)
    assert model.training                                # restored
    model.eval()
    np.testing.assert_allclose(model.forward(X.astype(np.float32)), full, rtol=1e-6, atol=1e-6)
    model.train()
    # predict keeps its own buffers: the pending forward state stays valid
    nn.manual_seed(5)                                    # the same dropout mask twice
    model.forward(X[:5].astype(np.float32))
    grad_in = model.backward(np.ones((5, 4), np.float32)).copy()
    nn.manual_seed(5)
    model.forward(X[:5].astype(np.float32))
    model.predict(X)
    assert model.training
    np.testing.assert_array_equal(model.backward(np.ones((5, 4), np.float32)), grad_in)


CHAINS = [  # (layers, whether predict runs them as one chain of GEMMs)
    (lambda: [nn.Dense(5, 8), nn.ReLU(), nn.Dense(8, 3)], True),
    (lambda: [nn.Dense(5, 8, activation="relu"), nn.Dropout(0.3), nn.Dense(8, 3)], True),
    (lambda: [nn.Dropout(0.2), nn.Dense(5, 8), nn.Dropout(0.1), nn.ReLU(), nn.Dense(8, 3)],
     True),
    (lambda: [nn.Dense(5, 3, bias=False)], True),
    (lambda: [nn.Dense(5, 8, activation="relu"), nn.ReLU(), nn.Dense(8, 3)], False),
    (lambda: [nn.Dense(5, 8), nn.Tanh(), nn.Dense(8, 3)], False),
    (lambda: [nn.Dense(5, 8), nn.Sequential(nn.Dense(8, 3))], False),
    (lambda: [nn.ReLU(), nn.Dense(5, 3)], False),
    # two inner chains sharing the outer predict's workspace
    (lambda: [nn.Sequential(nn.Dense(5, 8), nn.ReLU()), nn.Tanh(),
              nn.Sequential(nn.Dense(8, 8), nn.ReLU()), nn.Sequential(nn.Dense(8, 3))], False),
]


@pytest.mark.parametrize("case", range(len(CHAINS)))
def test_predict_chain_equals_forward(isa, rng, case):
    make, chained = CHAINS[case]
    nn.manual_seed(case)
    model = nn.Sequential(*make())
    assert (model._chain is not None) == chained
    model.eval()
    for m in (1, 7, 300):
        X = rng.standard_normal((m, 5)).astype(np.float32)
        want = model.forward(X).copy()
        np.testing.assert_array_equal(model.predict(X), want)
        np.testing.assert_array_equal(model.predict(X, batch_size=4), want)
    with pytest.raises(ValueError, match="has 4 features, expected 5"):
        model.predict(np.ones((2, 4), np.float32))
    model.parameters()[0][0][...] = 0.5              # weights changed in place:
    np.testing.assert_array_equal(model.predict(X), model.forward(X))  # nothing stale


def test_predict_one_sample_chain_threaded(isa, rng, num_threads):
    # One sample runs the chain in one parallel region: the first layer
    # large enough to thread (300 x 256), the second split inside the region
    # (256 x 96), the last unsplit one after the region, on the calling
    # thread. Same bits as layer-by-layer forward for 1 and 2 threads and
    # while profiling (which goes layer by layer).
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(300, 256), nn.ReLU(), nn.Dense(256, 96, activation="relu"),
                          nn.Dense(96, 10)).eval()
    assert model._chain is not None
    x = rng.standard_normal((1, 300)).astype(np.float32)
    want = model.forward(x).copy()
    h = x.astype(np.float64)
    for layer in (model.layers[0], model.layers[2], model.layers[3]):
        h = h @ layer.weight.astype(np.float64) + layer.bias
        h = np.maximum(h, 0) if layer is not model.layers[3] else h
    np.testing.assert_allclose(want, h, rtol=1e-4, atol=1e-4)
    for threads in (1, 2):
        nn.set_num_threads(threads)
        np.testing.assert_array_equal(model.predict(x), want)
    with nn.profile(max_events=100) as prof:
        got = model.predict(x)
    np.testing.assert_array_equal(got, want)
    assert sum(1 for e in prof.events if e["m"] == 1 and e["k"] in (300, 256, 96)) == 3


def test_predict_one_sample_chain_unsplit_layers_around_a_split_one(isa, rng, num_threads):
    # unsplit (4 x 8, in the region on one thread), split (8 x 8192), unsplit
    # (8192 x 3: one output block, after the region)
    nn.manual_seed(1)
    model = nn.Sequential(nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 8192, activation="relu"),
                          nn.Dense(8192, 3)).eval()
    x = rng.standard_normal((1, 4)).astype(np.float32)
    want = model.forward(x).copy()
    for threads in (1, 2):
        nn.set_num_threads(threads)
        np.testing.assert_array_equal(model.predict(x), want)


def test_predict_one_sample_chain_several_barriers(isa, rng, num_threads):
    # Four split layers (three barriers inside the region) and a last one
    # after it, for more threads than this machine has cores too (waiters
    # that spin, then yield): the bits of layer-by-layer forward every time.
    nn.manual_seed(2)
    model = nn.Sequential(nn.Dense(200, 256, activation="relu"), nn.Dense(256, 320),
                          nn.ReLU(), nn.Dense(320, 192, activation="relu"),
                          nn.Dense(192, 130, activation="relu"), nn.Dense(130, 7)).eval()
    assert model._chain is not None
    x = rng.standard_normal((1, 200)).astype(np.float32)
    want = model.forward(x).copy()
    h = x.astype(np.float64)
    dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
    for layer in dense:
        h = h @ layer.weight.astype(np.float64) + layer.bias
        h = np.maximum(h, 0) if layer is not dense[-1] else h
    np.testing.assert_allclose(want, h, rtol=1e-4, atol=1e-4)
    for threads in (1, 2, 3, 4):
        nn.set_num_threads(threads)
        for _ in range(20):
            np.testing.assert_array_equal(model.predict(x), want)


def test_predict_one_chunk_of_feature_vectors(rng):
    # float32 C-contiguous rows of the first layer's width, at most one
    # chunk: one C call (_core.ChainPredictor). Same bits as the general
    # path, a new array each call, every check of the general path made.
    nn.manual_seed(3)
    model = nn.Sequential(nn.Dense(6, 9), nn.ReLU(), nn.Dense(9, 4)).eval()
    X = rng.standard_normal((5, 6)).astype(np.float32)
    want = model.forward(X).copy()
    first = model.predict(X)
    np.testing.assert_array_equal(first, want)
    free = model._chain_predictor.free
    assert len(free) == 1
    ws, plan = free[0]
    second = model.predict(X[:1])                    # another size: a new plan ...
    np.testing.assert_array_equal(second, want[:1])
    assert len(free) == 1 and free[0][0] is ws and free[0][1] is not plan  # ... same buffers
    third = model.predict(X)
    assert not np.shares_memory(first, third) and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, want)       # untouched by the later calls
    third[...] = 7.0                                 # the caller's own array
    np.testing.assert_array_equal(model.predict(X), want)
    model.parameters()[0][0][...] = 0.25             # weights changed in place: nothing stale
    want = model.forward(X).copy()
    np.testing.assert_array_equal(model.predict(X), want)
    for back in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(back.predict(X), want)
        assert back._chain_predictor is not model._chain_predictor
    # the same bits through the general path: converted inputs, chunks
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), want)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), want)
    np.testing.assert_array_equal(model.predict(X, batch_size=2), want)
    np.testing.assert_array_equal(model.predict(X, batch_size=np.int64(5)), want)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            model.predict(X, batch_size=bad)
    with pytest.raises(ValueError, match="has 5 features, expected 6"):
        model.predict(X[:, :5].copy())
    with pytest.raises(ValueError, match="empty batch"):
        model.predict(X[:0])


def test_chain_predictor_takes_only_what_needs_no_conversion(rng):
    # None (the caller's general path) for anything but a float32
    # C-contiguous aligned 2-D array of 1..batch_size rows of the right width
    # whose output is at most max_floats floats
    w = rng.standard_normal((3, 4)).astype(np.float32)
    chain = ((w, None, _core.ACT_CODES["relu"]),)
    made = []

    def make_plan(ws, rows):
        made.append(rows)
        out = np.empty((rows, 4), np.float32)
        return ws or object(), _core.DenseChain(rows, 3, chain, (out,))
    pred = _core.ChainPredictor(3, 4, 4 * 6, make_plan)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    got = pred.predict(x, 6)
    np.testing.assert_allclose(got, np.maximum(x.astype(np.float64) @ w, 0), rtol=1e-6)
    (ws, plan), = pred.free
    assert got.flags.owndata and not np.shares_memory(got, plan.run(x))   # a copy
    odd = np.empty(6 * 3 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(6, 3)  # misaligned
    for bad_x, batch in [(x, 5), (x, True), (x, 6.0), (x, np.int64(6)), (x[:0], 6),
                         (x.astype(np.float64), 6), (np.asfortranarray(x), 6), (x[:, :2], 6),
                         (x[::2], 6), (x[None], 6), (x.tolist(), 6), (odd, 6)]:
        assert pred.predict(bad_x, batch) is None
    big = np.zeros((7, 3), np.float32)                        # 28 > 24 output floats
    assert pred.predict(big, 7) is None
    assert made == [6] and len(pred.free) == 1


def test_dense_chain_checks_its_arguments():
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    out = np.empty((2, 4), np.float32)
    relu = _core.ACT_CODES["relu"]

    def chain(layers, outs):
        return _core.DenseChain(2, 3, layers, outs).run(x)
    with pytest.raises(ValueError, match="1 layers and 2 outputs"):
        chain(((w, None, relu),), (out, out))
    with pytest.raises(ValueError, match="do not match"):
        chain(((w.T.copy(), None, relu),), (out,))
    with pytest.raises(ValueError, match="not an epilogue"):
        chain(((w, None, _core.ACT_CODES["tanh"]),), (out,))
    with pytest.raises(ValueError, match="expected 4"):
        chain(((w, np.ones(3, np.float32), relu),), (out,))
    got = chain(((w, np.full(4, -4.0, np.float32), relu),), (out,))
    assert got is out and not got.any()              # relu(3 - 4) = 0
    # A plan checks its layers once, then each run checks only its input.
    plan = _core.DenseChain(2, 3, ((w, np.full(4, 0.5, np.float32), relu),), (out,))
    with pytest.raises(ValueError, match=r"x has shape \(1, 3\), expected \(2, 3\)"):
        plan.run(x[:1])
    with pytest.raises(TypeError, match="x has dtype float64"):
        plan.run(x.astype(np.float64))
    with pytest.raises(ValueError, match="do not match"):
        _core.DenseChain(2, 4, ((w, None, relu),), (out,))
    w[...] = 2.0                                     # contents may change between runs
    np.testing.assert_array_equal(plan.run(x), np.full((2, 4), 6.5, np.float32))


def test_predict_proba(rng):
    multi = nn.Sequential(nn.Dense(3, 4))
    X = rng.standard_normal((9, 3)).astype(np.float32)
    p = multi.predict_proba(X)
    np.testing.assert_allclose(p, act64("softmax", multi.predict(X).astype(np.float64)),
                               rtol=1e-5)
    binary = nn.Sequential(nn.Dense(3, 1))
    p1 = binary.predict_proba(X)
    assert p1.shape == (9, 1)
    np.testing.assert_allclose(p1, act64("sigmoid", binary.predict(X).astype(np.float64)),
                               rtol=1e-5)
    already = nn.Sequential(nn.Dense(3, 4), nn.Softmax())
    np.testing.assert_array_equal(already.predict_proba(X), already.predict(X))


# ---- errors ----

def test_dense_input_errors():
    d = nn.Dense(784, 256)
    with pytest.raises(ValueError, match=r"Dense\(784->256\): input has 783 features, "
                                         r"expected 784"):
        d.forward(np.zeros((2, 783), np.float32))
    with pytest.raises(ValueError, match=r"must be 2-D.*shape \(784,\).*reshape"):
        d.forward(np.zeros(784, np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        d.forward(np.zeros((0, 784), np.float32))
    with pytest.raises(TypeError, match="real numbers"):
        d.forward(np.array([["a"] * 784]))
    with pytest.raises(ValueError, match=r"Dense\(784->256\): backward\(\) called before"):
        d.backward(np.zeros((2, 256), np.float32))
    d.forward(np.zeros((2, 784)))
    with pytest.raises(ValueError, match=r"gradient has shape \(2, 255\), expected \(2, 256\)"):
        d.backward(np.zeros((2, 255), np.float32))


@pytest.mark.parametrize("args,kwargs,match", [
    ((0, 3), {}, "in_features must be a positive int"),
    ((3, 2.5), {}, "out_features must be a positive int"),
    ((True, 3), {}, "in_features"),
    ((3, 3, "swish"), {}, "unknown activation 'swish'"),
    ((3, 3), {"init": "magic"}, "unknown init 'magic'"),
])
def test_dense_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Dense(*args, **kwargs)


def test_parameter_free_layer_errors():
    for layer in (nn.ReLU(), nn.Softmax(), nn.Dropout(0.1)):
        with pytest.raises(ValueError, match="before forward"):
            layer.backward(np.zeros((2, 2), np.float32))
        layer.forward(np.ones((2, 3), np.float32))
        with pytest.raises(ValueError, match=r"gradient has shape \(3, 2\), expected \(2, 3\)"):
            layer.backward(np.zeros((3, 2), np.float32))
    for p in (-0.1, 1.0, 1.5, "0.5", None):
        with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\)"):
            nn.Dropout(p)
    with pytest.raises(ValueError, match="negative_slope"):
        nn.LeakyReLU(float("nan"))


def test_sequential_errors():
    with pytest.raises(TypeError, match="Sequential\\(\\*layers\\)"):
        nn.Sequential([nn.ReLU()])
    with pytest.raises(TypeError, match="argument 1 is a str"):
        nn.Sequential(nn.ReLU(), "relu")
    r = nn.ReLU()
    with pytest.raises(ValueError, match="appears twice"):
        nn.Sequential(r, r)
    model = nn.Sequential(nn.Dense(3, 2))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(np.zeros((2, 3)), batch_size=0)


def test_nan_propagates(rng):
    model = nn.Sequential(nn.Dense(3, 4), nn.ReLU(), nn.Dense(4, 2))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    x[0, 0] = np.nan
    y = model.forward(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


# ---- init, seeds, state, config ----

def test_init_rules():
    nn.manual_seed(0)
    fan_in, fan_out = 400, 300
    relu = nn.Dense(fan_in, fan_out, "relu").weight
    glorot = nn.Dense(fan_in, fan_out).weight
    he_bound = math.sqrt(6 / fan_in)
    glorot_bound = math.sqrt(6 / (fan_in + fan_out))
    assert he_bound * 0.99 < np.abs(relu).max() <= he_bound
    assert glorot_bound * 0.99 < np.abs(glorot).max() <= glorot_bound
    # a Dense placed before a ReLU in a Sequential gets He too
    model = nn.Sequential(nn.Dense(fan_in, fan_out), nn.ReLU(), nn.Dense(fan_out, 2))
    assert he_bound * 0.99 < np.abs(model[0].weight).max() <= he_bound
    assert np.all(model[0].bias == 0)
    normal = nn.Dense(fan_in, fan_out, init="he_normal").weight
    assert np.std(normal) == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    custom = nn.Dense(2, 3, init=lambda i, o, rng: np.full((i, o), 0.5)).weight
    np.testing.assert_array_equal(custom, 0.5)


def test_manual_seed_reproduces_weights_and_dropout():
    def run():
        nn.manual_seed(123)
        model = nn.Sequential(nn.Dense(5, 8), nn.ReLU(), nn.Dropout(0.5), nn.Dense(8, 2))
        x = np.ones((4, 5), np.float32)
        return [model.forward(x).copy(), model.forward(x).copy(), model[0].weight.copy()]
    a, b = run(), run()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], a[1])   # a new mask each forward
    with pytest.raises(ValueError):
        nn.manual_seed(-1)


def test_state_dict_round_trip(rng):
    a = nn.Sequential(nn.Dense(3, 4), nn.ReLU(), nn.Sequential(nn.Dense(4, 2, bias=False)))
    state = a.state_dict()
    assert sorted(state) == ["0.bias", "0.weight", "2.0.weight"]
    b = nn.Sequential(nn.Dense(3, 4), nn.ReLU(), nn.Sequential(nn.Dense(4, 2, bias=False)))
    b.load_state_dict(state)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    state["0.weight"][...] = 7   # a copy: the model is unchanged
    assert not np.any(a[0].weight == 7)
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\]"):
        b.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    with pytest.raises(ValueError, match=r"0.weight has shape \(4, 3\), expected \(3, 4\)"):
        b.load_state_dict({**state, "0.weight": np.zeros((4, 3))})
    w_before = b[0].weight.copy()
    with pytest.raises(ValueError):
        b.load_state_dict({**state, "0.weight": np.ones((3, 4)), "0.bias": np.zeros(5)})
    np.testing.assert_array_equal(b[0].weight, w_before)   # nothing written


def test_weight_assignment_copies_in_place():
    d = nn.Dense(2, 3)
    w = d.weight
    d.weight = np.ones((2, 3))
    assert d.weight is w and np.all(w == 1)
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        d.weight = np.ones((3, 2))
    g = d.grad_weight
    d.grad_weight = np.full((2, 3), 2.0)
    assert d.grad_weight is g and d.parameters()[0][1] is g and np.all(g == 2)
    with pytest.raises(ValueError, match="no bias"):
        nn.Dense(2, 3, bias=False).grad_bias = np.zeros(3)


def test_config_round_trip(rng):
    nn.manual_seed(5)
    model = nn.Sequential(nn.Dense(4, 8, "gelu", init="he_normal"), nn.LeakyReLU(0.2),
                          nn.Dropout(0.25), nn.Sequential(nn.Dense(8, 3, bias=False), nn.Tanh()),
                          nn.Sigmoid(), nn.Softmax(), nn.ReLU())
    config = json.loads(json.dumps(L.layer_config(model)))
    rebuilt = nn.layer_from_config(config)
    assert L.layer_config(rebuilt) == config
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(model.forward(x), rebuilt.forward(x))
    assert nn.Sequential.from_config(model.get_config()).get_config() == model.get_config()


def test_config_errors():
    with pytest.raises(ValueError, match="unknown layer type 'Conv3d'"):
        nn.layer_from_config({"type": "Conv3d"})
    with pytest.raises(ValueError, match="bad config for Dense"):
        nn.layer_from_config({"type": "Dense", "in_features": 2, "out_features": 2, "evil": 1})
    with pytest.raises(ValueError, match="positive int"):
        nn.layer_from_config({"type": "Dense", "in_features": -2, "out_features": 2})
    deep = {"type": "ReLU"}
    for _ in range(40):
        deep = {"type": "Sequential", "layers": [deep]}
    with pytest.raises(ValueError, match="nested deeper"):
        nn.layer_from_config(deep)
    with pytest.raises(ValueError, match="must be a dict"):
        nn.layer_from_config(["Dense"])


def test_register_layer():
    @nn.register_layer
    class Scale(nn.Layer):
        def __init__(self, factor=2.0):
            self.factor = factor

        def forward(self, x):
            return x * self.factor

        def backward(self, grad, input_grad=True):
            return grad * self.factor

        def get_config(self):
            return {"factor": self.factor}

    try:
        model = nn.layer_from_config({"type": "Sequential", "layers": [
            {"type": "Scale", "factor": 3.0}, {"type": "ReLU"}]})
        np.testing.assert_array_equal(model.forward(np.ones((1, 2), np.float32)), 3.0)
    finally:
        del L.LAYERS["Scale"]


# ---- determinism and learning ----

def ten_steps(threads):
    nn.set_num_threads(threads)
    nn.manual_seed(7)
    rng = np.random.default_rng(7)
    model = nn.Sequential(nn.Dense(300, 256), nn.ReLU(), nn.Dropout(0.1),
                          nn.Dense(256, 300, "tanh"), nn.Dense(300, 10))
    X = rng.standard_normal((300, 300)).astype(np.float32)   # 300x300: parallel kernels
    y = rng.integers(0, 10, 300)
    loss, opt = nn.CrossEntropyLoss(), nn.SGD(lr=0.05, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(10):
        losses.append(loss.forward(model.forward(X), y))
        model.backward(loss.backward())
        opt.step(model.parameters())
    return losses, [p.copy() for p, _ in model.parameters()]


def test_training_bitwise_identical_across_threads(num_threads):
    l1, p1 = ten_steps(1)
    l2, p2 = ten_steps(2)
    assert l1 == l2
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


def fit(model, loss, opt, X, y, epochs, batch=None):
    n = len(X)
    batch = batch or n
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            loss.forward(model.forward(X[idx]), y[idx])
            model.backward(loss.backward(), input_grad=False)
            opt.step(model.parameters())


def test_learns_xor():
    nn.manual_seed(0)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.float32)
    model = nn.Sequential(nn.Dense(2, 8, "tanh"), nn.Dense(8, 1))
    fit(model, nn.BCEWithLogitsLoss(), nn.Adam(lr=0.05), X, y, 500)
    assert np.array_equal((model.predict_proba(X)[:, 0] > 0.5), y.astype(bool))


def spiral(n_per_class=100, seed=0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(2):
        t = np.linspace(0.25, 3 * np.pi, n_per_class)
        r = t / (3 * np.pi)
        X.append(np.c_[r * np.cos(t + c * np.pi), r * np.sin(t + c * np.pi)]
                 + rng.normal(0, 0.01, (n_per_class, 2)))
        y.append(np.full(n_per_class, c))
    return np.concatenate(X).astype(np.float32), np.concatenate(y)


def test_learns_two_class_spiral():
    nn.manual_seed(0)
    X, y = spiral()
    model = nn.Sequential(nn.Dense(2, 64), nn.ReLU(), nn.Dense(64, 64), nn.ReLU(),
                          nn.Dense(64, 2))
    fit(model, nn.CrossEntropyLoss(), nn.Adam(lr=0.01), X, y, 400, batch=50)
    acc = (model.predict(X).argmax(axis=1) == y).mean()
    assert acc == 1.0, acc


def test_training_matches_torch(rng):
    """Three Adam steps of a small MLP, layer for layer against torch.nn."""
    torch = pytest.importorskip("torch")
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(6, 16), nn.ReLU(), nn.Dense(16, 8, "gelu"),
                          nn.Dense(8, 8, "tanh"), nn.Dense(8, 3))
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 8), torch.nn.GELU(),
                                 torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    dense = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
    linear = [layer for layer in tmodel if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for d, lin in zip(dense, linear):
            lin.weight.copy_(torch.tensor(d.weight.T))
            lin.bias.copy_(torch.tensor(d.bias))
    X = rng.standard_normal((10, 6)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    loss, opt = nn.CrossEntropyLoss(), nn.Adam(lr=0.01)
    tloss, topt = torch.nn.CrossEntropyLoss(), torch.optim.Adam(tmodel.parameters(), lr=0.01)
    for _ in range(3):
        value = loss.forward(model.forward(X), y)
        model.backward(loss.backward())
        opt.step(model.parameters())
        topt.zero_grad()
        tvalue = tloss(tmodel(torch.tensor(X)), torch.tensor(y))
        tvalue.backward()
        topt.step()
        assert value == pytest.approx(tvalue.item(), rel=1e-5)
    for d, lin in zip(dense, linear):
        np.testing.assert_allclose(d.weight, lin.weight.detach().numpy().T, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d.bias, lin.bias.detach().numpy(), rtol=1e-4, atol=1e-5)
