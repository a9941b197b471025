"""Predict's fusions and buffers: a convolution that adds a residual and
applies the ReLU as it writes its output (a ResNet block's sum and the ReLU
after it), the buffers predict reuses by liveness, and its sub-batches. Each
must give the bits of the unfused steps on every ISA path and thread count."""
import os
import threading

import numpy as np
import pytest

import nncore as nn
from nncore import _core
from nncore.layers import sequential
from nncore.layers.base import Buffers
from nncore.layers.residual import Residual

RELU = _core.ACT_CODES["relu"]
NONE = _core.ACT_CODES[None]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def conv_case(rng, n, c, h, w, o, k, stride, padding, groups=1, bias=True, bn=False):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c // groups, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    stats = None
    if bn:
        stats = (rng.uniform(0.5, 1.5, o).astype(np.float32),
                 rng.standard_normal(o).astype(np.float32) * 0.1,
                 rng.standard_normal(o).astype(np.float32) * 0.1,
                 rng.uniform(0.5, 2.0, o).astype(np.float32))
    shape = _core.conv2d_output_shape(x.shape, wt.shape, stride, padding, 1, groups)
    res = rng.standard_normal(shape).astype(np.float32)
    res.flat[::7] = -0.0                      # the sign of zero survives both ways
    res.flat[3] = np.nan                      # NaN propagates both ways
    return x, wt, b, stats, res


def run(x, wt, b, stats, stride, padding, groups, act, res=None):
    y = np.empty(_core.conv2d_output_shape(x.shape, wt.shape, stride, padding, 1, groups),
                 np.float32)
    if stats is None:
        _core.conv2d_forward(x, wt, b, y, stride, padding, 1, groups, act, res=res)
    else:
        _core.conv2d_forward_bn(x, wt, b, *stats, 1e-5, y, stride, padding, 1, groups, act,
                                res=res)
    return y


