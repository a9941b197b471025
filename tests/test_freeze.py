"""Weights packed once for inference: conv2d_pack and the ``packed``
argument of the forward bindings (csrc/conv.c), and Sequential.freeze, a
read-only copy of a model whose convolutions reuse their packed weights.
The packed passes must give the bits of the unpacked ones on every ISA path
and thread count, fall back to packing when a pack does not fit the call,
and the frozen copy must be a snapshot no later change reaches."""
import copy
import pickle

import numpy as np
import pytest

import nncore as nn
from nncore import _core
from nncore.bench.cnn import images
from test_predict_fusion import conv_case as fusion_case

RELU = _core.ACT_CODES["relu"]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def conv_case(rng, n, c, h, o, k, stride, bias=True, bn=False, groups=1):
    """x, w, b, the BatchNorm (its four arrays and eps, or None) and the
    geometry of a k x k convolution of an h x h image, padding k // 2."""
    x, w, b, stats, _ = fusion_case(rng, n, c, h, h, o, k, stride, k // 2, groups, bias, bn)
    geometry = dict(stride=stride, padding=k // 2, dilation=1, groups=groups)
    return x, w, b, None if stats is None else stats + (1e-5,), geometry


def forward(x, w, b, stats, geometry, res=None, packed=None):
    y = np.empty(_core.conv2d_output_shape(x.shape, w.shape, geometry["stride"],
                                           geometry["padding"], 1, geometry["groups"]),
                 np.float32)
    g = (geometry["stride"], geometry["padding"], 1, geometry["groups"])
    if stats is None:
        _core.conv2d_forward(x, w, b, y, *g, RELU, res=res, packed=packed)
    else:
        _core.conv2d_forward_bn(x, w, b, *stats, y, *g, RELU, res=res, packed=packed)
    return y


def pack(x_shape, w, b, stats, geometry):
    return _core.conv2d_pack(x_shape, w, b, *(stats or ()), **geometry)


# (n, c, h, o, k, stride): Winograd (3x3 stride 1, enough channels), the
# direct path (stride 2, 7x7 stage, 5x5, a first layer), and the GEMM paths
# (1x1, depthwise) that pack nothing ahead
CASES = [
    (2, 16, 28, 16, 3, 1),
    (1, 32, 14, 64, 3, 1),
    (3, 32, 14, 64, 3, 2),
    (1, 64, 7, 64, 3, 1),
    (2, 8, 11, 24, 5, 1),
    (1, 1, 28, 32, 3, 1),
    (2, 16, 9, 32, 1, 1),
]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_packed_forward_is_the_unpacked_bitwise(isa, rng, case, bias, bn):
    x, w, b, stats, geometry = conv_case(rng, *case, bias=bias, bn=bn)
    packed = pack(x.shape, w, b, stats, geometry)
    if case[4] == 1:
        assert packed is None               # 1x1: the GEMM reads w as it is
    else:
        assert packed is not None and not packed.flags.writeable
    res = rng.standard_normal(forward(x, w, b, stats, geometry).shape).astype(np.float32)
    for r in (None, res):
        want = forward(x, w, b, stats, geometry, r)
        got = forward(x, w, b, stats, geometry, r, packed)
        np.testing.assert_array_equal(bits(got), bits(want))


def test_packed_forward_pool_is_the_unpacked_bitwise(isa, rng):
    for case in [(2, 1, 28, 32, 3, 1), (2, 32, 14, 64, 3, 1)]:
        x, w, b, _, geometry = conv_case(rng, *case)
        packed = pack(x.shape, w, b, None, geometry)
        out = _core.conv2d_output_shape(x.shape, w.shape, 1, 1, 1, 1)
        pooled = out[:2] + (out[2] // 2, out[3] // 2)
        results = []
        for p in (None, packed):
            z, y = np.empty(out, np.float32), np.empty(pooled, np.float32)
            arg = np.empty(pooled, np.int32)
            _core.conv2d_forward_pool(x, w, b, z, y, arg, 1, 1, 1, 1, RELU, packed=p)
            results.append((y, arg))
        np.testing.assert_array_equal(bits(results[1][0]), bits(results[0][0]))
        np.testing.assert_array_equal(results[1][1], results[0][1])


@pytest.mark.parametrize("case", [(2, 16, 28, 16, 3, 1), (3, 32, 14, 64, 3, 2)])
def test_the_pack_is_read_not_repacked(rng, case):
    """Another pack's weights come out: the call did not pack w itself."""
    x, w, b, _, geometry = conv_case(rng, *case)
    w2 = (w * 2.0 + 0.5).astype(np.float32)
    got = forward(x, w, b, None, geometry, packed=pack(x.shape, w2, b, None, geometry))
    np.testing.assert_array_equal(bits(got), bits(forward(x, w2, b, None, geometry)))


def test_a_pack_that_does_not_fit_the_call_is_ignored(rng, num_threads):
    """Another input size (another path), another ISA, the Winograd switch,
    a truncated or foreign array: the call packs w itself, the same bits."""
    x, w, b, _, geometry = conv_case(rng, 2, 16, 28, 16, 3, 1)
    packed = pack(x.shape, w, b, None, geometry)
    w_other = (w + 1.0).astype(np.float32)
    stale = pack(x.shape, w_other, b, None, geometry)     # wrong values, would show
    small = x[:, :, :5, :5].copy()                        # 5x5: not Winograd
    np.testing.assert_array_equal(bits(forward(small, w, b, None, geometry, packed=stale)),
                                  bits(forward(small, w, b, None, geometry)))
    previous = _core.set_winograd("never")
    try:
        np.testing.assert_array_equal(bits(forward(x, w, b, None, geometry, packed=stale)),
                                      bits(forward(x, w, b, None, geometry)))
    finally:
        _core.set_winograd(previous)
    if len(_core.isa_available()) > 1:
        isa = _core.get_isa()
        _core.set_isa("generic")
        try:
            np.testing.assert_array_equal(bits(forward(x, w, b, None, geometry, packed=stale)),
                                          bits(forward(x, w, b, None, geometry)))
        finally:
            _core.set_isa(isa)
    want = forward(x, w, b, None, geometry)
    for bad in (stale[:stale.size - 1], stale[:8], np.zeros(stale.size, np.float32),
                packed[16:].copy()):
        np.testing.assert_array_equal(bits(forward(x, w, b, None, geometry, packed=bad)),
                                      bits(want))
    # with a BatchNorm folded, a pack made without it does not fit (and back)
    stats = conv_case(rng, 2, 16, 28, 16, 3, 1, bn=True)[3]
    np.testing.assert_array_equal(bits(forward(x, w, b, stats, geometry, packed=packed)),
                                  bits(forward(x, w, b, stats, geometry)))


def test_packed_bad_input(rng):
    x, w, b, _, geometry = conv_case(rng, 1, 16, 28, 16, 3, 1)
    packed = pack(x.shape, w, b, None, geometry)
    for bad, error in [(packed.reshape(-1, 2), TypeError), ([1.0, 2.0], TypeError),
                       (packed.astype(np.float64), TypeError)]:
        with pytest.raises(error, match="packed"):
            forward(x, w, b, None, geometry, packed=bad)
    with pytest.raises(ValueError, match="bf16"):
        _core.conv2d_forward(x, w, b, np.empty((1, 16, 28, 28), np.float32), 1, 1,
                             bf16=True, packed=packed)
    with pytest.raises(ValueError, match="conv2d_pack"):
        _core.conv2d_pack((1, 8, 28, 28), w, b, padding=1)     # 8 channels, weight wants 16
    with pytest.raises(TypeError, match="running_var"):
        _core.conv2d_pack(x.shape, w, b, None, None, np.zeros(16, np.float32), None,
                          padding=1)


# ---- Sequential.freeze ----

def small_resnet():
    nn.manual_seed(3)
    return nn.models.resnet(8, width=16)


def randomize_statistics(model, rng):
    for name, arr in model.named_buffers():
        arr[...] = (rng.uniform(0.5, 2.0, arr.shape) if name.endswith("running_var")
                    else rng.standard_normal(arr.shape) * 0.1)


def nets(rng):
    resnet = small_resnet()
    randomize_statistics(resnet, rng)
    nn.manual_seed(4)
    cnn = nn.models.small_cnn()
    nn.manual_seed(5)
    mixed = nn.Sequential(nn.Conv2d(1, 12, 5, padding=2, activation="relu"),
                          nn.Conv2d(12, 24, 3, stride=2, padding=1, groups=3, bias=False),
                          nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1, groups=24),
                          nn.GlobalAvgPool2d(), nn.Dense(24, 3))
    return {"resnet": resnet, "cnn": cnn, "mixed": mixed}


@pytest.mark.parametrize("name", ["resnet", "cnn", "mixed"])
def test_frozen_predict_is_the_models_bitwise(isa, rng, num_threads, name):
    model = nets(rng)[name]
    frozen = model.freeze()
    X, _ = images(7, 28)
    for threads in (1, 2):
        nn.set_num_threads(threads)
        for n in (1, 3, 7):
            want = model.predict(X[:n])
            for _ in range(2):                  # the first call packs, the second reuses
                np.testing.assert_array_equal(bits(frozen.predict(X[:n])), bits(want))
        np.testing.assert_array_equal(bits(frozen.predict_proba(X[:3])),
                                      bits(model.predict_proba(X[:3])))
    packs = [p for layer in frozen.layers for p in getattr(layer, "_packs", {}).values()]
    assert any(p is not None for p in packs)    # the stem's pack at least is reused
    # an input size the packs were not made for packs anew, the same bits
    X20 = np.ascontiguousarray(X[:2, :, 4:24, 4:24])
    if name != "cnn":                           # its Dense fixes the input size
        np.testing.assert_array_equal(bits(frozen.predict(X20)), bits(model.predict(X20)))


def test_frozen_model_is_a_read_only_snapshot(rng):
    model = small_resnet()
    X, y = images(16, 28)
    before = model.predict(X)
    frozen = model.freeze()
    assert not frozen.training
    for name, arr in frozen.named_tensors():
        assert not arr.flags.writeable, name
    with pytest.raises(ValueError, match="read-only"):
        frozen.layers[0].weight[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        frozen.load_state_dict(model.state_dict())
    # the model trains on; the frozen copy keeps the weights it was frozen with
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.1), batch_size=8, seed=0)
    trainer.fit(X, y, epochs=1)
    assert not np.array_equal(model.predict(X), before)
    np.testing.assert_array_equal(bits(frozen.predict(X)), bits(before))
    np.testing.assert_array_equal(bits(model.freeze().predict(X)), bits(model.predict(X)))


def test_a_pickled_or_copied_frozen_model_stays_read_only(rng):
    """Unpickled arrays come back writable: the copy is frozen again, so no
    pack can outlive an in-place change."""
    frozen = nets(rng)["resnet"].freeze()
    X, _ = images(3, 28)
    want = frozen.predict(X)
    for copy_ in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen)):
        for name, arr in copy_.named_tensors():
            assert not arr.flags.writeable, name
        np.testing.assert_array_equal(bits(copy_.predict(X)), bits(want))
        with pytest.raises(ValueError, match="read-only"):
            copy_.layers[0].weight[...] = 0.0


