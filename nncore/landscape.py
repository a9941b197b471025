"""Loss landscapes: the loss of a trained network on a line or a plane through
its weights (Li et al., "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018), the linear interpolation between two models (Goodfellow et al.,
2015) and the training path projected on its top two PCA directions.

The model is moved to ``w + a*d1 + b*d2`` for every grid point ``(a, b)``, its
loss is evaluated with the C forward pass, and its weights are copied back in
place afterwards, bit for bit, even when an exception or Ctrl-C interrupts
the grid.

Directions are lists of float32 arrays, one per parameter in
``model.parameters()`` order. Random directions are Gaussian and, by default,
filter-normalised: for a Dense layer (weight shape ``(in, out)``) the block of
incoming weights of each output neuron (a column) is rescaled to the norm of
that neuron's weights, and bias directions are zero, as in the paper.
"""
import contextlib
import math
import os

import numpy as np

from . import _core, _guard
from .layers import Sequential, fused_activations
from .linalg import matmul

__all__ = ["Landscape", "loss_landscape", "interpolate_loss", "trajectory_landscape",
           "TrajectoryRecorder", "random_directions", "normalize_direction"]

NORMALIZATIONS = ("filter", "layer", None)
PLOT_KINDS = ("contour", "surface", "line")
PLOT_FORMATS = (".png", ".svg", ".pdf")


# --------------------------------------------------------------------------- model access

def _parameters(model, who):
    """The model's parameter arrays (not their gradients), in a fixed order."""
    if not hasattr(model, "parameters") or not hasattr(model, "forward"):
        raise TypeError(f"{who}: model must have parameters() and forward(), "
                        f"got {type(model).__name__}")
    params = []
    for k, item in enumerate(model.parameters()):
        p = item[0] if isinstance(item, tuple) else item
        if not isinstance(p, np.ndarray) or p.dtype != np.float32:
            raise TypeError(f"{who}: parameter {k} of the model is not a float32 array")
        params.append(p)
    if not params:
        raise ValueError(f"{who}: the model has no parameters")
    return params


@contextlib.contextmanager
def _restored(model, params):
    """Run the block in eval mode and put every weight back afterwards, bit for
    bit and in place (optimizers keep state keyed by the arrays themselves),
    whatever happens inside, KeyboardInterrupt included."""
    saved = [p.copy() for p in params]
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield saved
    finally:
        for p, s in zip(params, saved):
            np.copyto(p, s)
        if was_training and hasattr(model, "train"):
            model.train()
        # Drop the layers' references to our inputs, as Sequential.predict does.
        forget = getattr(model, "_forget", None)
        if callable(forget):
            forget()


def _check_data(X, y, who):
    X = _guard.as_array(X, who, "X")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{who}: X has dtype {X.dtype}; expected real numbers")
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{who}: X must be a non-empty 2-D array, got shape {X.shape}")
    X = _guard.c_array(X, np.float32, who, "X")
    if not np.isfinite(X).all():
        raise ValueError(f"{who}: X contains NaN or Inf")
    y = _guard.as_array(y, who, "y")
    if y.shape[:1] != X.shape[:1]:
        raise ValueError(f"{who}: y has {y.shape[0] if y.ndim else 0} rows, X has {X.shape[0]}")
    if y.dtype.kind == "f":
        y = np.ascontiguousarray(y, dtype=np.float32)
    else:
        y = np.ascontiguousarray(y)
    return X, y


def _check_batch_size(batch_size, n, who):
    if batch_size is None:
        return n
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int or None, got {batch_size!r}")
    return min(int(batch_size), n)


def _check_steps(steps, who):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"{who}: steps must be an int >= 2, got {steps!r}")
    return int(steps)