# direct path (3x3, several channel tiles, stride 2), 1x1 stride 1 (GEMM on x),
# few outputs (im2col), depthwise (the shift loops)
CASES = [
    dict(n=3, c=16, h=9, w=11, o=16, k=3, stride=1, padding=1),
    dict(n=2, c=8, h=13, w=7, o=40, k=3, stride=2, padding=1),
    dict(n=1, c=32, h=28, w=28, o=32, k=3, stride=1, padding=1),
    dict(n=2, c=5, h=6, w=6, o=24, k=1, stride=1, padding=0),
    dict(n=2, c=4, h=7, w=7, o=3, k=3, stride=1, padding=1),
    dict(n=2, c=6, h=8, w=8, o=6, k=3, stride=1, padding=1, groups=6),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bn", [False, True])
def test_conv_with_residual_is_the_sum_then_relu_bitwise(isa, rng, num_threads, case, bn):
    x, wt, b, stats, res = conv_case(rng, bias=not bn, bn=bn, **case)
    s, p, g = case["stride"], case["padding"], case.get("groups", 1)
    ref = run(x, wt, b, stats, s, p, g, NONE)
    np.add(ref, res, out=ref)
    _core.act_forward(RELU, ref, ref)
    for threads in (1, 2):
        nn.set_num_threads(threads)
        for act in (RELU, NONE):
            got = run(x, wt, b, stats, s, p, g, act, res)
            want = ref if act == RELU else run(x, wt, b, stats, s, p, g, NONE) + res
            assert np.array_equal(bits(got), bits(want)), (threads, act)


def test_conv_with_residual_against_float64(rng):
    x, wt, b, _, res = conv_case(rng, 2, 8, 10, 10, 16, 3, 1, 1)
    res.flat[3] = 0.0
    got = run(x, wt, b, None, 1, 1, 1, RELU, res)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros(got.shape)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 10, j:j + 10], wt[:, :, i, j])
    want = np.maximum(conv + b[:, None, None] + res, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_residual_bad_input(rng):
    x, wt, b, stats, res = conv_case(rng, 2, 8, 10, 10, 16, 3, 1, 1)
    y = np.empty_like(res)
    with pytest.raises(ValueError, match="res has shape"):
        _core.conv2d_forward(x, wt, b, y, 1, 1, res=res[:1])
    with pytest.raises(ValueError, match="res overlaps y|y overlaps res"):
        _core.conv2d_forward(x, wt, b, y, 1, 1, res=y)
    with pytest.raises(ValueError, match="bf16"):
        _core.conv2d_forward(x, wt, b, y, 1, 1, bf16=True, res=res)
    with pytest.raises(TypeError, match="res"):
        _core.conv2d_forward(x, wt, b, y, 1, 1, res=res.tolist())


# ---- the predict plan ----

def randomize_statistics(model, rng):
    """BatchNorm statistics and biases away from their defaults, so a fold
    or a sum in the wrong place shows."""
    for name, a in model.named_tensors():
        if "running_var" in name:
            a[...] = rng.uniform(0.5, 2.0, a.shape)
        elif "running_mean" in name or name.endswith("bias"):
            a[...] = rng.normal(0.0, 0.3, a.shape)


def unfused_predict(model, x, monkeypatch):
    """predict with the Residual fusion off: the body, the shortcut, their
    sum and the ReLU as separate steps (the plan rebuilt without it)."""
    with monkeypatch.context() as m:
        m.setattr(Residual, "_body_res", lambda self: None)
        return nn.Sequential(*model.layers).predict(x)


def count_residual_calls(monkeypatch):
    calls = []
    for name in ("conv2d_forward", "conv2d_forward_bn"):
        real = getattr(_core, name)

        def counting(*args, _real=real, **kwargs):
            if kwargs.get("res") is not None:
                calls.append(1)
            return _real(*args, **kwargs)
        monkeypatch.setattr(_core, name, counting)
    return calls


def assert_fused_bitwise(model, x, monkeypatch, sums):
    """predict on 1 and 2 threads: the unfused bits, with ``sums`` residual
    sums run inside their convolutions."""
    for threads in (1, 2):
        nn.set_num_threads(threads)
        want = unfused_predict(model, x, monkeypatch)
        fresh = nn.Sequential(*model.layers)     # its first predict runs the Python steps
        calls = count_residual_calls(monkeypatch)
        got = fresh.predict(x)
        monkeypatch.undo()
        assert np.array_equal(bits(got), bits(want)), threads
        assert len(calls) == sums
        # the second replays the recorded kernel calls
        assert np.array_equal(bits(fresh.predict(x)), bits(want)), threads


@pytest.mark.parametrize("skip", [True, False])
def test_resnet_predict_fused_equals_unfused(isa, rng, num_threads, monkeypatch, skip):
    nn.manual_seed(3)
    model = nn.models.resnet(8, skip=skip, width=8)      # projections at both stride-2 stages
    randomize_statistics(model, rng)
    model.eval()
    x = rng.standard_normal((5, 1, 12, 12)).astype(np.float32)
    assert_fused_bitwise(model, x, monkeypatch, 3 if skip else 0)   # every block's sum


def onnx_style_net(rng):
    """Blocks as nncore.onnx.load builds them from PyTorch (BatchNorm
    folded into the convolutions by the export): Residual(Sequential(Conv,
    ReLU, Conv), shortcut) then ReLU; and a block whose body is one Conv2d."""
    nn.manual_seed(4)
    block = nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1)))
    proj = nn.Residual(nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 16, 3, padding=1)),
                       nn.Sequential(nn.Conv2d(8, 16, 1, stride=2)))
    single = nn.Residual(nn.Conv2d(16, 16, 3, padding=1))
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), block, nn.ReLU(), proj,
                         nn.ReLU(), single, nn.ReLU(), nn.GlobalAvgPool2d(), nn.Dense(16, 4))


def test_onnx_style_blocks_fuse_bitwise(isa, rng, num_threads, monkeypatch):
    model = onnx_style_net(rng)
    randomize_statistics(model, rng)
    model.eval()
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    assert_fused_bitwise(model, x, monkeypatch, 3)


