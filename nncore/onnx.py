"""ONNX out and in: ``nncore.onnx.export(model, path)`` and ``nncore.onnx.load(path)``.

Needs the ``onnx`` package (``pip install 'nncore[onnx]'``), imported when
``export`` or ``load`` first runs: ``import nncore`` and ``import nncore.onnx``
never import it (the benchmarks import this module, and nncore imports them).

Export maps each layer to the ONNX operators that compute exactly its
evaluation-mode forward pass::

    Dense             Gemm (the (in, out) weight as is: transB=0), then its activation
    ReLU, LeakyReLU   Relu, LeakyRelu(alpha)
    Sigmoid, Tanh     Sigmoid, Tanh
    GELU              Gelu (opset >= 20), else x * 0.5 * (1 + Erf(x / sqrt(2)))
    Softmax           Softmax(axis=-1)
    Dropout           nothing (the identity in evaluation)
    Flatten           Flatten(axis=1)
    Conv2d            Conv (symmetric pads), then its activation
    MaxPool2d         MaxPool
    AvgPool2d         AveragePool(count_include_pad=1)
    GlobalAvgPool2d   GlobalAveragePool, Flatten (nncore's gives (N, C))
    BatchNorm1d/2d    BatchNormalization with the running statistics
    Residual          the body and the shortcut from one input, then Add(body, shortcut)
    Sequential        its layers in order

The graph has one input "input" of shape (batch, *input_shape) with a
symbolic batch dimension and one output "output"; initializers carry the
``state_dict`` names. nncore's version is in ``producer_version`` and the
metadata entry "nncore_version".

Load builds a Sequential from a graph that is a chain of the operators
above (Gemm or MatMul + Add, Relu, LeakyRelu, Sigmoid, Tanh, Gelu or its Erf
subgraph, Softmax on the last axis, Flatten or Reshape to (N, -1), Conv,
MaxPool, AveragePool, GlobalAveragePool or ReduceMean over H and W,
BatchNormalization, Identity, Dropout) where a fork is a residual block: two
branches from one tensor joined by an Add. Nothing else is guessed: any other
operator, attribute or shape raises ``nncore.errors.FormatError`` naming the
file, the node and its operator.

A file is untrusted input. It is parsed by protobuf and never run; every
tensor's bytes are checked against its dims and dtype before anything is
allocated for it; weights must be finite float32 (float64 and float16 are
converted); external data is refused unless ``allow_external_data=True``,
and then read only from files inside the model's folder.
"""
import math
import os

import numpy as np

from . import init as _init
from ._version import __version__
from .errors import FormatError
from .io import write_atomically
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten,
                     GELU, GlobalAvgPool2d, Layer, LeakyReLU, MaxPool2d, ReLU, Residual, Sequential,
                     Sigmoid, Softmax, Tanh)

# the onnx package and its helpers, set by _require_onnx on first use
onnx = _helper = _numpy_helper = None

__all__ = ["export", "load", "MIN_OPSET", "MAX_FILE_BYTES"]

# Opset 13 fixed the semantics this module relies on (Softmax on one axis,
# Dropout's ratio as an input, Reshape's allowzero default); newer opsets
# than the installed onnx package knows may change them, so both ends are
# checked.
MIN_OPSET = 13
GELU_OPSET = 20              # the first opset with a Gelu operator
MAX_FILE_BYTES = 2 << 30     # protobuf's limit: larger models keep weights outside
MAX_NODES = 100_000
MAX_DEPTH = 64               # residual blocks nested inside each other
MAX_DIM = 1 << 31            # a larger dimension in a file is an attack or a bug
ROUND_TRIP_DIGITS = 7        # float32 attributes read back as the decimal written

_SQRT2 = math.sqrt(2.0)


def _require_onnx():
    """Import the optional onnx package (once), or say how to install it."""
    global onnx, _helper, _numpy_helper
    if onnx is None:
        try:
            import onnx as package         # (it imports its checker too)
            from onnx import helper, numpy_helper
        except ImportError as exc:
            raise ImportError("nncore.onnx needs the onnx package: pip install "
                              "'nncore[onnx]'") from exc
        onnx, _helper, _numpy_helper = package, helper, numpy_helper
    return onnx


# ================================================================ export


