"""Residual: ``body(x) + shortcut(x)``, the block ResNets are built of."""
import numpy as np

from .. import _core
from .base import Buffers, Layer, as_input, check_grad, is_batch, not_ready
from .registry import layer_config, layer_from_config, param_specs_of, register_layer

__all__ = ["Residual"]

_RELU = frozenset({"relu"})


@register_layer
class Residual(Layer):
    """``body(x) + shortcut(x)`` (the identity when ``shortcut`` is None),
    with no activation after the sum (put a ReLU after the block). ``body``
    and ``shortcut`` are layers, typically Sequentials. Parameters and
    ``state_dict`` entries list the body's, then the shortcut's, named
    ``body.<...>`` and ``shortcut.<...>`` as PyTorch names a module's
    submodules, so a state moves between the two by position. The two
    branches must give the same shape."""

    is_container = True
    # a ReLU after the block runs in the sum's pass when training; its
    # backward then runs in this block's (relu_after); the backward of a ReLU
    # before the block runs in the pass that sums the branches' input
    # gradients (relu_before)
    epilogue_acts = _RELU
    absorbs_act_relu_backward = True
    absorbs_relu_backward = True

    def __init__(self, body, shortcut=None):
        for name, layer in (("body", body), ("shortcut", shortcut)):
            if layer is not None and not isinstance(layer, Layer):
                raise TypeError(f"Residual: {name} must be an nncore layer, got "
                                f"{type(layer).__name__}")
        if body is None:
            raise TypeError("Residual: body must be an nncore layer, got None")
        if body is shortcut:
            raise ValueError("Residual: body and shortcut must be different layers")
        self.body, self.shortcut = body, shortcut
        self._buf = Buffers(self._name)
        self._shape = self._in_shape = None
        self._x = None      # the last training input (a ReLU's output, for relu_before)

    def sublayers(self):
        return tuple(layer for _, layer in self._branches)

    @property
    def _branches(self):
        return (("body", self.body),) + ((("shortcut", self.shortcut),) if self.shortcut else ())

    # ---- self-description ----

    @property
    def predict_traceable(self):
        return all(layer.predict_traceable for _, layer in self._branches)

    @property
    def input_shape(self):
        return self.body.input_shape

    def output_shape(self, input_shape):
        body = tuple(self.body.output_shape(input_shape))
        shortcut = (tuple(self.shortcut.output_shape(input_shape)) if self.shortcut
                    else tuple(input_shape))
        if body != shortcut:
            raise ValueError(f"gives branches of different shapes: body {body}, shortcut "
                             f"{shortcut}")
        return body

    @classmethod
    def param_specs(cls, config, _depth=0):
        specs = []
        for name in ("body", "shortcut"):
            child = config.get(name)
            if child is not None:
                specs += [s._replace(name=f"{name}.{s.name}")
                          for s in param_specs_of(child, _depth + 1)]
        return specs

    def named_parameters(self):
        return [(f"{name}.{n}", p, g) for name, layer in self._branches
                for n, p, g in layer.named_parameters()]

    def named_buffers(self):
        return [(f"{name}.{n}", a) for name, layer in self._branches
                for n, a in layer.named_buffers()]

    def named_tensors(self):
        return [(f"{name}.{n}", a) for name, layer in self._branches
                for n, a in layer.named_tensors()]

    def parameters(self):
        return [pair for _, layer in self._branches for pair in layer.parameters()]

    def train(self, mode=True):
        self.training = bool(mode)
        for _, layer in self._branches:
            layer.train(mode)
        return self

    # ---- passes ----

    def _sum(self, a, b, name, ws=None, act_name=None, relu_y=None):
        """act(a + b), or with relu_y the gradient a + b through a ReLU whose
        output was relu_y, into the buffer ``name`` (predict: ws's)."""
        if a.shape != b.shape:
            raise ValueError(f"{self._name}: the body gives shape {a.shape}, the shortcut "
                             f"{b.shape}; they must match")
        # predict: ws's buffer, the call recorded (see Sequential.predict)
        out = self._buf.get(name, a.shape) if ws is None else ws.take(a.shape, a, b)
        if relu_y is not None:
            _core.add_relu_backward(a, b, relu_y, out)
        else:
            _core.add(a, b, out, _core.ACT_CODES[act_name] if act_name else 0)
        return out

    def forward(self, x):
        return self.forward_act(x, None)

    def forward_act(self, x, act_name):
        """act(body(x) + shortcut(x)) with the activation (None or "relu",
        the layer after the block) in the sum's pass; that layer then only
        records this output (see Sequential)."""
        x = as_input(self, x)
        a = self.body.forward(x)
        b = self.shortcut.forward(x) if self.shortcut is not None else x
        y = self._sum(a, b, "y", act_name=act_name)
        self._shape, self._in_shape, self._x = y.shape, x.shape, x
        return y

    def backward(self, grad, input_grad=True, relu_after=False, relu_before=False):
        """The input gradient for ``grad``; with ``relu_after``, ``grad`` is
        that of the ReLU folded into the last ``forward_act`` and first goes
        through it (where the output is > 0); with ``relu_before``, the input
        gradient goes on through the ReLU whose output was this block's input,
        in the pass that sums the branches' gradients."""
        if self._shape is None:
            raise not_ready(self)
        grad = check_grad(self, grad, self._shape)
        if relu_after:
            g = self._buf.get("relu_dx", self._shape)
            _core.act_backward(_core.ACT_CODES["relu"], self._buf.get("y", self._shape),
                               grad, g)
            grad = g
        # the body's backward returns its own buffer; read it before the
        # shortcut's runs (they never share one)
        da = self.body.backward(grad)
        db = self.shortcut.backward(grad) if self.shortcut is not None else grad
        return self._sum(da, db, "dx", relu_y=self._x if relu_before else None)

    @property
    def infer_acts(self):
        """ReLU, when the body's last step adds the shortcut itself (a
        Conv2d, or a Sequential ending in one, BatchNorm folded or not)."""
        return _RELU if self._body_res() is not None else frozenset()

    def _body_res(self):
        step = getattr(self.body, "infer_res_step", None)
        return step() if step is not None else None

    def _infer(self, x, ws):
        return self.infer_act(x, ws, None)

    def infer_act(self, x, ws, act_name):
        """Predict's step for the block and the activation ``act_name``
        after it (None: none): act(body(x) + shortcut(x)). The input and
        the shortcut's output stay live (held) while the body runs; when the
        body's last step can, it adds the shortcut and applies the
        activation as it writes its output (the same bits as the sum and
        the activation layer after it)."""
        if not is_batch(x, x.shape if type(x) is np.ndarray else ()):
            x = as_input(self, x)       # (is_batch: no conversion needed, any rank)
        ws.hold(x)
        try:
            b = self.shortcut._infer(x, ws) if self.shortcut is not None else x
            ws.hold(b)
            try:
                fused = self._body_res()
                if fused is not None:
                    return fused(x, ws, b, act_name)
                return self._sum(self.body._infer(x, ws), b, "y", ws, act_name)
            finally:
                ws.release()
        finally:
            ws.release()

    def _forget(self):
        self._shape = self._x = None
        for _, layer in self._branches:
            layer._forget()

    def get_config(self):
        return {"body": layer_config(self.body),
                "shortcut": layer_config(self.shortcut) if self.shortcut else None}

    @classmethod
    def from_config(cls, config, _depth=0):
        if not isinstance(config, dict) or set(config) - {"body", "shortcut"} \
                or "body" not in config:
            raise ValueError("Residual config must be a dict with 'body' (and 'shortcut')")
        shortcut = config.get("shortcut")
        return cls(layer_from_config(config["body"], _depth + 1),
                   layer_from_config(shortcut, _depth + 1) if shortcut is not None else None)

    def __repr__(self):
        inner = repr(self.body).replace("\n", "\n  ")
        short = repr(self.shortcut).replace("\n", "\n  ") if self.shortcut else "identity"
        return f"Residual(\n  body={inner},\n  shortcut={short}\n)"
