"""The layer protocol is real: a layer defined here, outside the package,
with one trainable parameter and a 3-D output, trains, saves, loads,
profiles and goes through a loss landscape without nncore knowing it."""
import numpy as np
import pytest

import nncore as nn
from nncore.errors import FormatError
from nncore.io import read_archive, write_archive

F32 = np.float32


@nn.register_layer
class OuterScale(nn.Layer):
    """y[b, f, j] = x[b, f] * scale[j]: (batch, features) -> (batch, features, k)."""

    def __init__(self, features, k):
        self.features, self.k = features, k
        self.scale = np.linspace(0.5, 1.5, k).astype(F32)
        self.grad_scale = np.zeros(k, F32)
        self._x = None

    @classmethod
    def param_specs(cls, config):
        k = config["k"]
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"OuterScale: k must be a positive int, got {k!r}")
        return [nn.Param("scale", (k,), "weight", True, 0)]

    @property
    def input_shape(self):
        return (self.features,)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.features,):
            raise ValueError(f"expects samples of shape ({self.features},)")
        return (self.features, self.k)

    def forward(self, x):
        self._x = np.asarray(x, F32)
        return np.ascontiguousarray(self._x[:, :, None] * self.scale, F32)

    def backward(self, grad, input_grad=True):
        grad = np.asarray(grad, np.float64)
        self.grad_scale[...] = np.einsum("bfj,bf->j", grad, self._x)
        return (grad @ self.scale.astype(np.float64)).astype(F32) if input_grad else None

    def named_parameters(self):
        return [("scale", self.scale, self.grad_scale)]

    def get_config(self):
        return {"features": self.features, "k": self.k}


def make_model(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Dense(8, 6), nn.ReLU(), OuterScale(6, 3), nn.Flatten(),
                         nn.Dense(18, 3))


def make_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8)).astype(F32)
    y = (X[:, :3] @ np.array([1.0, -1.0, 0.5]) > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def test_shapes_are_inferred_through_the_chain():
    model = make_model()
    assert model.input_shape == (8,)
    assert model.infer_shapes((8,)) == [(8,), (6,), (6,), (6, 3), (18,), (3,)]
    with pytest.raises(ValueError, match=r"layer 2 OuterScale\(\) expects samples of shape "
                                         r"\(5,\), but layer 1 ReLU\(\) outputs samples of "
                                         r"shape \(6,\)"):
        nn.Sequential(nn.Dense(8, 6), nn.ReLU(), OuterScale(5, 3))
    with pytest.raises(ValueError, match=r"layer 1 Dense\(10->3\) expects samples of shape "
                                         r"\(10,\), but layer 0 Flatten\(\) outputs samples "
                                         r"of shape \(12,\)"):
        nn.Sequential(nn.Flatten(), nn.Dense(10, 3)).forward(np.ones((2, 3, 4), F32))


def test_gradient_of_the_outside_parameter_matches_finite_differences():
    model = make_model()
    X, y = make_data(16)
    loss = nn.CrossEntropyLoss()

    def value():
        return loss.forward(model.forward(X), y)
    value()
    model.backward(loss.backward())
    layer = model[2]
    analytic = layer.grad_scale.copy()
    for j in range(layer.k):
        keep = layer.scale[j]
        layer.scale[j] = keep + 1e-2
        up = value()
        layer.scale[j] = keep - 1e-2
        down = value()
        layer.scale[j] = keep
        np.testing.assert_allclose(analytic[j], (up - down) / 2e-2, rtol=2e-2, atol=1e-4)


def test_trains_saves_loads_and_profiles(tmp_path):
    model = make_model()
    X, y = make_data()
    before = model[2].scale.copy()
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.Adam(lr=0.01), batch_size=32, seed=0)
    history = trainer.fit(X, y, epochs=15, verbose=0)
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert not np.array_equal(model[2].scale, before)     # the optimizer stepped it

    path = tmp_path / "outer.nnc"
    nn.save(model, path)
    meta, tensors = read_archive(path)
    assert "2.scale" in tensors and meta["model"]["layers"][2] == {
        "type": "OuterScale", "features": 6, "k": 3}
    loaded = nn.load(path)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    for (name, a), (_, b) in zip(model.named_tensors(), loaded.named_tensors()):
        assert a.tobytes() == b.tobytes(), name

    with nn.profile(peak_gflops=1.0) as prof:
        trainer.fit(X, y, epochs=1, verbose=0)
    rows = {(r["name"], r["phase"]) for r in prof.summary()["layers"]}
    assert ("2 OuterScale(features=6, k=3)", "forward") in rows
    assert ("2 OuterScale(features=6, k=3)", "backward") in rows


def test_loss_landscape_goes_through_it():
    model = make_model()
    X, y = make_data(64)
    land = nn.loss_landscape(model, nn.CrossEntropyLoss(), X, y, dims=2, steps=5, span=0.5)
    centre = nn.CrossEntropyLoss().forward(model.eval().forward(X), y)
    assert land.losses.shape == (5, 5) and np.isfinite(land.losses).all()
    np.testing.assert_allclose(land.losses[2, 2], centre, rtol=1e-6)
    # the declared role: a weight, normalised filter-wise along out_axis 0,
    # so each entry of the direction has the magnitude of its scale entry
    scale_dir = land.directions[0][2]
    np.testing.assert_allclose(np.abs(scale_dir), model[2].scale, rtol=1e-6)
    assert not land.directions[0][1].any()        # the Dense bias: role bias, zero


def test_a_file_is_checked_against_the_declared_tensors(tmp_path):
    model = make_model()
    path = tmp_path / "m.nnc"
    nn.save(model, path)
    meta, tensors = read_archive(path)
    meta["model"]["layers"][2]["k"] = 10 ** 12           # a huge claim, no bytes behind it
    write_archive(path, meta, tensors)
    with pytest.raises(FormatError, match=r"tensor .2.scale. is float32 \(3,\), expected "
                       r"float32 \(1000000000000,\)"):
        nn.load(path)
    meta["model"]["layers"][2]["k"] = "3"
    write_archive(path, meta, tensors)
    with pytest.raises(FormatError, match="OuterScale: k must be a positive int"):
        nn.load(path)


LAYER_FACTORIES = [lambda: nn.Dense(5, 4), lambda: nn.Dense(5, 4, bias=False),
                   lambda: nn.Dense(3, 2, activation="tanh"), nn.ReLU,
                   lambda: nn.LeakyReLU(0.2), nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softmax,
                   lambda: nn.Dropout(0.3), nn.Flatten,
                   lambda: nn.Sequential(nn.Dense(5, 4), nn.ReLU(), nn.Dense(4, 2))]


@pytest.mark.parametrize("make", LAYER_FACTORIES)
def test_every_layer_describes_exactly_its_tensors(make):
    layer = make()
    specs = type(layer).param_specs(layer.get_config())
    tensors = layer.named_tensors()
    assert [(s.name, s.shape) for s in specs] == [(n, a.shape) for n, a in tensors]
    trainable = [s.name for s in specs if s.trainable]
    assert trainable == [n for n, _, _ in layer.named_parameters()]
    assert all(s.role in nn.layers.ROLES for s in specs)
