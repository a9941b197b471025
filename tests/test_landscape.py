"""Loss landscapes: grid values against NumPy float64 references, weights
restored bit for bit, filter normalisation, PCA of a training path, plots."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import nncore as nn
from nncore import landscape as ls


def mlp(sizes, seed=0):
    nn.manual_seed(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Dense(a, b))
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def weights(model):
    return [p for p, _ in model.parameters()]


def snapshot(model):
    return [p.copy() for p in weights(model)]


def assert_bitwise(model, saved):
    for p, s in zip(weights(model), saved):
        assert p.dtype == s.dtype and p.shape == s.shape
        assert np.array_equal(p.view(np.uint32), s.view(np.uint32))


@pytest.fixture
def classification(rng):
    X = rng.standard_normal((120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    return X, y


def test_centre_is_the_model_loss(classification):
    X, y = classification
    model = mlp([6, 8, 3])
    loss = nn.CrossEntropyLoss()
    expected = loss.forward(model.forward(X), y)
    for dims in (1, 2):
        result = ls.loss_landscape(model, loss, X, y, dims=dims, steps=5, span=0.5)
        centre = result.losses[(2,) * dims]
        assert centre == expected
        assert result.losses.shape == (5,) * dims
        assert len(result.coords) == dims and all(c[2] == 0.0 for c in result.coords)
        # The other points are somewhere else: the directions really move the model.
        assert np.count_nonzero(result.losses != expected) == 5 ** dims - 1
    batched = ls.loss_landscape(model, loss, X, y, steps=5, span=0.5, batch_size=7)
    assert batched.losses[2, 2] == pytest.approx(expected, rel=1e-5)
    assert np.allclose(batched.losses, result.losses, rtol=1e-5)


@pytest.mark.parametrize("sizes,act", [([6, 8, 3], None), ([6, 8, 5, 3], "relu"),
                                       ([6, 3], None)])
def test_first_layer_fast_path_matches_the_plain_evaluation(classification, sizes, act):
    """A Sequential starting with a Dense gets the precomputed first-layer
    GEMMs; its grid equals the plain evaluation (batch by batch) up to float32
    rounding, and its centre is exactly the model's loss."""
    X, y = classification
    model = mlp(sizes)
    if act:                                   # Dense(activation="relu") instead of Dense, ReLU
        first = nn.Dense(sizes[0], sizes[1], activation="relu")
        first.weight = model.layers[0].weight
        model = nn.Sequential(first, *model.layers[2:])
    loss = nn.CrossEntropyLoss()
    dirs = ls.random_directions(model, dims=2, seed=1)
    Xc, yc = ls._check_data(X, y, "t")
    assert isinstance(ls._make_evaluator(model, loss, Xc, yc, len(X), dirs),
                      ls._FirstLayerEvaluator)
    assert type(ls._make_evaluator(model, loss, Xc, yc, 50, dirs)) is ls._Evaluator
    saved = snapshot(model)
    fast = ls.loss_landscape(model, loss, X, y, steps=5, directions=dirs)
    plain = ls.loss_landscape(model, loss, X, y, steps=5, directions=dirs, batch_size=50)
    assert_bitwise(model, saved)
    np.testing.assert_allclose(fast.losses, plain.losses, rtol=2e-6)
    assert fast.losses[2, 2] == loss.forward(model.forward(X), y)


def test_weights_restored_bitwise_and_in_place(classification):
    X, y = classification
    model = mlp([6, 8, 3])
    arrays = weights(model)
    saved = snapshot(model)
    model.train()
    ls.loss_landscape(model, nn.CrossEntropyLoss(), X, y, steps=3)
    assert_bitwise(model, saved)
    assert all(a is b for a, b in zip(arrays, weights(model)))
    assert model.training


class ExplodingLoss:
    """A loss that raises on its n-th call: an error in the middle of the grid."""

    def __init__(self, n, exc):
        self.calls, self.n, self.exc = 0, n, exc
        self.inner = nn.CrossEntropyLoss()

    def forward(self, pred, target):
        self.calls += 1
        if self.calls == self.n:
            raise self.exc
        return self.inner.forward(pred, target)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_weights_restored_after_an_error_mid_grid(classification, exc):
    X, y = classification
    model = mlp([6, 8, 3])
    saved = snapshot(model)
    with pytest.raises(type(exc)):
        ls.loss_landscape(model, ExplodingLoss(7, exc), X, y, steps=5)
    assert_bitwise(model, saved)
    other = mlp([6, 8, 3], seed=1)
    with pytest.raises(type(exc)):
        ls.interpolate_loss(model, other, ExplodingLoss(4, exc), X, y)
    assert_bitwise(model, saved)


