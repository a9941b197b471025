"""Predict plans: Sequential.predict records the kernel calls of a pass once
per input shape and replays them without the Python between them. A replay
must give the bits of the Python steps (run here on a fresh workspace) for
every layer that records, see every in-place change of the weights and
statistics, and never be used where a step computes outside the recorded
bindings."""
import threading

import numpy as np
import pytest

import nncore as nn
from nncore import _core
from nncore.layers.base import Buffers


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def python_steps(model, x):
    """The model's predict pass through its Python steps (no plan)."""
    return model._infer(np.ascontiguousarray(x, np.float32), Buffers("reference")).copy()


def plans_of(model):
    return [p for ws in model._workspaces for p in ws.plans.values()]


def every_layer_net():
    """Every layer that records, in the ways predict combines them: a conv
    with its BatchNorm and ReLU folded, unfolded BatchNorm, pooling of each
    kind, a Residual fused into its last conv and one summed apart (its body
    ends in an activation), an MLP head that is a DenseChain of its own,
    BatchNorm1d, Dropout, every activation and Softmax."""
    nn.manual_seed(7)
    head = nn.Sequential(nn.Dense(16, 12), nn.ReLU(), nn.Dense(12, 8))
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Tanh()),
                    nn.Conv2d(8, 16, 1)),
        nn.LeakyReLU(0.2), nn.AvgPool2d(2), nn.BatchNorm2d(16), nn.GELU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Sigmoid(),
        nn.GlobalAvgPool2d(), nn.BatchNorm1d(16), nn.Dropout(0.5), head, nn.Flatten(),
        nn.Dense(8, 5), nn.Softmax())


def randomize(model, rng):
    for name, a in model.named_tensors():
        if "running_var" in name:
            a[...] = rng.uniform(0.5, 2.0, a.shape)
        else:
            a[...] = rng.normal(0.0, 0.3, a.shape)


NETS = {
    "every layer": (every_layer_net, (3, 12, 12)),
    "small CNN": (lambda: nn.models.small_cnn(image_size=12), (1, 12, 12)),
    "ResNet-8": (lambda: nn.models.resnet(8, width=4), (1, 12, 12)),
    # a lone Dense last: the plan's output is that call's
    "Dense head": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                         nn.Dense(4 * 12 * 12, 3)), (1, 12, 12)),
}


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("n", [1, 3])
def test_replay_gives_the_python_steps_bits(net, n, isa, rng, num_threads):
    build, sample = NETS[net]
    model = build()
    randomize(model, rng)
    x = rng.standard_normal((n,) + sample).astype(np.float32)
    first = model.predict(x)                        # recorded
    assert [p.calls > 0 for p in plans_of(model)] == [True]
    for _ in range(2):                              # replayed, on new inputs
        x = rng.standard_normal((n,) + sample).astype(np.float32)
        assert np.array_equal(bits(model.predict(x)), bits(python_steps(model, x)))
    assert first.shape == (n,) + model.output_shape(sample)


def test_replay_sees_weights_and_statistics_changed_in_place(rng):
    model = every_layer_net()
    randomize(model, rng)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    before = model.predict(x)
    conv, bn = model.layers[0], model.layers[1]
    conv.weight = conv.weight * 1.5                 # assignment copies in place
    bn.running_var = bn.running_var + 1.0
    bn.running_mean[...] += 0.25
    model.layers[-2].bias[...] = 3.0
    got = model.predict(x)
    assert len(plans_of(model)) == 1                # the same plan, replayed
    assert not np.array_equal(got, before)
    assert np.array_equal(bits(got), bits(python_steps(model, x)))


def test_replay_after_training_steps(rng):
    nn.manual_seed(3)
    model = nn.models.resnet(8, width=4)
    x = rng.standard_normal((6, 1, 10, 10)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    model.eval()
    model.predict(x[:2])
    nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.1, momentum=0.9),
               batch_size=3).fit(x, y, epochs=2)
    model.eval()
    assert np.array_equal(bits(model.predict(x[:2])), bits(python_steps(model, x[:2])))


def test_one_plan_per_shape_and_bad_input_still_named(rng):
    nn.manual_seed(1)
    model = nn.models.small_cnn(image_size=12)
    for n in (1, 2, 1, 2):
        model.predict(rng.standard_normal((n, 1, 12, 12)))     # float64: converted once
    assert sorted(p.input.shape[0] for p in plans_of(model)) == [1, 2]
    with pytest.raises(ValueError, match="channel"):
        model.predict(np.zeros((1, 2, 12, 12), np.float32))
    plan = plans_of(model)[0]
    with pytest.raises(ValueError, match="shape"):
        plan.run(np.zeros((5, 1, 12, 12), np.float32))
    with pytest.raises(ValueError, match="float32"):
        plan.run(np.zeros(plan.input.shape, np.float64))
    with pytest.raises(ValueError, match="nothing recorded"):
        _core.PredictPlan().run(np.zeros((1, 1, 12, 12), np.float32))