class _Evaluator:
    """The mean loss of the model's current weights over (X, y), batch by batch
    (a batch's mean weighted by its size, so any batch_size gives the mean
    over all samples)."""

    moves_first_layer = True

    def __init__(self, model, loss, X, y, batch_size):
        if not hasattr(loss, "forward"):
            raise TypeError(f"landscape: loss must have forward(pred, target), got "
                            f"{type(loss).__name__}")
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self.batch_size = batch_size

    def __call__(self, coefs=None):
        n, bs = self.X.shape[0], self.batch_size
        if bs >= n:
            return float(self.loss.forward(self.model.forward(self.X), self.y))
        total = 0.0
        for start in range(0, n, bs):
            xb, yb = self.X[start:start + bs], self.y[start:start + bs]
            total += float(self.loss.forward(self.model.forward(xb), yb)) * xb.shape[0]
        return total / n


# The fast path below keeps (2 + dims) arrays of the first layer's output.
FAST_PATH_BYTES = 1 << 30


class _FirstLayerEvaluator(_Evaluator):
    """The same loss, computed faster for a Sequential that starts with a Dense.

    The first layer's pre-activation is affine in the grid coordinates:
    ``X (W + a D1 + b D2) + (c + a e1 + b e2) = P0 + a P1 + b P2`` with
    ``P0 = X W + c`` and ``Pk = X Dk + ek``. The three GEMMs run once, and
    each grid point costs an elementwise combination plus the remaining
    (smaller) layers: for a 784-256-128-10 network the first GEMM is 85% of
    the work. The first layer's weights are then never moved; the centre
    point (all coefficients 0) is evaluated by the model's own forward pass,
    so it is exactly the model's loss. Elsewhere the result differs from a
    direct evaluation only by float32 rounding (the weights ``W + a D1`` are
    not rounded to float32 first).
    """

    moves_first_layer = False

    def __init__(self, model, loss, X, y, dense, rest, relu, directions):
        super().__init__(model, loss, X, y, X.shape[0])
        weight, bias, _ = dense.gemm_link()
        has_bias = bias is not None
        self.p0 = matmul(X, weight, bias=bias)
        self.pk = [matmul(X, d[0], bias=d[1] if has_bias else None) for d in directions]
        self.z = np.empty_like(self.p0)
        self.tmp = np.empty_like(self.p0)
        self.rest, self.relu = rest, relu

    def __call__(self, coefs=None):
        if coefs is None or not any(coefs):
            return super().__call__()
        z, tmp = self.z, self.tmp
        first = True    # z = p0 + sum c_k p_k, in as few passes over memory as NumPy allows
        for c, pk in zip(coefs, self.pk):
            if c != 0.0:
                np.multiply(pk, np.float32(c), out=tmp if not first else z)
                if first:
                    np.add(z, self.p0, out=z)
                    first = False
                else:
                    np.add(z, tmp, out=z)
        if self.relu:
            _core.act_forward(_core.ACT_CODES["relu"], z, z)
        x = z
        for layer in self.rest:
            x = layer.forward(x)
        return float(self.loss.forward(x, self.y))


def _make_evaluator(model, loss, X, y, batch_size, directions):
    """The fast first-layer evaluator when the model allows it and everything
    fits in memory in one batch; else the plain one."""
    plain = _Evaluator(model, loss, X, y, batch_size)
    if batch_size < X.shape[0] or not isinstance(model, Sequential) or not model.layers:
        return plain
    dense = model.layers[0]
    link = dense.gemm_link()
    if link is None or X.ndim != 2 or X.shape[1] != link[0].shape[0]:
        return plain      # (the model's forward names a shape error)
    relu, rest = link[2] == _core.ACT_CODES["relu"], list(model.layers[1:])
    if 1 in fused_activations(model.layers):
        relu, rest = rest[0].act_name == "relu", rest[1:]
        if not relu:
            return plain
    n_first = len(dense.parameters())
    params = _parameters(model, "loss_landscape")
    if any(a is not b for (a, _), b in zip(dense.parameters(), params[:n_first])):
        return plain
    if (2 + len(directions)) * X.shape[0] * link[0].shape[1] * 4 > FAST_PATH_BYTES:
        return plain
    return _FirstLayerEvaluator(model, loss, X, y, dense, rest, relu,
                                [d[:n_first] for d in directions])


