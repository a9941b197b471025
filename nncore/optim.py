"""Optimizers: hyperparameters plus per-parameter state; ``step(params)``
updates every parameter in place with one fused C pass.

``params`` is ``model.parameters()``: a list of ``(param, grad)`` float32
array pairs. State (momentum buffers, moment estimates, step counts) is kept
per parameter array, created at its first step; ``reset()`` forgets it,
``state_dict(params)`` copies it out and ``load_state_dict(state, params)``
restores it (checkpoints; ``nncore.save(model, path, optimizer=opt)``).

The update rules are exactly torch.optim's documented algorithms (maximize
off, no amsgrad), so a run compares with PyTorch step by step:

- ``SGD``: d = g + wd w; b = d at the first step, else b = mu b + (1 - dampening) d;
  d = d + mu b (Nesterov) or b; w -= lr d
- ``Adam``: d = g + wd w; m = lerp(m, d, 1 - beta1); v = beta2 v + (1 - beta2) d^2;
  w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
- ``AdamW``: w *= 1 - lr wd, then Adam without the wd term
- ``RMSprop``: d = g + wd w; s = alpha s + (1 - alpha) d^2;
  avg = sqrt(s - a^2) + eps with a = lerp(a, d, 1 - alpha) (centered) or sqrt(s) + eps;
  b = mu b + d / avg, w -= lr b (momentum) or w -= lr d / avg

``lr`` is a plain attribute a scheduler may change between steps (it must stay
a finite number >= 0).
"""
import math
import numbers

import numpy as np

from . import _core
from . import _guard

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]

_F32 = np.float32
_F32_MAX = float(np.finfo(np.float32).max)

# The active profiler's recorder (nncore.profile sets it), else None.
_PROFILE = None


