"""Property-based fuzzing (hypothesis) of matmul, the layers, the losses, the
trainer and the file readers: random shapes, dtypes, layouts and values.
Every case either matches a NumPy float64 reference or raises a clean
ValueError/TypeError/MemoryError (FormatError for files); anything else --
another exception type, a crash, a wrong number -- fails.

Runs derandomized (the same cases every run for a given hypothesis version,
no example database written) on a budget of ``max_examples`` per test, so the
file takes seconds; run with ``--hypothesis-show-statistics`` to see the
counts, and with ``NNCORE_FUZZ_SCALE=20`` for a longer campaign from a random
seed.
"""
import hashlib
import json
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import nncore as nn
from nncore import _core, io as nnio
from nncore.errors import FormatError
from reference import ACTS, act64, act64_backward

F32 = np.float32
CLEAN = (ValueError, TypeError, MemoryError)
EPS32 = float(np.finfo(F32).eps)

# NNCORE_FUZZ_SCALE=k runs k times the examples, from a random seed: a
# deeper campaign, by hand. The default (1) is what CI runs.
SCALE = max(1, int(os.environ.get("NNCORE_FUZZ_SCALE", "1")))
FUZZ = settings(deadline=None, database=None, derandomize=SCALE == 1, print_blob=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def budget(max_examples):
    return settings(FUZZ, max_examples=max_examples * SCALE)


# ---------------------------------------------------------------- operands

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int8, np.uint8, np.bool_]
LAYOUTS = ["C", "F", "strided", "misaligned", "readonly", "list"]


def _values(rng, shape, dtype, special):
    """Values exactly representable in float32 once cast (small ints, or floats
    rounded to float16 precision for float16)."""
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        lo = 0 if np.issubdtype(dtype, np.unsignedinteger) else -8
        return rng.integers(lo, 9, shape).astype(dtype)
    v = rng.uniform(-3, 3, shape).astype(dtype)
    if special and v.size:
        flat = v.reshape(-1)
        for value in special:
            flat[rng.integers(0, flat.size)] = value
    return v


def _layout(arr, layout):
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "strided" and arr.ndim == 2:
        wide = np.repeat(arr, 2, axis=1)
        return wide[:, ::2]
    if layout == "misaligned" and arr.dtype != np.bool_ and arr.size:
        raw = np.zeros(arr.nbytes + 1, np.uint8)[1:]
        out = raw.view(arr.dtype).reshape(arr.shape)
        out[...] = arr
        return out
    if layout == "readonly":
        out = arr.copy()
        out.flags.writeable = False
        return out
    if layout == "list" and arr.size:      # (an empty list has lost its shape)
        return arr.tolist()
    return arr


@st.composite
def operand(draw, shape, allow_special=False):
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    special = []
    if allow_special and np.issubdtype(dtype, np.floating):
        special = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]),
                                max_size=2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = _values(rng, shape, dtype, special)
    return arr, _layout(arr, layout)


class on_isa:
    """Run the block on one kernel path (every ISA this CPU has gets drawn)."""

    def __init__(self, data):
        self.isa = data.draw(st.sampled_from(_core.isa_available()), label="isa")

    def __enter__(self):
        self.previous = _core.get_isa()
        _core.set_isa(self.isa)

    def __exit__(self, *exc):
        _core.set_isa(self.previous)


def _f64(arr):
    """What nncore computes with: the value cast to float32, then exact float64."""
    return np.asarray(arr, dtype=np.float64).astype(F32).astype(np.float64)


# ---------------------------------------------------------------- matmul

dim = st.integers(0, 70)


@budget(150)
@given(data=st.data(), m=dim, n=dim, k=dim, trans_a=st.booleans(), trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, -0.5, 2.0, 0.0]), beta=st.sampled_from([0.0, 1.0, -1.5]),
       with_bias=st.booleans(), activation=st.sampled_from([None, "relu"]))
