"""The MLPs the train and infer families run in each framework: their sizes,
data, and the same network built in nncore and PyTorch."""
import numpy as np

from ..init import manual_seed
from ..layers import Dense, ReLU, Sequential


ARCHS = [(784, 128, 10), (784, 256, 128, 10), (784, 1024, 1024, 10)]


def _arch_name(sizes):
    return "-".join(map(str, sizes))


def _data(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)


def _nncore_mlp(sizes):
    manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def _torch_mlp(sizes, model=None):
    """A torch MLP, with `model`'s (nncore) weights when given."""
    import torch
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    tmodel = torch.nn.Sequential(*layers)
    if model is not None:
        dense = [layer for layer in model.layers if hasattr(layer, "weight")]
        linear = [layer for layer in tmodel if isinstance(layer, torch.nn.Linear)]
        with torch.no_grad():
            for d, t in zip(dense, linear):
                t.weight.copy_(torch.from_numpy(d.weight.T.copy()))
                t.bias.copy_(torch.from_numpy(d.bias))
    return tmodel
