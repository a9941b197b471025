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
incoming weights of each output neuron (a column), for a Conv2d the weights
of one output channel, is rescaled to the norm of that filter's weights.

Networks with BatchNorm are treated as Li et al. treat them (their code's
``ignore="biasbn"``, the default here): the directions of the biases and of
BatchNorm's scale and shift are zero, so only the weights of linear maps
(role "weight" in the layers' ``param_specs``) move; BatchNorm's running
statistics are not parameters and keep their values from training; and
every loss is evaluated in evaluation mode (BatchNorm normalises with the
running statistics, Dropout is the identity), through the same inference
path as ``model.predict``. The model's weights, running statistics and
training mode are restored afterwards. ``ignore=None`` is the paper's
alternative: the direction of every such one-per-unit parameter is the
parameter itself (a random filter-normalised direction for the weights plus
a step along the biases and BatchNorm parameters proportional to their
values).

Section 6 of the paper, the curvature: :func:`hessian_eigs` estimates the
Hessian's extreme eigenvalues at the current weights (Lanczos over
Hessian-vector products from central differences of analytic gradients),
:func:`curvature_map` the ratio ``|lambda_min / lambda_max|`` over a grid,
and :func:`convexity_measures` reduces a surface and its curvature map to two
numbers. :func:`save_landscapes` / :func:`load_landscapes` keep results in an
``.npz`` file and :func:`plot_landscapes` draws several side by side.
"""
import contextlib
import json
import math
import os
import tempfile
import time

import numpy as np

from . import _core, _guard
from .layers import Sequential, fused_activations
from .io import _new_file_mode
from .layers.base import Buffers
from .linalg import lanczos, matmul

__all__ = ["Landscape", "loss_landscape", "interpolate_loss", "trajectory_landscape",
           "TrajectoryRecorder", "random_directions", "normalize_direction",
           "hessian_eigs", "curvature_map", "Curvature", "convexity_measures",
           "save_landscapes", "load_landscapes", "plot_landscapes"]

NORMALIZATIONS = ("filter", "layer", None)
IGNORE = ("biasbn", None)
# Rows per inference pass when X holds images and no batch_size is given.
# predict itself runs conv nets in cache-sized sub-batches and keeps a few
# activations of one (Sequential.predict), so this bounds only the rows per
# call; the outputs' bits do not depend on it.
IMAGE_BATCH = 256
PLOT_KINDS = ("contour", "surface", "line", "curvature")
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


def _buffers(model):
    """The model's non-trainable tensors (BatchNorm's running statistics)."""
    named = getattr(model, "named_buffers", None)
    return [a for _, a in named()] if callable(named) else []


@contextlib.contextmanager
def _restored(model, params):
    """Run the block in eval mode and put every weight and running statistic
    back afterwards, bit for bit and in place (optimizers keep state keyed by
    the arrays themselves), and the training mode, whatever happens inside,
    KeyboardInterrupt included."""
    saved = [p.copy() for p in params]
    buffers = _buffers(model)
    saved_buffers = [b.copy() for b in buffers]
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield saved
    finally:
        for p, s in zip(params, saved):
            np.copyto(p, s)
        for b, s in zip(buffers, saved_buffers):
            np.copyto(b, s)
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
    if X.ndim < 2 or X.shape[0] == 0 or X.size == 0:
        raise ValueError(f"{who}: X must be a non-empty array of samples (2-D, or images "
                         f"(N, C, H, W)), got shape {X.shape}")
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


def _check_batch_size(batch_size, X, who):
    """Rows per inference pass: all of X for 2-D inputs, IMAGE_BATCH rows
    for images, unless given."""
    n = X.shape[0]
    if batch_size is None:
        return n if X.ndim == 2 else min(n, IMAGE_BATCH)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int or None, got {batch_size!r}")
    return min(int(batch_size), n)


def _check_steps(steps, who):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"{who}: steps must be an int >= 2, got {steps!r}")
    return int(steps)


class _Evaluator:
    """The mean loss of the model's current weights over (X, y) in evaluation
    mode: batched inference through ``model.predict`` (the eval-mode path of
    every layer: BatchNorm with its running statistics, Dropout the identity,
    no state kept for a backward pass, work buffers reused from call to
    call), ``batch_size`` rows at a time, then the loss over all outputs at
    once. A model without ``predict`` runs ``forward`` batch by batch (a
    batch's mean weighted by its size), after ``_restored`` put it in eval
    mode."""

    moves_first_layer = True

    def __init__(self, model, loss, X, y, batch_size):
        if not hasattr(loss, "forward"):
            raise TypeError(f"landscape: loss must have forward(pred, target), got "
                            f"{type(loss).__name__}")
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self.batch_size = batch_size
        predict = getattr(model, "predict", None)
        self.predict = predict if isinstance(model, Sequential) else None

    def __call__(self, coefs=None):
        n, bs = self.X.shape[0], self.batch_size
        if self.predict is not None:
            return float(self.loss.forward(self.predict(self.X, batch_size=bs), self.y))
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
    point (all coefficients 0) is evaluated by the model's own inference
    pass (``predict``), so it is exactly the model's evaluation-mode loss.
    Elsewhere the result differs from a direct evaluation only by float32
    rounding (the weights ``W + a D1`` are not rounded to float32 first).
    The layers after the first run their evaluation-mode inference steps
    (the model's predict plan), whatever the model's training flag.
    """

    moves_first_layer = False

    def __init__(self, model, loss, X, y, dense, rest, relu, directions):
        super().__init__(model, loss, X, y, X.shape[0])
        # rest: the model's own inference steps after the first layer (eval
        # mode whatever the training flag), writing into our workspace
        self.ws = Buffers("loss_landscape")
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
        x, ws = z, self.ws
        for step in self.rest:
            x = step(x, ws)
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
    relu, rest = link[2] == _core.ACT_CODES["relu"], list(model._infer_plan[1:])
    if 1 in fused_activations(model.layers):
        relu, rest = model.layers[1].act_name == "relu", rest[1:]
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

def normalize_direction(direction, weights, normalization="filter", specs=None,
                        ignore="biasbn"):
    """Rescale a direction (a list of arrays shaped like ``weights``) and return
    it as new float32 arrays.

    - ``"filter"``: for each 2-D weight ``(in, out)``, column ``j`` of the
      direction gets the norm of column ``j`` of the weight (the weights into
      output neuron ``j``); parameters of other ranks are scaled as a whole.
    - ``"layer"``: each parameter's direction gets that parameter's norm.
    - ``None``: unchanged (``ignore`` does not apply either).

    With ``"filter"`` and ``"layer"``, the parameters that are not weights of
    a linear map (1-D parameters: biases; with ``specs``, every role but
    "weight": biases and BatchNorm's scale and shift) are handled by
    ``ignore``, as in Li et al.'s code: ``"biasbn"`` (the default) sets their
    direction to zero, so they keep their trained values over the whole grid;
    ``None`` sets it to the parameter itself (``d = w``), so they move in
    proportion to their values.

    ``specs`` (the layers' ``Param`` records of the trainable tensors, in
    order) replaces those shape rules by the declared ones: only role
    "weight" is normalised, and a filter is the slice at one index of
    ``out_axis`` (a conv weight ``(out, in, kh, kw)``: one output channel).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if ignore not in IGNORE:
        raise ValueError(f"ignore must be one of {IGNORE}, got {ignore!r}")
    if len(direction) != len(weights):
        raise ValueError(f"direction has {len(direction)} arrays, the model has "
                         f"{len(weights)} parameters")
    if specs is not None and len(specs) != len(weights):
        raise ValueError(f"specs describe {len(specs)} tensors, the model has "
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
                d[...] = 0.0 if ignore == "biasbn" else w
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


def random_directions(model, dims=2, normalization="filter", seed=0, ignore="biasbn"):
    """``dims`` Gaussian directions for ``model``, drawn in parameter order from
    ``numpy.random.default_rng(seed)`` and normalised (see
    :func:`normalize_direction`: ``ignore="biasbn"`` leaves biases and
    BatchNorm parameters out, ``ignore=None`` moves them along themselves)."""
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
                                normalization, specs, ignore)
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


def _check_progress(progress, who):
    if progress is not None and not callable(progress):
        raise TypeError(f"{who}: progress must be None or a callable(done, total), got "
                        f"{type(progress).__name__}")
    return progress


def _grid_points(model, params, directions, axes, first=0):
    """Move the model to every grid point in turn (C order) and yield its
    index and coefficients there; the caller evaluates. Runs inside
    ``_restored``.

    The point is built in float64 from the saved weights and stored in place
    in float32, so a zero coefficient leaves a weight bitwise unchanged.
    Parameters before ``first`` are left alone."""
    shape = tuple(len(a) for a in axes)
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
            yield index, coefs


def _evaluate(model, params, evaluate, directions, axes, progress=None):
    """Loss at ``w + sum_k axes[k][i_k] * directions[k]`` for every grid index;
    ``progress(done, total)`` after each point."""
    shape = tuple(len(a) for a in axes)
    losses = _guard.empty(shape, np.float64, lambda: f"landscape: a {shape} grid of losses")
    # The fast evaluator works out the first layer itself: leave its weights.
    first = 0 if evaluate.moves_first_layer else len(model.layers[0].parameters())
    total = losses.size
    for done, (index, coefs) in enumerate(_grid_points(model, params, directions, axes, first)):
        losses[index] = evaluate(coefs)
        if progress is not None:
            progress(done + 1, total)
    return losses


# --------------------------------------------------------------------------- public API

def loss_landscape(model, loss, X, y, *, dims=2, steps=21, span=1.0, normalization="filter",
                   directions=None, seed=0, batch_size=None, ignore="biasbn", progress=None):
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
    ``ignore``: ``"biasbn"`` (default, as Li et al.) keeps biases and
    BatchNorm's scale and shift out of random directions; ``None`` moves
    them along themselves (see :func:`normalize_direction`).

    Every point is evaluated in evaluation mode, as batched inference
    (``model.predict``'s path: BatchNorm normalises with the running
    statistics kept from training, Dropout is the identity); see the module
    docstring. ``batch_size``: rows per inference pass, bounding memory
    (default: all of X for 2-D inputs, 256 for images). ``progress``: called
    as ``progress(done, total)`` after each grid point.

    The model's weights, running statistics and training mode are restored
    afterwards, bit for bit, even on an error. The result's ``stats`` hold
    the seconds the grid took and the points per second.
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
    if ignore not in IGNORE:
        raise ValueError(f"{who}: ignore must be one of {IGNORE}, got {ignore!r}")
    progress = _check_progress(progress, who)
    params = _parameters(model, who)
    X, y = _check_data(X, y, who)
    batch_size = _check_batch_size(batch_size, X, who)
    if directions is None:
        directions = random_directions(model, dims, normalization, seed, ignore)
        how = {"filter": "filter-normalised", "layer": "layer-normalised",
               None: "unnormalised"}[normalization] + " random directions"
    else:
        directions = _check_directions(directions, params, dims, who)
        how = "given directions"
    axes = [_axis(-float(span), float(span), steps) for _ in range(dims)]
    start = time.perf_counter()
    evaluate = _make_evaluator(model, loss, X, y, batch_size, directions)
    losses = _evaluate(model, params, evaluate, directions, axes, progress)
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "points_per_second": losses.size / seconds if seconds else 0.0,
             "samples": int(X.shape[0]), "batch_size": int(batch_size),
             "evaluator": type(evaluate).__name__}
    return Landscape(axes, losses, directions, title=f"Loss landscape ({how})", stats=stats)


def interpolate_loss(model_a, model_b, loss, X, y, *, steps=21, alpha_range=(-0.5, 1.5),
                     batch_size=None):
    """The loss on ``(X, y)`` along the line ``(1 - alpha) * w_a + alpha * w_b``
    between two models of the same architecture (Goodfellow et al., 2015).

    ``alpha`` runs over ``steps`` points of ``alpha_range``; alpha = 0 is
    ``model_a`` and alpha = 1 is ``model_b`` exactly when they are on the grid
    (they are with the defaults). The points are evaluated with ``model_a``
    in evaluation mode (with its BatchNorm running statistics), whose weights
    are restored bit for bit afterwards; ``model_b`` is only read.
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
    batch_size = _check_batch_size(batch_size, X, who)
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
    batch_size = _check_batch_size(batch_size, X, who)

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


# --------------------------------------------------------------------------- curvature

def _gradient_arrays(model, params, who):
    """The gradient arrays paired with ``params`` in ``model.parameters()``."""
    grads = []
    for k, item in enumerate(model.parameters()):
        g = item[1] if isinstance(item, tuple) and len(item) > 1 else None
        if not isinstance(g, np.ndarray) or g.shape != params[k].shape:
            raise TypeError(f"{who}: the model's parameters() must give (param, grad) pairs; "
                            f"parameter {k} has no gradient array of its shape")
        grads.append(g)
    return grads


class _Gradient:
    """The gradient of the mean loss over (X, y) with respect to every
    trainable parameter at the model's current weights, as one float64
    vector in ``model.parameters()`` order: the model's forward and backward
    passes, ``batch_size`` rows at a time (each batch's gradient weighted by
    its size), in the mode ``_restored`` set, evaluation mode (BatchNorm with
    its running statistics, which the forward pass then leaves alone)."""

    def __init__(self, model, loss, X, y, batch_size, grads, who):
        if not callable(getattr(model, "backward", None)) \
                or not callable(getattr(loss, "backward", None)):
            raise TypeError(f"{who}: the model and the loss need backward() for gradients")
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self.batch_size, self.grads = batch_size, grads
        self.size = sum(g.size for g in grads)
        self.sequential = isinstance(model, Sequential)

    def __call__(self):
        n, bs = self.X.shape[0], self.batch_size
        out = np.zeros(self.size)
        for start in range(0, n, bs):
            xb, yb = self.X[start:start + bs], self.y[start:start + bs]
            self.loss.forward(self.model.forward(xb), yb)
            grad = self.loss.backward()
            if self.sequential:
                self.model.backward(grad, input_grad=False)
            else:
                self.model.backward(grad)
            weight, offset = xb.shape[0] / n, 0
            for g in self.grads:
                out[offset:offset + g.size] += weight * g.ravel()
                offset += g.size
        return out


def _hessian_operator(params, gradient, eps):
    """``v -> H v`` at the model's current weights ``w`` (read now), by central
    differences of the gradient: ``(g(w + h v) - g(w - h v)) / 2h`` with the
    step ``h ||v|| = eps * max(||w||, 1)``. Leaves the weights at ``w - h v``:
    the caller puts them back."""
    base = [p.astype(np.float64) for p in params]
    norm_w = math.sqrt(sum(float(np.dot(b.ravel(), b.ravel())) for b in base))
    step = eps * max(norm_w, 1.0)

    def move(v, h):
        offset = 0
        for p, b in zip(params, base):
            np.copyto(p, b + h * v[offset:offset + p.size].reshape(p.shape),
                      casting="same_kind")
            offset += p.size

    def matvec(v):
        nv = float(np.linalg.norm(v))
        if nv == 0.0:
            return np.zeros_like(v)
        h = step / nv
        move(v, h)
        plus = gradient()
        move(v, -h)
        minus = gradient()
        return (plus - minus) / (2.0 * h)
    return matvec, base


def _check_positive(value, name, who):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_eps(eps, who):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) \
            or not math.isfinite(eps) or not 0 < eps < 1:
        raise ValueError(f"{who}: eps must be a number in (0, 1), got {eps!r}")
    return float(eps)