@pytest.mark.parametrize("seed", [0, 3])
def test_filter_normalisation(seed):
    model = mlp([7, 5, 4, 2], seed=seed)
    params = weights(model)
    dirs = ls.random_directions(model, dims=2, normalization="filter", seed=seed)
    assert len(dirs) == 2
    for d in dirs:
        assert [a.shape for a in d] == [p.shape for p in params]
        for a, p in zip(d, params):
            assert a.dtype == np.float32
            if p.ndim == 1:
                assert not a.any()                   # bias directions are zero
            else:                                    # one column per output neuron
                wn = np.linalg.norm(p.astype(np.float64), axis=0)
                dn = np.linalg.norm(a.astype(np.float64), axis=0)
                np.testing.assert_allclose(dn, wn, rtol=1e-6)
    # Same seed, same directions; the two directions differ.
    again = ls.random_directions(model, dims=2, normalization="filter", seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(dirs[0], again[0]))
    assert not np.array_equal(dirs[0][0], dirs[1][0])


def test_layer_and_no_normalisation():
    model = mlp([5, 4, 3])
    params = weights(model)
    (layer,) = ls.random_directions(model, dims=1, normalization="layer", seed=2)
    raw = ls.random_directions(model, dims=1, normalization=None, seed=2)[0]
    rng = np.random.default_rng(2)
    for a, r, p in zip(layer, raw, params):
        np.testing.assert_array_equal(r, rng.standard_normal(p.shape).astype(np.float32))
        if p.ndim == 1:
            assert not a.any()
        else:
            assert np.linalg.norm(a.astype(np.float64)) == pytest.approx(
                np.linalg.norm(p.astype(np.float64)), rel=1e-6)


def least_squares(rng, n=60, d=5, k=3):
    X = rng.standard_normal((n, d)).astype(np.float32)
    Y = rng.standard_normal((n, k)).astype(np.float32)
    model = mlp([d, k])                              # one Dense, no activation
    return model, X, Y


def reference_mse(model, X, Y, dirs, coefs):
    (w, b) = [p.astype(np.float64) for p in weights(model)]
    for c, (dw, db) in zip(coefs, dirs):
        w = w + c * dw.astype(np.float64)
        b = b + c * db.astype(np.float64)
    return np.mean((X.astype(np.float64) @ w + b - Y) ** 2)


def test_linear_least_squares_slice_is_a_convex_parabola(rng):
    model, X, Y = least_squares(rng)
    result = ls.loss_landscape(model, nn.MSELoss(), X, Y, dims=1, steps=21, span=2.0,
                               normalization=None, seed=4)
    t, losses = result.coords[0], result.losses
    expected = [reference_mse(model, X, Y, result.directions, [c]) for c in t]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    second = np.diff(losses, 2)
    assert (second >= 0).all()
    # A quadratic: every second difference is the same, 2 a h^2 with a > 0.
    np.testing.assert_allclose(second, second.mean(), rtol=1e-3)


def test_given_directions_flat_or_per_parameter(rng):
    model, X, Y = least_squares(rng)
    params = weights(model)
    d1 = [rng.standard_normal(p.shape) for p in params]
    d2 = np.concatenate([rng.standard_normal(p.size) for p in params])
    result = ls.loss_landscape(model, nn.MSELoss(), X, Y, steps=5, span=0.3,
                               directions=[d1, d2])
    # Given directions are used exactly as given (stored as float32).
    np.testing.assert_array_equal(result.directions[0][0], d1[0].astype(np.float32))
    np.testing.assert_array_equal(result.directions[1][1],
                                  d2[params[0].size:].astype(np.float32))
    for i, a in enumerate(result.coords[0]):
        for j, b in enumerate(result.coords[1]):
            assert result.losses[i, j] == pytest.approx(
                reference_mse(model, X, Y, result.directions, [a, b]), rel=1e-5)


