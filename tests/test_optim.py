"""Optimizers: the kernels (csrc/optim.c) and the classes over several steps
against a float64 NumPy transcription of torch.optim's documented algorithms
(on every ISA), hyperparameter checks, state handling, and PyTorch itself
step by step when it is installed."""
import math

import numpy as np
import pytest

import nncore
import nncore as nn
from nncore import _core

SIZES = [1, 7, 17, 64, 65, 257]
STEPS = 6


def grads(rng, n):
    return [rng.standard_normal(n).astype(np.float32) for _ in range(STEPS)]


def sgd64(w, gs, lr, momentum, dampening, wd, nesterov):
    w = w.astype(np.float64)
    buf = None
    for t, g in enumerate(gs):
        d = g + wd * w
        if momentum:
            buf = d.copy() if t == 0 else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        w = w - lr * d
    return w


def adam64(w, gs, lr, b1, b2, eps, wd, decoupled):
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(gs, start=1):
        if decoupled:
            w = w * (1 - lr * wd)
            d = g.astype(np.float64)
        else:
            d = g + wd * w
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        mhat = m / (1 - b1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        w = w - lr * mhat / denom
    return w


def rmsprop64(w, gs, lr, alpha, eps, wd, momentum, centered):
    w = w.astype(np.float64)
    sq = np.zeros_like(w)
    ga = np.zeros_like(w)
    buf = np.zeros_like(w)
    for g in gs:
        d = g + wd * w
        sq = alpha * sq + (1 - alpha) * d * d
        if centered:
            ga = alpha * ga + (1 - alpha) * d
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + d / avg
            w = w - lr * buf
        else:
            w = w - lr * d / avg
    return w


@pytest.mark.parametrize("momentum,dampening,wd,nesterov", [
    (0.0, 0.0, 0.0, False), (0.0, 0.0, 0.01, False), (0.9, 0.0, 0.0, False),
    (0.9, 0.0, 0.05, True), (0.5, 0.3, 0.0, False)])
def test_sgd_kernel(isa, rng, momentum, dampening, wd, nesterov):
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        buf = np.full(n, np.nan, np.float32) if momentum else None
        for t, g in enumerate(gs):
            _core.sgd_step(w, g, buf, 0.1, momentum, dampening, wd, nesterov, t == 0)
        want = sgd64(w0, gs, 0.1, momentum, dampening, wd, nesterov)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_kernel(isa, rng, wd, decoupled):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        m = np.zeros(n, np.float32)
        v = np.zeros(n, np.float32)
        for t, g in enumerate(gs, start=1):
            _core.adam_step(w, g, m, v, b1, b2, eps, 0.0 if decoupled else wd,
                            1 - lr * wd if decoupled else 1.0, lr / (1 - b1 ** t),
                            math.sqrt(1 - b2 ** t))
        want = adam64(w0, gs, lr, b1, b2, eps, wd, decoupled)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wd,momentum,centered", [
    (0.0, 0.0, False), (0.01, 0.0, False), (0.0, 0.9, False), (0.0, 0.0, True),
    (0.02, 0.5, True)])
def test_rmsprop_kernel(isa, rng, wd, momentum, centered):
    lr, alpha, eps = 0.01, 0.99, 1e-8
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(np.float32)
        gs = grads(rng, n)
        w = w0.copy()
        sq = np.zeros(n, np.float32)
        ga = np.zeros(n, np.float32) if centered else None
        buf = np.zeros(n, np.float32) if momentum else None
        for g in gs:
            _core.rmsprop_step(w, g, sq, ga, buf, lr, alpha, eps, wd, momentum)
        want = rmsprop64(w0, gs, lr, alpha, eps, wd, momentum, centered)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-5)


def all_steps(seed):
    rng = np.random.default_rng(seed)
    n = 100003
    w = rng.standard_normal((3, n)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    s = [np.zeros(n, np.float32) for _ in range(5)]
    for first in (True, False):
        _core.sgd_step(w[0], g, s[0], 0.1, 0.9, 0.0, 0.01, True, first)
        _core.adam_step(w[1], g, s[1], s[2], 0.9, 0.999, 1e-8, 0.0, 0.999, 0.01, 0.1)
        _core.rmsprop_step(w[2], g, s[3], s[4], s[0], 0.01, 0.99, 1e-8, 0.0, 0.9)
    return [w] + s


def test_optim_threads_bitwise_identical(isa, num_threads):
    nncore.set_num_threads(1)
    one = all_steps(5)
    nncore.set_num_threads(2)
    two = all_steps(5)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_optim_kernel_arguments_are_checked():
    w = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="expected 4"):
        _core.sgd_step(w, np.zeros(3, np.float32), None, 0.1, 0.0, 0.0, 0.0, False, True)
    with pytest.raises(ValueError, match="buffer"):
        _core.sgd_step(w, w, None, 0.1, 0.9, 0.0, 0.0, False, True)
    with pytest.raises(TypeError):
        _core.adam_step(w, w, w, None, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.1, 0.1)