def hessian_eigs(model, loss, X, y, *, iters=20, eps=1e-3, seed=0, batch_size=None):
    """The extreme eigenvalues ``(lambda_min, lambda_max)`` of the Hessian of
    the mean loss over ``(X, y)`` with respect to all trainable parameters,
    at the model's current weights, in evaluation mode.

    ``iters`` Lanczos steps (:func:`nncore.linalg.lanczos`, from a random start
    vector of ``seed``), each one Hessian-vector product by central
    differences of two analytic gradients (``eps``: the step as a fraction
    of the weights' norm; the gradients are float32, so the products carry
    errors of about 1e-3 of the largest eigenvalue). Lanczos' extreme Ritz
    values approach the extreme eigenvalues from inside: with few steps
    ``lambda_min`` of a large net is an underestimate of the negative
    curvature in magnitude. ``iters >= `` the number of parameters gives the
    whole spectrum. ``batch_size``: rows per gradient pass (default as for
    :func:`loss_landscape`). Weights, running statistics and training mode
    are restored afterwards.
    """
    who = "hessian_eigs"
    iters = _check_positive(iters, "iters", who)
    eps = _check_eps(eps, who)
    params = _parameters(model, who)
    grads = _gradient_arrays(model, params, who)
    X, y = _check_data(X, y, who)
    gradient = _Gradient(model, loss, X, y, _check_batch_size(batch_size, X, who), grads, who)
    with _restored(model, params):
        matvec, _ = _hessian_operator(params, gradient, eps)
        ritz = lanczos(matvec, gradient.size, iters, seed=seed)
    return float(ritz[0]), float(ritz[-1])