def test_freeze_draws_pending_weights_once():
    nn.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Dense(4 * 8 * 8, 2))
    frozen = model.freeze()
    X = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(bits(frozen.predict(X)), bits(model.predict(X)))


# ---- a frozen Dense's weights regrouped for one-sample calls ----

@pytest.mark.parametrize("n_out", [65, 128, 300])
def test_dense_split_weights_give_the_same_bits_and_are_read(isa, rng, num_threads, n_out):
    k = 1024                                # large enough for the one-sample chain to split
    x = rng.standard_normal((1, k)).astype(np.float32)
    w = rng.standard_normal((k, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    # the layout: on 2 threads, each thread's block of 64-column units, row by row
    cut = 64 * -(-(n_out // 64) // 2) if n_out >= 128 else 64
    split2 = _core.dense_split_weights(w, 2).ravel()
    np.testing.assert_array_equal(split2[:k * cut].reshape(k, cut), w[:, :cut])
    np.testing.assert_array_equal(split2[k * cut:].reshape(k, n_out - cut), w[:, cut:])
    other = _core.dense_split_weights(2 * w, 2)     # powers of two: exact
    for threads in (1, 2):
        nn.set_num_threads(threads)
        want = np.empty((1, n_out), np.float32)
        _core.dense_forward(x, w, b, want, RELU)
        ref = np.maximum(x.astype(np.float64) @ w + b, 0)
        np.testing.assert_allclose(want, ref, rtol=1e-4, atol=1e-3)
        for team in (1, 2, 3):
            got = np.full((1, n_out), np.nan, np.float32)
            _core.dense_forward(x, w, b, got, RELU, split=(_core.dense_split_weights(w, team),
                                                           team))
            np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"team {team}")
        # read exactly when the call splits into 2 parts: another array's weights come out
        got = np.empty((1, n_out), np.float32)
        _core.dense_forward(x, w, b, got, RELU, split=(other, 2))
        doubled = np.empty((1, n_out), np.float32)
        _core.dense_forward(x, 2 * w, b, doubled, RELU)
        np.testing.assert_array_equal(bits(got), bits(doubled if threads == 2 else want))


def test_frozen_mlp_reads_its_split_weights_one_sample_at_a_time(rng, num_threads):
    # predict's one C chain (ChainPredictor): each thread's columns of the
    # first layer from the frozen copy's regrouped weights, the same bits
    assert _core.dense_chain_parts(1024, 256, 2) == 2
    model = nn.Sequential(nn.Dense(1024, 256), nn.ReLU(), nn.Dense(256, 10)).eval()
    frozen = model.freeze()
    x = rng.standard_normal((1, 1024)).astype(np.float32)
    nn.set_num_threads(2)
    want = model.predict(x)
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(want))
    # read: the regrouped copy doubled in place (powers of two: exact) doubles
    # the first layer's weights for that call, and only on 2 threads
    frozen.layers[0]._packs[2] *= 2
    doubled = copy.deepcopy(model)
    doubled.layers[0].weight = 2 * model.layers[0].weight
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(doubled.predict(x)))
    nn.set_num_threads(1)       # a plan for one thread: the weights as they are
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(want))
    nn.set_num_threads(2)
    np.testing.assert_array_equal(bits(frozen.predict(x)), bits(doubled.predict(x)))