def test_residual_without_relu_after_and_no_fusable_tail(rng, monkeypatch):
    """A block with no activation after it adds the shortcut in its conv with
    no activation; a body ending in BatchNorm1d-free Dense does not fuse."""
    nn.manual_seed(5)
    conv_block = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1),
                               nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))),
                               nn.GlobalAvgPool2d())
    dense_block = nn.Sequential(nn.Dense(6, 6), nn.Residual(nn.Sequential(nn.Dense(6, 6))),
                                nn.ReLU())
    for model, x in ((conv_block, rng.standard_normal((2, 2, 5, 5))),
                     (dense_block, rng.standard_normal((3, 6)))):
        model.eval()
        x = x.astype(np.float32)
        want = unfused_predict(model, x, monkeypatch)
        assert np.array_equal(bits(model.predict(x)), bits(want))
        # the same numbers as the training-mode forward (no BatchNorm, no Dropout)
        np.testing.assert_array_equal(model.predict(x), model.forward(x))


def test_residual_shape_mismatch_named(rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1),
                          nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3)),
                                      nn.Sequential(nn.Conv2d(4, 4, 1))), nn.ReLU())
    with pytest.raises(ValueError, match="shortcut"):
        model.predict(rng.standard_normal((1, 1, 6, 6)).astype(np.float32))


# ---- buffers and sub-batches ----

def test_take_never_hands_out_a_live_or_held_buffer():
    ws = Buffers("test")
    a = ws.take((2, 3, 4, 4))
    b = ws.take((2, 3, 4, 4), a)
    assert not np.shares_memory(a, b)
    ws.hold(a)
    c = ws.take((2, 3, 8, 8), b)             # grows a new buffer: a is held, b live
    assert not np.shares_memory(c, a) and not np.shares_memory(c, b)
    d = ws.take((2, 3, 2, 2), c)
    assert not np.shares_memory(d, a) and not np.shares_memory(d, c)
    ws.release()
    e = ws.take((2, 3, 4, 4), c, d)          # a is free again: its buffer is reused
    assert np.shares_memory(e, a)


def test_predict_memory_is_a_few_activations(rng):
    """predict keeps a few activations of a sub-batch, not one buffer per
    layer: ResNet-20's workspace within 5 of its widest activation at the
    sub-batch predict runs (one per layer would be ~60 of them)."""
    nn.manual_seed(0)
    model = nn.models.resnet(20).eval()
    x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    model.predict(x)
    ws = model._workspaces[-1]
    rows = model._predict_rows(x.shape[1:])
    assert 1 <= rows < 256
    widest = max(int(np.prod(s)) for s in model.infer_shapes(x.shape[1:])) * 4
    assert ws.nbytes() <= 5 * widest * rows
    layers = sum(1 for _ in model.named_tensors())
    assert ws.nbytes() < layers * widest * rows / 10


def sub_batches_of(monkeypatch, nbytes):
    """predict's sub-batches forced to ``nbytes`` of widest stored
    activation, and every batch above that split into them."""
    monkeypatch.setattr(sequential, "_SUB_BATCH_BYTES", nbytes)
    monkeypatch.setattr(sequential, "_ONE_CALL_BYTES", nbytes)