class Curvature:
    """A curvature map: ``coords`` (two 1-D arrays), ``lambda_min`` and
    ``lambda_max`` (``(len(coords[0]), len(coords[1]))``, the Hessian's
    extreme eigenvalues as Lanczos estimates them at ``w + a d1 + b d2``),
    ``ratio`` = ``|lambda_min / lambda_max|`` (Li et al., Section 6: near 0
    where the surface is locally convex, large where negative curvature is
    significant; inf where ``lambda_max <= 0``) and ``stats``."""

    def __init__(self, coords, lambda_min, lambda_max, stats=None):
        self.coords = tuple(np.asarray(c, dtype=np.float64) for c in coords)
        self.lambda_min = np.asarray(lambda_min, dtype=np.float64)
        self.lambda_max = np.asarray(lambda_max, dtype=np.float64)
        shape = tuple(len(c) for c in self.coords)
        if len(shape) != 2 or self.lambda_min.shape != shape or self.lambda_max.shape != shape:
            raise ValueError(f"Curvature: eigenvalue grids of shapes {self.lambda_min.shape} "
                             f"and {self.lambda_max.shape}, coords give {shape}")
        self.stats = dict(stats or {})

    @property
    def ratio(self):
        lo, hi = self.lambda_min, self.lambda_max
        out = np.full(lo.shape, np.inf)
        np.divide(np.abs(lo), np.abs(hi), out=out, where=hi > 0)
        out[np.isnan(lo) | np.isnan(hi)] = np.nan
        return out

    def __repr__(self):
        return f"Curvature(shape={self.lambda_min.shape}, ratio max {np.nanmax(self.ratio):.3g})"