# ---- the optimizer classes ----

def run_class(opt, w0s, grads_per_step, lr_schedule=None):
    """Step `opt` over parameters w0s with the given gradients; returns them."""
    ws = [w.copy() for w in w0s]
    gs = [np.empty_like(w) for w in w0s]
    params = list(zip(ws, gs))
    for t, step_grads in enumerate(grads_per_step):
        if lr_schedule:
            opt.lr = lr_schedule(t)
        for g, new in zip(gs, step_grads):
            g[...] = new
        opt.step(params)
    return ws


CLASS_CASES = [
    (lambda: nn.SGD(0.1), lambda w, gs: sgd64(w, gs, 0.1, 0, 0, 0, False)),
    (lambda: nn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda w, gs: sgd64(w, gs, 0.1, 0.9, 0, 0.01, True)),
    (lambda: nn.SGD(0.1, momentum=0.5, dampening=0.2),
     lambda w, gs: sgd64(w, gs, 0.1, 0.5, 0.2, 0, False)),
    (lambda: nn.Adam(lr=0.01), lambda w, gs: adam64(w, gs, 0.01, 0.9, 0.999, 1e-8, 0, False)),
    (lambda: nn.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     lambda w, gs: adam64(w, gs, 0.01, 0.8, 0.99, 1e-6, 0.1, False)),
    (lambda: nn.AdamW(lr=0.01), lambda w, gs: adam64(w, gs, 0.01, 0.9, 0.999, 1e-8, 0.01, True)),
    (lambda: nn.RMSprop(lr=0.01), lambda w, gs: rmsprop64(w, gs, 0.01, 0.99, 1e-8, 0, 0, False)),
    (lambda: nn.RMSprop(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
     lambda w, gs: rmsprop64(w, gs, 0.01, 0.9, 1e-8, 0.01, 0.5, True)),
]


@pytest.mark.parametrize("make,ref", CLASS_CASES)
def test_optimizer_classes(rng, make, ref):
    shapes = [(3, 5), (5,), (1, 1)]
    w0s = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    steps = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(STEPS)]
    got = run_class(make(), w0s, steps)
    for i, (w0, w) in enumerate(zip(w0s, got)):
        want = ref(w0.reshape(-1), [s[i].reshape(-1) for s in steps]).reshape(w0.shape)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-5)


def test_lr_is_mutable_for_schedulers(rng):
    w0 = rng.standard_normal(4).astype(np.float32)
    steps = [[rng.standard_normal(4).astype(np.float32)] for _ in range(3)]
    got = run_class(nn.SGD(1.0), [w0], steps, lr_schedule=lambda t: 0.1 / (t + 1))
    want = w0.astype(np.float64) - sum(0.1 / (t + 1) * s[0] for t, s in enumerate(steps))
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    opt = nn.SGD(0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -1
    assert opt.lr == 0.1


def test_state_is_per_parameter_and_resettable(rng):
    opt = nn.SGD(0.1, momentum=0.9)
    a = (np.zeros(3, np.float32), np.ones(3, np.float32))
    b = (np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32))
    opt.step([a, b])
    opt.step([a])                 # b skipped: its state must not advance
    opt.step([a, b])
    np.testing.assert_allclose(a[0], -0.1 * (1 + 1.9 + 2.71))
    np.testing.assert_allclose(b[0], -0.1 * (1 + 1.9))
    opt.reset()
    a[0][...] = 0
    opt.step([a])
    np.testing.assert_allclose(a[0], -0.1)


@pytest.mark.parametrize("make,match", [
    (lambda: nn.SGD(-0.1), "lr must be >= 0"),
    (lambda: nn.SGD(float("nan")), "lr must be a number"),
    (lambda: nn.SGD(0.1, momentum=-1), "momentum must be >= 0"),
    (lambda: nn.SGD(0.1, nesterov=True), "Nesterov"),
    (lambda: nn.SGD(0.1, weight_decay=-1), "weight_decay"),
    (lambda: nn.Adam(betas=(1.0, 0.999)), r"beta1 must be in \[0, 1\)"),
    (lambda: nn.Adam(betas=(0.9, -0.1)), r"beta2 must be in \[0, 1\)"),
    (lambda: nn.Adam(betas=0.9), "betas must be a pair"),
    (lambda: nn.AdamW(eps=-1), "eps"),
    (lambda: nn.RMSprop(alpha=1.5), "alpha"),
])
def test_hyperparameter_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_step_argument_errors():
    opt = nn.SGD(0.1)
    w = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="pairs"):
        opt.step([w])
    with pytest.raises(TypeError, match="float32 C-contiguous"):
        opt.step([(np.zeros(3), np.zeros(3))])
    with pytest.raises(ValueError, match="grad 0 has shape"):
        opt.step([(np.zeros((3, 1), np.float32), np.zeros((1, 3), np.float32))])


