"""The conv family: the small CNN and ResNet-20 against PyTorch (and
onnxruntime for inference) in one run: Trainer.fit epochs against PyTorch's
own training loop, predict latency and throughput against eval() +
inference_mode() and an onnxruntime session, and the forward and backward
passes of every convolution shape of these nets against the ATen kernels
PyTorch's autograd runs."""
import numpy as np

from ..layers import Conv2d
from ..losses import CrossEntropyLoss
from ..optim import SGD
from ..trainer import Trainer
from .cnn import NETS, build_net, images, net_flops, onnx_session, torch_copy
from .harness import (available_peers, summarize, thread_limits, time_epochs, time_many,
                      torch_epoch)
from .machine import core_to_core_ns, peak_gflops
from .registry import family

CONV_PEERS = ("torch", "onnxruntime")
BATCHES = [32, 128]
LR, MOMENTUM = 0.01, 0.9

# Per-layer shapes: (label, batch, in, size, out, kernel, stride, groups, bias, input_grad).
# Padding is kernel // 2 (the nets' "same" 3x3 convs; 0 for the 1x1 projections). The
# first layer of each net gets no input gradient, as in training.
LAYERS = [
    ("cnn conv1 1->32 28 b32", 32, 1, 28, 32, 3, 1, 1, True, False),
    ("cnn conv1 1->32 28 b128", 128, 1, 28, 32, 3, 1, 1, True, False),
    ("cnn conv2 32->64 14 b32", 32, 32, 14, 64, 3, 1, 1, True, True),
    ("cnn conv2 32->64 14 b128", 128, 32, 14, 64, 3, 1, 1, True, True),
    ("r20 stem 1->16 28 b128", 128, 1, 28, 16, 3, 1, 1, False, False),
    ("r20 16->16 28 b128", 128, 16, 28, 16, 3, 1, 1, False, True),
    ("r20 16->32 s2 28 b128", 128, 16, 28, 32, 3, 2, 1, False, True),
    ("r20 32->32 14 b128", 128, 32, 14, 32, 3, 1, 1, False, True),
    ("r20 32->64 s2 14 b128", 128, 32, 14, 64, 3, 2, 1, False, True),
    ("r20 64->64 7 b128", 128, 64, 7, 64, 3, 1, 1, False, True),
    ("r20 proj 1x1 16->32 s2 b128", 128, 16, 28, 32, 1, 2, 1, False, True),
    ("r20 proj 1x1 32->64 s2 b128", 128, 32, 14, 64, 1, 2, 1, False, True),
    ("depthwise 3x3 64 14 b128", 128, 64, 14, 64, 3, 1, 64, False, True),
]
LAYERS_QUICK = [
    ("cnn conv1 1->32 28 b32", 32, 1, 28, 32, 3, 1, 1, True, False),
    ("cnn conv2 32->64 14 b32", 32, 32, 14, 64, 3, 1, 1, True, True),
    ("r20 16->16 28 b32", 32, 16, 28, 16, 3, 1, 1, False, True),
    ("r20 32->64 s2 14 b32", 32, 32, 14, 64, 3, 2, 1, False, True),
    ("r20 proj 1x1 32->64 s2 b32", 32, 32, 14, 64, 1, 2, 1, False, True),
    ("depthwise 3x3 64 14 b32", 32, 64, 14, 64, 3, 1, 64, False, True),
]
LAYERS_TINY = [
    ("conv 2->4 8 b2", 2, 2, 8, 4, 3, 1, 1, True, True),
    ("depthwise 3x3 4 8 b2", 2, 4, 8, 4, 3, 1, 4, False, True),
]