def curvature_map(model, loss, X, y, directions, *, steps=5, span=1.0, iters=10, eps=1e-3,
                  seed=0, batch_size=None, progress=None):
    """The Hessian's extreme eigenvalues (see :func:`hessian_eigs`) at each
    point of a ``steps`` x ``steps`` grid from ``-span`` to ``span`` in the
    plane of two ``directions`` (a 2-D :class:`Landscape`, whose directions
    are used, or two directions as :func:`loss_landscape` takes them).

    Costly: each point takes ``2 * iters`` gradient passes over X, so use a
    coarser grid than the loss surface's (with an odd ``steps`` the centre is
    the model) and a subset of the samples. The same Lanczos start vector
    (``seed``) serves every point. Weights, running statistics and training
    mode are restored afterwards; ``progress(done, total)`` after each point.
    Returns a :class:`Curvature`.
    """
    who = "curvature_map"
    steps = _check_steps(steps, who)
    iters = _check_positive(iters, "iters", who)
    eps = _check_eps(eps, who)
    if isinstance(span, bool) or not isinstance(span, (int, float, np.floating, np.integer)) \
            or not math.isfinite(span) or span <= 0:
        raise ValueError(f"{who}: span must be a finite number > 0, got {span!r}")
    progress = _check_progress(progress, who)
    params = _parameters(model, who)
    grads = _gradient_arrays(model, params, who)
    if isinstance(directions, Landscape):
        directions = directions.directions
    directions = _check_directions(directions, params, 2, who)
    X, y = _check_data(X, y, who)
    batch_size = _check_batch_size(batch_size, X, who)
    gradient = _Gradient(model, loss, X, y, batch_size, grads, who)
    axes = [_axis(-float(span), float(span), steps) for _ in range(2)]
    lo = np.full((steps, steps), np.nan)
    hi = np.full((steps, steps), np.nan)
    start = time.perf_counter()
    for done, (index, _) in enumerate(_grid_points(model, params, directions, axes)):
        matvec, _ = _hessian_operator(params, gradient, eps)
        ritz = lanczos(matvec, gradient.size, iters, seed=seed)
        lo[index], hi[index] = ritz[0], ritz[-1]
        if progress is not None:
            progress(done + 1, lo.size)
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "points_per_second": lo.size / seconds if seconds else 0.0,
             "samples": int(X.shape[0]), "iters": iters, "eps": eps, "seed": seed,
             "batch_size": int(batch_size)}
    return Curvature(axes, lo, hi, stats)