class NumpyDense(nn.Dense):
    """A subclass computing its predict step in NumPy: it does not say it
    records (predict_traceable), so its model must not be replayed."""

    def _infer(self, x, ws):
        return np.maximum(x @ self.weight + self.bias, 0.0).astype(np.float32)


def test_layers_that_do_not_record_keep_the_python_steps(rng):
    nn.manual_seed(2)
    custom = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), NumpyDense(4 * 6 * 6, 3))
    no_stats = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False),
                             nn.Flatten())
    for model in (custom, no_stats):
        assert not model.predict_traceable
        x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
        model.predict(x)
        custom.layers[2].weight[...] = 0.5
        x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
        assert np.array_equal(model.predict(x), python_steps(model, x))
        assert plans_of(model) == []


def test_output_not_from_a_recorded_call_is_not_replayed():
    """A pass whose output is its input (nothing computed) records no plan."""
    model = nn.Sequential(nn.Dropout(0.3), nn.Flatten())
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    for _ in range(2):
        assert np.array_equal(model.predict(x), x.reshape(2, 4))
    assert [ws.plans for ws in model._workspaces] == [{((2, 1, 2, 2), "auto"): None}]


def test_threads_recording_and_replaying_at_once(rng):
    """Calls from other threads never land in a plan being recorded."""
    nn.manual_seed(4)
    models = [nn.models.small_cnn(image_size=12), nn.models.resnet(8, width=4)]
    xs = [rng.standard_normal((n, 1, 12, 12)).astype(np.float32) for n in (1, 2, 3)]
    want = [[python_steps(m, x) for x in xs] for m in models]
    errors = []

    def work(k):
        try:
            for r in range(6):
                for i, m in enumerate(models):
                    j = (k + r + i) % len(xs)
                    if not np.array_equal(m.predict(xs[j]), want[i][j]):
                        errors.append((k, r, i, j))
        except Exception as exc:      # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_batchnorm_arrays_keep_their_identity():
    bn = nn.BatchNorm2d(3)
    arrays = [bn.weight, bn.bias, bn.running_mean, bn.running_var]
    bn.weight, bn.bias = [1.0, 2.0, 3.0], np.zeros(3)
    bn.running_mean, bn.running_var = np.ones(3), np.full(3, 2.0)
    assert all(a is b for a, b in zip(arrays, [bn.weight, bn.bias, bn.running_mean,
                                               bn.running_var]))
    assert bn.weight.tolist() == [1.0, 2.0, 3.0] and bn.running_var.tolist() == [2.0] * 3
    with pytest.raises(ValueError, match=r"running_var has shape \(2,\), expected \(3,\)"):
        bn.running_var = np.ones(2)
    with pytest.raises(ValueError, match="running_mean"):
        bn.running_mean = [0.0, np.nan, 0.0]
    with pytest.raises(ValueError, match="has no weight"):
        nn.BatchNorm2d(3, affine=False).weight = np.ones(3)
    with pytest.raises(AttributeError):
        bn.eps = 0.1


def test_add_binding():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.full((2, 3), 0.5, np.float32)
    y = np.empty_like(a)
    _core.add(a, b, y)
    assert np.array_equal(y, a + b)
    with pytest.raises(ValueError, match="must match"):
        _core.add(a, b[:1], y)
    with pytest.raises(ValueError, match="act must be NONE or RELU"):
        _core.add(a, b, y, _core.ACT_CODES["tanh"])


@pytest.mark.parametrize("n", [7, 200_003])      # one range; ranges over the threads
def test_add_relu(rng, num_threads, n):
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    a[:3] = [np.nan, -np.inf, -0.0]
    want = np.maximum(a + b, 0)
    y = np.empty_like(a)
    _core.add(a, b, y, _core.ACT_CODES["relu"])
    np.testing.assert_array_equal(y, want)          # NaN stays NaN, as relu_forward
    _core.add(a, b, a, _core.ACT_CODES["relu"])      # in place
    np.testing.assert_array_equal(a, want)


def test_large_parts_are_not_recorded(rng, monkeypatch):
    """A plan keeps a copy of its input: parts above the sub-batch size run
    the Python steps."""
    monkeypatch.setattr(nn.layers.sequential, "_RECORD_MAX_BYTES", 1000)
    nn.manual_seed(6)
    model = nn.Sequential(nn.Dense(100, 4), nn.BatchNorm1d(4))      # not a DenseChain
    for rows, recorded in ((3, False), (2, True)):                  # 1,200 and 800 bytes
        x = rng.standard_normal((rows, 100)).astype(np.float32)
        for _ in range(2):
            assert np.array_equal(model.predict(x), python_steps(model, x))
        assert [p.input.shape for p in plans_of(model)] == ([(2, 100)] if recorded else [])