def conv_flops(n, c, size, o, k, stride, groups):
    """Forward FLOPs of one convolution with padding k // 2: 2 per multiply-add."""
    out = (size + 2 * (k // 2) - k) // stride + 1
    return 2.0 * n * o * out * out * (c // groups) * k * k


def conv_train_contender(name, net, batch, tiny=False, image_size=28):
    """A function run(X, y) training one epoch of `net` ("cnn" or "resnet20")
    with SGD-momentum and softmax cross-entropy: nncore's Trainer.fit, or
    PyTorch's ordinary loop over a random permutation (train mode)."""
    model = build_net(net, image_size, tiny)
    if name == "nncore":
        trainer = Trainer(model, CrossEntropyLoss(), SGD(lr=LR, momentum=MOMENTUM),
                          batch_size=batch, seed=0)
        return lambda X, y: trainer.fit(X, y, 1, verbose=0)
    if name == "torch":
        import torch
        tmodel = torch_copy(model).train()
        return torch_epoch(tmodel, torch.optim.SGD(tmodel.parameters(), lr=LR,
                                                   momentum=MOMENTUM), batch)
    raise ValueError(f"unknown contender {name!r}")


def conv_infer_contender(name, model, threads, sample_shape):
    """A function f(X) -> class scores with `model`'s weights: nncore's
    predict on the model frozen for inference (its weights packed once, as
    onnxruntime's session packs them), ``nncore_predict`` the model's own
    predict (its weights packed on every call: they may change in place),
    PyTorch's copy in eval() under inference_mode(), or that copy exported
    to ONNX and run by onnxruntime with `threads` intra-op threads."""
    if name == "nncore":
        return model.freeze().predict
    if name == "nncore_predict":
        return model.predict
    if name == "torch":
        import torch
        tmodel = torch_copy(model).eval()

        def forward(X):
            with torch.inference_mode():
                return tmodel(torch.from_numpy(X))
        return forward
    if name == "onnxruntime":
        return onnx_session(torch_copy(model), sample_shape, threads)
    raise ValueError(f"unknown contender {name!r}")


def _layer_fns(peers, n, c, size, o, k, stride, groups, bias, input_grad, phase):
    """{side: fn} for one Conv2d's forward or backward: nncore's layer (its
    Python API: checks and call overhead included), PyTorch's F.conv2d under
    inference_mode() and aten.convolution_backward (what autograd calls, with
    the same output mask: no input gradient for a first layer)."""
    rng = np.random.default_rng(0)
    layer = Conv2d(c, o, k, stride=stride, padding=k // 2, groups=groups, bias=bias)
    x = rng.standard_normal((n, c, size, size), dtype=np.float32)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    if phase == "forward":
        fns = {"nncore": lambda: layer.forward(x)}
    else:
        fns = {"nncore": lambda: layer.backward(dy, input_grad=input_grad)}
    if "torch" in peers:
        import torch
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        tw = torch.from_numpy(layer.weight.copy())
        tb = torch.from_numpy(layer.bias.copy()) if bias else None
        pad = [k // 2] * 2
        if phase == "forward":
            def torch_forward():
                with torch.inference_mode():
                    return torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, groups)
            fns["torch"] = torch_forward
        else:
            aten = torch.ops.aten
            mask = [input_grad, True, bias]
            sizes = [o] if bias else None
            fns["torch"] = lambda: aten.convolution_backward(
                tdy, tx, tw, sizes, [stride] * 2, pad, [1, 1], False, [0, 0], groups, mask)
    return fns


def _add_flops(row, flops, peak):
    """Training and inference rows: GFLOP/s per side from the FLOPs per
    sample, and nncore's % of the FMA peak."""
    row["flops_per_sample"] = flops
    for side in row["contenders"]:
        row[f"{side}_gflops"] = flops * row[f"{side}_rate"] / 1e9
    row["nncore_pct"] = 100.0 * row["nncore_gflops"] / peak
    row.update(limit=peak, limit_name="FMA peak")


@family("conv", "conv nets vs PyTorch: training, predict latency, per-layer conv passes")
def bench_conv(quick=False, threads=2, budget=None, peers=None, tiny=False, nets=None,
               batches=None, layers=None, log=None):
    """The small CNN and ResNet-20 on (n, 1, 28, 28) float32 images (random
    data; 8x8 images and ResNet-8 of width 4 with tiny), each framework in
    its ordinary best configuration, taking turns with a pause before each:

    - train: one Trainer.fit epoch per timed call, SGD-momentum (lr 0.01,
      momentum 0.9) at batch 32 and 128, against PyTorch's own loop with the
      same architecture and initial weights; samples/s.
    - latency / throughput: predict on 1 image (and a batch of 256) of the
      model frozen for inference (``Sequential.freeze``: its weights packed
      once) and, as ``nncore_predict``, of the model itself, against PyTorch
      in eval() under inference_mode() and onnxruntime (when it, onnx and
      torch import: torch.onnx.export writes the model), the same weights;
      the outputs' largest difference from nncore's is recorded per peer
      (max_abs_diff_<peer>).
    - forward / backward: each convolution shape of the two nets (and a
      depthwise 3x3) through Conv2d against F.conv2d and
      aten.convolution_backward.

    Every row gives GFLOP/s and % of the FMA peak at this thread count
    (training counts forward + both gradients of each conv and dense layer,
    less the first layer's input gradient)."""
    peers = available_peers(peers, CONV_PEERS)
    if "onnxruntime" in peers and not available_peers(["torch"], ("torch",)):
        peers.remove("onnxruntime")      # its models are exported from the PyTorch copy
    train_peers = [p for p in peers if p == "torch"]
    nets = nets or list(NETS)
    size = 8 if tiny else 28
    batches = batches or ([4] if tiny else BATCHES)
    layers = layers or (LAYERS_TINY if tiny else LAYERS_QUICK if quick else LAYERS)
    target = 0.001 if tiny else 0.2 if quick else 1.0      # seconds per timed epoch
    max_n = 64 if tiny else 1024 if quick else 8192
    rounds, gap = (2, 0.0) if tiny else (2, 0.05) if quick else (5, 0.15)
    budget = budget if budget is not None else (0.002 if tiny else 0.1 if quick else 0.4)
    big = 4 if tiny else 64 if quick else 256            # the throughput batch
    rows = []

    def emit(row):
        rows.append(row)
        if log:
            log(row)
    with thread_limits(threads) as nthreads:
        peak = peak_gflops(nthreads, quick=quick or tiny)
        X_all, y_all = images(max(max_n, 2 * max(batches), big), size)
        for net in nets:
            label = NETS[net][1] if not tiny else f"tiny {net}"
            forward, train = net_flops(build_net(net, size, tiny), (1, size, size))
            for batch in batches:
                runs = {name: conv_train_contender(name, net, batch, tiny, size)
                        for name in ["nncore"] + train_peers}
                times, counts = time_epochs(runs, X_all, y_all, batch, target, max_n, rounds,
                                            gap, min_n=2 * batch if tiny else 64)
                row = summarize("conv", "train", f"{label} train batch {batch}", times,
                                nthreads, work=1, metric="samples/s", per_call=counts)
                row.update({"net": net, "batch": batch, "samples": counts})
                _add_flops(row, train, peak)
                emit(row)
            model = build_net(net, size, tiny)
            sides = {name: conv_infer_contender(name, model, nthreads, (1, size, size))
                     for name in ["nncore", "nncore_predict"] + peers}
            for batch in (1, big):
                X = X_all[:batch]
                fns = {name: (lambda f=f: f(X)) for name, f in sides.items()}
                ref = model.predict(X)
                diffs = {f"max_abs_diff_{name}": float(np.max(np.abs(np.asarray(f(X)) - ref)))
                         for name, f in sides.items() if name != "nncore"}
                kind = "latency" if batch == 1 else "throughput"
                core = core_to_core_ns(nthreads) if batch == 1 else None
                row = summarize("conv", kind, f"{label} predict batch {batch}",
                                time_many(fns, budget, gap=gap), nthreads, work=batch,
                                metric="samples/s")
                row.update({"net": net, "batch": batch, **diffs})
                if core:
                    row["core_to_core_ns"] = core
                _add_flops(row, forward, peak)
                emit(row)
        for label, n, c, s, o, k, stride, groups, bias, input_grad in layers:
            flop = conv_flops(n, c, s, o, k, stride, groups)
            for phase in ("forward", "backward"):
                fns = _layer_fns(peers, n, c, s, o, k, stride, groups, bias, input_grad, phase)
                work = flop if phase == "forward" else flop * (2 if input_grad else 1)
                case = f"{label} {'fwd' if phase == 'forward' else 'bwd'}"
                row = summarize("conv", phase, case, time_many(fns, budget, gap=gap), nthreads,
                                work=work, metric="GFLOP/s", scale=1e-9, limit=peak,
                                limit_name="FMA peak")
                row.update({"shape": {"batch": n, "in": c, "size": s, "out": o, "kernel": k,
                                      "stride": stride, "groups": groups, "bias": bias,
                                      "input_grad": input_grad}})
                emit(row)
    return rows
