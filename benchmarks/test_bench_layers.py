"""Layer building blocks (python -m nncore bench layers): Dense forward and
backward, activations, softmax cross-entropy, optimizer steps."""
from nncore import bench

SIDES = ("numpy", "torch")


def cases(quick):
    return bench.layer_cases(quick=quick)


def case_id(c):
    return c["case"].replace(" ", "-")


def test_layer(benchmark, case, side, peers):
    fns = case["make"](peers)
    benchmark.group = f"layers {case['case']}"
    benchmark.extra_info.update({"work": case["work"], "metric": case["metric"]})
    benchmark(fns[side])