def test_packed_weights_start_on_a_cache_line(rng):
    # read by vector loads: off a 64-byte boundary (where NumPy starts its
    # large arrays, 16 bytes past one) every load touches two cache lines
    w = rng.standard_normal((3136, 128)).astype(np.float32)
    split = _core.dense_split_weights(w, 2)
    assert split.ctypes.data % 64 == 0 and split.shape == w.shape
    for n, c, h, o, k, stride in CASES:
        x, wc, b, stats, geometry = conv_case(rng, n, c, h, o, k, stride, bn=True)
        packed = pack(x.shape, wc, b, stats, geometry)
        assert packed is None or packed.ctypes.data % 64 == 0, (n, c, h, o, k, stride)


@pytest.mark.parametrize("n_in,n_out,team,parts", [
    (3136, 128, 2, 2),          # the small CNN's hidden layer
    (1024, 300, 8, 5),          # 64-column units: ceil(300 / 64) parts at most
    (1024, 65, 4, 2),
    (1024, 64, 2, 1),           # one unit
    (200, 80, 2, 1),            # 16,000 weights: below the split's size
    (256, 64 + 1, 1, 1),        # one thread
])
def test_dense_chain_parts(n_in, n_out, team, parts):
    assert _core.dense_chain_parts(n_in, n_out, team) == parts