def test_bad_arguments(classification):
    X, y = classification
    model = mlp([6, 8, 3])
    loss = nn.CrossEntropyLoss()
    shapes = [p.shape for p in weights(model)]
    bad = [
        (dict(dims=3), "dims"), (dict(steps=1), "steps"), (dict(span=0.0), "span"),
        (dict(span=float("nan")), "span"), (dict(normalization="bogus"), "normalization"),
        (dict(batch_size=0), "batch_size"),
        (dict(directions=[[np.zeros(s) for s in shapes]]), "2 needs 2"),
        (dict(directions=[[np.zeros(s) for s in shapes]] * 2 + [None]), "dims=2"),
        (dict(dims=1, directions=[[np.zeros((2, 2))] + [np.zeros(s) for s in shapes[1:]]]),
         "directions[0][0] has shape (2, 2)"),
        (dict(dims=1, directions=[np.zeros(5)]), "flat vector of 5"),
        (dict(dims=1, directions=[[np.full(s, np.nan) for s in shapes]]), "NaN"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)")):
            ls.loss_landscape(model, loss, X, y, **kwargs)
    with pytest.raises(ValueError, match="X must be"):
        ls.loss_landscape(model, loss, X[0], y)
    with pytest.raises(ValueError, match="y has"):
        ls.loss_landscape(model, loss, X, y[:-1])
    with pytest.raises(TypeError, match="model"):
        ls.loss_landscape(object(), loss, X, y)


def test_interpolation_endpoints_are_the_models(classification):
    X, y = classification
    a, b = mlp([6, 8, 3], seed=0), mlp([6, 8, 3], seed=1)
    saved_a, saved_b = snapshot(a), snapshot(b)
    loss = nn.CrossEntropyLoss()
    result = nn.interpolate_loss(a, b, loss, X, y, steps=21, alpha_range=(-0.5, 1.5))
    alphas = result.coords[0]
    assert alphas[5] == 0.0 and alphas[15] == 1.0
    assert result.losses[5] == loss.forward(a.forward(X), y)
    assert result.losses[15] == loss.forward(b.forward(X), y)
    assert_bitwise(a, saved_a)
    assert_bitwise(b, saved_b)
    np.testing.assert_array_equal(result.directions[0][0], saved_b[0] - saved_a[0])
    with pytest.raises(ValueError, match="differ"):
        nn.interpolate_loss(a, mlp([6, 4, 3]), loss, X, y)
    with pytest.raises(ValueError, match="alpha_range"):
        nn.interpolate_loss(a, b, loss, X, y, alpha_range=(1.0, 0.0))


def test_pca_of_a_path_in_a_plane_recovers_the_plane(rng, classification):
    """Snapshots w + a_i u + b_i v: the PCA plane is span(u, v) and the projected
    path keeps every distance between snapshots."""
    X, y = classification
    model = mlp([6, 8, 3])
    centre = np.concatenate([p.ravel() for p in weights(model)]).astype(np.float64)
    u, v = np.linalg.qr(rng.standard_normal((centre.size, 2)))[0].T
    ab = np.array([[-3.0, 1.0], [-2.0, 1.5], [-1.2, 0.4], [-0.5, -0.2], [0.0, 0.0]])
    path = [(centre + a * u + b * v).astype(np.float32) for a, b in ab]
    saved = snapshot(model)
    result = ls.trajectory_landscape(model, nn.CrossEntropyLoss(), X, y, path, steps=7)
    assert_bitwise(model, saved)
    got = result.trajectory
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)   # noqa: E731
    np.testing.assert_allclose(dist(got), dist(ab), atol=1e-4)
    assert np.abs(got[-1]).max() < 1e-4                  # the model is the origin
    assert (got[0] <= 0).all()                           # the path starts bottom-left
    assert result.explained_variance.sum() == pytest.approx(1.0, abs=1e-6)
    flat = np.stack([np.concatenate([a.ravel() for a in d]) for d in result.directions])
    np.testing.assert_allclose(flat @ flat.T, np.eye(2), atol=1e-6)
    for k in range(2):                                   # the grid covers the path
        assert result.coords[k][0] < got[:, k].min() and got[:, k].max() < result.coords[k][-1]
    with pytest.raises(ValueError, match="at least 3"):
        ls.trajectory_landscape(model, nn.CrossEntropyLoss(), X, y, path[:2])
    with pytest.raises(ValueError, match="line"):
        ls.trajectory_landscape(model, nn.CrossEntropyLoss(), X, y,
                                [(centre + a * u).astype(np.float32) for a in (1, 2, 3)])


