"""Conv2d + ReLU + MaxPool2d(2) in one pass (nn_conv2d_forward_pool,
Conv2d.forward_pool): the pooled output and argmax bit for bit those of the
separate kernels (themselves checked against float64 references in
test_conv_kernels.py), here also against a NumPy pooling of the convolution,
on every ISA path, at 1 and 2 threads; and Sequential's training steps with
the fusion equal to those without it."""
import numpy as np
import pytest

import nncore as nn
from nncore import _core

RELU = _core.ACT_CODES["relu"]

# (n, c, h, w, o, kernel, stride, padding, dilation, groups)
CASES = [
    (3, 1, 28, 28, 32, 3, 1, 1, 1, 1),        # the small CNN's conv1
    (2, 32, 14, 14, 64, 3, 1, 1, 1, 1),       # its conv2 (7x7 pooled: narrow rows)
    (2, 3, 9, 7, 20, 3, 1, 1, 1, 1),          # odd rows and columns (floor), partial tile
    (1, 5, 15, 13, 4, 3, 1, 1, 1, 1),         # batch 1 (bands of rows), 4 channels
    (1, 8, 14, 13, 32, 3, 1, 1, 1, 1),        # batch 1, 7 tile rows: ranges of tiles
    (2, 4, 6, 6, 48, 3, 1, 0, 1, 1),          # no padding, three blocks of 16
    (4, 16, 7, 7, 70, 3, 1, 1, 1, 1),         # two channel tiles, the last partial
    (2, 6, 12, 11, 16, 3, 2, 1, 1, 1),        # stride 2
    (2, 4, 10, 10, 8, 3, 1, 2, 2, 2),         # dilation and groups
    (2, 2, 5, 5, 3, 1, 1, 0, 1, 1),           # 1x1: the GEMM path (z written, pooled after)
    (5, 2, 4, 4, 16, 3, 1, 1, 1, 1),          # tiny planes
]


def case_id(case):
    return "x".join(map(str, case))


