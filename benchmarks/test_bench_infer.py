"""Inference (python -m nncore bench infer): predict latency at batch 1 and
throughput at batch 1024, the same weights in each framework."""
from nncore import bench

SIDES = ("numpy", "torch", "sklearn")


def cases(quick):
    return [(sizes, batch) for sizes in bench.ARCHS for batch in (1, 1024)]


def case_id(c):
    return f"{bench._arch_name(c[0])}-batch{c[1]}"


def test_predict(benchmark, case, side):
    sizes, batch = case
    model = bench._nncore_mlp(sizes)
    X = bench._data(batch, sizes, seed=1)[0]
    f = bench.infer_contender(side, sizes, model)
    benchmark.group = f"infer {bench._arch_name(sizes)} batch {batch}"
    benchmark.extra_info.update({"samples": batch})
    benchmark(f, X)