def test_dense_split_bad_arguments(rng):
    with pytest.raises(ValueError, match="team in"):
        _core.dense_chain_parts(8, 130, 0)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        _core.dense_chain_parts(-1, 130, 2)
    w = rng.standard_normal((8, 130)).astype(np.float32)
    x, y = np.ones((1, 8), np.float32), np.empty((1, 130), np.float32)
    with pytest.raises(ValueError, match="team must be in"):
        _core.dense_split_weights(w, 0)
    with pytest.raises(ValueError, match="split must be"):
        _core.dense_forward(x, w, None, y, split=(w[:4], 2))
    with pytest.raises(ValueError, match="split must be"):
        _core.dense_forward(x, w, None, y, split=(w, 0))


def test_frozen_dense_regroups_its_weights_once_per_split(rng, num_threads):
    model = nets(rng)["cnn"]
    frozen = model.freeze()
    X, _ = images(2, 28)
    dense = [layer for layer in frozen.layers if isinstance(layer, nn.Dense)]
    nn.set_num_threads(2)
    for _ in range(2):
        np.testing.assert_array_equal(bits(frozen.predict(X[:1])), bits(model.predict(X[:1])))
    assert list(dense[0]._packs) == [2]                 # 128 outputs: two parts, kept
    first = dense[0]._packs[2]
    frozen.predict(X[:1])
    assert dense[0]._packs[2] is first
    assert dense[-1]._packs == {}                       # 10 outputs: never split
    nn.set_num_threads(1)
    np.testing.assert_array_equal(bits(frozen.predict(X[:1])), bits(model.predict(X[:1])))
    assert model.layers[-1]._packs is None              # the model itself keeps none
