"""Conv2d: PyTorch's 2-D convolution on NCHW images (csrc/conv.c)."""
import numbers

from .. import _core
from .. import init as _init
from ..validation import image_input, int_pair
from .base import Buffers, Param, check_grad, not_ready
from .registry import register_layer
from .weighted import WeightedLayer

__all__ = ["Conv2d"]

_ACT = _core.ACT_CODES


def _positive(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _geometry(config):
    """(in, out, kernel, stride, padding, dilation, groups) of a Conv2d
    config, checked; padding="same" resolved (stride 1, symmetric)."""
    owner = "Conv2d"
    c_in = _positive(owner, "in_channels", config.get("in_channels"))
    c_out = _positive(owner, "out_channels", config.get("out_channels"))
    kernel = int_pair(owner, "kernel_size", config.get("kernel_size"), 1)
    stride = int_pair(owner, "stride", config.get("stride", 1), 1)
    dilation = int_pair(owner, "dilation", config.get("dilation", 1), 1)
    groups = _positive(owner, "groups", config.get("groups", 1))
    if c_in % groups or c_out % groups:
        raise ValueError(f"{owner}: groups={groups} must divide in_channels={c_in} and "
                         f"out_channels={c_out}")
    padding = config.get("padding", 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{owner}: padding='same' needs stride 1, got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            raise ValueError(f"{owner}: padding='same' with kernel {kernel} and dilation "
                             f"{dilation} needs uneven padding, which nncore does not do")
        padding = (total[0] // 2, total[1] // 2)
    elif padding == "valid":
        padding = (0, 0)
    else:
        padding = int_pair(owner, "padding", padding, 0)
    return c_in, c_out, kernel, stride, padding, dilation, groups


@register_layer
class Conv2d(WeightedLayer):
    """A 2-D convolution, ``y = activation(conv2d(x, weight) + bias)``, with
    PyTorch's definition, arguments and parameter shapes.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or pair
    padding : int, pair, "valid" or "same" ("same" for stride 1 with an odd
        dilated kernel; zero padding, the same on both sides)
    groups : int dividing both channel counts (``in_channels``: depthwise)
    bias : bool
    activation : None or an activation name; "relu" runs in the GEMM epilogue
    init : "auto" (He-uniform before a ReLU-family activation, Glorot-uniform
        otherwise, with fan_in = in_channels / groups * kh * kw and fan_out =
        out_channels * kh * kw), or a name from ``nncore.init.INITIALIZERS``

    Input (batch, in_channels, H, W) float32 NCHW; output (batch,
    out_channels, OH, OW) with OH = (H + 2 ph - dh (kh - 1) - 1) // sh + 1.
    Attributes ``weight`` (out, in/groups, kh, kw), ``bias`` (out,) or None,
    ``grad_weight``, ``grad_bias``; assigning one copies into it.
    """

    predict_traceable = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, activation=None, *, init="auto"):
        config = {"in_channels": in_channels, "out_channels": out_channels,
                  "kernel_size": kernel_size, "stride": stride, "padding": padding,
                  "dilation": dilation, "groups": groups}
        (self.in_channels, self.out_channels, self.kernel_size, self.stride, self._padding,
         self.dilation, self.groups) = _geometry(config)
        self.padding = padding if isinstance(padding, str) else self._padding
        if not (isinstance(init, str) and (init == "auto" or init in _init.INITIALIZERS)):
            raise ValueError(f"{self._name}: unknown init {init!r}; expected 'auto' or one of "
                             f"{sorted(_init.INITIALIZERS)}")
        self._setup(activation, init, bias, self._weight_shape(), self.out_channels)
        self._buf = Buffers(self._name)
        self._in_shape = None
        self._x = self._z = self._dz = self._dx = None

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    @property
    def _name(self):
        k = "x".join(map(str, self.kernel_size))
        return f"Conv2d({self.in_channels}->{self.out_channels}, {k})"

    # ---- self-description ----

    @classmethod
    def param_specs(cls, config):
        c_in, c_out, kernel, *_, groups = _geometry(config)
        specs = [Param("weight", (c_out, c_in // groups) + kernel, "weight", True, 0)]
        if config.get("bias", True):
            specs.append(Param("bias", (c_out,), "bias", True, 0))
        return specs

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"expects samples of shape ({self.in_channels}, H, W)")
        try:
            shape = _core.conv2d_output_shape((1,) + tuple(input_shape), self._weight_shape(),
                                              self.stride, self._padding, self.dilation,
                                              self.groups)
        except ValueError as exc:
            raise ValueError(f"cannot take it ({exc})") from None
        return shape[1:]

    # ---- parameters ----

    def _draw(self, init):
        kh, kw = self.kernel_size
        return _init.INITIALIZERS[init](self.in_channels // self.groups * kh * kw,
                                        self.out_channels * kh * kw, _init.get_generator(),
                                        shape=self._w.shape)

    # ---- passes ----

    _last_shapes = None     # (input shape, output shape) of the last _out_shape
    # A frozen model's weights packed once: {(h, w, bn): conv2d_pack's array or
    # None}; None (unfrozen): packed on every call, the weights may change.
    _packs = None
    # forward_pool ran this layer's own ReLU (activation="relu"), whose
    # backward the pooling after it then runs (Sequential.conv_pool_fusions)
    _pool_took_relu = False

    def _packed(self, x_shape, bn=None):
        """The weights packed for inputs of x_shape (with ``bn`` folded in),
        or None: unfrozen, or a path that packs nothing ahead."""
        packs = self._packs
        if packs is None:
            return None
        key = (x_shape[2], x_shape[3], bn is not None)
        if key not in packs:
            extra = () if bn is None else (bn.weight, bn.bias, bn.running_mean,
                                           bn.running_var, bn.eps)
            packs[key] = _core.conv2d_pack(x_shape, self._w, self._b, *extra,
                                           stride=self.stride, padding=self._padding,
                                           dilation=self.dilation, groups=self.groups)
        return packs[key]

    def _out_shape(self, x_shape):
        last = self._last_shapes        # one read: another thread may replace it
        if last is not None and last[0] == x_shape:
            return last[1]
        try:
            out = _core.conv2d_output_shape(x_shape, self._w.shape, self.stride,
                                            self._padding, self.dilation, self.groups)
        except ValueError as exc:
            raise ValueError(f"{self._name}: input of shape {x_shape} is too small for the "
                             f"kernel ({exc})") from None
        self._last_shapes = (x_shape, out)
        return out

    def _prepare(self, x):
        if self._pending_init:
            self._initialize()
        x = image_input(self._name, x, self.in_channels)
        if x.shape != self._in_shape:
            out = self._out_shape(x.shape)
            self._in_shape = x.shape
            self._z = self._buf.get("z", out)
            self._dz = self._buf.get("dz", out) if self.activation == "relu" else None
            self._dx = None
        return x

    def _run(self, x, act):
        x = self._prepare(x)
        _core.conv2d_forward(x, self._w, self._b, self._z, self.stride, self._padding,
                             self.dilation, self.groups, act, self._bf16)
        self._x = x
        self._pool_took_relu = False

    def forward(self, x):
        self._run(x, self._gemm_act)
        return self._act.forward(self._z) if self._act is not None else self._z

    def forward_act(self, x, act_name):
        """forward with the next activation layer applied in the epilogue."""
        self._run(x, _ACT[act_name])
        return self._z

    def forward_pool(self, x, pool):
        """forward_act(x, "relu") followed by ``pool`` (a MaxPool2d that
        ``fuses_after_conv``) in one C call (conv2d_forward_pool): the pooled
        output and argmax land in ``pool``'s buffers, with the bits of the
        separate steps, and where the direct or Winograd convolution runs
        the unpooled output (the largest activation of a small CNN) is never
        stored. The ReLU's backward must be absorbed by ``pool``'s
        (Sequential checks both); this layer's backward needs only x."""
        x = self._prepare(x)
        y, argmax = pool.fused_outputs(self._z.shape, self._z)
        _core.conv2d_forward_pool(x, self._w, self._b, self._z, y, argmax, self.stride,
                                  self._padding, self.dilation, self.groups, _ACT["relu"],
                                  self._bf16)
        self._x = x
        # with activation="relu" that ReLU is this layer's own: pool's
        # backward runs its backward (relu_before), z was never stored
        self._pool_took_relu = self.activation == "relu"
        return y

    def backward(self, grad, input_grad=True):
        x = self._x
        if x is None:
            raise not_ready(self)
        if self._act is not None:
            grad = self._act.backward(grad)
        else:
            grad = check_grad(self, grad, self._z.shape)
        if self.activation == "relu" and not self._pool_took_relu:
            _core.act_backward(_ACT["relu"], self._z, grad, self._dz)
            grad = self._dz
        dx = None
        if input_grad:
            if self._dx is None:
                self._dx = self._buf.get("dx", x.shape)
            dx = self._dx
        _core.conv2d_backward(x, self._w, grad, dx, self._gw, self._gb, self.stride,
                              self._padding, self.dilation, self.groups, self._bf16)
        return dx

    def _infer(self, x, ws, act=None):
        if self._pending_init:
            self._initialize()
        x = image_input(self._name, x, self.in_channels)
        z = ws.take(self._out_shape(x.shape), x)
        _core.conv2d_forward(x, self._w, self._b, z, self.stride, self._padding,
                             self.dilation, self.groups, self._gemm_act if act is None else act,
                             packed=self._packed(x.shape))
        return self._act._infer(z, ws) if self._act is not None else z

    def infer_act(self, x, ws, act_name):
        return self._infer(x, ws, _ACT[act_name])

    def infer_pool(self, x, ws, pool):
        """Predict's step for this layer, the ReLU after it and ``pool`` (a
        2x2 MaxPool2d) in one C call, as ``forward_pool``: the bits of the
        three steps, the unpooled output never stored where the direct or
        Winograd convolution runs."""
        if self._pending_init:
            self._initialize()
        x = image_input(self._name, x, self.in_channels)
        out = self._out_shape(x.shape)
        z = ws.take(out, x)         # scratch, written only off the direct path
        pooled = out[:2] + (out[2] // 2, out[3] // 2)
        y = ws.take(pooled, x, z)
        # no argmax: only the backward pass reads it (writing it cost up to
        # 9% of a one-image small CNN predict on 2 threads)
        _core.conv2d_forward_pool(x, self._w, self._b, z, y, None, self.stride,
                                  self._padding, self.dilation, self.groups, _ACT["relu"],
                                  packed=self._packed(x.shape))
        return y

    def folds_batchnorm(self, bn):
        """Whether predict may run this layer and ``bn`` (the next layer) as
        one pass, the BatchNorm's evaluation-mode scale folded into the
        convolution (``infer_bn``)."""
        return (self.activation is None and getattr(bn, "eval_affine", False)
                and bn.num_features == self.out_channels)

    def infer_bn(self, x, ws, bn, act_name=None):
        """Predict's step for this layer, the BatchNorm2d ``bn`` after it (in
        evaluation mode: running statistics) and the activation ``act_name``
        (one of ``epilogue_acts``, or None) in one C call."""
        return self.infer_res(x, ws, None, act_name, bn)

    def infer_res(self, x, ws, res, act_name=None, bn=None):
        """Predict's step for this layer (without an activation of its own),
        the BatchNorm2d ``bn`` after it (or None), the residual ``res`` (an
        array of the output's shape, or None) added and the activation
        ``act_name`` applied, in one C call: act(bn(conv(x)) + res), a ResNet
        block's last convolution, its sum and the ReLU after the block. The
        bits of the separate steps (see nn_conv2d_forward_res)."""
        if self._pending_init:
            self._initialize()
        x = image_input(self._name, x, self.in_channels)
        out = self._out_shape(x.shape)
        if res is not None and res.shape != out:
            raise ValueError(f"Residual: the body gives shape {out}, the shortcut "
                             f"{res.shape}; they must match")
        z = ws.take(out, x) if res is None else ws.take(out, x, res)
        packed = self._packed(x.shape, bn)
        if bn is None:
            _core.conv2d_forward(x, self._w, self._b, z, self.stride, self._padding,
                                 self.dilation, self.groups, _ACT[act_name], res=res,
                                 packed=packed)
        else:
            _core.conv2d_forward_bn(x, self._w, self._b, bn.weight, bn.bias, bn.running_mean,
                                    bn.running_var, bn.eps, z, self.stride, self._padding,
                                    self.dilation, self.groups, _ACT[act_name], res=res,
                                    packed=packed)
        return z

    def infer_res_step(self):
        """``infer_res`` when this layer's output may take a residual before
        an activation (it has no activation of its own), else None."""
        return self.infer_res if self.activation is None else None

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str)
                else list(self._padding),
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": self._b is not None, "activation": self.activation, "init": self.init}

    def __repr__(self):
        extra = "".join(f", {k}={v}" for k, v, default in (
            ("stride", self.stride, (1, 1)), ("padding", self.padding, (0, 0)),
            ("dilation", self.dilation, (1, 1)), ("groups", self.groups, 1)) if v != default)
        act = f", activation={self.activation!r}" if self.activation else ""
        bias = "" if self._b is not None else ", bias=False"
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size="
                f"{self.kernel_size}{extra}{bias}{act})")
