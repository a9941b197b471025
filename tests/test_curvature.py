"""The curvature of Li et al.'s Section 6: Lanczos, the Hessian's extreme
eigenvalues against a dense float64 Hessian of a NumPy reference net, the
curvature map, the two convexity measures, result files."""
import json

import numpy as np
import pytest

import nncore as nn
from nncore import landscape as ls
from nncore.linalg import lanczos


def test_lanczos_extremes_and_exact_spectrum(rng):
    a = rng.standard_normal((30, 30))
    a = (a + a.T) / 2
    ev = np.linalg.eigvalsh(a)
    np.testing.assert_allclose(lanczos(lambda v: a @ v, 30, 30), ev, atol=1e-10)
    ritz = lanczos(lambda v: a @ v, 30, 12, seed=1)
    assert len(ritz) == 12
    assert ev[0] - 1e-12 <= ritz[0] and ritz[-1] <= ev[-1] + 1e-12   # from inside
    # a rank-2 operator: the Krylov space is invariant after two steps
    u = rng.standard_normal((2, 30))
    low = lanczos(lambda v: u.T @ (np.array([3.0, -1.0]) * (u @ v)), 30, 10)
    assert low.size <= 3
    assert low[0] == pytest.approx(np.linalg.eigvalsh(
        u.T @ np.diag([3.0, -1.0]) @ u)[0], rel=1e-9)
    with pytest.raises(ValueError, match="iters"):
        lanczos(lambda v: v, 3, 0)
    with pytest.raises(ValueError, match="returned 2"):
        lanczos(lambda v: v[:2], 3, 2)


def reference(theta, shapes, stats, X, y):
    """Loss and gradient in float64 of Dense-BatchNorm1d(eval)-Tanh-Dense with
    a mean cross-entropy; theta in model.parameters() order."""
    ws, o = [], 0
    for s in shapes:
        n = int(np.prod(s))
        ws.append(theta[o:o + n].reshape(s))
        o += n
    w1, b1, gamma, beta, w2, b2 = ws
    mean, var, eps = stats
    a = X @ w1 + b1
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (a - mean) * inv
    h = np.tanh(gamma * xhat + beta)
    z = h @ w2 + b2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(X)
    dz = p.copy()
    dz[np.arange(n), y] -= 1
    dz /= n
    dh = (dz @ w2.T) * (1 - h ** 2)
    da = dh * gamma * inv
    grads = (X.T @ da, da.sum(0), (dh * xhat).sum(0), dh.sum(0), h.T @ dz, dz.sum(0))
    return -np.log(p[np.arange(n), y]).mean(), np.concatenate([g.ravel() for g in grads])


def tiny_bn_net(rng):
    nn.manual_seed(3)
    model = nn.Sequential(nn.Dense(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dense(5, 3))
    bn = model.layers[1]
    bn.running_mean[...] = rng.normal(0, 0.5, 5)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 5)
    bn.weight[...] = rng.uniform(0.5, 1.5, 5)
    bn.bias[...] = rng.normal(0, 0.3, 5)
    return model


def dense_hessian(model, X, y):
    params = [p for p, _ in model.parameters()]
    shapes = [p.shape for p in params]
    bn = model.layers[1]
    stats = (bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64), bn.eps)
    theta = np.concatenate([p.astype(np.float64).ravel() for p in params])
    X64 = X.astype(np.float64)
    n, h = theta.size, 1e-5
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        H[:, i] = (reference(theta + e, shapes, stats, X64, y)[1]
                   - reference(theta - e, shapes, stats, X64, y)[1]) / (2 * h)
    return (H + H.T) / 2, reference(theta, shapes, stats, X64, y)[0]


def test_hessian_eigs_match_a_dense_float64_hessian(rng):
    X = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    model = tiny_bn_net(rng)
    H, ref_loss = dense_hessian(model, X, y)
    model.eval()
    ours = nn.CrossEntropyLoss().forward(model.predict(X), y)
    assert ours == pytest.approx(ref_loss, rel=1e-5)
    ev = np.linalg.eigvalsh(H)
    assert ev[0] < 0 < ev[-1]                       # a saddle-ish point: both signs
    model.train()                                   # hessian_eigs evaluates in eval mode
    saved = [a.copy() for _, a in model.named_tensors()]
    n = H.shape[0]
    lo, hi = ls.hessian_eigs(model, nn.CrossEntropyLoss(), X, y, iters=n)
    assert lo == pytest.approx(ev[0], abs=1e-4 * ev[-1])
    assert hi == pytest.approx(ev[-1], rel=1e-4)
    # few steps: extremes from inside, the largest already close
    lo8, hi8 = ls.hessian_eigs(model, nn.CrossEntropyLoss(), X, y, iters=8, batch_size=16)
    assert ev[0] - 1e-4 <= lo8 < 0 and hi8 == pytest.approx(ev[-1], rel=1e-2)
    assert model.training
    for (name, a), s in zip(model.named_tensors(), saved):
        assert np.array_equal(a, s), name