def convexity_measures(landscape, threshold=0.1, rtol=1e-5):
    """Two numbers for how far a 2-D landscape is from convex:

    - ``"nonconvex_fraction"``: the fraction of the curvature map's points
      where ``|lambda_min / lambda_max| > threshold`` (NaN without a map);
    - ``"midpoint_violations"``: the share of the loss grid's points that
      break midpoint convexity along a grid line, ``f(x) > (f(x - h) +
      f(x + h)) / 2`` along either axis (beyond a tolerance of ``rtol`` of
      the values compared, for float32 noise); points on an edge are tested
      along the axis where they have two neighbours, corners not at all.
    """
    if not isinstance(landscape, Landscape) or landscape.dims != 2:
        raise ValueError("convexity_measures: needs a 2-D Landscape")
    f = landscape.losses
    violated = np.zeros(f.shape, dtype=bool)
    tested = np.zeros(f.shape, dtype=bool)
    for axis in (0, 1):
        fm = np.moveaxis(f, axis, 0)
        mid, nb = fm[1:-1], (fm[:-2] + fm[2:]) / 2
        tol = rtol * np.maximum(np.abs(mid), np.abs(nb))
        np.moveaxis(violated, axis, 0)[1:-1] |= (mid > nb + tol) | np.isnan(mid) | np.isnan(nb)
        np.moveaxis(tested, axis, 0)[1:-1] = True
    # a NaN (diverged) point breaks the tests it takes part in: it is not convex
    out = {"midpoint_violations": float(violated.sum() / tested.sum()) if tested.any()
           else float("nan"), "threshold": float(threshold)}
    curvature = landscape.curvature
    if curvature is None:
        out["nonconvex_fraction"] = float("nan")
    else:
        ratio = curvature.ratio
        out["nonconvex_fraction"] = float(np.mean(~(ratio <= threshold)))
    return out


# --------------------------------------------------------------------------- result + plots