def test_trajectory_recorder_as_a_callback(classification):
    X, y = classification
    model = mlp([6, 8, 3])
    recorder = nn.TrajectoryRecorder()                   # the model comes from the trainer
    every_other = nn.TrajectoryRecorder(model, every=2)
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.5), batch_size=32, seed=0)
    trainer.fit(X, y, epochs=4, callbacks=[recorder, every_other], verbose=0)
    assert len(recorder) == 5                            # the start and every epoch
    assert len(every_other) == 3
    np.testing.assert_array_equal(every_other.weights[1], recorder.weights[2])
    final = np.concatenate([p.ravel() for p in weights(model)])
    np.testing.assert_array_equal(recorder.weights[-1], final)
    assert not np.array_equal(recorder.weights[0], final)
    result = nn.trajectory_landscape(model, nn.CrossEntropyLoss(), X, y, recorder, steps=5)
    assert result.trajectory.shape == (5, 2) and result.losses.shape == (5, 5)


def needs_matplotlib():
    pytest.importorskip("matplotlib")


PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_valid_files(classification, tmp_path):
    needs_matplotlib()
    X, y = classification
    model = mlp([6, 8, 3])
    loss = nn.CrossEntropyLoss()
    two = ls.loss_landscape(model, loss, X, y, steps=5)
    one = ls.loss_landscape(model, loss, X, y, dims=1, steps=5)
    for result, kind, name in [(two, "contour", "c.png"), (two, "surface", "s.png"),
                               (one, "line", "l.png"), (two, None, "c.svg"),
                               (one, None, "l.pdf")]:
        out = tmp_path / name
        fig = result.plot(out, kind=kind)
        data = out.read_bytes()
        magic = {".png": PNG, ".svg": b"<?xml", ".pdf": b"%PDF"}[out.suffix]
        assert data.startswith(magic) and len(data) > 5000, name
        assert fig.axes
    with pytest.raises(ValueError, match="format"):
        two.plot(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="kind"):
        two.plot(kind="line")
    with pytest.raises(ValueError, match="kind"):
        one.plot(kind="contour")


def test_plot_without_matplotlib_says_how_to_get_it(classification, monkeypatch):
    X, y = classification
    result = ls.loss_landscape(mlp([6, 8, 3]), nn.CrossEntropyLoss(), X, y, dims=1, steps=3)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"nncore\[plot\]"):
        result.plot()


def test_cli_writes_a_png(tmp_path):
    needs_matplotlib()
    X, y = nn.datasets.load_digits()
    model = mlp([64, 16, 10])
    nn.save(model, tmp_path / "m.nnc")
    out = tmp_path / "land.png"
    proc = subprocess.run([sys.executable, "-m", "nncore", "landscape", str(tmp_path / "m.nnc"),
                           "--data", "digits", "--out", str(out), "--steps", "5",
                           "--samples", "300"], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG)
    assert "25 points x 300 samples" in proc.stdout
    expected = nn.CrossEntropyLoss().forward(model.forward(X[:300]), y[:300])
    assert f"at the model {expected:.4f}" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "nncore", "landscape", str(tmp_path / "m.nnc"),
                          "--out", str(tmp_path / "x.gif")], cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "x.gif" in bad.stderr


def test_cli_conv_net_gets_images(tmp_path):
    """A saved conv net is evaluated on NCHW images (an MLP on rows of pixels)."""
    needs_matplotlib()
    X, y = nn.datasets.load_digits(flatten=False)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, activation="relu"),
                          nn.BatchNorm2d(4), nn.GlobalAvgPool2d(), nn.Dense(4, 10))
    nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.1), batch_size=64,
               seed=0).fit(X[:256], y[:256], 1, verbose=0)
    nn.save(model, tmp_path / "cnn.nnc")
    out = tmp_path / "land.png"
    proc = subprocess.run([sys.executable, "-m", "nncore", "landscape", str(tmp_path / "cnn.nnc"),
                           "--data", "digits", "--out", str(out), "--steps", "3",
                           "--samples", "100"], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG)
    model.eval()
    expected = nn.CrossEntropyLoss().forward(model.forward(X[:100]), y[:100])
    assert f"at the model {expected:.4f}" in proc.stdout


def test_cli_model_that_does_not_fit_the_data(tmp_path):
    pytest.importorskip("matplotlib")   # the CLI checks it can plot before loading data
    try:
        nn.datasets.load_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    nn.save(mlp([64, 16, 10]), tmp_path / "m.nnc")
    proc = subprocess.run([sys.executable, "-m", "nncore", "landscape", str(tmp_path / "m.nnc"),
                           "--data", "fashion-mnist", "--out", str(tmp_path / "x.png"),
                           "--steps", "3", "--samples", "50"], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "784 features, expected 64" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()