def test_matmul_matches_numpy(data, m, n, k, trans_a, trans_b, alpha, beta, with_bias,
                              activation):
    a, a_in = data.draw(operand((k, m) if trans_a else (m, k), allow_special=True))
    b, b_in = data.draw(operand((n, k) if trans_b else (k, n), allow_special=True))
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    c = rng.uniform(-1, 1, (m, n)).astype(F32)
    bias = rng.uniform(-1, 1, n).astype(F32) if with_bias else None
    out = c.copy() if beta != 0.0 else None
    with on_isa(data):
        got = nn.matmul(a_in, b_in, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                        out=out, bias=bias, activation=activation)
    assert got.shape == (m, n) and got.dtype == F32
    if out is not None:
        assert got is out
    A = _f64(a).T if trans_a else _f64(a)
    B = _f64(b).T if trans_b else _f64(b)
    with np.errstate(all="ignore"):
        want = alpha * (A @ B) + (beta * c if beta != 0.0 else 0.0)
        bound = abs(alpha) * (np.abs(A) @ np.abs(B)) + abs(beta) * np.abs(c)
    if bias is not None:
        want = want + bias
        bound = bound + np.abs(bias)
    if activation == "relu":
        want = np.maximum(want, 0.0)
    # Entries whose row of op(a) and column of op(b) are finite: NumPy's value
    # within float32 rounding. (Non-finite inputs: only the shape is checked.)
    finite = np.isfinite(A).all(axis=1)[:, None] & np.isfinite(B).all(axis=0)[None, :]
    tol = (k + 3) * EPS32 * bound + 1e-30
    with np.errstate(invalid="ignore"):
        err = np.abs(got.astype(np.float64) - want)
    assert (err[finite] <= tol[finite]).all(), float((err - tol)[finite].max())
    if alpha != 0:     # NaN in a row of op(a): NaN across that row (ReLU keeps NaN too)
        nan_row = np.isnan(A).any(axis=1)
        assert np.isnan(got[nan_row]).all()


@budget(100)
@given(a=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3),
                   st.lists(st.lists(st.floats(allow_nan=True), max_size=3), max_size=3),
                   st.lists(st.integers(), max_size=3)),
       shape=st.lists(st.integers(0, 4), max_size=4),
       dtype=st.sampled_from([np.float32, np.complex64, object, "U2", np.int64, np.bool_]),
       kwargs=st.dictionaries(st.sampled_from(["trans_a", "trans_b", "alpha", "beta",
                                               "activation", "bias", "out"]),
                              st.one_of(st.none(), st.booleans(), st.integers(-2, 2),
                                        st.floats(), st.text(max_size=4),
                                        st.sampled_from(["relu", np.zeros(3, F32),
                                                         np.zeros((3, 3), F32)])),
                              max_size=3))
def test_matmul_garbage_is_a_clean_error(a, shape, dtype, kwargs):
    try:
        b = np.zeros(shape, dtype=dtype)
    except (ValueError, TypeError):
        b = np.zeros((3, 3), F32)
    for x, y in ((a, b), (b, b), (b, a)):
        try:
            got = nn.matmul(x, y, **kwargs)
        except CLEAN:
            continue
        assert isinstance(got, np.ndarray) and got.dtype == F32 and got.ndim == 2


# ---------------------------------------------------------------- layers

LAYER_KINDS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
               "tanh": nn.Tanh, "gelu": nn.GELU, "softmax": nn.Softmax}

layer_spec = st.one_of(
    st.tuples(st.just("dense"), st.integers(1, 24), st.sampled_from(ACTS), st.booleans()),
    st.tuples(st.just("act"), st.sampled_from(list(LAYER_KINDS))),
    st.tuples(st.just("dropout"), st.sampled_from([0.0, 0.3])))


def build(specs, n_in, seed):
    """The model, and its float64 reference as a list of steps."""
    nn.manual_seed(seed)
    layers, steps, width = [], [], n_in
    for spec in specs:
        if spec[0] == "dense":
            _, out, act, bias = spec
            layer = nn.Dense(width, out, activation=act, bias=bias)
            layers.append(layer)
            steps.append(("dense", layer, act))
            width = out
        elif spec[0] == "act":
            layer = LAYER_KINDS[spec[1]]()
            layers.append(layer)
            steps.append(("act", layer, spec[1]))
        else:
            layers.append(nn.Dropout(spec[1]))
            steps.append(("dropout", None, None))
    return nn.Sequential(*layers), steps, width