class Landscape:
    """A loss landscape: ``coords`` (a tuple of one or two 1-D arrays),
    ``losses`` (``(len(coords[0]),)`` or ``(len(coords[0]), len(coords[1]))``,
    ``losses[i, j]`` at ``(coords[0][i], coords[1][j])``), ``directions`` (one
    list of float32 arrays per axis, in ``model.parameters()`` order; empty
    for a landscape read back by :func:`load_landscapes`) and, for a training
    path, ``trajectory`` (an ``(n, 2)`` array of the snapshots' coordinates)
    and ``explained_variance`` (of the two PCA axes). ``curvature``: a
    :class:`Curvature` map of the same plane, when one was computed and
    attached; ``stats``: how it was computed (seconds, points per second,
    samples), a JSON-serialisable dict."""

    def __init__(self, coords, losses, directions, *, labels=None, title=None,
                 trajectory=None, explained_variance=None, markers=(), stats=None,
                 curvature=None):
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
        self.stats = dict(stats or {})
        if curvature is not None and not isinstance(curvature, Curvature):
            raise TypeError(f"Landscape: curvature must be a Curvature, got "
                            f"{type(curvature).__name__}")
        self.curvature = curvature

    def __repr__(self):
        finite = self.losses[np.isfinite(self.losses)]
        rng = f"{finite.min():.4g}..{finite.max():.4g}" if finite.size else "no finite values"
        return f"Landscape(dims={self.dims}, shape={self.losses.shape}, loss {rng})"

    def plot(self, path=None, kind=None, *, log=None, levels=30, title=None, dpi=100,
             figsize=None):
        """Draw the landscape with matplotlib and return the Figure.

        ``kind``: ``"line"`` (the default for 1-D), ``"contour"`` (the default
        for 2-D, with the training path drawn on it when there is one),
        ``"surface"`` (3-D) or ``"curvature"`` (the attached curvature map).
        ``path``: save the figure there; the format follows the extension
        (.png, .svg or .pdf). ``log``: use a log scale for the loss (default:
        when the finite losses are positive and span more than a factor of
        20). Uses matplotlib's Agg canvas directly, so it never touches
        pyplot's global state or needs a display.
        """
        kind = kind or ("line" if self.dims == 1 else "contour")
        if kind not in PLOT_KINDS:
            raise ValueError(f"Landscape.plot: kind must be one of {PLOT_KINDS}, got {kind!r}")
        if (kind == "line") != (self.dims == 1):
            raise ValueError(f"Landscape.plot: kind={kind!r} needs a "
                             f"{'1-D' if kind == 'line' else '2-D'} landscape, this one is "
                             f"{self.dims}-D")
        if kind == "curvature" and self.curvature is None:
            raise ValueError("Landscape.plot: kind='curvature' needs a curvature map "
                             "(attach one from curvature_map to .curvature)")
        _check_plot_path(path, "Landscape.plot")
        Figure, FigureCanvasAgg, colors = _matplotlib()
        fig = Figure(figsize=figsize or ((6.4, 4.8) if kind != "contour" else (6.4, 5.2)))
        FigureCanvasAgg(fig)
        scale = _LossScale([self.losses], log, levels, colors)
        if kind == "line":
            ax = fig.add_subplot()
            _draw_line(ax, self, scale)
        elif kind == "contour":
            ax = fig.add_subplot()
            _draw_contour(fig, ax, self, scale)
        elif kind == "surface":
            ax = fig.add_subplot(projection="3d")
            _draw_surface(ax, self, scale)
        else:
            ax = fig.add_subplot()
            _draw_curvature(fig, ax, self.curvature, self.labels)
        ax.set_title(title or self.title, fontsize="medium")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=dpi)
        return fig


def _check_plot_path(path, who):
    if path is not None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in PLOT_FORMATS:
            raise ValueError(f"{who}: cannot tell the format of {path!r}; "
                             f"use one of {', '.join(PLOT_FORMATS)}")


class _LossScale:
    """One colour and height scale for one or several loss grids (shared, so
    two surfaces drawn side by side compare by eye): log when asked, or by
    default when the finite losses are positive and span more than 20x."""

    def __init__(self, grids, log, levels, colors):
        finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids])
        if log is None:
            log = bool(finite.size) and finite.min() > 0 and finite.max() > 20 * finite.min()
        if log and (not finite.size or finite.min() <= 0):
            log = False
        self.log = log
        self.lo, self.hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        if log:
            self.levels = np.geomspace(self.lo, self.hi, levels)
            self.norm = colors.LogNorm(vmin=self.lo, vmax=self.hi)
        else:
            self.levels = np.linspace(self.lo, self.hi, levels)
            self.norm = colors.Normalize(vmin=self.lo, vmax=self.hi)


def _draw_line(ax, land, scale):
    ax.plot(land.coords[0], np.ma.masked_invalid(land.losses), marker="o", markersize=3)
    for m, name in zip(land.markers, ("A", "B")):   # interpolate_loss's two models
        ax.axvline(m, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"model {name}", (m, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize="small")
    if scale.log:
        ax.set_yscale("log")
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)