# --------------------------------------------------------------------------- directions

def normalize_direction(direction, weights, normalization="filter", specs=None):
    """Rescale a direction (a list of arrays shaped like ``weights``) and return
    it as new float32 arrays.

    - ``"filter"``: for each 2-D weight ``(in, out)``, column ``j`` of the
      direction gets the norm of column ``j`` of the weight (the weights into
      output neuron ``j``); parameters of other ranks are scaled as a whole.
    - ``"layer"``: each parameter's direction gets that parameter's norm.
    - ``None``: unchanged.

    With ``"filter"`` and ``"layer"`` the directions of 1-D parameters (biases)
    are set to zero, as in Li et al.: a bias has no scale invariance to
    normalise away.

    ``specs`` (the layers' ``Param`` records of the trainable tensors, in
    order) replaces those shape rules by the declared ones: only role
    "weight" moves, and a filter is the slice at one index of ``out_axis``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if len(direction) != len(weights):
        raise ValueError(f"direction has {len(direction)} arrays, the model has "
                         f"{len(weights)} parameters")
    out = []
    for k, (d, w) in enumerate(zip(direction, weights)):
        d = np.array(d, dtype=np.float64)
        if d.shape != w.shape:
            raise ValueError(f"direction array {k} has shape {d.shape}, expected {w.shape}")
        w = np.asarray(w, dtype=np.float64)
        if specs is None:
            moves, out_axis = w.ndim > 1, (1 if w.ndim == 2 else None)
        else:
            moves, out_axis = specs[k].role == "weight", specs[k].out_axis
        if normalization is not None:
            if not moves:
                d[...] = 0.0
            elif normalization == "filter" and out_axis is not None:
                axes = tuple(a for a in range(w.ndim) if a != out_axis)
                d *= _scale(np.sqrt((w * w).sum(axis=axes, keepdims=True)),
                            np.sqrt((d * d).sum(axis=axes, keepdims=True)))
            else:
                d *= _scale(np.linalg.norm(w), np.linalg.norm(d))
        out.append(d.astype(np.float32))
    return out


def _scale(target_norm, norm):
    # A zero direction stays zero rather than dividing by zero.
    return np.divide(target_norm, norm, out=np.zeros_like(np.asarray(norm, dtype=np.float64)),
                     where=np.asarray(norm) > 0)


def random_directions(model, dims=2, normalization="filter", seed=0):
    """``dims`` Gaussian directions for ``model``, drawn in parameter order from
    ``numpy.random.default_rng(seed)`` and normalised (see
    :func:`normalize_direction`)."""
    if dims not in (1, 2) or not isinstance(dims, (int, np.integer)) or isinstance(dims, bool):
        raise ValueError(f"random_directions: dims must be 1 or 2, got {dims!r}")
    params = _parameters(model, "random_directions")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"random_directions: seed must be an int >= 0, got {seed!r} "
                        f"({exc})") from None
    specs = _trainable_specs(model)
    return [normalize_direction([rng.standard_normal(p.shape) for p in params], params,
                                normalization, specs)
            for _ in range(dims)]


def _trainable_specs(model):
    """The model's Param records of its trainable tensors (in parameters()
    order), or None for a model that does not describe itself."""
    describe = getattr(model, "param_specs", None)
    if describe is None or not callable(getattr(model, "get_config", None)):
        return None
    return [spec for spec in describe(model.get_config()) if spec.trainable]


def _check_directions(directions, params, dims, who):
    """User directions: ``dims`` items, each a list of arrays shaped like the
    parameters or one flat vector of all of them in parameter order."""
    if isinstance(directions, np.ndarray) and directions.ndim == 1:
        directions = [directions]
    try:
        directions = list(directions)
    except TypeError:
        raise TypeError(f"{who}: directions must be a list of {dims} directions") from None
    if len(directions) != dims:
        raise ValueError(f"{who}: got {len(directions)} directions, dims={dims} needs {dims}")
    sizes = [p.size for p in params]
    out = []
    for i, d in enumerate(directions):
        if isinstance(d, np.ndarray) and d.ndim == 1:
            if d.size != sum(sizes):
                raise ValueError(f"{who}: directions[{i}] is a flat vector of {d.size} "
                                 f"values, the model has {sum(sizes)} weights")
            d = _unflatten(d, params)
        d = list(d)
        if len(d) != len(params):
            raise ValueError(f"{who}: directions[{i}] has {len(d)} arrays, the model has "
                             f"{len(params)} parameters (or pass one flat vector of "
                             f"{sum(sizes)} values)")
        arrays = []
        for k, (a, p) in enumerate(zip(d, params)):
            a = np.asarray(a)
            if a.shape != p.shape:
                raise ValueError(f"{who}: directions[{i}][{k}] has shape {a.shape}, "
                                 f"expected {p.shape} (parameter {k})")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"{who}: directions[{i}][{k}] has dtype {a.dtype}")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"{who}: directions[{i}][{k}] contains NaN or Inf")
            arrays.append(a)
        out.append(arrays)
    return out


def _flatten(arrays):
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def _unflatten(flat, params, dtype=np.float32):
    out, start = [], 0
    for p in params:
        out.append(np.asarray(flat[start:start + p.size], dtype=dtype).reshape(p.shape))
        start += p.size
    return out


# --------------------------------------------------------------------------- grid evaluation

def _axis(lo, hi, steps):
    """``steps`` evenly spaced values from lo to hi; values that should be 0 or
    1 are exactly 0 or 1, so the centre point is the model itself."""
    t = np.arange(steps, dtype=np.float64) / (steps - 1)
    x = lo + (hi - lo) * t
    tol = 1e-12 * max(abs(hi - lo), 1e-300)
    for exact in (0.0, 1.0):
        x[np.abs(x - exact) <= tol] = exact
    return x


def _evaluate(model, params, evaluate, directions, axes):
    """Loss at ``w + sum_k axes[k][i_k] * directions[k]`` for every grid index.

    The point is built in float64 from the saved weights and stored in place
    in float32, so a zero coefficient leaves a weight bitwise unchanged.
    """
    shape = tuple(len(a) for a in axes)
    losses = _guard.empty(shape, np.float64, lambda: f"landscape: a {shape} grid of losses")
    # The fast evaluator works out the first layer itself: leave its weights.
    first = 0 if evaluate.moves_first_layer else len(model.layers[0].parameters())
    with _restored(model, params) as saved:
        base = [s.astype(np.float64) for s in saved]
        dirs = [[d.astype(np.float64) for d in direction] for direction in directions]
        for index in np.ndindex(*shape):
            coefs = [float(axes[k][i]) for k, i in enumerate(index)]
            for j in range(first, len(params)):
                w = base[j]
                for c, d in zip(coefs, dirs):
                    if c != 0.0:
                        w = w + c * d[j]
                np.copyto(params[j], w, casting="same_kind")
            losses[index] = evaluate(coefs)
    return losses


# --------------------------------------------------------------------------- public API

def loss_landscape(model, loss, X, y, *, dims=2, steps=21, span=1.0, normalization="filter",
                   directions=None, seed=0, batch_size=None):
    """The loss of ``model`` on ``(X, y)`` along one or two directions.

    The grid is ``steps`` points from ``-span`` to ``span`` on each axis;
    ``losses[i, j]`` is the mean loss at ``w + coords[0][i]*d1 + coords[1][j]*d2``
    (``losses[i]`` at ``w + coords[0][i]*d1`` when ``dims=1``). With an odd
    ``steps`` the centre point is the model itself.

    ``directions``: ``None`` for random Gaussian directions from
    ``numpy.random.default_rng(seed)``, normalised by ``normalization``
    (``"filter"``, ``"layer"`` or ``None``, see :func:`normalize_direction`);
    or ``dims`` directions, each a list of arrays shaped like
    ``model.parameters()`` or one flat vector, used exactly as given.

    ``batch_size`` bounds memory (default: all of X in one forward pass).
    The model's weights are restored bit for bit afterwards, even on an error.
    """
    who = "loss_landscape"
    if dims not in (1, 2) or not isinstance(dims, (int, np.integer)) or isinstance(dims, bool):
        raise ValueError(f"{who}: dims must be 1 or 2, got {dims!r}")
    steps = _check_steps(steps, who)
    if isinstance(span, bool) or not isinstance(span, (int, float, np.floating, np.integer)) \
            or not math.isfinite(span) or span <= 0:
        raise ValueError(f"{who}: span must be a finite number > 0, got {span!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{who}: normalization must be one of {NORMALIZATIONS}, "
                         f"got {normalization!r}")
    params = _parameters(model, who)
    X, y = _check_data(X, y, who)
    batch_size = _check_batch_size(batch_size, X.shape[0], who)
    if directions is None:
        directions = random_directions(model, dims, normalization, seed)
        how = {"filter": "filter-normalised", "layer": "layer-normalised",
               None: "unnormalised"}[normalization] + " random directions"
    else:
        directions = _check_directions(directions, params, dims, who)
        how = "given directions"
    axes = [_axis(-float(span), float(span), steps) for _ in range(dims)]
    evaluate = _make_evaluator(model, loss, X, y, batch_size, directions)
    losses = _evaluate(model, params, evaluate, directions, axes)
    return Landscape(axes, losses, directions, title=f"Loss landscape ({how})")


def interpolate_loss(model_a, model_b, loss, X, y, *, steps=21, alpha_range=(-0.5, 1.5),
                     batch_size=None):
    """The loss on ``(X, y)`` along the line ``(1 - alpha) * w_a + alpha * w_b``
    between two models of the same architecture (Goodfellow et al., 2015).

    ``alpha`` runs over ``steps`` points of ``alpha_range``; alpha = 0 is
    ``model_a`` and alpha = 1 is ``model_b`` exactly when they are on the grid
    (they are with the defaults). The points are evaluated with ``model_a``,
    whose weights are restored bit for bit afterwards; ``model_b`` is only read.
    Returns a 1-D :class:`Landscape` whose direction is ``w_b - w_a``.
    """
    who = "interpolate_loss"
    steps = _check_steps(steps, who)
    try:
        lo, hi = (float(v) for v in alpha_range)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: alpha_range must be a pair (lo, hi), "
                         f"got {alpha_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{who}: alpha_range must be finite with lo < hi, got {alpha_range!r}")
    params_a = _parameters(model_a, who)
    params_b = _parameters(model_b, who)
    shapes_a, shapes_b = [p.shape for p in params_a], [p.shape for p in params_b]
    if shapes_a != shapes_b:
        raise ValueError(f"{who}: the models' parameters differ: {shapes_a} vs {shapes_b}")
    X, y = _check_data(X, y, who)
    batch_size = _check_batch_size(batch_size, X.shape[0], who)
    alphas = _axis(lo, hi, steps)
    # (1 - a) * w_a + a * w_b in float64 is exactly w_a at a = 0 and w_b at a = 1.
    b64 = [p.astype(np.float64) for p in params_b]
    direction = [(b - a.astype(np.float64)).astype(np.float32) for a, b in zip(params_a, b64)]
    evaluate = _Evaluator(model_a, loss, X, y, batch_size)
    losses = np.empty(steps, dtype=np.float64)
    with _restored(model_a, params_a) as saved:
        a64 = [s.astype(np.float64) for s in saved]
        for i, alpha in enumerate(alphas):
            for p, wa, wb in zip(params_a, a64, b64):
                np.copyto(p, (1.0 - alpha) * wa + alpha * wb, casting="same_kind")
            losses[i] = evaluate()
    return Landscape([alphas], losses, [direction], labels=("alpha",),
                     title="Linear interpolation between two models", markers=(0.0, 1.0))


class TrajectoryRecorder:
    """Records the model's weights (one flat float32 copy each) during training.

    As a ``Trainer.fit`` callback it records the starting weights when
    training begins and the weights after every ``every``-th epoch; the model
    is the trainer's unless one is given. :meth:`record` adds a snapshot by
    hand. Then pass the recorder to :func:`trajectory_landscape`.
    """

    trainer = None

    def __init__(self, model=None, every=1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"TrajectoryRecorder: every must be an int >= 1, got {every!r}")
        self.model = model
        self.every = every
        self.weights = []
        self._epochs_seen = 0

    def set_trainer(self, trainer):
        self.trainer = trainer

    def record(self):
        model = self.model if self.model is not None else getattr(self.trainer, "model", None)
        if model is None:
            raise ValueError("TrajectoryRecorder: no model (pass one, or use the recorder "
                             "as a Trainer callback)")
        params = _parameters(model, "TrajectoryRecorder")
        self.weights.append(np.concatenate([p.ravel() for p in params]))

    def on_train_begin(self, logs=None):
        if not self.weights:
            self.record()

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_seen += 1
        if self._epochs_seen % self.every == 0:
            self.record()

    def __len__(self):
        return len(self.weights)


def trajectory_landscape(model, loss, X, y, trajectory, *, steps=21, margin=0.2,
                         batch_size=None):
    """The loss surface in the plane of the training path's top two PCA
    directions, with the path projected on it (Li et al., section 7).

    ``trajectory`` is a :class:`TrajectoryRecorder` or a list of weight
    snapshots (flat vectors or lists of arrays in ``model.parameters()``
    order), at least three. The plane passes through the model's current
    weights ``w`` (normally the last snapshot); its axes are the top two
    principal directions of the snapshots' differences ``w_i - w``, centred
    as PCA does, as unit vectors. The grid covers the projected path and the
    origin plus ``margin`` of that extent on each side.
    """
    who = "trajectory_landscape"
    steps = _check_steps(steps, who)
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"{who}: margin must be a finite number >= 0, got {margin!r}")
    params = _parameters(model, who)
    snapshots = trajectory.weights if isinstance(trajectory, TrajectoryRecorder) else trajectory
    total = sum(p.size for p in params)
    rows = []
    try:
        snapshots = list(snapshots)
    except TypeError:
        raise TypeError(f"{who}: trajectory must be a TrajectoryRecorder or a list of weight "
                        f"snapshots, got {type(trajectory).__name__}") from None
    for i, s in enumerate(snapshots):
        flat = _flatten(s) if not (isinstance(s, np.ndarray) and s.ndim == 1) \
            else np.asarray(s, dtype=np.float64)
        if flat.size != total:
            raise ValueError(f"{who}: snapshot {i} has {flat.size} weights, "
                             f"the model has {total}")
        rows.append(flat)
    if len(rows) < 3:
        raise ValueError(f"{who}: need at least 3 weight snapshots for two PCA "
                         f"directions, got {len(rows)}")
    X, y = _check_data(X, y, who)
    batch_size = _check_batch_size(batch_size, X.shape[0], who)

    centre = _flatten(params)
    diffs = np.stack(rows) - centre
    _, sv, vt = np.linalg.svd(diffs - diffs.mean(axis=0), full_matrices=False)
    # Snapshots are float32: rounding alone moves each by up to 2^-24 |w| per
    # weight, so a second singular value below that noise means a straight path.
    noise = 4 * 2.0 ** -24 * math.sqrt(len(rows)) * max(np.linalg.norm(r) for r in rows)
    if sv.size < 2 or not sv[1] > max(noise, 1e-6 * sv[0]):
        raise ValueError(f"{who}: the snapshots lie on a line (or a point); there is no "
                         f"second direction to plot")
    explained = sv[:2] ** 2 / np.sum(sv ** 2)
    basis = vt[:2].astype(np.float32).astype(np.float64)   # the directions actually used
    path = diffs @ basis.T
    # Orient both axes so the path starts at negative coordinates and walks
    # towards the origin: the same run always gives the same picture.
    flip = np.where(path[0] > 0, -1.0, 1.0)
    path *= flip
    basis *= flip[:, None]
    directions = [_unflatten(b, params) for b in basis]

    axes = []
    for k in range(2):
        lo, hi = min(path[:, k].min(), 0.0), max(path[:, k].max(), 0.0)
        pad = margin * (hi - lo)
        axes.append(_axis(lo - pad, hi + pad, steps))
    evaluate = _make_evaluator(model, loss, X, y, batch_size, directions)
    losses = _evaluate(model, params, evaluate, directions, axes)
    labels = tuple(f"PC{k + 1} ({100 * explained[k]:.1f}% of variance)" for k in range(2))
    return Landscape(axes, losses, directions, labels=labels, trajectory=path,
                     explained_variance=explained, title="Training path on the loss surface")


# --------------------------------------------------------------------------- result + plots

class Landscape:
    """A loss landscape: ``coords`` (a tuple of one or two 1-D arrays),
    ``losses`` (``(len(coords[0]),)`` or ``(len(coords[0]), len(coords[1]))``,
    ``losses[i, j]`` at ``(coords[0][i], coords[1][j])``), ``directions`` (one
    list of float32 arrays per axis, in ``model.parameters()`` order) and, for
    a training path, ``trajectory`` (an ``(n, 2)`` array of the snapshots'
    coordinates) and ``explained_variance`` (of the two PCA axes)."""

    def __init__(self, coords, losses, directions, *, labels=None, title=None,
                 trajectory=None, explained_variance=None, markers=()):
        self.coords = tuple(np.asarray(c, dtype=np.float64) for c in coords)
        self.losses = np.asarray(losses, dtype=np.float64)
        if self.losses.shape != tuple(len(c) for c in self.coords):
            raise ValueError(f"Landscape: losses have shape {self.losses.shape}, coords "
                             f"give {tuple(len(c) for c in self.coords)}")
        self.directions = list(directions)
        self.dims = len(self.coords)
        self.labels = tuple(labels) if labels else (("alpha",) if self.dims == 1
                                                    else ("alpha", "beta"))
        self.title = title or "Loss landscape"
        self.trajectory = None if trajectory is None else np.asarray(trajectory, np.float64)
        self.explained_variance = explained_variance
        self.markers = tuple(markers)

    def __repr__(self):
        finite = self.losses[np.isfinite(self.losses)]
        rng = f"{finite.min():.4g}..{finite.max():.4g}" if finite.size else "no finite values"
        return f"Landscape(dims={self.dims}, shape={self.losses.shape}, loss {rng})"

    def plot(self, path=None, kind=None, *, log=None, levels=30, title=None, dpi=100,
             figsize=None):
        """Draw the landscape with matplotlib and return the Figure.

        ``kind``: ``"line"`` (the default for 1-D), ``"contour"`` (the default
        for 2-D, with the training path drawn on it when there is one) or
        ``"surface"`` (3-D). ``path``: save the figure there; the format
        follows the extension (.png, .svg or .pdf). ``log``: use a log scale
        for the loss (default: when the finite losses are positive and span
        more than a factor of 20). Uses matplotlib's Agg canvas directly, so it
        never touches pyplot's global state or needs a display.
        """
        kind = kind or ("line" if self.dims == 1 else "contour")
        if kind not in PLOT_KINDS:
            raise ValueError(f"Landscape.plot: kind must be one of {PLOT_KINDS}, got {kind!r}")
        if (kind == "line") != (self.dims == 1):
            raise ValueError(f"Landscape.plot: kind={kind!r} needs a "
                             f"{'1-D' if kind == 'line' else '2-D'} landscape, this one is "
                             f"{self.dims}-D")
        if path is not None:
            ext = os.path.splitext(os.fspath(path))[1].lower()
            if ext not in PLOT_FORMATS:
                raise ValueError(f"Landscape.plot: cannot tell the format of {path!r}; "
                                 f"use one of {', '.join(PLOT_FORMATS)}")
        Figure, FigureCanvasAgg, colors = _matplotlib()
        fig = Figure(figsize=figsize or ((6.4, 4.8) if kind != "contour" else (6.4, 5.2)))
        FigureCanvasAgg(fig)
        z = np.ma.masked_invalid(self.losses)
        finite = self.losses[np.isfinite(self.losses)]
        if log is None:
            log = bool(finite.size) and finite.min() > 0 and finite.max() > 20 * finite.min()
        if log and (not finite.size or finite.min() <= 0):
            log = False
        if kind == "line":
            ax = fig.add_subplot()
            ax.plot(self.coords[0], z, marker="o", markersize=3)
            for m, name in zip(self.markers, ("A", "B")):   # interpolate_loss's two models
                ax.axvline(m, color="grey", linestyle=":", linewidth=1)
                ax.annotate(f"model {name}", (m, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize="small")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(self.labels[0])
            ax.set_ylabel("loss")
            ax.grid(True, alpha=0.3)
        elif kind == "contour":
            ax = fig.add_subplot()
            gx, gy = np.meshgrid(self.coords[0], self.coords[1], indexing="ij")
            if log:
                lv = np.geomspace(finite.min(), finite.max(), levels)
                norm = colors.LogNorm(vmin=lv[0], vmax=lv[-1])
            else:
                lv, norm = levels, None
            filled = ax.contourf(gx, gy, z, levels=lv, norm=norm, cmap="viridis")
            ax.contour(gx, gy, z, levels=filled.levels, norm=norm, colors="k",
                       linewidths=0.3, alpha=0.5)
            bar = fig.colorbar(filled, ax=ax)
            bar.set_label("loss")
            if log:
                bar.ax.set_yscale("log")
            if self.trajectory is not None:
                t = self.trajectory
                ax.plot(t[:, 0], t[:, 1], color="red", marker="o", markersize=3, linewidth=1.2,
                        label="training path")
                ax.plot(t[0, 0], t[0, 1], color="red", marker="s", markersize=6)
                ax.legend(loc="upper right", fontsize="small")
            if _inside(0.0, self.coords[0]) and _inside(0.0, self.coords[1]):
                ax.plot(0.0, 0.0, marker="*", color="white", markeredgecolor="k",
                        markersize=12)
            ax.set_xlabel(self.labels[0])
            ax.set_ylabel(self.labels[1])
        else:
            ax = fig.add_subplot(projection="3d")
            gx, gy = np.meshgrid(self.coords[0], self.coords[1], indexing="ij")
            zz = np.log10(z) if log else z
            ax.plot_surface(gx, gy, zz, cmap="viridis", linewidth=0, antialiased=True)
            ax.set_xlabel(self.labels[0])
            ax.set_ylabel(self.labels[1])
            ax.set_zlabel("log10 loss" if log else "loss")
            ax.set_box_aspect(None, zoom=0.85)   # keep the z label inside the figure
        ax.set_title(title or self.title, fontsize="medium")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=dpi)
        return fig


def _inside(value, axis):
    return axis[0] <= value <= axis[-1]


def _matplotlib():
    try:
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("Landscape.plot needs matplotlib: pip install 'nncore[plot]' "
                          "(or pip install matplotlib)") from exc
    return Figure, FigureCanvasAgg, colors
