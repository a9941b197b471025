"""Winograd F(2x2, 3x3) (csrc/winograd.c): the forward pass with every
epilogue (bias, BatchNorm fold, residual, ReLU) and the input gradient of
3x3 stride-1 convolutions, forced on (set_winograd("always")) for odd
shapes the automatic choice would leave to the direct path, against NumPy
float64 on every ISA path; bits independent of the thread count and of how
a batch is split; the automatic choice by shape only."""
import numpy as np
import pytest

import nncore
from nncore import _core
from test_conv_kernels import RELU, assert_sum_close, backward, conv_backward_ref, conv_ref

# (n, c, h, w, o, padding): tiny and odd images (partial 2x2 tiles), batch 1
# and odd batches, channels not multiples of 16, padding 0, 1, 2 and per axis
CASES = [
    (1, 3, 1, 1, 5, 1),          # one pixel: one partial tile, all but the centre padding
    (2, 5, 2, 3, 7, 1),
    (3, 17, 9, 5, 21, 1),        # odd sizes, 21 outputs: a partial strip of channels
    (1, 16, 7, 7, 16, 1),        # ResNet's 7x7 stage shape, batch 1
    (2, 20, 5, 8, 18, 0),        # no padding
    (2, 20, 6, 3, 18, 2),        # padding 2: dx has padding 0
    (1, 4, 9, 9, 3, 2),          # fewer outputs than a GEMM row block
    (5, 19, 4, 11, 33, 1),
    (1, 33, 3, 3, 65, 0),        # a 1x1 output
    (3, 6, 7, 8, 10, (1, 2)),    # padding per axis
    (2, 8, 3, 4, 12, (0, 1)),
    (2, 6, 8, 8, 9, 3),          # padding 3: forward only (dx takes the direct path)
    (2, 8, 40, 36, 16, 1),       # several tasks per image
    (7, 32, 14, 14, 32, 1),      # ResNet's 14x14 stage shape, odd batch
    (1, 16, 13, 14, 24, 1),      # 7 tile rows of 7: on 2 threads, ranges of tiles
]


def case_id(case):
    return "x".join(str(v).replace(" ", "") for v in case)


@pytest.fixture(params=["always", "never"])
def winograd(request):
    """Run with Winograd forced on and, as a check of the same references,
    off."""
    previous = _core.set_winograd(request.param)
    yield request.param
    _core.set_winograd(previous)


@pytest.fixture
def always():
    previous = _core.set_winograd("always")
    yield
    _core.set_winograd(previous)


def make(rng, case, bias=True):
    n, c, h, w, o, p = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b, dict(stride=1, padding=p, dilation=1, groups=1)


def run_forward(x, w, b, kw, act=0, bn=None, res=None):
    """conv2d_forward, or conv2d_forward_bn with bn = (gamma, beta, mean,
    var); with a residual res added before act."""
    y = np.full(_core.conv2d_output_shape(x.shape, w.shape, **kw), np.nan, np.float32)
    args = (kw["stride"], kw["padding"], kw["dilation"], kw["groups"], act)
    if bn is None:
        _core.conv2d_forward(x, w, b, y, *args, res=res)
    else:
        _core.conv2d_forward_bn(x, w, b, *bn, 1e-5, y, *args, res=res)
    return y