def forward64(steps, x):
    """(output, per-step cache) in float64 from the model's float32 weights."""
    cache = []
    for kind, layer, act in steps:
        if kind == "dense":
            z = x @ layer.weight.astype(np.float64)
            if layer.bias is not None:
                z = z + layer.bias
            y = act64(act, z)
            cache.append((x, z, y))
        elif kind == "act":
            y = act64(act, x)
            cache.append((x, x, y))
        else:
            y = x
            cache.append(None)
        x = y
    return x, cache


def backward64(steps, cache, dy):
    grads = {}
    for (kind, layer, act), c in zip(reversed(steps), reversed(cache)):
        if kind == "dropout":
            continue
        x, z, y = c
        dz = act64_backward(act, z, y, dy)
        if kind == "dense":
            grads[id(layer)] = (x.T @ dz, dz.sum(axis=0))
            dy = dz @ layer.weight.astype(np.float64).T
        else:
            dy = dz
    return dy, grads


@budget(120)
@given(specs=st.lists(layer_spec, min_size=1, max_size=5), n_in=st.integers(1, 20),
       batch=st.integers(1, 40), seed=st.integers(0, 2**16), data=st.data(),
       chunk=st.integers(1, 50))
def test_layers_match_numpy(specs, n_in, batch, seed, data, chunk):
    model, steps, n_out = build(specs, n_in, seed)
    model.eval()                       # Dropout is the identity: a reference exists
    x, x_in = data.draw(operand((batch, n_in)))
    want, cache = forward64(steps, _f64(x))
    tol = dict(rtol=2e-4, atol=2e-5 * (1 + n_in))
    dy = np.random.default_rng(seed).uniform(-1, 1, (batch, n_out))
    with on_isa(data):
        got = model.forward(x_in)
        assert got.shape == (batch, n_out) and got.dtype == F32
        np.testing.assert_allclose(got, want, **tol)
        np.testing.assert_allclose(model.predict(x_in, batch_size=chunk), want, **tol)
        dx = model.backward(dy.astype(F32))
    dx_want, grads = backward64(steps, cache, _f64(dy.astype(F32)))
    np.testing.assert_allclose(dx, dx_want, rtol=1e-3, atol=1e-4 * (1 + batch))
    for kind, layer, _ in steps:
        if kind == "dense":
            dw, db = grads[id(layer)]
            np.testing.assert_allclose(layer.grad_weight, dw, rtol=1e-3, atol=1e-4 * (1 + batch))
            if layer.bias is not None:
                np.testing.assert_allclose(layer.grad_bias, db, rtol=1e-3,
                                           atol=1e-4 * (1 + batch))


@budget(80)
@given(specs=st.lists(layer_spec, min_size=1, max_size=3), n_in=st.integers(1, 8),
       shape=st.lists(st.integers(0, 9), min_size=0, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64, np.int16, np.complex64, object, "U3",
                              np.bool_]),
       train=st.booleans(), seed=st.integers(0, 100))
def test_layers_wrong_input_is_a_clean_error(specs, n_in, shape, dtype, train, seed):
    model, _, _ = build(specs, n_in, seed)
    model.train(train)
    x = np.ones(shape, dtype=dtype) if dtype != "U3" else np.full(shape, "1.5")
    for call in (model.forward, model.predict, model.predict_proba):
        try:
            out = call(x)
        except CLEAN:
            continue
        # accepted: a real array, batch first (N-D since the layer protocol), whose
        # samples have the shape the model declares, if it declares one
        assert x.ndim >= 2 and x.shape[0] > 0 and np.asarray(out).dtype == F32
        assert model.input_shape is None or x.shape[1:] == model.input_shape
    try:
        model.backward(np.ones(shape, dtype=F32))
    except CLEAN:
        pass


# ---------------------------------------------------------------- losses