@pytest.mark.parametrize("name", ["SGD", "SGD-nesterov", "Adam", "AdamW", "RMSprop",
                                  "RMSprop-centered"])
def test_matches_torch_step_by_step(rng, name):
    torch = pytest.importorskip("torch")
    kw = {
        "SGD": ({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, nn.SGD, torch.optim.SGD),
        "SGD-nesterov": ({"lr": 0.05, "momentum": 0.8, "nesterov": True}, nn.SGD,
                         torch.optim.SGD),
        "Adam": ({"lr": 0.01, "weight_decay": 0.01}, nn.Adam, torch.optim.Adam),
        "AdamW": ({"lr": 0.01}, nn.AdamW, torch.optim.AdamW),
        "RMSprop": ({"lr": 0.01, "momentum": 0.9}, nn.RMSprop, torch.optim.RMSprop),
        "RMSprop-centered": ({"lr": 0.01, "centered": True, "weight_decay": 0.1}, nn.RMSprop,
                             torch.optim.RMSprop),
    }[name]
    params, ours_cls, torch_cls = kw
    w = rng.standard_normal(300).astype(np.float32)
    g = np.empty_like(w)
    tw = torch.nn.Parameter(torch.tensor(w.copy()))
    ours, theirs = ours_cls(**params), torch_cls([tw], **params)
    for _ in range(10):
        grad = rng.standard_normal(300).astype(np.float32)
        g[...] = grad
        ours.step([(w, g)])
        tw.grad = torch.tensor(grad)
        theirs.step()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_denormals_are_flushed(isa):
    # a decaying momentum buffer flushes to 0 instead of crawling through
    # denormals (see csrc/optim.c); normal values are untouched
    w = np.zeros(4, np.float32)
    g = np.zeros(4, np.float32)
    buf = np.array([1e-37, 1e-38, 5e-39, 1.0], np.float32)
    _core.sgd_step(w, g, buf, 0.1, 0.5, 0.0, 0.0, False, False)
    np.testing.assert_array_equal(buf, np.array([5e-38, 0.0, 0.0, 0.5], np.float32))


# ---- state_dict / load_state_dict ----

STATE_CASES = {
    "SGD-momentum": lambda: nn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "SGD-plain": lambda: nn.SGD(0.05),
    "Adam": lambda: nn.Adam(0.01, weight_decay=0.01),
    "AdamW": lambda: nn.AdamW(0.01),
    "RMSprop": lambda: nn.RMSprop(0.01, momentum=0.5, centered=True),
}


def state_run(make, rng_seed=0, first=3, then=3, restore=True):
    """Weights after `first` steps, a state_dict round trip into a fresh
    optimizer (or none), then `then` more steps."""
    rng = np.random.default_rng(rng_seed)
    shapes = [(4, 3), (3,), (2, 2)]
    ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gs = [np.empty_like(w) for w in ws]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes]
             for _ in range(first + then)]
    opt = make()
    for t, step in enumerate(grads):
        if t == first and restore is not None:
            state = opt.state_dict(list(zip(ws, gs)))
            ws = [w.copy() for w in ws]          # another model's arrays, same values
            gs = [np.empty_like(w) for w in ws]
            opt = make()
            opt.lr = 123.0                       # replaced by the saved config
            if restore:
                opt.load_state_dict(state, list(zip(ws, gs)))
        for g, value in zip(gs, step):
            g[...] = value
        opt.step(list(zip(ws, gs)))
    return ws


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_state_dict_round_trip_continues_bitwise(name):
    make = STATE_CASES[name]
    straight = state_run(make, restore=None)
    resumed = state_run(make, restore=True)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    if name != "SGD-plain":
        # without the state (and with lr 123) the run differs: the test can fail
        fresh = state_run(lambda: make(), restore=False)
        assert not all(np.array_equal(a, b) for a, b in zip(straight, fresh))


