"""Loss landscapes of networks with BatchNorm, as Li et al. draw them: biases
and BatchNorm parameters out of the directions (ignore="biasbn") or along
themselves (ignore=None), running statistics kept, every evaluation path in
evaluation mode, weights, statistics and training mode restored."""
import numpy as np
import pytest

import nncore as nn
from nncore import landscape as ls


def tiny_resnet(skip=True, seed=0):
    nn.manual_seed(seed)
    return nn.models.resnet(8, skip=skip, width=4)


def specs_of(model):
    return [s for s in model.param_specs(model.get_config()) if s.trainable]


def trained_stats(model, rng):
    """Give every BatchNorm non-trivial running statistics and affine params
    (as training would), so eval mode differs visibly from train mode."""
    for name, arr in model.named_buffers():
        arr[...] = (rng.uniform(0.5, 2.0, arr.shape) if name.endswith("running_var")
                    else rng.normal(0, 0.3, arr.shape))
    for spec, (p, _) in zip(specs_of(model), model.parameters()):
        if spec.role != "weight":
            p[...] += rng.normal(0, 0.2, p.shape).astype(np.float32)


def state(model):
    return [a.copy() for _, a in model.named_tensors()]


def assert_same_state(model, saved):
    for (name, a), s in zip(model.named_tensors(), saved):
        assert np.array_equal(a.view(np.uint32), s.view(np.uint32)), name


def modes(model):
    out = []

    def walk(layer):
        out.append(layer.training)
        for child in getattr(layer, "layers", ()):
            walk(child)
        for attr in ("body", "shortcut"):
            if getattr(layer, attr, None) is not None:
                walk(getattr(layer, attr))
    walk(model)
    return out


@pytest.mark.parametrize("skip", [True, False])
def test_biasbn_directions_leave_batchnorm_and_biases_zero(skip, rng):
    model = tiny_resnet(skip)
    trained_stats(model, rng)
    specs = specs_of(model)
    params = [p for p, _ in model.parameters()]
    roles = {s.role for s in specs}
    assert roles == {"weight", "bias", "other"}     # conv/dense weights, BN shift, BN scale
    for d in ls.random_directions(model, dims=2, seed=3):
        for spec, a, p in zip(specs, d, params):
            if spec.role != "weight":
                assert not a.any(), spec.name       # BatchNorm scale/shift, Dense bias
            else:                                   # one filter per output unit
                axes = tuple(k for k in range(p.ndim) if k != spec.out_axis)
                np.testing.assert_allclose(
                    np.sqrt((a.astype(np.float64) ** 2).sum(axis=axes)),
                    np.sqrt((p.astype(np.float64) ** 2).sum(axis=axes)), rtol=1e-5)
    # the paper's alternative: one-per-unit parameters move along themselves
    weights_only = ls.random_directions(model, dims=1, seed=3)[0]
    (d,) = ls.random_directions(model, dims=1, seed=3, ignore=None)
    for spec, a, b, p in zip(specs, d, weights_only, params):
        if spec.role != "weight":
            np.testing.assert_array_equal(a, p)
        else:
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ignore"):
        ls.random_directions(model, ignore="bn")


def bn_mlp(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Dense(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                         nn.Dense(8, 3))


@pytest.mark.parametrize("batch_size", [None, 7])      # the MLP fast path, the plain one
def test_every_point_in_eval_mode_and_state_restored(rng, batch_size):
    X = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    model = bn_mlp()
    trained_stats(model, rng)
    loss = nn.CrossEntropyLoss()
    model.train()
    train_mode = model.forward(X).copy()               # updates the running stats...
    trained_stats(model, np.random.default_rng(1))     # ...so set them again
    model.eval()
    expected = loss.forward(model.predict(X), y)
    assert np.abs(train_mode - model.predict(X)).max() > 1e-2   # the modes differ visibly
    model.train()
    saved = state(model)
    dirs = ls.random_directions(model, dims=2, seed=2)
    Xc, yc = ls._check_data(X, y, "t")
    kind = ls._make_evaluator(model, loss, Xc, yc, batch_size or 60, dirs)
    assert type(kind) is (ls._FirstLayerEvaluator if batch_size is None else ls._Evaluator)
    result = ls.loss_landscape(model, loss, X, y, steps=3, span=0.5, directions=dirs,
                               batch_size=batch_size)
    assert result.losses[1, 1] == pytest.approx(expected, rel=1e-6)
    assert_same_state(model, saved)                    # weights and running statistics
    assert all(modes(model))                           # back in training mode, every layer
    # each point equals an eval-mode predict at that point
    params = [p for p, _ in model.parameters()]
    start = [p.copy() for p in params]
    for i, a in enumerate(result.coords[0]):
        for j, b in enumerate(result.coords[1]):
            for p, s, d1, d2 in zip(params, start, dirs[0], dirs[1]):
                p[...] = s.astype(np.float64) + a * d1.astype(np.float64) + b * d2
            model.eval()
            assert result.losses[i, j] == pytest.approx(loss.forward(model.predict(X), y),
                                                        rel=2e-5)
            model.train()
    for p, s in zip(params, start):
        p[...] = s
    assert result.stats["points_per_second"] > 0 and result.stats["samples"] == 60


def test_conv_net_landscape_in_eval_mode(rng):
    X, y = nn.datasets.load_digits(flatten=False)
    X, y = X[:40], y[:40]
    model = tiny_resnet()
    trained_stats(model, rng)
    loss = nn.CrossEntropyLoss()
    model.eval()
    expected = loss.forward(model.predict(X), y)
    model.train()
    saved = state(model)
    calls = []
    result = ls.loss_landscape(model, loss, X, y, steps=3, span=0.3, batch_size=16,
                               progress=lambda done, total: calls.append((done, total)))
    assert result.losses[1, 1] == expected
    assert calls == [(k, 9) for k in range(1, 10)]
    assert_same_state(model, saved)
    assert all(modes(model))
    assert np.isfinite(result.losses).all() and np.ptp(result.losses) > 0
    with pytest.raises(ValueError, match="X must be"):
        ls.loss_landscape(model, loss, X[:0], y[:0], steps=3)