def _draw_contour(fig, ax, land, scale):
    gx, gy = np.meshgrid(land.coords[0], land.coords[1], indexing="ij")
    z = np.ma.masked_invalid(land.losses)
    filled = ax.contourf(gx, gy, z, levels=scale.levels, norm=scale.norm, cmap="viridis",
                         extend="neither")
    ax.contour(gx, gy, z, levels=filled.levels, norm=scale.norm, colors="k",
               linewidths=0.3, alpha=0.5)
    if scale.log:
        ticker = _matplotlib_ticker()
        bar = fig.colorbar(filled, ax=ax, ticks=ticker.LogLocator(subs=(1.0, 2.0, 5.0)),
                           format=ticker.LogFormatter(labelOnlyBase=False))
    else:
        bar = fig.colorbar(filled, ax=ax, format="%.3g")
    bar.set_label("loss")
    if land.trajectory is not None:
        t = land.trajectory
        ax.plot(t[:, 0], t[:, 1], color="red", marker="o", markersize=3, linewidth=1.2,
                label="training path")
        ax.plot(t[0, 0], t[0, 1], color="red", marker="s", markersize=6)
        ax.legend(loc="upper right", fontsize="small")
    if _inside(0.0, land.coords[0]) and _inside(0.0, land.coords[1]):
        ax.plot(0.0, 0.0, marker="*", color="white", markeredgecolor="k", markersize=12)
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel(land.labels[1])


def _draw_surface(ax, land, scale):
    gx, gy = np.meshgrid(land.coords[0], land.coords[1], indexing="ij")
    z = np.ma.masked_invalid(land.losses)
    zz = np.log10(z) if scale.log else z
    ax.plot_surface(gx, gy, zz, cmap="viridis", linewidth=0, antialiased=True,
                    norm=_surface_norm(scale))
    ax.set_zlim(*((np.log10(scale.lo), np.log10(scale.hi)) if scale.log
                  else (scale.lo, scale.hi)))
    ax.set_xlabel(land.labels[0])
    ax.set_ylabel(land.labels[1])
    ax.set_zlabel("log10 loss" if scale.log else "loss")
    ax.set_box_aspect(None, zoom=0.85)   # keep the z label inside the figure


def _surface_norm(scale):
    _, _, colors = _matplotlib()
    if scale.log:
        return colors.Normalize(vmin=np.log10(scale.lo), vmax=np.log10(scale.hi))
    return colors.Normalize(vmin=scale.lo, vmax=scale.hi)


def _draw_curvature(fig, ax, curvature, labels=("alpha", "beta")):
    """|lambda_min / lambda_max| per grid cell on a fixed 0..1 scale (above 1
    saturates), dark blue where near-convex, yellow where negative curvature
    is as large as the positive; each cell's value written in it on small
    grids."""
    ratio = curvature.ratio
    shown = np.ma.masked_invalid(np.where(np.isinf(ratio), 1e9, ratio))
    mesh = ax.pcolormesh(curvature.coords[0], curvature.coords[1], shown.T, shading="nearest",
                         cmap="YlGnBu_r", vmin=0.0, vmax=1.0)
    bar = fig.colorbar(mesh, ax=ax, extend="max")
    bar.set_label("|lambda_min / lambda_max|")
    if ratio.size <= 81:
        for (i, j), r in np.ndenumerate(ratio):
            text = "nan" if np.isnan(r) else ("inf" if np.isinf(r) else f"{r:.2f}")
            ax.text(curvature.coords[0][i], curvature.coords[1][j], text, ha="center",
                    va="center", fontsize="x-small",
                    color="k" if np.isfinite(r) and r > 0.5 else "w")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_aspect("auto")


def plot_landscapes(landscapes, path=None, *, log=None, levels=30, threshold=0.1, dpi=100,
                    title=None):
    """Draw 2-D landscapes side by side, one column each (a dict name ->
    :class:`Landscape`): the contour plot, the 3-D surface and, when any has
    one, the curvature map, with one loss scale shared by all (so the
    columns compare by eye) and :func:`convexity_measures` in each column's
    title. Returns the Figure; saves it to ``path`` (.png, .svg, .pdf)."""
    if not isinstance(landscapes, dict) or not landscapes:
        raise ValueError("plot_landscapes: needs a non-empty dict name -> Landscape")
    for name, land in landscapes.items():
        if not isinstance(land, Landscape) or land.dims != 2:
            raise ValueError(f"plot_landscapes: {name!r} is not a 2-D Landscape")
    _check_plot_path(path, "plot_landscapes")
    Figure, FigureCanvasAgg, colors = _matplotlib()
    rows = 3 if any(land.curvature is not None for land in landscapes.values()) else 2
    cols = len(landscapes)
    fig = Figure(figsize=(5.6 * cols, 4.6 * rows))
    FigureCanvasAgg(fig)
    scale = _LossScale([land.losses for land in landscapes.values()], log, levels, colors)
    for c, (name, land) in enumerate(landscapes.items()):
        m = convexity_measures(land, threshold)
        ax = fig.add_subplot(rows, cols, c + 1)
        _draw_contour(fig, ax, land, scale)
        ax.set_title(f"{name}\nmidpoint-convexity violations {100 * m['midpoint_violations']:.1f}%",
                     fontsize="medium")
        ax = fig.add_subplot(rows, cols, cols + c + 1, projection="3d")
        _draw_surface(ax, land, scale)
        ax.set_title(name, fontsize="medium")
        if rows == 3:
            ax = fig.add_subplot(rows, cols, 2 * cols + c + 1)
            if land.curvature is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no curvature map", ha="center", transform=ax.transAxes)
            else:
                _draw_curvature(fig, ax, land.curvature, land.labels)
                ax.set_title(f"{name}\n|lambda_min/lambda_max| > {threshold:g} at "
                             f"{100 * m['nonconvex_fraction']:.0f}% of points",
                             fontsize="medium")
    if title:
        fig.suptitle(title, fontsize="medium")
    if title:
        fig.tight_layout(rect=(0, 0, 1, 0.97))
    else:
        fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# --------------------------------------------------------------------------- result files