def loss64(kind, x, t, delta=1.0):
    """(mean loss, gradient) in float64."""
    if kind == "mse":
        d = x - t
        return (d * d).mean(), 2 * d / d.size
    if kind == "huber":
        d = x - t
        quad = np.abs(d) < delta
        value = np.where(quad, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta)).mean()
        return value, np.where(quad, d, delta * np.sign(d)) / d.size
    if kind == "bce":
        value = (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).mean()
        with np.errstate(over="ignore"):
            return value, (1 / (1 + np.exp(-x)) - t) / x.size
    m = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    value = -logp[np.arange(m), t].mean()
    g = np.exp(logp)
    g[np.arange(m), t] -= 1
    return value, g / m


LOSSES = {"mse": nn.MSELoss, "huber": lambda: nn.HuberLoss(0.7), "bce": nn.BCEWithLogitsLoss,
          "ce": nn.CrossEntropyLoss}


@budget(150)
@given(kind=st.sampled_from(list(LOSSES)), m=st.integers(1, 70), c=st.integers(1, 12),
       scale=st.sampled_from([1.0, 30.0, 1e3]), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_losses_match_numpy(kind, m, c, scale, seed, data):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, c)) * scale).astype(F32)
    if kind == "ce":
        t = rng.integers(0, c, m)
        t_in = data.draw(st.sampled_from([t, t.astype(np.int32), t.astype(np.uint8) if c < 256
                                          else t, t.reshape(-1, 1), t.tolist()]))
        t64 = t
    else:
        t = rng.random((m, c)).astype(F32) if kind == "bce" else \
            (rng.standard_normal((m, c)) * scale).astype(F32)
        _, t_in = data.draw(st.sampled_from([(t, t), (t, t.astype(np.float64)),
                                             (t, np.asfortranarray(t)),
                                             (t, t.reshape(-1) if c == 1 else t)]))
        t64 = t.astype(np.float64)
    x_in = _layout(x, data.draw(st.sampled_from(LAYOUTS)))
    loss = LOSSES[kind]()
    with on_isa(data):
        value = loss.forward(x_in, t_in)
    grad = loss.backward()
    want, want_grad = loss64(kind, x.astype(np.float64), t64, 0.7)
    assert math.isclose(value, want, rel_tol=1e-5, abs_tol=1e-6 * (1 + abs(want)) + 1e-7)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6 / (m * c) + 1e-9)


@budget(100)
@given(kind=st.sampled_from(list(LOSSES)), pred_shape=st.lists(st.integers(0, 5), max_size=3),
       target_shape=st.lists(st.integers(0, 5), max_size=3),
       target_dtype=st.sampled_from([np.float32, np.int64, np.uint64, np.float64, np.complex64,
                                     object, np.bool_]),
       fill=st.sampled_from([0, 1, -1, 7, 2**63, np.nan, np.inf]))
def test_losses_wrong_input_is_a_clean_error(kind, pred_shape, target_shape, target_dtype,
                                             fill):
    pred = np.zeros(pred_shape, F32)
    try:
        with np.errstate(invalid="ignore"):
            target = np.full(target_shape, fill, dtype=target_dtype)
    except (OverflowError, ValueError, TypeError):
        target = np.zeros(target_shape)
    loss = LOSSES[kind]()
    try:
        value = loss.forward(pred, target)
    except CLEAN:
        return
    assert isinstance(value, float)
    assert loss.backward().shape == (pred.reshape(len(pred), -1) if pred.ndim == 1
                                     else pred).shape


# ---------------------------------------------------------------- trainer

OPTIMIZERS = [lambda: nn.SGD(0.05), lambda: nn.SGD(0.05, momentum=0.9, nesterov=True),
              lambda: nn.Adam(0.01), lambda: nn.AdamW(0.01), lambda: nn.RMSprop(0.01)]


@budget(60)
@given(n=st.integers(1, 60), features=st.integers(1, 8), classes=st.integers(2, 5),
       hidden=st.integers(1, 16), batch=st.integers(1, 70), epochs=st.integers(0, 3),
       opt=st.integers(0, len(OPTIMIZERS) - 1), seed=st.integers(0, 1000),
       layout=st.sampled_from(LAYOUTS))