def test_curvature_map_centre_and_measures(rng):
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = tiny_bn_net(rng)
    loss = nn.CrossEntropyLoss()
    land = ls.loss_landscape(model, loss, X, y, steps=5, span=0.5)
    calls = []
    cmap = ls.curvature_map(model, loss, X, y, land, steps=3, span=0.5, iters=6,
                            progress=lambda d, t: calls.append(d))
    assert cmap.lambda_min.shape == (3, 3) and calls == list(range(1, 10))
    lo, hi = ls.hessian_eigs(model, loss, X, y, iters=6)
    assert cmap.lambda_min[1, 1] == pytest.approx(lo, rel=1e-6)
    assert cmap.lambda_max[1, 1] == pytest.approx(hi, rel=1e-6)
    np.testing.assert_allclose(cmap.ratio, np.abs(cmap.lambda_min / cmap.lambda_max))
    land.curvature = cmap
    m = ls.convexity_measures(land, threshold=0.05)
    assert m["nonconvex_fraction"] == np.mean(cmap.ratio > 0.05)
    assert 0.0 <= m["midpoint_violations"] <= 1.0


def synthetic(losses, curvature=None):
    c = np.linspace(-1, 1, losses.shape[0])
    return ls.Landscape([c, c], losses, [], curvature=curvature)


def test_convexity_measures_on_known_surfaces():
    c = np.linspace(-1, 1, 5)
    a, b = np.meshgrid(c, c, indexing="ij")
    bowl = synthetic(a ** 2 + 2 * b ** 2 + 1)
    assert ls.convexity_measures(bowl)["midpoint_violations"] == 0.0
    assert np.isnan(ls.convexity_measures(bowl)["nonconvex_fraction"])
    saddle = synthetic(a ** 2 - b ** 2 + 5)   # 21 points tested (not the corners), 15 concave
    assert ls.convexity_measures(saddle)["midpoint_violations"] == pytest.approx(15 / 21)
    bump = bowl.losses.copy()
    bump[2, 2] += 10.0                              # the centre only
    assert ls.convexity_measures(synthetic(bump))["midpoint_violations"] == \
        pytest.approx(1 / 21)
    cv = ls.Curvature([c[:3], c[:3]], [[-1, 0, 0.5], [-0.05, -2, 1], [0, 0, 0]],
                      [[2, 1, 1], [1, 1, 4], [1, 1, -1]])
    np.testing.assert_array_equal(cv.ratio, [[0.5, 0, 0.5], [0.05, 2, 0.25], [0, 0, np.inf]])
    assert ls.convexity_measures(synthetic(bowl.losses, cv), 0.1)["nonconvex_fraction"] == \
        pytest.approx(5 / 9)


def test_saved_results_reload_to_the_same_arrays(tmp_path, rng):
    c = np.linspace(-1, 1, 4)
    cv = ls.Curvature([c[:3], c[:3]], rng.normal(size=(3, 3)), rng.uniform(1, 2, (3, 3)),
                      {"seconds": 1.5, "samples": 10, "iters": 4})
    lands = {"a": ls.Landscape([c, c], rng.normal(size=(4, 4)), [], curvature=cv,
                               stats={"seconds": 2.0, "points_per_second": 8.0}),
             "b without": ls.Landscape([c], rng.normal(size=4), [], title="line")}
    path = tmp_path / "r.npz"
    ls.save_landscapes(path, lands, {"recipe": {"lr": 0.1}, "note": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]   # no temporary left
    back, meta = ls.load_landscapes(path)
    assert list(back) == ["a", "b without"] and meta == {"recipe": {"lr": 0.1}, "note": "x"}
    for name, land in lands.items():
        again = back[name]
        assert all(np.array_equal(x, z) for x, z in zip(land.coords, again.coords))
        assert np.array_equal(land.losses, again.losses) and again.stats == land.stats
    assert np.array_equal(back["a"].curvature.lambda_min, cv.lambda_min)
    assert np.array_equal(back["a"].curvature.ratio, cv.ratio)
    assert back["a"].curvature.stats == cv.stats and back["b without"].curvature is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps({"format": "other"})))
    with pytest.raises(ValueError, match="not a valid"):
        ls.load_landscapes(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a landscape result"):
        ls.load_landscapes(tmp_path / "junk.npz")