class _Graph:
    """The nodes and initializers of the graph being written; tensor names
    are the names of the nodes that produce them."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes = []
        self.initializers = []

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(_helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def tensor(self, name, array):
        arr = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"nncore.onnx.export: tensor {name!r} holds NaN or infinity")
        self.initializers.append(_numpy_helper.from_array(arr, name))
        return name


def _export_activation(g, act, x, prefix, layer=None):
    """The nodes of activation ``act`` (an act_name) applied to x."""
    if act == "relu":
        return g.node("Relu", [x], prefix + "Relu")
    if act == "leaky_relu":
        slope = layer.negative_slope if isinstance(layer, LeakyReLU) else 0.01
        return g.node("LeakyRelu", [x], prefix + "LeakyRelu", alpha=slope)
    if act == "sigmoid":
        return g.node("Sigmoid", [x], prefix + "Sigmoid")
    if act == "tanh":
        return g.node("Tanh", [x], prefix + "Tanh")
    if act == "softmax":
        return g.node("Softmax", [x], prefix + "Softmax", axis=-1)
    if act == "gelu":
        if g.opset >= GELU_OPSET:
            return g.node("Gelu", [x], prefix + "Gelu")
        # the exact GELU, x * Phi(x), as PyTorch writes it below opset 20
        sqrt2 = g.tensor(prefix + "sqrt2", np.float32(_SQRT2))
        one = g.tensor(prefix + "one", np.float32(1.0))
        half = g.tensor(prefix + "half", np.float32(0.5))
        y = g.node("Div", [x, sqrt2], prefix + "Div")
        y = g.node("Erf", [y], prefix + "Erf")
        y = g.node("Add", [y, one], prefix + "Add")
        y = g.node("Mul", [x, y], prefix + "Mul")
        return g.node("Mul", [y, half], prefix + "Mul_half")
    raise TypeError(f"nncore.onnx.export: activation {act!r} has no ONNX form")


def _pads(padding):
    ph, pw = padding
    return [ph, pw, ph, pw]      # ONNX: begins of each axis, then ends


def _export_layer(g, layer, x, prefix):
    """Append the nodes of ``layer`` applied to tensor x; return the output tensor.
    ``prefix`` is the layer's state_dict prefix ("3.body.0.")."""
    kind = type(layer)
    if kind is Sequential:
        for i, child in enumerate(layer.layers):
            x = _export_layer(g, child, x, f"{prefix}{i}.")
        return x
    if kind is Residual:
        body = _export_layer(g, layer.body, x, prefix + "body.")
        short = (_export_layer(g, layer.shortcut, x, prefix + "shortcut.")
                 if layer.shortcut is not None else x)
        return g.node("Add", [body, short], prefix + "Add")
    if kind is Dense:
        inputs = [x, g.tensor(prefix + "weight", layer.weight)]
        if layer.bias is not None:
            inputs.append(g.tensor(prefix + "bias", layer.bias))
        y = g.node("Gemm", inputs, prefix + "Gemm")      # transB=0: weight is (in, out)
        return _export_activation(g, layer.activation, y, prefix) if layer.activation else y
    if kind is Conv2d:
        inputs = [x, g.tensor(prefix + "weight", layer.weight)]
        if layer.bias is not None:
            inputs.append(g.tensor(prefix + "bias", layer.bias))
        y = g.node("Conv", inputs, prefix + "Conv", kernel_shape=list(layer.kernel_size),
                   strides=list(layer.stride), pads=_pads(layer._padding),
                   dilations=list(layer.dilation), group=layer.groups)
        return _export_activation(g, layer.activation, y, prefix) if layer.activation else y
    if kind in (ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax):
        return _export_activation(g, layer.act_name, x, prefix, layer)
    if kind is Dropout:
        return x
    if kind is Flatten:
        return g.node("Flatten", [x], prefix + "Flatten", axis=1)
    if kind is MaxPool2d:
        return g.node("MaxPool", [x], prefix + "MaxPool", kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_pads(layer.padding))
    if kind is AvgPool2d:
        return g.node("AveragePool", [x], prefix + "AveragePool",
                      kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                      pads=_pads(layer.padding), count_include_pad=1)
    if kind is GlobalAvgPool2d:
        y = g.node("GlobalAveragePool", [x], prefix + "GlobalAveragePool")
        return g.node("Flatten", [y], prefix + "Flatten", axis=1)     # (N, C, 1, 1) -> (N, C)
    if kind in (BatchNorm1d, BatchNorm2d):
        if not layer.track_running_stats:
            raise TypeError(f"nncore.onnx.export: layer {prefix[:-1]} {layer._name} has no "
                            "running statistics; its evaluation uses the batch's, which "
                            "ONNX inference cannot")
        c = layer.num_features
        weight = layer.weight if layer.affine else np.ones(c, np.float32)
        bias = layer.bias if layer.affine else np.zeros(c, np.float32)
        inputs = [x] + [g.tensor(prefix + name, arr) for name, arr in (
            ("weight", weight), ("bias", bias), ("running_mean", layer.running_mean),
            ("running_var", layer.running_var))]
        # ONNX's momentum weighs the old running value, nncore's (PyTorch's) the new one
        return g.node("BatchNormalization", inputs, prefix + "BatchNormalization",
                      epsilon=layer.eps, momentum=1.0 - layer.momentum)
    raise TypeError(f"nncore.onnx.export: layer {prefix[:-1] or 'model'} "
                    f"({type(layer).__name__}) has no ONNX form; supported: Dense, "
                    "activations, Dropout, Flatten, Conv2d, pooling, BatchNorm, Residual, "
                    "Sequential")


def _check_shape(input_shape, model):
    if input_shape is None:
        input_shape = model.input_shape
        if input_shape is None:
            raise ValueError(f"nncore.onnx.export: {model._name} does not say what its input "
                             "looks like: pass input_shape, the shape of one sample (e.g. "
                             "(1, 28, 28) for 28x28 grey images)")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                            and d >= 1 for d in shape):
        raise ValueError(f"nncore.onnx.export: input_shape must be the shape of one sample, a "
                         f"tuple of positive ints, got {input_shape!r}")
    shape = tuple(int(d) for d in shape)
    try:
        out = tuple(model.output_shape(shape))
    except ValueError as exc:
        raise ValueError(f"nncore.onnx.export: the model cannot take samples of shape "
                         f"{shape}: {exc}") from None
    return shape, out


def to_model_proto(model, *, input_shape=None, opset=17):
    """The ``onnx.ModelProto`` ``export`` writes (see there)."""
    _require_onnx()
    if not isinstance(model, Layer):
        raise TypeError(f"nncore.onnx.export: expected an nncore model (a Sequential), got "
                        f"{type(model).__name__}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not \
            MIN_OPSET <= opset <= newest:
        raise ValueError(f"nncore.onnx.export: opset must be an int from {MIN_OPSET} to "
                         f"{newest} (what the installed onnx knows), got {opset!r}")
    shape, out_shape = _check_shape(input_shape, model)
    g = _Graph(opset)
    y = _export_layer(g, model, "input", "")
    if y == "input":                            # every layer is the identity
        g.node("Identity", ["input"], "output")
    else:                                       # name the last tensor "output"
        last = g.nodes[-1]
        assert last.output[0] == y
        last.output[0] = "output"
    graph = _helper.make_graph(
        g.nodes, "nncore",
        [_helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                        ["batch", *shape])],
        [_helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT,
                                        ["batch", *out_shape])],
        g.initializers)
    opsets = [_helper.make_opsetid("", opset)]
    proto = _helper.make_model(graph, opset_imports=opsets, producer_name="nncore",
                               producer_version=__version__,
                               doc_string=f"exported by nncore {__version__}")
    # the oldest IR version that carries this opset: older runtimes read the file
    proto.ir_version = _helper.find_min_ir_version_for(opsets)
    _helper.set_model_props(proto, {"nncore_version": __version__})
    onnx.checker.check_model(proto)
    return proto


def export(model, path, *, input_shape=None, opset=17):
    """Write ``model`` (a Sequential of the layers listed in this module's
    docstring) to ``path`` as an ONNX file of operator set ``opset`` (13 up
    to what the installed onnx knows; 17 is read by most runtimes).

    ``input_shape``: the shape of one sample, e.g. ``(1, 28, 28)``; the
    default is the model's own (a first Dense layer's ``(in_features,)``),
    which conv nets do not declare. The batch dimension is symbolic.

    Everything is checked before anything is written: a layer with no ONNX
    form raises TypeError naming it, weights holding NaN or infinity a
    ValueError. The file is written atomically: a failure leaves any
    previous file at ``path`` as it was."""
    proto = to_model_proto(model, input_shape=input_shape, opset=opset)
    data = proto.SerializeToString()
    write_atomically(path, lambda f: f.write(data))


