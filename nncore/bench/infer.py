"""The infer family: predict latency at batch 1 and throughput at a large
batch, the same weights in nncore, NumPy, PyTorch, scikit-learn and
onnxruntime (the model exported with nncore.onnx)."""
import warnings

import numpy as np

from ..onnx import to_model_proto
from ..runtime import get_num_threads
from .harness import available_peers, summarize, thread_limits, time_many
from .mlp import ARCHS, _arch_name, _data, _nncore_mlp, _torch_mlp
from .registry import family


def infer_contender(name, sizes, model):
    """A function f(X) computing class scores for X with `model`'s weights:
    nncore's predict on the model frozen for inference (its Dense layers'
    one-sample splits regrouped once) and, as ``nncore_predict``, the
    model's own predict, NumPy matmuls, torch under inference_mode,
    scikit-learn's MLPClassifier.predict_proba, onnxruntime on the exported model (its
    intra-op pool at nncore's thread count, no inter-op pool, all graph
    optimizations: its best ordinary configuration)."""
    if name == "nncore":
        return model.freeze().predict
    if name == "nncore_predict":
        return model.predict
    dense = [layer for layer in model.layers if hasattr(layer, "weight")]
    if name == "numpy":
        Ws = [d.weight.copy() for d in dense]
        bs = [d.bias.copy() for d in dense]

        def forward(X):
            h = X
            for j, (W, b) in enumerate(zip(Ws, bs)):
                h = h @ W
                h += b
                if j < len(Ws) - 1:
                    np.maximum(h, 0, out=h)
            return h
        return forward
    if name == "torch":
        import torch
        tmodel = _torch_mlp(sizes, model).eval()

        def forward(X):
            with torch.inference_mode():
                return tmodel(torch.from_numpy(X))
        return forward
    if name == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        X, y = _data(2 * sizes[-1], sizes)
        y = np.arange(len(X)) % sizes[-1]
        clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], max_iter=1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        clf.coefs_ = [d.weight.astype(clf.coefs_[0].dtype) for d in dense]
        clf.intercepts_ = [d.bias.astype(clf.coefs_[0].dtype) for d in dense]
        return clf.predict_proba
    if name == "onnxruntime":
        import onnxruntime
        data = to_model_proto(model, input_shape=(sizes[0],)).SerializeToString()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(data, options,
                                               providers=["CPUExecutionProvider"])

        def forward(X):
            return session.run(None, {"input": X})[0]
        return forward
    raise ValueError(f"unknown contender {name!r}")


@family("infer", "predict latency at batch 1 and throughput at batch 1024, three MLPs")
def bench_infer(quick=False, threads=2, budget=None, peers=None, tiny=False, archs=None,
                batches=None, log=None):
    """Inference with the same weights in every framework: batch 1 (latency,
    seconds per call) and batch 1024 (throughput, samples/s); nncore's row
    times the frozen model, ``nncore_predict`` the model itself."""
    peers = available_peers(peers)
    names = ["nncore", "nncore_predict"] + peers
    archs = archs or ([(16, 8, 4)] if tiny else ARCHS)
    batches = batches or ([1, 8] if tiny else [1, 1024])
    budget = budget if budget is not None else (0.002 if tiny else 0.1 if quick else 0.5)
    gap = 0.0 if tiny else 0.05
    rows = []
    with thread_limits(threads) as nthreads:
        for sizes in archs:
            model = _nncore_mlp(sizes)
            for batch in batches:
                X = _data(batch, sizes, seed=1)[0]
                fns = {}
                for name in names:
                    f = infer_contender(name, sizes, model)
                    fns[name] = (lambda f=f: f(X))
                kind = "latency" if batch == 1 else "throughput"
                row = summarize("infer", kind, f"{_arch_name(sizes)} batch {batch}",
                                time_many(fns, budget, gap=gap), nthreads, work=batch,
                                metric="samples/s")
                row.update({"arch": list(sizes), "batch": batch})
                rows.append(row)
                if log:
                    log(row)
    return rows