def separate(x, w, b, kw, bf16=False):
    """conv2d_forward (ReLU epilogue), then maxpool2d_forward(2)."""
    z = np.empty(_core.conv2d_output_shape(x.shape, w.shape, **kw), np.float32)
    _core.conv2d_forward(x, w, b, z, kw["stride"], kw["padding"], kw["dilation"],
                         kw["groups"], RELU, bf16)
    n, o, oh, ow = z.shape
    y = np.empty((n, o, oh // 2, ow // 2), np.float32)
    arg = np.empty(y.shape, np.int32)
    _core.maxpool2d_forward(z, y, arg, 2)
    return z, y, arg


def fused(x, w, b, kw, bf16=False, argmax=True):
    z = np.full(_core.conv2d_output_shape(x.shape, w.shape, **kw), 7.0, np.float32)
    n, o, oh, ow = z.shape
    y = np.full((n, o, oh // 2, ow // 2), np.nan, np.float32)
    arg = np.full(y.shape, -1, np.int32) if argmax else None
    _core.conv2d_forward_pool(x, w, b, z, y, arg, kw["stride"], kw["padding"], kw["dilation"],
                              kw["groups"], RELU, bf16)
    return z, y, arg


def make(rng, case, ties=False, bias=True):
    n, c, h, w, o, k, s, p, d, g = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if ties:    # small integers: equal maxima in a window, and ReLU zeros
        x = rng.integers(-1, 2, x.shape).astype(np.float32)
    wt = rng.standard_normal((o, c // g, k, k)).astype(np.float32)
    if ties:
        wt = rng.integers(-1, 2, wt.shape).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


def pool_ref(z):
    """MaxPool2d(2) of z in NumPy: the first maximum of each window in scan
    order (z holds no NaN here)."""
    n, o, oh, ow = z.shape
    ph, pw = oh // 2, ow // 2
    win = z[:, :, :2 * ph, :2 * pw].reshape(n, o, ph, 2, pw, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, o, ph, pw, 4)
    k = win.argmax(axis=-1)           # numpy: the first maximum
    rows = 2 * np.arange(ph)[:, None] + k // 2
    cols = 2 * np.arange(pw)[None, :] + k % 2
    return win.max(axis=-1), (rows * ow + cols).astype(np.int32)


@pytest.fixture(params=["never", "always"])
def winograd(request):
    """Winograd F(2x2, 3x3) off (3x3 layers take the direct path) and forced
    on where it applies (3x3, stride 1, dilation 1, no groups): it writes z
    and leaves the pooling to maxpool2d_forward, in the fused call as in the
    separate steps."""
    previous = _core.set_winograd(request.param)
    yield request.param
    _core.set_winograd(previous)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_pool_equals_the_separate_kernels(isa, rng, num_threads, winograd, case):
    n, c, h, w, o, k, s, p, d, g = case
    # 3x3: the direct or (forced, stride 1, ungrouped) the Winograd path
    pooled_as_written = k == 3
    for ties in (False, True):
        x, w, b, kw = make(rng, case, ties, bias=not ties)
        z, y, arg = separate(x, w, b, kw)
        want, want_arg = pool_ref(z)
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(arg, want_arg)
        for threads in (1, 2):
            nn.set_num_threads(threads)
            z2, y2, arg2 = fused(x, w, b, kw)
            np.testing.assert_array_equal(y2.view(np.int32), y.view(np.int32),
                                          err_msg=f"y, {threads} thread(s)")
            np.testing.assert_array_equal(arg2, arg, err_msg=f"argmax, {threads} thread(s)")
            if pooled_as_written:   # the unpooled output is never stored
                assert (z2 == 7.0).all()
            else:
                np.testing.assert_array_equal(z2, z)
            _, y3, _ = fused(x, w, b, kw, argmax=False)   # predict's call: no argmax kept
            np.testing.assert_array_equal(y3.view(np.int32), y.view(np.int32),
                                          err_msg=f"y without argmax, {threads} thread(s)")


def test_forward_pool_nan_and_bf16(isa, rng):
    x, w, b, kw = make(rng, (2, 3, 8, 8, 16, 3, 1, 1, 1, 1))
    x[1, 2, 3, 4] = np.nan              # NaN outputs win their windows, as in maxpool2d
    z, y, arg = separate(x, w, b, kw)
    _, y2, arg2 = fused(x, w, b, kw)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(arg2, arg)
    # bf16: the GEMM path with z written, then pooled
    x, w, b, kw = make(rng, (2, 3, 8, 8, 6, 3, 1, 1, 1, 1))
    z, y, arg = separate(x, w, b, kw, bf16=True)
    z2, y2, arg2 = fused(x, w, b, kw, bf16=True)
    for a, c in ((z2, z), (y2, y), (arg2, arg)):
        np.testing.assert_array_equal(a, c)


def test_forward_pool_bad_arguments(rng):
    x, w, b, kw = make(rng, (2, 3, 8, 8, 16, 3, 1, 1, 1, 1))
    z = np.empty((2, 16, 8, 8), np.float32)
    y = np.empty((2, 16, 4, 4), np.float32)
    arg = np.empty(y.shape, np.int32)
    f = _core.conv2d_forward_pool
    with pytest.raises(ValueError, match="conv2d_forward_pool: y has shape"):
        f(x, w, b, z, y[:, :, :3].copy(), arg, 1, 1)
    with pytest.raises(TypeError, match="conv2d_forward_pool: argmax has dtype int64"):
        f(x, w, b, z, y, arg.astype(np.int64), 1, 1)
    with pytest.raises(ValueError, match="conv2d_forward_pool: z has shape"):
        f(x, w, b, z[:1].copy(), y, arg, 1, 1)
    with pytest.raises(ValueError, match="z overlaps y"):
        f(x, w, b, z, z.reshape(-1)[:y.size].reshape(y.shape), arg, 1, 1)
    with pytest.raises(ValueError, match="needs at least 2x2"):
        f(x[:, :, :3, :3].copy(), w, b, np.empty((2, 16, 1, 1), np.float32),
          np.empty((2, 16, 0, 0), np.float32), np.empty((2, 16, 0, 0), np.int32), 1, 0)
    with pytest.raises(ValueError, match="act must be"):
        f(x, w, b, z, y, arg, 1, 1, 1, 1, 3)


# ---- Sequential: the fused training forward ----

def small_cnn(fuse, monkeypatch, own_relu=False):
    """A small CNN with two conv-ReLU-pool stages (own_relu: each ReLU the
    convolution's activation="relu", not a layer of its own); without fuse,
    MaxPool2d declares no fusion (the separate steps run)."""
    with monkeypatch.context() as m:
        if not fuse:
            m.setattr(nn.MaxPool2d, "fuses_after_conv", False)
        nn.manual_seed(0)
        if own_relu:
            model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, activation="relu"),
                                  nn.MaxPool2d(2),
                                  nn.Conv2d(16, 20, 3, padding=1, activation="relu"),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Dense(20 * 3 * 2, 5))
        else:
            model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 20, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Dense(20 * 3 * 2, 5))
    convs = (0, 2) if own_relu else (0, 3)
    for i in convs:         # training and predict fuse the same layers
        assert (getattr(model._plan[i], "func", None) == model[i].forward_pool) == fuse
        assert (getattr(model._infer_plan[i], "func", None) == model[i].infer_pool) == fuse
    return model


@pytest.mark.parametrize("own_relu", [False, True], ids=["relu_layer", "activation_relu"])
def test_sequential_runs_conv_relu_pool_as_one_step(isa, rng, num_threads, monkeypatch,
                                                    own_relu):
    """Forward outputs, input and parameter gradients, and three epochs of
    SGD-momentum training at 1 and 2 threads: the same bits with the fusion
    as without, and (own_relu) as the model with ReLU layers (odd sizes: the
    last row of each pooling is dropped)."""
    x = rng.standard_normal((6, 1, 13, 11)).astype(np.float32)
    x[0, 0, :4] = -5.0                               # whole windows of ReLU zeros
    labels = rng.integers(0, 5, 6)
    results = []
    for fuse, own in ((True, own_relu), (False, own_relu), (True, False)):
        model = small_cnn(fuse, monkeypatch, own)
        out = model.forward(x)
        dx = model.backward(np.cos(np.arange(out.size, dtype=np.float32)).reshape(out.shape))
        got = [out.copy(), dx.copy()] + [g.copy() for _, g in model.parameters()]
        model.eval()
        got.append(model.forward(x).copy())          # evaluation mode: the same plan
        np.testing.assert_array_equal(got[-1], model.predict(x))
        for _ in range(2):                           # one image: recorded, then replayed
            np.testing.assert_array_equal(got[-1][1:2], model.predict(x[1:2]))
        for threads in (1, 2):
            nn.set_num_threads(threads)
            model = small_cnn(fuse, monkeypatch, own)
            trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.05, momentum=0.9),
                                 batch_size=4, seed=0)
            trainer.fit(x, labels, epochs=3, verbose=0)
            got += [p.copy() for p, _ in model.parameters()]
        model = small_cnn(fuse, monkeypatch, own)       # plain SGD: folded into backward
        nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.05), batch_size=4,
                   seed=0).fit(x, labels, epochs=2, verbose=0)
        got += [p.copy() for p, _ in model.parameters()]
        results.append(got)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_no_fusion_where_the_pattern_differs():
    """Only Conv2d (no activation of its own) -> ReLU -> MaxPool2d(2) and
    Conv2d(activation="relu") -> MaxPool2d(2) fuse."""
    def first_step(*layers):
        return getattr(nn.Sequential(*layers)._plan[0], "func", None)
    conv = nn.Conv2d(1, 4, 3)
    assert first_step(conv, nn.ReLU(), nn.MaxPool2d(2)) == conv.forward_pool
    conv = nn.Conv2d(1, 4, 3, activation="relu")
    assert first_step(conv, nn.MaxPool2d(2)) == conv.forward_pool
    for act, pool in (("relu", nn.MaxPool2d(3)), ("relu", nn.MaxPool2d(2, 1)),
                      ("relu", nn.AvgPool2d(2)), ("tanh", nn.MaxPool2d(2))):
        conv = nn.Conv2d(1, 4, 3, activation=act)
        assert first_step(conv, pool) != conv.forward_pool, (act, pool)
    for rest in ([nn.ReLU(), nn.MaxPool2d(3)], [nn.ReLU(), nn.MaxPool2d(2, 1)],
                 [nn.ReLU(), nn.MaxPool2d(2, padding=1)], [nn.ReLU(), nn.AvgPool2d(2)],
                 [nn.Tanh(), nn.MaxPool2d(2)], [nn.MaxPool2d(2), nn.ReLU()]):
        conv = nn.Conv2d(1, 4, 3)
        assert first_step(conv, *rest) != conv.forward_pool, rest
    conv = nn.Conv2d(1, 4, 3, activation="relu")
    assert first_step(conv, nn.ReLU(), nn.MaxPool2d(2)) != conv.forward_pool


@pytest.mark.parametrize("shape", [(2, 3, 8, 20), (2, 3, 14, 14), (2, 3, 9, 9)],
                         ids=["2x2", "2x2-narrow", "3x3"])
def test_maxpool_backward_checks_argmax_in_its_pass(isa, rng, num_threads, shape):
    """maxpool2d_backward checks argmax inside the kernel (no serial pass
    before it): an index outside its window (2x2 windows) or plane raises,
    at any thread count; a valid one runs."""
    k = 3 if shape[2] == 9 else 2
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.empty(_core.pool2d_output_shape(shape, k), np.float32)
    arg = np.empty(y.shape, np.int32)
    _core.maxpool2d_forward(x, y, arg, k)
    plane = shape[2] * shape[3]
    outside = [plane, -1] + ([plane - 1] if k == 2 and shape[3] >= 16 else [])
    for threads in (1, 2):
        nn.set_num_threads(threads)
        _core.maxpool2d_backward(y, arg, np.empty_like(x), k)
        for bad in outside:
            a = arg.copy()
            a[1, 2, -1, 0] = bad
            with pytest.raises(ValueError, match="argmax holds an index outside its pooling"):
                _core.maxpool2d_backward(y, a, np.empty_like(x), k, relu_y=y)