# ================================================================ load

_FLOAT, _DOUBLE, _FLOAT16, _INT32, _INT64, _BOOL = 1, 11, 10, 6, 7, 9
_ITEMSIZE = {_FLOAT: 4, _DOUBLE: 8, _FLOAT16: 2, _INT32: 4, _INT64: 8}
_RAW_DTYPE = {_FLOAT: "<f4", _DOUBLE: "<f8", _FLOAT16: "<f2", _INT32: "<i4", _INT64: "<i8"}
_TYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
               7: "int64", 8: "string", 9: "bool", 10: "float16", 11: "float64",
               12: "uint32", 13: "uint64", 16: "bfloat16"}

# attribute type codes (onnx.AttributeProto.AttributeType)
_A_FLOAT, _A_INT, _A_STRING, _A_TENSOR, _A_FLOATS, _A_INTS = 1, 2, 3, 4, 6, 7

# The attributes each operator may carry: an unknown one could change what
# the node computes, so it is an error rather than ignored.
_ATTRS = {
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "MatMul": set(), "Add": set(), "Mul": set(), "Div": set(), "Erf": set(),
    "Relu": set(), "Sigmoid": set(), "Tanh": set(), "Identity": set(),
    "LeakyRelu": {"alpha"}, "Gelu": {"approximate"}, "Softmax": {"axis"},
    "Flatten": {"axis"}, "Reshape": {"allowzero"},
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "MaxPool": {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                "storage_order", "strides"},
    "AveragePool": {"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                    "kernel_shape", "pads", "strides"},
    "GlobalAveragePool": set(), "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode"},
    "Dropout": {"seed"}, "Constant": {"value", "value_float", "value_floats", "value_int",
                                      "value_ints"},
}


def _decimal(value):
    """A float32 attribute as the decimal it was written from (0.9f -> 0.9),
    so configs survive nncore -> ONNX -> nncore."""
    return float(f"{value:.{ROUND_TRIP_DIGITS}g}")