def sysfs_l2_bytes():
    """cpu0's L2 size from sysfs, or None."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(root)):
            with open(os.path.join(root, index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(root, index, "size")) as f:
                size = f.read().strip()
            return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]]
    except (OSError, ValueError, KeyError):
        return None
    return None


def test_sub_batches_keep_their_widest_stored_activation_in_a_quarter_of_l2():
    """predict's sub-batch rows for images: the widest activation it stores
    within a quarter of one core's L2 as read at run time, where a
    convolution's output pooled as it is written (the small CNN's 32 x 28 x
    28) is not stored and does not count."""
    l1d, l2 = _core.cache_sizes()
    assert 4 << 10 <= l1d <= 1 << 20 and 64 << 10 <= l2 <= 256 << 20
    if sysfs_l2_bytes() is not None:
        assert l2 == sysfs_l2_bytes()
    assert sequential._SUB_BATCH_BYTES == l2 // 4
    resnet = nn.models.resnet(20)
    assert resnet._predict_rows((1, 28, 28)) == max(1, l2 // 4 // (16 * 28 * 28 * 4))
    cnn = nn.models.small_cnn()
    assert cnn._predict_rows((1, 28, 28)) == max(1, l2 // 4 // (32 * 14 * 14 * 4))
    # the same convolution with a ReLU layer after it and no pooling stores its output
    unpooled = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Flatten())
    assert unpooled._predict_rows((1, 28, 28)) == max(1, l2 // 4 // (32 * 28 * 28 * 4))


def test_small_batches_of_images_run_as_one_call(rng, monkeypatch):
    """A batch whose widest stored activation fits _ONE_CALL_BYTES runs as
    one call (the threads split each layer); a larger one in sub-batches of
    _SUB_BATCH_BYTES, with the same bits."""
    nn.manual_seed(2)
    model = nn.models.small_cnn(image_size=12).eval()
    widest = 32 * 6 * 6 * 4        # the first pooling's output, per image
    assert model._widest_stored((1, 12, 12)) == widest
    monkeypatch.setattr(sequential, "_ONE_CALL_BYTES", 7 * widest)
    monkeypatch.setattr(sequential, "_SUB_BATCH_BYTES", 3 * widest)
    calls = []
    real = sequential.Sequential._infer_recorded

    def spy(self, X, ws):
        calls.append(len(X))
        return real(self, X, ws)
    monkeypatch.setattr(sequential.Sequential, "_infer_recorded", spy)
    x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    whole = model.predict(x[:7])
    assert calls == [7]
    calls.clear()
    split = model.predict(x)
    assert sum(calls) == 8 and max(calls) <= 3
    assert np.array_equal(bits(split[:7]), bits(whole))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 41, 100])
def test_predict_does_not_depend_on_the_sub_batch(rng, num_threads, monkeypatch, n):
    """Sub-batches (forced to ~3 images here) change no bit: one call over
    all rows, the sub-batches, and the user's chunks of >= 2 rows agree."""
    nn.manual_seed(1)
    model = nn.models.small_cnn(image_size=12).eval()
    x = rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    sub_batches_of(monkeypatch, 1 << 40)
    full = model.predict(x)
    assert model._predict_rows(x.shape[1:]) >= 100
    # the widest activation predict stores: the first pooling's, 32 x 6 x 6
    sub_batches_of(monkeypatch, 3 * 32 * 6 * 6 * 4)
    small = nn.Sequential(*model.layers).eval()
    assert small._predict_rows(x.shape[1:]) == 3
    for threads in (1, 2):
        nn.set_num_threads(threads)
        assert np.array_equal(bits(small.predict(x)), bits(full))
        for batch_size in (2, 4, 7, 1024):
            if n % batch_size != 1:
                assert np.array_equal(bits(small.predict(x, batch_size=batch_size)), bits(full))