def _number(owner, name, value, lo=0.0, hi=math.inf, hi_open=False):
    """A float in [lo, hi] (or [lo, hi)); the kernels compute in float32, so
    it must also be finite there."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if value > _F32_MAX:
        raise ValueError(f"{owner}: {name} must be finite in float32 (at most "
                         f"{_F32_MAX:.4g}), got {value!r}")
    if value < lo or value > hi or (hi_open and value == hi) or math.isinf(value):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}" if hi != math.inf else f">= {lo:g}"
        raise ValueError(f"{owner}: {name} must be {'in ' if hi != math.inf else ''}{rng}, "
                         f"got {value!r}")
    return value


def _state_like(p):
    """A zeroed optimizer buffer shaped like parameter ``p`` (cache-line aligned)."""
    return _guard.zeros(p.shape, p.dtype, "optimizer state")


class _State:
    __slots__ = ("param", "step", "bufs")

    def __init__(self, param, bufs):
        self.param = param   # a strong reference: the key id(param) stays unique
        self.step = 0
        self.bufs = bufs


class Optimizer:
    """Base class: subclasses define ``_buffers(param)`` and ``_update``."""

    def __init__(self, lr):
        self.lr = lr
        self._state = {}

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _number(type(self).__name__, "lr", value)

    def _new_state(self, p, g, i):
        name = type(self).__name__
        for arr, what in ((p, "param"), (g, "grad")):
            if not isinstance(arr, np.ndarray) or arr.dtype != _F32 or \
                    not arr.flags.c_contiguous:
                raise TypeError(f"{name}.step: {what} {i} must be a float32 C-contiguous array "
                                f"(use model.parameters()), got {_describe(arr)}")
        if not p.flags.writeable:
            raise ValueError(f"{name}.step: param {i} is read-only")
        if g.shape != p.shape:
            raise ValueError(f"{name}.step: grad {i} has shape {g.shape}, param {p.shape}")
        _guard.check_memory(p.nbytes * self._n_buffers(), lambda: f"{name}.step: the state "
                            f"of param {i} (shape {p.shape})")
        st = _State(p, self._buffers(p))
        self._state[id(p)] = st
        return st

    def step(self, params):
        """Apply one update to every ``(param, grad)`` pair in place."""
        if _PROFILE is not None and _PROFILE.outer(self):
            return _PROFILE.span("optimizer", self, "step", self.step, params)
        state = self._state
        try:
            pairs = enumerate(params)
        except TypeError:
            raise _not_pairs(type(self).__name__, "step", params) from None
        for i, pair in pairs:
            try:
                p, g = pair
            except (TypeError, ValueError):
                raise _not_a_pair(type(self).__name__, "step", pair, i) from None
            st = state.get(id(p))
            if st is None or st.param is not p:
                st = self._new_state(p, g, i)
            try:
                self._update(p, g, st, st.step + 1)
            except (TypeError, ValueError) as exc:
                # a grad replaced since the state was made (the kernels check it)
                raise type(exc)(f"{type(self).__name__}.step: pair {i}: {exc}") from None
            st.step += 1

    def reset(self):
        """Forget all per-parameter state (momentum, moments, step counts)."""
        self._state.clear()

    # ---- state for checkpoints (PyTorch's names) ----

    def state_dict(self, params):
        """A copy of everything the next steps depend on, for ``params`` (the
        ``model.parameters()`` list ``step`` is called with), as plain data::

            {"type": "Adam", "config": get_config(),     # hyperparameters, lr too
             "steps": [t_0, t_1, ...],                   # steps taken per param
             "buffers": {"0.exp_avg": array, ...}}       # "<param index>.<name>"

        Parameters are named by their position in ``params``, so the state
        can be loaded into another model of the same architecture.
        ``load_state_dict`` restores it: the steps that follow are then
        bitwise those of the run that was saved."""
        name = type(self).__name__
        steps, buffers = [], {}
        for i, pair in enumerate(_pairs(name, "state_dict", params)):
            p = pair[0]
            st = self._state.get(id(p))
            if st is None or st.param is not p:
                steps.append(0)
                continue
            steps.append(st.step)
            if len(st.bufs) > len(self._buffer_names):
                raise TypeError(f"{name}.state_dict: {name} does not name its state buffers "
                                "(set _buffer_names to one name per buffer _buffers makes)")
            for buf_name, buf in zip(self._buffer_names, st.bufs):
                if buf is not None:
                    buffers[f"{i}.{buf_name}"] = buf.copy()
        return {"type": name, "config": self.get_config(), "steps": steps, "buffers": buffers}

    def load_state_dict(self, state, params):
        """Replace this optimizer's hyperparameters and state with ``state``
        (from ``state_dict``) for ``params``, in the same order. Everything
        is checked before anything changes: the optimizer type, the
        hyperparameters, one step count per parameter, exactly the buffers
        those hyperparameters use, each finite and shaped like its parameter
        (converted to float32)."""
        name = type(self).__name__
        who = f"{name}.load_state_dict"
        if not isinstance(state, dict) or set(state) != {"type", "config", "steps", "buffers"}:
            raise ValueError(f"{who}: expected a dict with keys 'type', 'config', 'steps' and "
                             f"'buffers' (as state_dict gives), got {_describe(state)}")
        if state["type"] != name:
            raise ValueError(f"{who}: the state is of a {state['type']!r}, not a {name!r}")
        config = state["config"]
        if not isinstance(config, dict):
            raise ValueError(f"{who}: config must be a dict, got {_describe(config)}")
        try:
            fresh = type(self)(**config)
        except TypeError as exc:
            raise ValueError(f"{who}: bad config {config!r} ({exc})") from None
        pairs = _pairs(name, "load_state_dict", params)
        steps, buffers = state["steps"], state["buffers"]
        if not isinstance(steps, (list, tuple)) or len(steps) != len(pairs) or not all(
                type(t) is int and t >= 0 for t in steps):
            raise ValueError(f"{who}: steps must be a list of {len(pairs)} ints >= 0 (one per "
                             f"parameter), got {steps!r}")
        if not isinstance(buffers, dict):
            raise ValueError(f"{who}: buffers must be a dict, got {_describe(buffers)}")
        new_state, expected = {}, set()
        for i, ((p, g), t) in enumerate(zip(pairs, steps)):
            if not isinstance(p, np.ndarray) or p.dtype != _F32 or not p.flags.c_contiguous:
                raise TypeError(f"{who}: param {i} must be a float32 C-contiguous array "
                                f"(use model.parameters()), got {_describe(p)}")
            if t == 0:
                continue
            bufs = []
            for buf_name, template in zip(fresh._buffer_names, fresh._buffers(p)):
                if template is None:
                    bufs.append(None)
                    continue
                key = f"{i}.{buf_name}"
                expected.add(key)
                if key not in buffers:
                    raise ValueError(f"{who}: buffer {key!r} is missing")
                arr = _guard.as_array(buffers[key], who, key)
                if arr.dtype.kind not in "biuf" or arr.shape != p.shape:
                    raise ValueError(f"{who}: buffer {key!r} is {_describe(arr)}; expected "
                                     f"real numbers of shape {p.shape}")
                if not np.isfinite(arr).all():
                    raise ValueError(f"{who}: buffer {key!r} holds NaN or infinity")
                template[...] = arr
                bufs.append(template)
            st = _State(p, tuple(bufs))
            st.step = t
            new_state[id(p)] = st
        unexpected = sorted(set(buffers) - expected)
        if unexpected:
            raise ValueError(f"{who}: unexpected buffers {unexpected[:5]} (not used by "
                             f"{name}({', '.join(f'{k}={v!r}' for k, v in config.items())}))")
        fresh._state = new_state
        self.__dict__.update(fresh.__dict__)

    _buffer_names = ()

    def _buffers(self, p):
        return ()

    def _n_buffers(self):
        """How many param-sized state arrays ``_buffers`` makes."""
        return 0

    def _update(self, p, g, st, t):
        """Step number ``t`` (from 1) of param ``p`` with grad ``g``."""
        raise NotImplementedError

    def get_config(self):
        return {"lr": self.lr}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _not_pairs(owner, method, params):
    return TypeError(f"{owner}.{method}: expected a list of (param, grad) pairs as "
                     f"model.parameters() gives, got {_describe(params)}")


def _not_a_pair(owner, method, pair, i):
    return TypeError(f"{owner}.{method}: expected (param, grad) pairs as "
                     f"model.parameters() gives, got {_describe(pair)} at {i}")


def _pairs(owner, method, params):
    """``params`` as a list of (param, grad) tuples, or a TypeError. (step
    does the same inline: a list per step costs ~0.4 us.)"""
    try:
        items = list(params)
    except TypeError:
        raise _not_pairs(owner, method, params) from None
    pairs = []
    for i, pair in enumerate(items):
        try:
            p, g = pair
        except (TypeError, ValueError):
            raise _not_a_pair(owner, method, pair, i) from None
        pairs.append((p, g))
    return pairs


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"a {type(x).__name__}"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form:
    the buffer starts as the first gradient), Nesterov momentum and L2 weight
    decay."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, *, dampening=0.0):
        super().__init__(lr)
        self.momentum = _number("SGD", "momentum", momentum)
        self.dampening = _number("SGD", "dampening", dampening)
        self.weight_decay = _number("SGD", "weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")

    _buffer_names = ("momentum_buffer",)

    def _buffers(self, p):
        return (_state_like(p),) if self.momentum != 0 else (None,)

    def _n_buffers(self):
        return 1 if self.momentum != 0 else 0

    def _update(self, p, g, st, t):
        _core.sgd_step(p, g, st.bufs[0], self._lr, self.momentum, self.dampening,
                       self.weight_decay, self.nesterov, t == 1)

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "dampening": self.dampening}


def _betas(owner, betas):
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}") from None
    return (_number(owner, "beta1", b1, 0.0, 1.0, hi_open=True),
            _number(owner, "beta2", b2, 0.0, 1.0, hi_open=True))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay is L2 added to
    the gradient (use AdamW for decoupled decay)."""

    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        name = type(self).__name__
        self.betas = _betas(name, betas)
        self.eps = _number(name, "eps", eps)
        self.weight_decay = _number(name, "weight_decay", weight_decay)

    _buffer_names = ("exp_avg", "exp_avg_sq")

    def _buffers(self, p):
        return (_state_like(p), _state_like(p))

    def _n_buffers(self):
        return 2

    def _update(self, p, g, st, t):
        b1, b2 = self.betas
        lr = self._lr
        if self._decoupled:
            wd, decay = 0.0, 1.0 - lr * self.weight_decay
        else:
            wd, decay = self.weight_decay, 1.0
        m, v = st.bufs
        _core.adam_step(p, g, m, v, b1, b2, self.eps, wd, decay, lr / (1.0 - b1 ** t),
                        math.sqrt(1.0 - b2 ** t))

    def get_config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the weights
    shrink by lr * weight_decay each step, outside the adaptive update."""

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (eps added outside the square root;
    momentum buffer starting at zero; optional centering)."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(lr)
        self.alpha = _number("RMSprop", "alpha", alpha, 0.0, 1.0)
        self.eps = _number("RMSprop", "eps", eps)
        self.weight_decay = _number("RMSprop", "weight_decay", weight_decay)
        self.momentum = _number("RMSprop", "momentum", momentum)
        self.centered = bool(centered)

    _buffer_names = ("square_avg", "grad_avg", "momentum_buffer")

    def _buffers(self, p):
        return (_state_like(p), _state_like(p) if self.centered else None,
                _state_like(p) if self.momentum > 0 else None)

    def _n_buffers(self):
        return 1 + self.centered + (self.momentum > 0)

    def _update(self, p, g, st, t):
        sq, gavg, buf = st.bufs
        _core.rmsprop_step(p, g, sq, gavg, buf, self._lr, self.alpha, self.eps,
                           self.weight_decay, self.momentum)

    def get_config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}
