"""Training throughput (python -m nncore bench train): one epoch over a fixed
number of samples per batch size, for the three MLPs, in each framework."""
from nncore import bench

SIDES = ("numpy", "torch", "sklearn")
# Samples per timed epoch: fixed, so that runs compare across commits.
SAMPLES = {1: 128, 32: 1024, 128: 2048, 1024: 4096}


def cases(quick):
    return [(sizes, batch) for sizes in bench.ARCHS for batch in bench.BATCHES
            if not quick or batch in (1, 128)]


def case_id(c):
    return f"{bench._arch_name(c[0])}-batch{c[1]}"


def test_train_epoch(benchmark, case, side):
    sizes, batch = case
    n = SAMPLES[batch]
    X, y = bench._data(n, sizes)
    run = bench.train_contender(side, sizes, batch)
    run(X, y)    # warm up: buffers, first-call costs
    benchmark.group = f"train {bench._arch_name(sizes)} batch {batch} ({n} samples)"
    benchmark.extra_info.update({"samples": n})
    benchmark.pedantic(run, args=(X, y), rounds=3, iterations=1, warmup_rounds=0)
