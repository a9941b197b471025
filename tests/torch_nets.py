"""PyTorch nets exported to ONNX, shared by the ONNX and predict-fusion tests
(importable because pyproject.toml puts tests/ on pytest's pythonpath)."""
import pytest


def torch_nets(torch):
    """name -> (constructor, input shape) of the PyTorch nets the ONNX tests
    export: an MLP, the conv issue's small CNN and a CIFAR-style ResNet-20."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = tnn.Sequential(
                tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), tnn.BatchNorm2d(c_out),
                tnn.ReLU(), tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                tnn.BatchNorm2d(c_out))
            self.shortcut = (tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            tnn.BatchNorm2d(c_out))
                             if stride != 1 or c_in != c_out else None)

        def forward(self, x):
            short = x if self.shortcut is None else self.shortcut(x)
            return torch.relu(self.body(x) + short)

    def resnet20():
        layers = [tnn.Conv2d(1, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU()]
        c = 16
        for stage, c_out in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(Block(c, c_out, 2 if stage and not block else 1))
                c = c_out
        layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10)]
        return tnn.Sequential(*layers)

    return {
        "mlp": (lambda: tnn.Sequential(tnn.Linear(20, 32), tnn.ReLU(), tnn.Linear(32, 16),
                                       tnn.GELU(), tnn.Linear(16, 10), tnn.Softmax(-1)), (20,)),
        "small_cnn": (lambda: tnn.Sequential(
            tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10)), (1, 28, 28)),
        "resnet20": (resnet20, (1, 28, 28)),
    }


def export_torch(name, dynamo, tmp_path):
    """PyTorch net `name` (random BatchNorm statistics and affine, eval mode),
    a batch X of 3 inputs and the path of its ONNX export (legacy or dynamo)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript") if dynamo else None
    import warnings
    torch.manual_seed(0)
    make, shape = torch_nets(torch)[name]
    net = make()
    with torch.no_grad():                  # running statistics worth normalising with
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    X = torch.randn((3,) + shape)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (X,), str(path), dynamo=dynamo, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}} if not dynamo else None,
                          dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamo else None,
                          **({"verbose": False} if dynamo else {}))
    return net, X, path
