"""The conv nets the conv family runs in each framework: nncore's own
models, a PyTorch copy of any such Sequential (same layers, same weights and
running statistics), that copy exported to ONNX for onnxruntime, random
image data, and the FLOPs one sample costs."""
import io
import math
import warnings

import numpy as np

from ..init import manual_seed
from ..layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Flatten,
                      GlobalAvgPool2d, MaxPool2d, Residual, Sequential)
from ..models import resnet, small_cnn

# name -> (builder(image_size), what the rows call it)
NETS = {
    "cnn": (lambda size: small_cnn(image_size=size), "small CNN"),
    "resnet20": (lambda size: resnet(20), "ResNet-20"),
}


def build_net(name, image_size=28, tiny=False):
    """A fresh nncore model (seeded: the same weights every call). tiny: the
    ResNet is ResNet-8 of width 4, the shape of ResNet-20 (stem, three
    stages, projections, BatchNorm) at a size the tests run in a blink."""
    manual_seed(0)
    if tiny and name == "resnet20":
        return resnet(8, width=4)
    return NETS[name][0](image_size)


def images(n, size, seed=0, classes=10):
    """Random (n, 1, size, size) float32 images in [0, 1) and int64 labels."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, 1, size, size), dtype=np.float32),
            rng.integers(0, classes, n))


def layer_flops(model, input_shape):
    """Forward FLOPs per sample of each Conv2d and Dense of `model` in the
    order they run (2 per multiply-add; pooling, BatchNorm and activations
    are not counted), for a sample of `input_shape` (C, H, W)."""
    out = []

    def walk(layer, shape):
        if isinstance(layer, Sequential):
            for child in layer.layers:
                shape = walk(child, shape)
            return shape
        if isinstance(layer, Residual):
            walk(layer.body, shape)
            if layer.shortcut is not None:
                walk(layer.shortcut, shape)
            return tuple(layer.output_shape(shape))
        new = tuple(layer.output_shape(shape))
        if isinstance(layer, Conv2d):
            kh, kw = layer.kernel_size
            out.append(2.0 * math.prod(new) * layer.in_channels // layer.groups * kh * kw)
        elif isinstance(layer, Dense):
            out.append(2.0 * layer.in_features * layer.out_features)
        return new
    walk(model, tuple(input_shape))
    return out


def net_flops(model, input_shape):
    """(forward, training step) FLOPs per sample: a training step is the
    forward pass plus, per Conv2d and Dense, the weight gradient and the
    input gradient (same count each), less the first layer's input gradient,
    which neither framework computes."""
    flops = layer_flops(model, input_shape)
    forward = sum(flops)
    return forward, 3 * forward - (flops[0] if flops else 0.0)


def _torch_layers(layer):
    """The torch modules computing what the nncore `layer` computes."""
    import torch
    tnn = torch.nn
    if isinstance(layer, Sequential):
        return [tnn.Sequential(*[m for child in layer.layers for m in _torch_layers(child)])]
    if isinstance(layer, Residual):
        return [_torch_residual(_torch_layers(layer.body)[0],
                                _torch_layers(layer.shortcut)[0] if layer.shortcut else None)]
    if isinstance(layer, Conv2d):
        c = layer.get_config()
        mods = [tnn.Conv2d(c["in_channels"], c["out_channels"], tuple(c["kernel_size"]),
                           tuple(c["stride"]), c["padding"] if isinstance(c["padding"], str)
                           else tuple(c["padding"]), tuple(c["dilation"]), c["groups"],
                           bias=c["bias"])]
        with torch.no_grad():
            mods[0].weight.copy_(torch.from_numpy(layer.weight))
            if layer.bias is not None:
                mods[0].bias.copy_(torch.from_numpy(layer.bias))
        return mods + _torch_activation(layer.activation)
    if isinstance(layer, Dense):
        mod = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.weight.T)))
            if layer.bias is not None:
                mod.bias.copy_(torch.from_numpy(layer.bias))
        return [mod] + _torch_activation(layer.activation)
    if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
        kind = tnn.BatchNorm2d if isinstance(layer, BatchNorm2d) else tnn.BatchNorm1d
        mod = kind(**layer.get_config())
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(layer, name)
                if value is not None:
                    getattr(mod, name).copy_(torch.from_numpy(value))
        return [mod]
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        c = layer.get_config()
        kind = tnn.MaxPool2d if isinstance(layer, MaxPool2d) else tnn.AvgPool2d
        return [kind(tuple(c["kernel_size"]), tuple(c["stride"]), tuple(c["padding"]))]
    if isinstance(layer, GlobalAvgPool2d):
        return [tnn.AdaptiveAvgPool2d(1), tnn.Flatten()]
    if isinstance(layer, Flatten):
        return [tnn.Flatten()]
    name = getattr(layer, "act_name", None)
    if name is not None:
        return _torch_activation(name, layer)
    raise ValueError(f"no PyTorch copy of {layer!r}")


def _torch_activation(name, layer=None):
    import torch
    tnn = torch.nn
    if name is None:
        return []
    if name == "leaky_relu":
        return [tnn.LeakyReLU(getattr(layer, "negative_slope", 0.01))]
    acts = {"relu": tnn.ReLU, "sigmoid": tnn.Sigmoid, "tanh": tnn.Tanh, "gelu": tnn.GELU,
            "softmax": lambda: tnn.Softmax(dim=1)}
    if name not in acts:
        raise ValueError(f"no PyTorch copy of the activation {name!r}")
    return [acts[name]()]


_TORCH_CLASSES = {}


def _torch_residual(body, shortcut):
    """body(x) + shortcut(x) as a torch Module (its class made on first use,
    so that importing this file does not import torch)."""
    if "Residual" not in _TORCH_CLASSES:
        import torch

        class Residual(torch.nn.Module):
            def __init__(self, body, shortcut):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + (x if self.shortcut is None else self.shortcut(x))
        _TORCH_CLASSES["Residual"] = Residual
    return _TORCH_CLASSES["Residual"](body, shortcut)


def torch_copy(model):
    """A torch.nn.Sequential with `model`'s layers, weights and running
    statistics (PyTorch's parameter shapes; Dense weights transposed)."""
    return _torch_layers(model)[0]


def onnx_session(tmodel, sample_shape, threads):
    """An onnxruntime session running `tmodel` (exported by torch.onnx.export,
    dynamic batch), with intra_op_num_threads = threads, one inter-op thread
    and full graph optimisation: onnxruntime's ordinary fast configuration."""
    import onnxruntime as ort
    import torch
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the TorchScript exporter's deprecation notice
        torch.onnx.export(tmodel.eval(), (torch.zeros((1,) + tuple(sample_shape)),), buf,
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda X: session.run(None, {"x": X})[0]