def test_sub_batches_cover_the_rows_without_one_row_parts():
    for n in range(1, 60):
        for batch_size in (1, 2, 5, 16, 1024):
            for rows, multiple in ((1, 1), (2, 1), (3, 1), (7, 1), (1 << 62, 1), (3, 2),
                                   (7, 2), (5, 3)):
                parts = list(sequential._sub_batches(n, batch_size, rows, multiple))
                assert parts[0][0] == 0 and parts[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
                for start, stop in parts:
                    chunk = min(batch_size, n - start // batch_size * batch_size)
                    assert stop - start >= min(2, chunk)
                    assert stop - start <= max(rows, 3)


@pytest.mark.parametrize("skip", [True, False])
def test_predict_workers_give_the_bits_of_one_thread(rng, num_threads, monkeypatch, skip):
    """With two threads and several sub-batches, predict runs the parts in
    two workers of one thread each: the same bits as one thread, and as one
    call over all rows (a ResNet: fused blocks, projection shortcuts)."""
    nn.manual_seed(3)
    model = nn.models.resnet(8, skip=skip, width=8).eval()
    x = rng.standard_normal((23, 1, 10, 10)).astype(np.float32)
    nn.set_num_threads(1)
    sub_batches_of(monkeypatch, 1 << 40)
    whole = model.predict(x)
    sub_batches_of(monkeypatch, 3 * 8 * 10 * 10 * 4)
    model = nn.Sequential(*model.layers).eval()
    one = model.predict(x)
    calls = []
    real = sequential.Sequential._infer_parts

    def spy(self, X, parts, ws, out):
        calls.append((parts, _core.get_num_threads(), threading.get_ident()))
        return real(self, X, parts, ws, out)

    monkeypatch.setattr(sequential.Sequential, "_infer_parts", spy)
    nn.set_num_threads(2)
    two = model.predict(x)
    assert len(calls) == 2 and all(threads == 1 for _, threads, _ in calls)
    assert calls[0][2] != calls[1][2]                               # two threads
    assert sorted(p for parts, _, _ in calls for p in parts) == \
        list(sequential._sub_batches(23, 1024, 3, 2))               # every part once
    assert nn.get_num_threads() == 2                                # this thread's count restored
    assert np.array_equal(bits(one), bits(whole))
    assert np.array_equal(bits(two), bits(whole))


def test_predict_worker_error_reaches_the_caller(rng, num_threads, monkeypatch):
    nn.manual_seed(4)
    model = nn.models.small_cnn(image_size=12).eval()
    sub_batches_of(monkeypatch, 3 * 32 * 6 * 6 * 4)
    model = nn.Sequential(*model.layers).eval()
    x = rng.standard_normal((12, 1, 12, 12)).astype(np.float32)
    real = sequential.Sequential._infer_recorded

    def failing(self, X, ws):
        if X.base is not None and X.__array_interface__["data"][0] != \
                x.__array_interface__["data"][0]:
            raise RuntimeError("boom in a later part")
        return real(self, X, ws)

    monkeypatch.setattr(sequential.Sequential, "_infer_recorded", failing)
    nn.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom in a later part"):
        model.predict(x)
    monkeypatch.setattr(sequential.Sequential, "_infer_recorded", real)
    assert np.isfinite(model.predict(x)).all()       # the pool still works


def test_predict_workers_after_fork(rng, num_threads, monkeypatch):
    """A forked child has none of the parent's pool threads: it makes its
    own pool instead of waiting forever on the inherited one."""
    multiprocessing = pytest.importorskip("multiprocessing")
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    nn.manual_seed(5)
    model = nn.models.small_cnn(image_size=12).eval()
    sub_batches_of(monkeypatch, 3 * 32 * 6 * 6 * 4)
    model = nn.Sequential(*model.layers).eval()
    x = rng.standard_normal((12, 1, 12, 12)).astype(np.float32)
    nn.set_num_threads(2)
    expected = model.predict(x)                      # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(model.predict, (x,)).get(timeout=60)
    assert np.array_equal(bits(got), bits(expected))


def test_feature_vectors_are_not_sub_batched():
    """An MLP's GEMMs want many rows: 2-D input runs in the user's chunks."""
    model = nn.Sequential(nn.Dense(4, 100000))
    assert model._predict_rows((4,)) >= 1 << 40


@pytest.mark.slow
def test_pytorch_resnet20_from_onnx_fuses_bitwise(tmp_path, rng, monkeypatch):
    """A ResNet-20 exported by PyTorch (BatchNorm folded into the convs by the
    export) loads as Residual(Sequential(Conv, ReLU, Conv)) + ReLU blocks:
    predict runs all nine sums in the convolutions, with the unfused bits."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from nncore import onnx as nox
    from torch_nets import export_torch
    net, x, path = export_torch("resnet20", False, tmp_path)
    model = nox.load(path)
    want = unfused_predict(model, x.numpy(), monkeypatch)
    calls = count_residual_calls(monkeypatch)
    got = model.predict(x.numpy())
    monkeypatch.undo()
    assert len(calls) == 9
    assert np.array_equal(bits(got), bits(want))
    with torch.inference_mode():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-5)
