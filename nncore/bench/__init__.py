"""Benchmarks: nncore side by side with NumPy (OpenBLAS) on the same data.

Each family is a function registered with ``@family(name, help)``; it returns
rows (a list of dicts) and ``format_table(rows)`` prints them. The two sides
are timed alternately in one run (so a noisy neighbour hits both), and each
row reports the median, min and max over the repeats. Both sides use the same
thread count: nncore through ``set_num_threads``, NumPy's BLAS through
threadpoolctl when it is installed.

    python -m nncore bench [gemm|layers|train|infer|conv|all] [--quick] [--threads N]
                           [--json FILE] [--markdown FILE] [--plot FILE]
    python -m nncore bench gemm|train --precision bf16

Peers: NumPy (OpenBLAS) always; PyTorch (CPU) and scikit-learn when they
import; onnxruntime when it and onnx import (infer: the MLPs exported by
nncore.onnx; conv: the conv nets exported from their PyTorch copy, so torch
too). Every row reports each side's median, min and max, and its spread
(interquartile range / median); rows whose spread exceeds SPREAD_LIMIT are
flagged as noisy. GEMM rows give % of the FMA peak measured by the C peak
kernel (csrc/peak.c, ``peak_gflops``); elementwise rows give GB/s and % of the
memory bandwidth measured by a triad (``memory_bandwidth``). The conv family
compares whole conv nets and their layers with PyTorch and onnxruntime only
(NumPy has no convolution); all its rows give GFLOP/s and % of the FMA peak,
and its one-image rows the core-to-core latency measured just before them
(``core_to_core_ns``: two threads splitting one image share cache lines).

``--precision bf16`` (gemm and train): the "nncore" side runs in bfloat16
(``matmul(..., precision="bf16")``, ``Trainer(precision="bf16")``), next to
nncore in float32 ("nncore_f32"), the peers in float32 and, in train,
PyTorch under ``torch.autocast("cpu", dtype=torch.bfloat16)`` ("torch_bf16");
GEMM rows give % of the bf16 peak measured by the vdpbf16ps probe
(csrc/peak_bf16.c, ``bf16_peak_gflops``).

Layout: registry (FAMILIES, ``@family``, ``run``, ORDER), harness (thread
limits, timing in turns, the row of one case), machine (CPU, versions, the
measured FMA peak, memory bandwidth and core-to-core latency), one module
per family (gemm, layers, train, infer, conv; mlp holds the networks train
and infer share, estimators the NNClassifier-vs-MLPClassifier rows of train,
cnn the conv nets and their PyTorch and ONNX copies), report (text and
Markdown tables) and plot (matplotlib).
"""
# Registry first, then the families in ORDER, so FAMILIES keeps that order.
from .registry import FAMILIES, ORDER, family, run  # noqa: F401
from .harness import (PEERS, SIDES, SPREAD_LIMIT, available_peers, spread,  # noqa: F401
                      summarize, thread_limits, time_epochs, time_many)
from .machine import (bf16_peak_gflops, core_to_core_ns, cpu_model, environment,  # noqa: F401
                      machine, memory_bandwidth, peak_gflops)
from .gemm import bench_gemm, gemm_cases, gemm_operands  # noqa: F401
from .layers import bench_layers, layer_cases  # noqa: F401
from .mlp import ARCHS, _arch_name, _data, _nncore_mlp  # noqa: F401
from .estimators import bench_estimators, estimator_contender, estimator_params  # noqa: F401
from .train import BATCHES, bench_train, train_contender  # noqa: F401
from .infer import bench_infer, infer_contender  # noqa: F401
from .cnn import build_net, layer_flops, net_flops, torch_copy  # noqa: F401
from .conv import bench_conv, conv_infer_contender, conv_train_contender  # noqa: F401
from .report import format_markdown, format_table, geomean  # noqa: F401
from .plot import plot  # noqa: F401