def bn_params(rng, o):
    return (rng.uniform(0.5, 2.0, o).astype(np.float32), rng.standard_normal(o).astype(np.float32),
            rng.standard_normal(o).astype(np.float32), rng.uniform(0.2, 3.0, o).astype(np.float32))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_every_epilogue(isa, rng, winograd, case):
    terms = case[1] * 9
    for bias, act in [(True, 0), (False, RELU)]:
        x, w, b, kw = make(rng, case, bias)
        want, scale = conv_ref(x, w, b, **kw)
        if act == RELU:
            want = np.maximum(want, 0.0)
        assert_sum_close(run_forward(x, w, b, kw, act), want, scale, terms,
                         f"y bias={bias} act={act}")
    # residual: act(conv + b + res), the bits of the call without act, then act(y + res)
    x, w, b, kw = make(rng, case)
    z, scale = conv_ref(x, w, b, **kw)
    res = rng.standard_normal(z.shape).astype(np.float32)
    y = run_forward(x, w, b, kw, RELU, res=res)
    assert_sum_close(y, np.maximum(z + res, 0.0), scale + np.abs(res), terms, "y with res")
    plain = run_forward(x, w, b, kw)
    np.testing.assert_array_equal(y, np.maximum(plain + res, np.float32(0)))
    # BatchNorm folded (running statistics), with and without a residual
    gamma, beta, mean, var = bn = bn_params(rng, w.shape[0])
    a = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    col = (slice(None), None, None)
    want = (z - mean[col]) * a[col] + beta[col]
    err = 2 * (scale + np.abs(mean)[col]) * np.abs(a)[col] + np.abs(beta)[col]
    assert_sum_close(run_forward(x, w, b, kw, RELU, bn=bn), np.maximum(want, 0.0), err, terms,
                     "y with BatchNorm")
    assert_sum_close(run_forward(x, w, b, kw, RELU, bn=bn, res=res),
                     np.maximum(want + res, 0.0), err + np.abs(res), terms,
                     "y with BatchNorm and res")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_input_gradient(isa, rng, winograd, case):
    x, w, b, kw = make(rng, case)
    y = run_forward(x, w, b, kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, _, _ = backward(x, w, dy, kw, ("dx",))
    rdx, sdx, *_ = conv_backward_ref(x, w, dy, **kw)
    assert_sum_close(dx, rdx, sdx, case[4] * 9, "dx")
    # with the weight and bias gradients in the same call: the same dx
    dx2, dw, db = backward(x, w, dy, kw)
    np.testing.assert_array_equal(dx2, dx)


# batch 1 with 7 tile rows (and 9x9: 5 rows of 5 tiles): even ranges of tiles
THREAD_CASES = [CASES[2], CASES[3], CASES[7], CASES[12], CASES[13], (1, 64, 14, 14, 64, 1),
                (1, 16, 28, 28, 16, 1), (1, 24, 9, 9, 40, 1)]


@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_bits_do_not_depend_on_threads_or_batch(isa, rng, num_threads, always, case):
    """1 and 2 threads give the same bits, and so does every image run on
    its own (a predict split into batches of any size)."""
    x, w, b, kw = make(rng, case)
    out = {}
    for threads in (1, 2):
        nncore.set_num_threads(threads)
        y = run_forward(x, w, b, kw, RELU)
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        out[threads] = (y, backward(x, w, dy, kw, ("dx",))[0])
        singles = [run_forward(x[i:i + 1], w, b, kw, RELU) for i in range(len(x))]
        np.testing.assert_array_equal(np.concatenate(singles), y, err_msg="image by image")
        dxs = [backward(x[i:i + 1], w, dy[i:i + 1], kw, ("dx",))[0] for i in range(len(x))]
        np.testing.assert_array_equal(np.concatenate(dxs), out[threads][1],
                                      err_msg="dx image by image")
    for a, c, name in zip(out[1], out[2], ("y", "dx")):
        np.testing.assert_array_equal(a, c, err_msg=f"{name}: 1 vs 2 threads")


def test_automatic_choice_keeps_batch_independent_bits(rng, num_threads):
    """In the default mode too, a batch and its images one by one give the
    same bits (the choice depends on the shape, not the batch size), for
    the conv shapes of ResNet-20 and the small CNN."""
    assert _core.set_winograd("auto") == "auto"
    for case in [(3, 16, 28, 28, 16, 1), (3, 32, 14, 14, 32, 1), (3, 64, 7, 7, 64, 1),
                 (3, 32, 14, 14, 64, 1)]:
        x, w, b, kw = make(rng, case)
        for threads in (1, 2):
            nncore.set_num_threads(threads)
            y = run_forward(x, w, b, kw, RELU)
            singles = [run_forward(x[i:i + 1], w, b, kw, RELU) for i in range(len(x))]
            np.testing.assert_array_equal(np.concatenate(singles), y, err_msg=str(case))


@pytest.mark.parametrize("switch", ["set_winograd", "set_winograd_dw"])
def test_set_winograd(switch):
    """Both switches (forward/dx and the weight gradient) take the same
    modes and return the previous one."""
    set_mode = getattr(_core, switch)
    previous = set_mode("never")
    try:
        assert set_mode("always") == "never"
        with pytest.raises(ValueError, match="unknown Winograd mode 'fast'"):
            set_mode("fast")
        assert set_mode("auto") == "always"
    finally:
        set_mode(previous)


def test_bad_arguments_and_large_channel_counts(rng, always):
    """Forced on, bad arguments still raise their errors, and channel
    counts whose buffers would pass the bound take the direct path."""
    import test_conv_kernels
    test_conv_kernels.test_conv2d_bad_arguments(rng)
    x = rng.standard_normal((1, 20000, 2, 2)).astype(np.float32)
    w = rng.standard_normal((16, 20000, 3, 3)).astype(np.float32)
    kw = dict(stride=1, padding=1, dilation=1, groups=1)
    y = run_forward(x, w, None, kw)
    want, scale = conv_ref(x, w, None, **kw)
    assert_sum_close(y, want, scale, 20000 * 9, "y")


def test_conv2d_layer_matches_torch(rng, always):
    """A Conv2d layer's forward and input gradient against PyTorch."""
    torch = pytest.importorskip("torch")
    conv = nncore.Conv2d(24, 40, 3, padding=1)
    x = rng.standard_normal((3, 24, 11, 10)).astype(np.float32)
    y = conv.forward(x)
    tconv = torch.nn.Conv2d(24, 40, 3, padding=1)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.weight))
        tconv.bias.copy_(torch.tensor(conv.bias))
    xt = torch.tensor(x, requires_grad=True)
    yt = tconv(xt)
    _, scale = conv_ref(x, conv.weight, conv.bias, 1, 1, 1, 1)
    assert_sum_close(y, yt.detach().numpy().astype(np.float64), 2 * scale, 24 * 9, "y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(dy)
    yt.backward(torch.tensor(dy))
    _, sdx, *_ = conv_backward_ref(x, conv.weight, dy, 1, 1, 1, 1)
    assert_sum_close(dx, xt.grad.numpy().astype(np.float64), 2 * sdx, 40 * 9, "dx")