def test_state_dict_contents_and_copies():
    w, g = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    idle = (np.zeros(2, np.float32), np.zeros(2, np.float32))
    opt = nn.Adam(0.1, betas=(0.5, 0.9))
    opt.step([(w, g)])
    state = opt.state_dict([(w, g), idle])
    assert state["type"] == "Adam" and state["steps"] == [1, 0]
    assert state["config"] == {"lr": 0.1, "betas": [0.5, 0.9], "eps": 1e-8, "weight_decay": 0.0}
    assert sorted(state["buffers"]) == ["0.exp_avg", "0.exp_avg_sq"]
    np.testing.assert_allclose(state["buffers"]["0.exp_avg"], 0.5)      # (1 - beta1) * g
    np.testing.assert_allclose(state["buffers"]["0.exp_avg_sq"], 0.1, rtol=1e-6)  # (1 - b2) g^2
    state["buffers"]["0.exp_avg"][...] = 7.0      # a copy: the optimizer is unaffected
    assert opt.state_dict([(w, g)])["buffers"]["0.exp_avg"][0, 0] == np.float32(0.5)


def test_state_dict_matches_torch_names_and_values(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal(50).astype(np.float32)
    g = np.empty_like(w)
    tw = torch.nn.Parameter(torch.tensor(w.copy()))
    ours = nn.RMSprop(0.01, momentum=0.9, centered=True)
    theirs = torch.optim.RMSprop([tw], lr=0.01, momentum=0.9, centered=True)
    for _ in range(4):
        grad = rng.standard_normal(50).astype(np.float32)
        g[...] = grad
        ours.step([(w, g)])
        tw.grad = torch.tensor(grad)
        theirs.step()
    mine, torch_state = ours.state_dict([(w, g)]), theirs.state_dict()["state"][0]
    assert mine["steps"] == [int(torch_state["step"])]
    for name in ("square_avg", "grad_avg", "momentum_buffer"):
        np.testing.assert_allclose(mine["buffers"][f"0.{name}"], torch_state[name].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_load_state_dict_checks_everything_first():
    w, g = np.zeros(3, np.float32), np.ones(3, np.float32)
    source = nn.SGD(0.1, momentum=0.9)
    source.step([(w, g)])
    good = source.state_dict([(w, g)])

    def broken(**changes):
        state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        for key, value in changes.items():
            state[key] = value
        return state
    bad = [
        (None, "expected a dict with keys"),
        (broken(type="Adam"), "the state is of a 'Adam', not a 'SGD'"),
        (broken(config={"lr": -1.0, "momentum": 0.9}), "lr must be >= 0"),
        (broken(config={"lr": 0.1, "mom": 0.9}), "bad config"),
        (broken(config={"lr": 0.1}), r"unexpected buffers \['0.momentum_buffer'\]"),
        (broken(steps=[1, 1]), "steps must be a list of 1 ints"),
        (broken(steps=[True]), "steps must be a list of 1 ints"),
        (broken(steps=[-1]), "steps must be a list of 1 ints"),
        (broken(buffers={}), "buffer '0.momentum_buffer' is missing"),
        (broken(buffers={"0.momentum_buffer": np.zeros(4)}), "expected real numbers of shape"),
        (broken(buffers={"0.momentum_buffer": np.array(["a"] * 3)}), "expected real numbers"),
        (broken(buffers={"0.momentum_buffer": np.array([1, np.nan, 0])}), "NaN or infinity"),
        (broken(buffers={"0.momentum_buffer": np.zeros(3), "1.x": np.zeros(3)}),
         r"unexpected buffers \['1.x'\]"),
    ]
    target = nn.SGD(0.5, momentum=0.3)
    w2 = np.zeros(3, np.float32)
    target.step([(w2, g)])
    before = target.state_dict([(w2, g)])
    for state, match in bad:
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(state, [(w2, g)])
        after = target.state_dict([(w2, g)])      # nothing changed
        assert after["config"] == before["config"] and after["steps"] == before["steps"]
        np.testing.assert_array_equal(after["buffers"]["0.momentum_buffer"],
                                      before["buffers"]["0.momentum_buffer"])
    with pytest.raises(TypeError, match="param 0 must be a float32 C-contiguous"):
        target.load_state_dict(good, [(np.zeros(3), g)])
    with pytest.raises(TypeError, match="SGD.load_state_dict: expected a list of"):
        target.load_state_dict(good, 5)
    target.load_state_dict(good, [(w2, g)])       # a good one loads, converted to float32
    assert target.momentum == 0.9 and target.lr == 0.1
    np.testing.assert_array_equal(target.state_dict([(w2, g)])["buffers"]["0.momentum_buffer"],
                                  good["buffers"]["0.momentum_buffer"])