class _Reader:
    """One ONNX graph turned into nncore layers. ``fail(msg)`` raises the
    FormatError naming the file."""

    def __init__(self, proto, where, base_dir, allow_external):
        self.where, self.base_dir, self.allow_external = where, base_dir, allow_external
        self._check_model(proto)
        graph = proto.graph
        self.graph = graph
        self.nodes = list(graph.node)
        # by identity: protobuf messages compare by value, and two nodes may be equal
        self.index = {id(node): i for i, node in enumerate(self.nodes)}
        self._check_text(graph)
        if len(self.nodes) > MAX_NODES:
            self.fail(f"the graph has {len(self.nodes)} nodes; at most {MAX_NODES} are read")
        self.tensors = {}        # constant name -> TensorProto (converted on use)
        self.arrays = {}         # constant name -> converted array
        for t in graph.initializer:
            if t.name in self.tensors or not t.name:
                self.fail(f"initializer {t.name!r}: empty or repeated name")
            self.tensors[t.name] = t
        if len(graph.sparse_initializer):
            self.fail("sparse initializers are not supported")
        self.producer, self.users = {}, {}
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out in self.producer or out in self.tensors:
                    self.fail(f"{self._node_name(node, i)} writes {out!r}, which another node "
                              "or an initializer already defines")
                if out:
                    self.producer[out] = i
        self.used = set()
        self._collect_constants()
        for i, node in enumerate(self.nodes):
            if i in self.used:
                continue
            for name in dict.fromkeys(node.input):
                if name and name not in self.tensors:
                    self.users.setdefault(name, []).append(i)
        self._read_io()

    # ---- errors and names ----

    def fail(self, msg):
        raise FormatError(f"{self.where}: {msg}")

    def _node_name(self, node, i=None):
        i = self.index[id(node)] if i is None else i
        label = f" {node.name!r}" if node.name else ""
        return f"node {i}{label} ({node.op_type})"

    def node_fail(self, node, msg):
        self.fail(f"{self._node_name(node)}: {msg}")

    # ---- the model around the graph ----

    def _check_text(self, graph):
        """Every name the reader uses is text: protobuf gives bytes for a
        string field that is not valid UTF-8 (ONNX's proto2 does not check)."""
        def text(value, what):
            if not isinstance(value, str):
                self.fail(f"{what} {value[:40]!r} is not valid UTF-8")

        for i, node in enumerate(self.nodes):
            for value in [node.op_type, node.domain, node.name, *node.input, *node.output,
                          *(a.name for a in node.attribute)]:
                text(value, f"node {i}: name")
        for t in graph.initializer:
            text(t.name, "initializer name")
            for entry in t.external_data:
                text(entry.key, "external data key")
                text(entry.value, "external data value")
        for value in list(graph.input) + list(graph.output):
            text(value.name, "graph input/output name")

    def _check_model(self, proto):
        if not proto.HasField("graph"):
            self.fail("not an ONNX model: it has no graph")
        if proto.ir_version < 3 or proto.ir_version > onnx.IR_VERSION:
            self.fail(f"IR version {proto.ir_version} is not one this onnx package reads "
                      f"(3 to {onnx.IR_VERSION})")
        versions = [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")]
        if len(versions) != 1:
            self.fail("the model must import the default ONNX operator set exactly once")
        newest = onnx.defs.onnx_opset_version()
        self.opset = versions[0]
        if not MIN_OPSET <= self.opset <= newest:
            self.fail(f"operator set {self.opset} is not supported (nncore reads {MIN_OPSET} "
                      f"to {newest})")

    def _read_io(self):
        graph = self.graph
        inputs = [v for v in graph.input if v.name not in self.tensors]
        if len(inputs) != 1 or len(graph.output) != 1:
            self.fail(f"the graph must have one input and one output, it has {len(inputs)} "
                      f"and {len(graph.output)}")
        value = inputs[0]
        self.input, self.output = value.name, graph.output[0].name
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type" or value.type.tensor_type.elem_type != _FLOAT:
            self.fail(f"input {value.name!r} must be a float32 tensor")
        if not value.type.tensor_type.HasField("shape"):
            self.fail(f"input {value.name!r} declares no shape")
        dims = []
        for d in value.type.tensor_type.shape.dim:
            if d.WhichOneof("value") == "dim_value":
                if not 1 <= d.dim_value < MAX_DIM:
                    self.fail(f"input {value.name!r} has dimension {d.dim_value}")
                dims.append(d.dim_value)
            else:
                dims.append(None)            # symbolic or unknown
        if len(dims) < 2:
            self.fail(f"input {value.name!r} has shape {dims}; expected (batch, features...)")
        self.batch = dims[0]
        self.sample = tuple(dims[1:])
        if self.input == self.output and self.nodes:
            self.fail("the graph's output is its input")

    # ---- tensors ----

    def _collect_constants(self):
        """Constant nodes, and Identity of a constant, as named constants."""
        for i, node in enumerate(self.nodes):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Constant":
                attrs = self.attributes(node)
                if len(attrs) != 1 or len(node.output) != 1:
                    self.node_fail(node, "expected one value and one output")
                (name, value), = attrs.items()
                if name == "value":
                    self.tensors[node.output[0]] = value
                else:
                    kind = _FLOAT if name.startswith("value_float") else _INT64
                    self.arrays[node.output[0]] = self._finish(
                        np.array(value, _RAW_DTYPE[kind]), kind, f"constant {node.output[0]!r}")
                    self.tensors[node.output[0]] = None
                self.used.add(i)
        # an Identity of a constant is that constant (PyTorch shares biases so)
        changed = True
        while changed:
            changed = False
            for i, node in enumerate(self.nodes):
                if (i not in self.used and node.op_type == "Identity" and len(node.input) == 1
                        and node.input[0] in self.tensors and len(node.output) == 1):
                    self.tensors[node.output[0]] = self.tensors[node.input[0]]
                    if node.input[0] in self.arrays:
                        self.arrays[node.output[0]] = self.arrays[node.input[0]]
                    self.used.add(i)
                    changed = True

    def is_const(self, name):
        return name in self.tensors

    def array(self, name, node, kinds=(_FLOAT, _DOUBLE, _FLOAT16)):
        """The constant ``name`` as float32 (float kinds) or int64 (int kinds),
        checked against its declared dims before anything is allocated."""
        if name not in self.tensors:
            self.node_fail(node, f"input {name!r} must be an initializer or a constant")
        if name in self.arrays:
            arr = self.arrays[name]
        else:
            arr = self.arrays[name] = self._convert(self.tensors[name], name)
        floats = _FLOAT in kinds
        if (arr.dtype == np.float32) != floats:
            self.node_fail(node, f"input {name!r} is {arr.dtype}, expected "
                                 f"{'floating point' if floats else 'integer'} values")
        return arr

    def _convert(self, t, name):
        what = f"tensor {name!r}"
        if t.data_type not in _ITEMSIZE:
            self.fail(f"{what} has type {_TYPE_NAMES.get(t.data_type, t.data_type)}; "
                      "nncore reads float32, float64 and float16 weights (int32/int64 shapes)")
        if len(t.dims) > 8 or any(not 0 <= d < MAX_DIM for d in t.dims):
            self.fail(f"{what} has dims {list(t.dims)[:9]}")
        if t.HasField("segment"):
            self.fail(f"{what} is a segment of a tensor, which nncore does not read")
        count = math.prod(t.dims)
        nbytes = count * _ITEMSIZE[t.data_type]
        external = t.data_location == onnx.TensorProto.EXTERNAL
        typed = {_FLOAT: t.float_data, _DOUBLE: t.double_data, _FLOAT16: t.int32_data,
                 _INT32: t.int32_data, _INT64: t.int64_data}[t.data_type]
        sources = (external or len(t.external_data) > 0) + bool(t.raw_data) + (len(typed) > 0)
        if sources > 1:
            self.fail(f"{what} stores its values in more than one place")
        if external or len(t.external_data):
            raw = self._external(t, what, nbytes)
        elif t.raw_data or not len(typed):
            raw = t.raw_data
        else:
            # typed fields: one entry per value (float16 as its 16 bits in an int32)
            if len(typed) != count:
                self.fail(f"{what}: dims {list(t.dims)} need {count} values, the file has "
                          f"{len(typed)}")
            if t.data_type == _FLOAT16:
                bits = np.array(typed, np.int64)
                if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
                    self.fail(f"{what}: float16 values out of range")
                arr = bits.astype(np.uint16).view(np.float16)
            else:
                arr = np.array(typed, _RAW_DTYPE[t.data_type][1:])
            return self._finish(arr.reshape(tuple(t.dims)), t.data_type, what)
        if len(raw) != nbytes:
            self.fail(f"{what}: dims {list(t.dims)} of {_TYPE_NAMES[t.data_type]} need "
                      f"{nbytes} bytes, the file has {len(raw)}")
        arr = np.frombuffer(raw, _RAW_DTYPE[t.data_type]).reshape(tuple(t.dims))
        return self._finish(arr, t.data_type, what)

    def _finish(self, arr, data_type, what):
        if data_type in (_INT32, _INT64):
            return arr.astype(np.int64)
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)           # a new array: the file's bytes are let go
        if not np.isfinite(out).all():
            self.fail(f"{what} holds NaN or infinity" + (
                " (or a float64 value beyond float32's range)" if data_type == _DOUBLE
                else ""))
        return out

    def _external(self, t, what, nbytes):
        """The bytes of a tensor stored in another file: only when allowed, only
        from a regular file inside the model's folder (symlinks resolved), and
        only exactly the bytes its dims need."""
        entries = {}
        for entry in t.external_data:
            if entry.key in entries:
                self.fail(f"{what}: external data key {entry.key!r} repeats")
            entries[entry.key] = entry.value
        location = entries.get("location", "")
        if not self.allow_external:
            self.fail(f"{what} keeps its data in an external file ({location!r}); pass "
                      "allow_external_data=True to read it from the model's folder")
        if t.data_location != onnx.TensorProto.EXTERNAL or set(entries) - {
                "location", "offset", "length", "checksum"}:
            self.fail(f"{what}: malformed external data reference")
        if not location or "\0" in location or os.path.isabs(location):
            self.fail(f"{what}: external data location {location!r} must be a file name "
                      "relative to the model's folder")
        folder = os.path.realpath(self.base_dir)
        path = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([folder, path]) != folder or path == folder:
            self.fail(f"{what}: external data location {location!r} is outside the model's "
                      "folder")
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
        except ValueError:
            self.fail(f"{what}: external data offset and length must be integers")
        if offset < 0 or (length is not None and length != nbytes):
            self.fail(f"{what}: external data offset {offset} / length {length}; its dims "
                      f"need {nbytes} bytes")
        try:
            with open(path, "rb") as f:
                if not os.path.isfile(path):
                    self.fail(f"{what}: external data {location!r} is not a regular file")
                size = os.fstat(f.fileno()).st_size
                if offset + nbytes > size:
                    self.fail(f"{what}: external data {location!r} has {size} bytes, the "
                              f"tensor needs {nbytes} from offset {offset}")
                f.seek(offset)
                raw = f.read(nbytes)
        except OSError as exc:
            self.fail(f"{what}: cannot read external data {location!r}: {exc.strerror}")
        if len(raw) != nbytes:
            self.fail(f"{what}: external data {location!r} changed while being read")
        return raw

    def scalar(self, name):
        """The value of a one-element float constant, else None."""
        if name not in self.tensors:
            return None
        t = self.tensors[name]
        if t is not None and t.data_type not in (_FLOAT, _DOUBLE, _FLOAT16):
            return None
        arr = self.arrays.get(name)
        if arr is None:
            arr = self.arrays[name] = self._convert(t, name)
        return float(arr.reshape(-1)[0]) if arr.size == 1 and arr.dtype == np.float32 \
            else None

    # ---- attributes ----

    def attributes(self, node):
        """{name: value} of a node's attributes, each checked for its type and
        against the operator's list."""
        allowed = _ATTRS.get(node.op_type, set())
        out = {}
        for a in node.attribute:
            if a.name in out:
                self.node_fail(node, f"attribute {a.name!r} repeats")
            if a.name not in allowed or a.ref_attr_name:
                self.node_fail(node, f"attribute {a.name!r} is not supported")
            if a.type == _A_INT:
                value = a.i
            elif a.type == _A_FLOAT:
                value = a.f
            elif a.type == _A_STRING:
                value = a.s.decode("utf-8", "replace")
            elif a.type == _A_INTS:
                value = list(a.ints)
            elif a.type == _A_FLOATS:
                value = list(a.floats)
            elif a.type == _A_TENSOR:
                value = a.t
            else:
                self.node_fail(node, f"attribute {a.name!r} has an unsupported type")
            if a.type == _A_INTS and (len(value) > 16 or any(abs(v) >= MAX_DIM for v in value)) \
                    or a.type == _A_INT and abs(value) >= MAX_DIM:
                self.node_fail(node, f"attribute {a.name!r} = {value!r} is out of range")
            out[a.name] = value
        return out

    def attr(self, node, attrs, name, default, kind):
        value = attrs.get(name, default)
        ok = {"int": lambda v: isinstance(v, int),
              "float": lambda v: isinstance(v, float) and math.isfinite(v),
              "str": lambda v: isinstance(v, str),
              "ints": lambda v: isinstance(v, list) and all(isinstance(i, int) for i in v)}
        if not ok[kind](value):
            self.node_fail(node, f"attribute {name!r} must be {kind}, got {value!r}")
        return value

    # ---- the walk ----

    def users_of(self, t):
        return [self.nodes[i] for i in self.users.get(t, ())]

    def only_user(self, t):
        users = self.users_of(t)
        return users[0] if len(users) == 1 and t != self.output else None

    def take(self, node):
        i = self.index[id(node)]
        if i in self.used:
            self.fail(f"{self._node_name(self.nodes[i], i)} is reached twice: the graph is "
                      "not a chain")
        self.used.add(i)

    def is_join(self, node):
        return (node.op_type == "Add" and len(node.input) == 2 and node.domain in ("", "ai.onnx")
                and not any(self.is_const(i) for i in node.input))

    def walk(self, t, shape, first=None, depth=0):
        """Follow the graph from tensor t (whose samples have ``shape``, None
        for a dimension not known). Returns (layers, last tensor, its shape,
        the Add that joins this branch, or None at the graph's output)."""
        if depth > MAX_DEPTH:
            self.fail(f"residual blocks are nested more than {MAX_DEPTH} deep")
        layers = []
        while True:
            users = [first] if first is not None else self.users_of(t)
            first = None
            if not users:
                if t != self.output:
                    self.fail(f"tensor {t!r} leads nowhere: the graph is not a chain to its "
                              "output")
                return layers, t, shape, None
            if t == self.output:
                self.fail(f"the output {t!r} is also an input of "
                          f"{self._node_name(users[0])}")
            if len(users) == 1 and self.is_join(users[0]):
                return layers, t, shape, users[0]
            if len(users) == 1:
                new, t, shape = self.convert(users[0], t, shape)
                layers += new
                continue
            gelu = self.match_gelu(t, users)
            if gelu is not None:
                layers.append(GELU())
                t = gelu
                continue
            block, t, shape = self.residual(t, shape, users, depth)
            layers.append(block)

    def residual(self, t, shape, users, depth):
        """A fork at t: two branches joined by one Add -> Residual(body, shortcut)."""
        if len(users) != 2:
            self.fail(f"tensor {t!r} feeds {len(users)} nodes ("
                      + ", ".join(self._node_name(n) for n in users[:4])
                      + "); nncore reads chains whose forks are residual blocks")
        branches = [self.walk(t, shape, user, depth + 1) for user in users]
        add = branches[0][3]
        if add is None or branches[1][3] is not add:
            self.fail(f"the two branches from tensor {t!r} do not end in one Add")
        ends = [b[1] for b in branches]
        if sorted(ends) != sorted(add.input) or ends[0] == ends[1]:
            self.node_fail(add, "does not add the two branches of a residual block")
        self.take(add)
        if ends[0] != add.input[0]:          # the body is Add's first input
            branches.reverse()
        (body, _, body_shape, _), (short, _, short_shape, _) = branches
        if not body:                         # x + f(x): the same sum
            body, short, body_shape, short_shape = short, body, short_shape, body_shape
        if not body:
            self.node_fail(add, "adds a tensor to itself")
        if None not in body_shape and None not in short_shape and body_shape != short_shape:
            self.node_fail(add, f"adds samples of shape {body_shape} and {short_shape}")
        block = Residual(Sequential(*body), Sequential(*short) if short else None)
        return block, add.output[0], body_shape

    # ---- one operator (or a fixed group) -> layers ----

    def convert(self, node, t, shape):
        """(layers, output tensor, its sample shape) for ``node`` applied to t."""
        if node.domain not in ("", "ai.onnx"):
            self.node_fail(node, f"operator domain {node.domain!r} is not supported")
        op = node.op_type
        method = getattr(self, "op_" + op, None)
        if method is None:
            self.node_fail(node, "operator not supported here; nncore reads Gemm, MatMul(+Add), "
                                 "Relu, LeakyRelu, Sigmoid, Tanh, Gelu, Softmax, Flatten, "
                                 "Reshape, Conv, MaxPool, AveragePool, GlobalAveragePool, "
                                 "ReduceMean, BatchNormalization, Identity, Dropout and Add "
                                 "joining residual branches")
        if not node.input or node.input[0] != t:
            self.node_fail(node, f"expected tensor {t!r} as its first input")
        if not node.output or not node.output[0]:
            self.node_fail(node, "has no output")
        if any(out and self.users.get(out) or out == self.output for out in node.output[1:]):
            self.node_fail(node, "its second output is used; nncore computes only the first")
        self.take(node)
        attrs = self.attributes(node)
        return method(node, attrs, shape)

    def build(self, node, cls, *args, **kwargs):
        try:
            return cls(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            self.node_fail(node, str(exc))

    def after(self, node, layer, shape, unknown):
        """The sample shape after ``layer``: the layer's own rule when every
        dimension is known, else ``unknown`` (the rank, with None dims)."""
        if None in shape:
            return tuple(unknown)
        try:
            return tuple(layer.output_shape(shape))
        except ValueError as exc:
            self.node_fail(node, f"cannot take samples of shape {shape}: {exc}")

    def inputs(self, node, low, high):
        if not low <= len(node.input) <= high:
            self.node_fail(node, f"expected {low} to {high} inputs, got {len(node.input)}")
        return list(node.input) + [""] * (high - len(node.input))

    def _dense(self, node, shape, weight, bias):
        k, n = weight.shape
        if len(shape) != 1 or shape[0] not in (None, k):
            self.node_fail(node, f"multiplies samples of shape {shape} by a {k} x {n} matrix")
        layer = self.build(node, Dense, k, n, bias=bias is not None)
        layer.weight = weight
        if bias is not None:
            if bias.size not in (1, n) or bias.ndim > 2 or bias.ndim == 2 and bias.shape[0] != 1:
                self.node_fail(node, f"bias of shape {bias.shape} does not fit {n} outputs")
            layer.bias = np.broadcast_to(bias.reshape(-1), (n,))
        return [layer], (n,)

    def op_Gemm(self, node, attrs, shape):
        _, b, c = self.inputs(node, 2, 3)
        if self.attr(node, attrs, "transA", 0, "int"):
            self.node_fail(node, "transA=1 is not supported")
        weight = self.array(b, node)
        if weight.ndim != 2:
            self.node_fail(node, f"weight {b!r} has shape {weight.shape}; expected a matrix")
        if self.attr(node, attrs, "transB", 0, "int"):
            weight = weight.T                 # PyTorch's (out, in)
        alpha = self.attr(node, attrs, "alpha", 1.0, "float")
        beta = self.attr(node, attrs, "beta", 1.0, "float")
        bias = self.array(c, node) if c else None
        weight = weight * np.float32(alpha) if alpha != 1.0 else weight
        bias = bias * np.float32(beta) if bias is not None and beta != 1.0 else bias
        layers, out = self._dense(node, shape, weight, bias)
        return layers, node.output[0], out

    def op_MatMul(self, node, attrs, shape):
        _, b = self.inputs(node, 2, 2)
        weight = self.array(b, node)
        if weight.ndim != 2:
            self.node_fail(node, f"weight {b!r} has shape {weight.shape}; expected a matrix")
        y, bias = node.output[0], None
        add = self.only_user(y)
        if add is not None and add.op_type == "Add" and len(add.input) == 2 \
                and add.domain in ("", "ai.onnx"):
            other = add.input[1] if add.input[0] == y else add.input[0]
            if self.is_const(other) and other != y:
                self.take(add)
                self.attributes(add)
                bias = self.array(other, add)
                y = add.output[0]
        layers, out = self._dense(node, shape, weight, bias)
        return layers, y, out

    def _simple(self, node, layer, shape):
        return [layer], node.output[0], shape

    def op_Relu(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        return self._simple(node, ReLU(), shape)

    def op_Sigmoid(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        return self._simple(node, Sigmoid(), shape)

    def op_Tanh(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        return self._simple(node, Tanh(), shape)

    def op_LeakyRelu(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        alpha = _decimal(self.attr(node, attrs, "alpha", 0.01, "float"))
        return self._simple(node, self.build(node, LeakyReLU, alpha), shape)

    def op_Gelu(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        if self.attr(node, attrs, "approximate", "none", "str") != "none":
            self.node_fail(node, "only the exact GELU (approximate='none') is supported")
        return self._simple(node, GELU(), shape)

    def op_Softmax(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        axis = self.attr(node, attrs, "axis", -1, "int")
        if axis not in (-1, len(shape)):
            self.node_fail(node, f"softmax over axis {axis} of {len(shape) + 1}; nncore's "
                                 "Softmax is over the last axis")
        return self._simple(node, Softmax(), shape)

    def op_Identity(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        return [], node.output[0], shape

    def op_Dropout(self, node, attrs, shape):
        _, _, training = self.inputs(node, 1, 3)
        t = self.tensors.get(training) if training else None
        # training_mode: absent, or a constant one-element bool false
        if training and not (t is not None and t.data_type == _BOOL and list(t.dims) in ([], [1])
                             and t.data_location != onnx.TensorProto.EXTERNAL
                             and (t.raw_data == b"\0" or list(t.int32_data) == [0])):
            self.node_fail(node, "training_mode must be absent or a constant false")
        return [], node.output[0], shape          # the identity in inference

    def _is_flatten(self, node, shape):
        """Whether node (a Flatten or Reshape) turns (N, ...) into (N, prod(...))."""
        if node is None or node.domain not in ("", "ai.onnx") or not node.input:
            return False
        attrs = self.attributes(node) if node.op_type in ("Flatten", "Reshape") else None
        if node.op_type == "Flatten":
            self.inputs(node, 1, 1)
            axis = self.attr(node, attrs, "axis", 1, "int")
            return axis in (1, -len(shape))
        if node.op_type != "Reshape":
            return False
        _, target = self.inputs(node, 2, 2)
        dims = self.array(target, node, kinds=(_INT64, _INT32))
        if dims.shape != (2,):
            return False
        allowzero = self.attr(node, attrs, "allowzero", 0, "int")
        first, second = (int(d) for d in dims)
        size = math.prod(shape) if None not in shape else None
        batch_ok = first == -1 or (first == 0 and not allowzero) or (
            self.batch is not None and first == self.batch)
        if first == -1:
            return second == size is not None
        return batch_ok and (second == -1 or second == size is not None)

    def op_Flatten(self, node, attrs, shape):
        if not self._is_flatten(node, shape):
            self.node_fail(node, "only flattening to (batch, -1) is supported")
        layer = Flatten()
        return [layer], node.output[0], self.after(node, layer, shape, (None,))

    op_Reshape = op_Flatten

    def _pool_geometry(self, node, attrs, shape, kernel=None):
        """(kernel, stride, padding, dilation) of Conv/MaxPool/AveragePool
        attributes, refusing what nncore's layers do not compute."""
        if len(shape) != 3:
            self.node_fail(node, f"takes NCHW images; its input has samples of shape {shape}")
        auto_pad = self.attr(node, attrs, "auto_pad", "NOTSET", "str")
        if auto_pad not in ("NOTSET", "VALID"):
            self.node_fail(node, f"auto_pad={auto_pad} is not supported (export with explicit "
                                 "pads)")
        declared = self.attr(node, attrs, "kernel_shape", kernel, "ints")
        if declared is None or len(declared) != 2 or (kernel is not None
                                                      and list(declared) != list(kernel)):
            self.node_fail(node, f"kernel_shape {declared} does not fit a 2-D kernel "
                                 f"{kernel}")
        strides = self.attr(node, attrs, "strides", [1, 1], "ints")
        dilations = self.attr(node, attrs, "dilations", [1, 1], "ints")
        pads = self.attr(node, attrs, "pads", [0, 0, 0, 0], "ints")
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
            self.node_fail(node, "strides, dilations and pads must be given for 2 axes")
        if pads[:2] != pads[2:]:
            self.node_fail(node, f"pads {pads} are not symmetric, which nncore does not do")
        if min(declared + strides + dilations) < 1 or min(pads) < 0:
            self.node_fail(node, "kernel, strides and dilations must be positive, pads >= 0")
        return tuple(declared), tuple(strides), tuple(pads[:2]), tuple(dilations)

    def op_Conv(self, node, attrs, shape):
        _, w, b = self.inputs(node, 2, 3)
        weight = self.array(w, node)
        if weight.ndim != 4:
            self.node_fail(node, f"weight {w!r} has shape {weight.shape}; nncore does 2-D "
                                 "convolutions (out, in/groups, kh, kw)")
        kernel, stride, padding, dilation = self._pool_geometry(node, attrs, shape,
                                                                list(weight.shape[2:]))
        groups = self.attr(node, attrs, "group", 1, "int")
        c_out, c_in = weight.shape[0], weight.shape[1] * max(groups, 1)
        if groups < 1 or c_in == 0 or shape[0] not in (None, c_in):
            self.node_fail(node, f"a weight {weight.shape} in {groups} groups does not take "
                                 f"samples of shape {shape}")
        bias = self.array(b, node) if b else None
        if bias is not None and bias.shape != (c_out,):
            self.node_fail(node, f"bias {b!r} has shape {bias.shape}, expected ({c_out},)")
        layer = self.build(node, Conv2d, c_in, c_out, kernel, stride=stride, padding=padding,
                           dilation=dilation, groups=groups, bias=bias is not None)
        layer.weight = weight
        if bias is not None:
            layer.bias = bias
        return [layer], node.output[0], self.after(node, layer, shape, (c_out, None, None))

    def _pool(self, node, attrs, shape, cls):
        self.inputs(node, 1, 1)
        kernel, stride, padding, dilation = self._pool_geometry(node, attrs, shape)
        if dilation != (1, 1) or self.attr(node, attrs, "ceil_mode", 0, "int"):
            self.node_fail(node, "dilated pooling and ceil_mode=1 are not supported")
        if cls is AvgPool2d and any(padding) and \
                not self.attr(node, attrs, "count_include_pad", 0, "int"):
            self.node_fail(node, "count_include_pad=0 with padding is not supported (nncore "
                                 "counts the padding, as PyTorch does by default)")
        layer = self.build(node, cls, kernel, stride=stride, padding=padding)
        return [layer], node.output[0], self.after(node, layer, shape, (shape[0], None, None))

    def op_MaxPool(self, node, attrs, shape):
        return self._pool(node, attrs, shape, MaxPool2d)

    def op_AveragePool(self, node, attrs, shape):
        return self._pool(node, attrs, shape, AvgPool2d)

    def _global_pool(self, node, shape, keepdims):
        """nncore's GlobalAvgPool2d gives (N, C): a pooling that keeps the
        (1, 1) dims must be followed by the flattening that drops them."""
        if len(shape) != 3:
            self.node_fail(node, f"takes NCHW images; its input has samples of shape {shape}")
        y = node.output[0]
        if keepdims:
            nxt = self.only_user(y)
            if nxt is None or nxt.input[0] != y or not self._is_flatten(nxt, (shape[0], 1, 1)) \
                    or len(nxt.output) != 1:
                self.node_fail(node, "must be followed by a Flatten (nncore's "
                                     "GlobalAvgPool2d gives (N, C))")
            self.take(nxt)
            y = nxt.output[0]
        return [GlobalAvgPool2d()], y, (shape[0],)

    def op_GlobalAveragePool(self, node, attrs, shape):
        self.inputs(node, 1, 1)
        return self._global_pool(node, shape, True)

    def op_ReduceMean(self, node, attrs, shape):
        _, axes_name = self.inputs(node, 1, 2)
        if axes_name:
            axes = self.array(axes_name, node, kinds=(_INT64, _INT32)).reshape(-1).tolist()
        else:
            axes = self.attr(node, attrs, "axes", [], "ints")
        rank = len(shape) + 1
        if sorted(a % rank for a in axes if -rank <= a < rank) != [2, 3] or len(axes) != 2 \
                or rank != 4:
            self.node_fail(node, f"a mean over axes {axes} of a rank-{rank} tensor; nncore "
                                 "reads a mean over H and W of NCHW images")
        return self._global_pool(node, shape, self.attr(node, attrs, "keepdims", 1, "int"))

    def op_BatchNormalization(self, node, attrs, shape):
        names = self.inputs(node, 5, 5)[1:]
        if self.attr(node, attrs, "training_mode", 0, "int"):
            self.node_fail(node, "training_mode=1 is not inference")
        scale, bias, mean, var = (self.array(n, node) for n in names)
        c = scale.shape[0] if scale.ndim == 1 else -1
        if any(a.shape != (c,) for a in (scale, bias, mean, var)):
            self.node_fail(node, "scale, bias, mean and variance must be vectors of one length")
        if (var < 0).any():
            self.node_fail(node, "a negative running variance")
        if len(shape) not in (1, 2, 3) or shape[0] not in (None, c):
            self.node_fail(node, f"normalises {c} channels of samples of shape {shape}")
        eps = _decimal(self.attr(node, attrs, "epsilon", 1e-5, "float"))
        momentum = self.attr(node, attrs, "momentum", 0.9, "float")
        momentum = _decimal(1.0 - momentum) if 0.0 <= momentum <= 1.0 else 0.1
        cls = BatchNorm2d if len(shape) == 3 else BatchNorm1d
        layer = self.build(node, cls, c, eps=eps, momentum=momentum)
        layer.weight[...] = scale
        layer.bias[...] = bias
        layer.running_mean[...] = mean
        layer.running_var[...] = var
        return [layer], node.output[0], shape

    # ---- the exact GELU written out ----

    def match_gelu(self, x, users):
        """The output tensor when the users of x compute x * 0.5 * (1 + erf(x /
        sqrt(2))) in one of the orders exporters write it, else None."""
        if len(users) != 2:
            return None

        def const_of(node, value, rel=1e-6):
            """node's input that is not x, when it is the constant ``value``."""
            others = [i for i in node.input if i != x]
            if len(node.input) != 2 or len(others) != 1:
                return False
            got = self.scalar(others[0])
            return got is not None and abs(got - value) <= rel * abs(value)

        def ops(node, op):
            return node is not None and node.op_type == op and not node.attribute \
                and node.domain in ("", "ai.onnx") and len(node.output) == 1

        for scale, mul in (users, users[::-1]):
            if not ((ops(scale, "Div") and scale.input[0] == x and const_of(scale, _SQRT2))
                    or (ops(scale, "Mul") and const_of(scale, 1 / _SQRT2))):
                continue
            erf = self.only_user(scale.output[0])
            add = self.only_user(erf.output[0]) if ops(erf, "Erf") else None
            if not (ops(add, "Add") and _other(add, erf.output[0]) is not None
                    and self.scalar(_other(add, erf.output[0])) == 1.0) or not ops(mul, "Mul"):
                continue
            e = add.output[0]
            m = _other(mul, x)
            if m == e:                                   # (x * e) * 0.5
                last = self.only_user(mul.output[0])
                if not (ops(last, "Mul") and self.scalar(_other(last, mul.output[0])) == 0.5):
                    continue
                group = [scale, erf, add, mul, last]
            elif m is not None and self.scalar(m) == 0.5:    # (x * 0.5) * e
                last = self.only_user(mul.output[0])
                if not (ops(last, "Mul") and _other(last, mul.output[0]) == e
                        and self.only_user(e) is last):
                    continue
                group = [scale, erf, add, mul, last]
            else:                                        # x * (e * 0.5)
                half = self.only_user(e)
                if not (ops(half, "Mul") and self.scalar(_other(half, e)) == 0.5
                        and half.output[0] == m):
                    continue
                last = mul
                group = [scale, erf, add, half, mul]
            if any(self.only_user(n.output[0]) is None for n in group[:-1]):
                continue
            for n in group:
                self.take(n)
            return last.output[0]
        return None

    # ---- the whole graph ----

    def model(self):
        layers, _, _, join = self.walk(self.input, self.sample)
        if join is not None:
            self.node_fail(join, "adds a tensor that does not branch from the same point "
                                 "(not a residual block)")
        left = [i for i in range(len(self.nodes)) if i not in self.used]
        if left:
            self.fail(f"{self._node_name(self.nodes[left[0]], left[0])} is not on the chain "
                      "from the input to the output")
        return Sequential(*layers)


def _other(node, name):
    """The input of a two-input node that is not ``name`` (None if neither or both)."""
    if len(node.input) != 2 or (node.input[0] == name) == (node.input[1] == name):
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def load(path, *, allow_external_data=False):
    """Build an nncore Sequential (in evaluation mode) from the ONNX file at
    ``path`` (see the module docstring for what graphs it reads).

    ``allow_external_data``: read weights the file keeps in other files
    (ONNX's external data), only from regular files inside the folder of
    ``path``. Any problem with the file raises ``nncore.errors.FormatError``
    (a ValueError) naming it; OSError when it cannot be read at all. Loading
    never executes anything from the file and never disturbs
    ``nncore.manual_seed``'s generator."""
    _require_onnx()
    where = os.fsdecode(path)
    with open(where, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise FormatError(f"{where}: {size} bytes; an ONNX file holds at most 2 GiB "
                              "(larger models keep their weights as external data)")
        data = f.read(MAX_FILE_BYTES + 1)
    if not data:
        raise FormatError(f"{where}: not an ONNX file: it is empty")
    if data.startswith(b"NNCORE"):
        raise FormatError(f"{where}: this is an nncore model file: load it with nncore.load")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:          # protobuf's DecodeError, or its C parser's errors
        raise FormatError(f"{where}: not a valid ONNX file (truncated or corrupt protobuf: "
                          f"{exc})") from None
    del data
    # Building a Dense reserves weights from nncore's generator in some paths;
    # the file's weights replace them, so keep the user's random stream.
    generator = _init.get_generator()
    state = generator.bit_generator.state
    try:
        reader = _Reader(proto, where, os.path.dirname(os.path.abspath(where)),
                         allow_external_data)
        model = reader.model()
    finally:
        generator.bit_generator.state = state
    model.eval()
    return model