def test_fit_equals_the_plain_loop(n, features, classes, hidden, batch, epochs, opt, seed,
                                   layout):
    """Trainer.fit (no shuffling) takes exactly the steps of the documented
    loop, for any data layout: the weights come out bitwise equal."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(F32)
    y = rng.integers(0, classes, n)

    def model():
        nn.manual_seed(seed)
        return nn.Sequential(nn.Dense(features, hidden), nn.ReLU(), nn.Dense(hidden, classes))

    trained = model()
    trainer = nn.Trainer(trained, nn.CrossEntropyLoss(), OPTIMIZERS[opt](), batch_size=batch,
                         shuffle=False, seed=seed)
    history = trainer.fit(_layout(X, layout), y, epochs, verbose=0)
    assert len(history) == epochs
    ref, loss, optimizer = model(), nn.CrossEntropyLoss(), OPTIMIZERS[opt]()
    for _ in range(epochs):
        for lo in range(0, n, batch):
            loss.forward(ref.forward(X[lo:lo + batch]), y[lo:lo + batch])
            ref.backward(loss.backward(), input_grad=False)
            optimizer.step(ref.parameters())
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(trained.state_dict()[key], value, err_msg=key)


@budget(60)
@given(X_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       y_shape=st.lists(st.integers(0, 6), min_size=0, max_size=2),
       X_fill=st.sampled_from([0.5, np.nan, np.inf, 1e39, "a", None]),
       y_fill=st.sampled_from([0, 1, 2, 3, -1, 0.5, np.nan, 2**70, "b"]),
       loss=st.sampled_from(["ce", "mse", "bce"]), batch=st.integers(1, 8),
       split=st.sampled_from([0.0, 0.3, 0.99]))
def test_fit_wrong_input_is_a_clean_error(X_shape, y_shape, X_fill, y_fill, loss, batch, split):
    n_out = 1 if loss == "bce" else 3
    model = nn.Sequential(nn.Dense(4, 5), nn.Tanh(), nn.Dense(5, n_out))
    trainer = nn.Trainer(model, {"ce": nn.CrossEntropyLoss, "mse": nn.MSELoss,
                                 "bce": nn.BCEWithLogitsLoss}[loss](), nn.SGD(0.1),
                         batch_size=batch)
    X = np.full(X_shape, X_fill, dtype=object if X_fill is None else None)
    y = np.full(y_shape, y_fill, dtype=object if isinstance(y_fill, int) and y_fill > 2**62
                else None)
    try:
        history = trainer.fit(X, y, 1, verbose=0, validation_split=split)
    except CLEAN:
        return
    except nn.NonFiniteLossError:
        return
    assert len(history) == 1
    assert all(np.isfinite(p).all() for p, _ in model.parameters())


# ---------------------------------------------------------------- files

def _model_file(tmp_path):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(3, 4, activation="relu"), nn.Dropout(0.1), nn.Dense(4, 2))
    path = tmp_path / "m.nnc"
    nn.save(model, path)
    return model, path


def _frame(header, body=b""):
    """An archive with this exact header and data bytes and a valid checksum."""
    prefix = struct.pack("<6sHQ", b"NNCORE", 1, len(header))
    pad = b"\0" * (-(len(prefix) + len(header)) % 64)
    data = prefix + header + pad + body
    return data + hashlib.sha256(data).digest()


def _parts(raw):
    """(header dict, data bytes) of an archive."""
    n = struct.unpack("<Q", raw[8:16])[0]
    start = 16 + n + (-(16 + n) % 64)
    return json.loads(raw[16:16 + n]), raw[start:-32]


def _load_cleanly(path):
    try:
        return nn.load(path)
    except FormatError:
        return None


@budget(100)
@given(data=st.data())
def test_load_mutated_files(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("mut")
    model, path = _model_file(tmp_path)
    raw = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "splice", "random"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "append":
        raw += data.draw(st.binary(min_size=1, max_size=100))
    elif how == "splice":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i + data.draw(st.integers(0, 20))] = data.draw(st.binary(max_size=40))
    else:
        raw = bytearray(data.draw(st.binary(max_size=300)))
    path.write_bytes(bytes(raw))
    loaded = _load_cleanly(path)
    if loaded is not None:      # the checksum lets through only an unchanged file
        np.testing.assert_array_equal(loaded.predict(np.ones((2, 3), F32)),
                                      model.predict(np.ones((2, 3), F32)))


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _mutate(value, data, depth=0):
    """Replace one random node of a JSON value with a random JSON value."""
    if depth > 6 or not isinstance(value, (dict, list)) or not value \
            or data.draw(st.integers(0, 3)) == 0:
        return data.draw(json_value)
    if isinstance(value, dict):
        key = data.draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(value[key], data, depth + 1)}
    i = data.draw(st.integers(0, len(value) - 1))
    return value[:i] + [_mutate(value[i], data, depth + 1)] + value[i + 1:]


@budget(200)
@given(data=st.data())
def test_load_hostile_headers_with_valid_checksums(tmp_path_factory, data):
    """Headers rewritten node by node (sizes, dtypes, layer configs, estimator
    fields...), then re-framed with a correct checksum: load either rebuilds
    a model consistent with its tensors or raises FormatError."""
    tmp_path = tmp_path_factory.mktemp("hdr")
    _, path = _model_file(tmp_path)
    header, body = _parts(path.read_bytes())
    if data.draw(st.booleans()):     # an estimator file has more to attack
        est = nn.NNClassifier(hidden_layer_sizes=(3,), max_iter=1, random_state=0)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(np.random.default_rng(0).standard_normal((12, 3)), np.arange(12) % 3)
        nn.save(est, path)
        header, body = _parts(path.read_bytes())
    header = _mutate(header, data)
    text = json.dumps(header, allow_nan=False).encode()
    path.write_bytes(_frame(text, body))
    loaded = _load_cleanly(path)
    if loaded is not None:
        from nncore.serialize import dense_layers
        model = getattr(loaded, "model_", loaded)
        n_in = dense_layers(model)[0].in_features
        out = model.predict(np.ones((2, n_in), F32))
        assert out.shape[0] == 2 and np.isfinite(out).all()


tensor = st.tuples(st.sampled_from(list(nnio.DTYPES)),
                   st.lists(st.integers(0, 5), max_size=4), st.integers(0, 2**32 - 1))


@budget(80)
@given(meta=st.dictionaries(st.text(max_size=6), json_value, max_size=4),
       tensors=st.dictionaries(st.text(min_size=1, max_size=6), tensor, max_size=4))
def test_archive_round_trip(tmp_path_factory, meta, tensors):
    arrays = {}
    for name, (dtype, shape, seed) in tensors.items():
        rng = np.random.default_rng(seed)
        dt = nnio.DTYPES[dtype]
        arrays[name] = ((rng.standard_normal(shape) * 100).astype(dt) if dt.kind == "f"
                        else rng.integers(0, 200, shape).astype(dt))
    path = tmp_path_factory.mktemp("rt") / "a.nnc"
    nnio.write_archive(path, meta, arrays)
    meta2, arrays2 = nnio.read_archive(path)
    assert meta2 == meta and list(arrays2) == list(arrays)
    for name, arr in arrays.items():
        assert arrays2[name].dtype == arr.dtype and arrays2[name].shape == arr.shape
        np.testing.assert_array_equal(arrays2[name], arr)


@budget(100)
@given(entries=st.lists(st.dictionaries(
           st.sampled_from(["name", "dtype", "shape", "offset", "nbytes", "extra"]),
           st.one_of(json_value, st.sampled_from(["float32", "int64", "x"]),
                     st.lists(st.integers(-1, 2**40), max_size=4)), max_size=6), max_size=3),
       body=st.binary(max_size=200))
def test_read_archive_hostile_tensor_tables(tmp_path_factory, entries, body):
    path = tmp_path_factory.mktemp("tbl") / "a.nnc"
    text = json.dumps({"meta": {}, "tensors": entries}).encode()
    path.write_bytes(_frame(text, body))
    try:
        meta, tensors = nnio.read_archive(path)
    except FormatError:
        return
    assert meta == {} and len(tensors) == len(entries)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 63, 64, 65, 200])
def test_load_short_and_random_files(tmp_path, size):
    rng = np.random.default_rng(size)
    for prefix in (b"", b"NNCORE", b"NNCORE\x01\x00"):
        path = tmp_path / f"r{size}.nnc"
        path.write_bytes((prefix + rng.bytes(size))[:max(size, len(prefix))])
        with pytest.raises(FormatError):
            nn.load(path)