RESULT_FORMAT = "nncore-landscapes"


def save_landscapes(path, landscapes, metadata=None):
    """Write landscapes (a dict name -> :class:`Landscape`), their curvature
    maps and stats, and ``metadata`` (a JSON-serialisable dict: the recipe,
    accuracies, ...) to an ``.npz`` file, atomically: a temporary file in the
    same folder, then renamed over ``path``, so an interrupted save never
    leaves a broken file. Directions are not stored (they are as large as
    the models). Read back with :func:`load_landscapes`; no pickle."""
    if not isinstance(landscapes, dict) or not landscapes:
        raise ValueError("save_landscapes: needs a non-empty dict name -> Landscape")
    path = os.fspath(path)
    arrays, index = {}, []
    for k, (name, land) in enumerate(landscapes.items()):
        if not isinstance(land, Landscape):
            raise TypeError(f"save_landscapes: {name!r} is a {type(land).__name__}, "
                            f"not a Landscape")
        pre = f"l{k}_"
        for i, c in enumerate(land.coords):
            arrays[f"{pre}coords{i}"] = c
        arrays[f"{pre}losses"] = land.losses
        if land.trajectory is not None:
            arrays[f"{pre}trajectory"] = land.trajectory
        entry = {"name": str(name), "dims": land.dims, "labels": list(land.labels),
                 "title": land.title, "markers": list(land.markers), "stats": land.stats,
                 "explained_variance": None if land.explained_variance is None
                 else [float(v) for v in land.explained_variance]}
        if land.curvature is not None:
            cv = land.curvature
            for i, c in enumerate(cv.coords):
                arrays[f"{pre}curvature_coords{i}"] = c
            arrays[f"{pre}lambda_min"] = cv.lambda_min
            arrays[f"{pre}lambda_max"] = cv.lambda_max
            entry["curvature_stats"] = cv.stats
        index.append(entry)
    meta = {"format": RESULT_FORMAT, "version": 1, "landscapes": index,
            "metadata": metadata or {}}
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)       # as open() would create it (mkstemp's is 0600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_landscapes(path):
    """``(landscapes, metadata)`` from a file :func:`save_landscapes` wrote:
    a dict name -> :class:`Landscape` (with ``curvature`` and ``stats``, no
    directions) in the saved order, and the metadata dict. A file that is
    not one raises ValueError (never runs anything: no pickle)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"load_landscapes: {path} is not a landscape result file "
                         f"({exc})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != RESULT_FORMAT:
            raise ValueError("wrong format tag")
        out = {}
        for k, entry in enumerate(meta["landscapes"]):
            pre = f"l{k}_"
            coords = [arrays[f"{pre}coords{i}"] for i in range(int(entry["dims"]))]
            curvature = None
            if f"{pre}lambda_min" in arrays:
                curvature = Curvature([arrays[f"{pre}curvature_coords{i}"] for i in range(2)],
                                      arrays[f"{pre}lambda_min"], arrays[f"{pre}lambda_max"],
                                      entry.get("curvature_stats"))
            out[entry["name"]] = Landscape(
                coords, arrays[f"{pre}losses"], [], labels=entry["labels"],
                title=entry["title"], trajectory=arrays.get(f"{pre}trajectory"),
                explained_variance=entry.get("explained_variance"),
                markers=entry.get("markers", ()), stats=entry.get("stats"),
                curvature=curvature)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"load_landscapes: {path} is not a valid landscape result file "
                         f"({type(exc).__name__}: {exc})") from None
    return out, meta.get("metadata", {})


def _inside(value, axis):
    return axis[0] <= value <= axis[-1]


def _matplotlib_ticker():
    from matplotlib import ticker
    return ticker


def _matplotlib():
    try:
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("Landscape.plot needs matplotlib: pip install 'nncore[plot]' "
                          "(or pip install matplotlib)") from exc
    return Figure, FigureCanvasAgg, colors
