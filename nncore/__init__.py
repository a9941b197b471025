"""nncore: fast, deterministic neural networks on the CPU.

A C compute core (cache-blocked SGEMM, activation, loss and optimizer
kernels, parallel with OpenMP, one build per ISA picked at load time) under a
small Python API.
"""
try:
    from . import _core
except ImportError:  # pragma: no cover - depends on how Python was started
    # `python -m nncore` from a source checkout puts the checkout first on
    # sys.path, and its nncore/ has no compiled module: use the installed one.
    from ._source_checkout import load_installed_core
    _core = load_installed_core()

_isa_error = _core.init_error()
if _isa_error is not None:
    raise ImportError(_isa_error)

from . import datasets, models  # noqa: E402
from .runtime import set_num_threads, get_num_threads, info  # noqa: E402
from .linalg import matmul  # noqa: E402
from .init import manual_seed  # noqa: E402
from .layers import (Layer, Param, Dense, ReLU, LeakyReLU, Sigmoid, Tanh, GELU,  # noqa: E402
                     Softmax, Dropout, Flatten, Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d,
                     BatchNorm1d, BatchNorm2d, Residual, Sequential, register_layer,
                     layer_from_config)
from .losses import Loss, MSELoss, HuberLoss, BCEWithLogitsLoss, CrossEntropyLoss  # noqa: E402
from .optim import Optimizer, SGD, Adam, AdamW, RMSprop  # noqa: E402
from .landscape import (loss_landscape, interpolate_loss, trajectory_landscape,  # noqa: E402
                        Landscape, TrajectoryRecorder)

from ._version import __version__  # noqa: E402

# Training and using models (trainer.py, callbacks.py, estimators.py, serialize.py).
from . import callbacks  # noqa: E402
from .trainer import Trainer, History, NonFiniteLossError  # noqa: E402
from .estimators import NNClassifier, NNRegressor  # noqa: E402
from . import estimator_files  # noqa: E402,F401  (registers the "estimator" file kind)
from .serialize import save, load  # noqa: E402
from .profiler import profile  # noqa: E402

__all__ = ["__version__", "info", "set_num_threads", "get_num_threads", "matmul",
           "manual_seed",
           "Layer", "Param", "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Dropout", "Flatten", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "Residual", "Sequential", "register_layer",
           "layer_from_config",
           "Loss", "MSELoss", "HuberLoss", "BCEWithLogitsLoss", "CrossEntropyLoss",
           "Optimizer", "SGD", "Adam", "AdamW", "RMSprop",
           "datasets", "models", "callbacks", "Trainer", "History", "NonFiniteLossError",
           "NNClassifier", "NNRegressor", "save", "load", "profile"]
__all__ += ["loss_landscape", "interpolate_loss", "trajectory_landscape", "Landscape",
            "TrajectoryRecorder"]
