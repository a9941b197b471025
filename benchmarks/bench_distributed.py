"""Data-parallel training throughput (issue 18): samples/s of the 784-256-128-10
MLP at batch 128 and 1024 for

- one process, 2 OpenMP threads, the plain (unsharded) Trainer;
- one process, 1 thread, shards=4 (what every rank count reproduces);
- 1 and 2 MPI ranks, 1 thread each, shards=4, with the fixed-order
  reduction (deterministic=True) and with MPI's native Allreduce;

and the cost of the two exchanges alone on this model's gradient (an
Allgatherv of one tree node per rank, then the tree's last adds, against
one Allreduce), next to the backward pass of one shard: overlapping the
exchange with the backward pass can hide at most the smaller of the two per
step (a rank's tree node is complete only once its last shard's backward
has produced it, layer by layer), which bounds what overlap could gain.

    python benchmarks/bench_distributed.py [--samples 16384] [--epochs 3]

runs everything (it launches itself under the mpiexec next to the
interpreter, or on PATH) and prints a table. Throughput is the median over
epochs after the first; the machines are shared and noisy, so compare
ratios from one run.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HIDDEN = (256, 128)


def _data(n):
    rng = np.random.default_rng(0)
    X = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return X, y


def _throughput(comm, shards, deterministic, batch, samples, epochs, threads):
    import nncore as nn
    nn.set_num_threads(threads)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, HIDDEN[0], activation="relu"),
                          nn.Dense(HIDDEN[0], HIDDEN[1], activation="relu"),
                          nn.Dense(HIDDEN[1], 10))
    X, y = _data(samples)
    trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(lr=0.01, momentum=0.9),
                         batch_size=batch, seed=0, comm=comm, shards=shards,
                         deterministic=deterministic)
    history = trainer.fit(X, y, epochs=epochs, verbose=0)
    rates = history["samples_per_sec"][1:] or history["samples_per_sec"]
    n_params = sum(p.size for p, _ in model.parameters())
    return float(np.median(rates)), n_params


def _collectives(comm, n_params, repeats=50):
    """Median seconds of the fixed-order step's exchange (an Allgatherv of
    one tree node of n_params floats per rank, then the tree finished on
    every rank) and of one native Allreduce of n_params floats."""
    from mpi4py import MPI
    size = comm.Get_size()
    counts, displs = [n_params] * size, [r * n_params for r in range(size)]
    send = np.ones(n_params, np.float32)
    recv = np.empty(size * n_params, np.float32)
    acc = np.ones(n_params, np.float32)
    out = {}
    for name, op in (("allgatherv", lambda: comm.Allgatherv(
                          [send, MPI.FLOAT], [recv, (counts, displs), MPI.FLOAT])),
                     ("allreduce", lambda: comm.Allreduce(MPI.IN_PLACE, [acc, MPI.FLOAT],
                                                          op=MPI.SUM))):
        times = []
        for _ in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            op()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(acc, recv[:n_params])
        for r in range(1, size):
            np.add(acc, recv[r * n_params:(r + 1) * n_params], out=acc)
        times.append(time.perf_counter() - start)
    out["node_sum"] = float(np.median(times))
    return out


def _backward_seconds(rows, repeats=50):
    """Median seconds of one backward pass of the MLP on ``rows`` rows
    (1 thread): the window an overlapped exchange could hide in."""
    import nncore as nn
    nn.set_num_threads(1)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, HIDDEN[0], activation="relu"),
                          nn.Dense(HIDDEN[0], HIDDEN[1], activation="relu"),
                          nn.Dense(HIDDEN[1], 10))
    loss = nn.CrossEntropyLoss()
    X, y = _data(rows)
    model.train()
    times = []
    for _ in range(repeats):
        loss.forward(model.forward(X), y)
        grad = loss.backward()
        start = time.perf_counter()
        model.backward(grad, input_grad=False)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# The alpha-beta model of docs/distributed.md: (name, alpha seconds, bytes/s).
NETWORKS = (("10 GbE, TCP", 20e-6, 10e9 * 0.93 / 8),
            ("25 GbE, RoCE", 2e-6, 25e9 * 0.93 / 8),
            ("100 GbE, RoCE", 2e-6, 100e9 * 0.93 / 8))


def model_table(models, batch=1024, nodes=(2, 4, 8, 16, 32, 64), add_per_float=0.18e-9):
    """Predicted strong-scaling efficiency at a fixed global batch: per step,
    compute t_c * B / P against a ring Allreduce of the gradient (native) or
    the fixed-order exchange (a ring all-gather of one tree node per rank,
    then P - 1 adds of the gradient on every rank). models: (name, params,
    seconds of compute per sample)."""
    lines = []
    for name, params, t_sample in models:
        n = 4 * params
        lines.append(f"\n{name}: {params} parameters ({n / 1e6:.2f} MB), {t_sample * 1e6:.0f} us "
                     f"per sample, global batch {batch}\n")
        lines.append("| network | exchange | " + " | ".join(f"P={p}" for p in nodes) + " |")
        lines.append("| --- | --- | " + " | ".join("---:" for _ in nodes) + " |")
        for net, alpha, bw in NETWORKS:
            for exchange in ("ring Allreduce", "fixed order"):
                cells = []
                for p in nodes:
                    compute = t_sample * batch / p
                    if exchange == "ring Allreduce":
                        comm = 2 * (p - 1) * alpha + 2 * (p - 1) / p * n / bw
                    else:
                        comm = (p - 1) * alpha + (p - 1) * n / bw + (p - 1) * params * add_per_float
                    cells.append(f"{compute / (compute + comm):.0%}")
                lines.append(f"| {net} | {exchange} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worker(args):
    """Under mpiexec: every configuration, rank 0 prints one JSON line."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    n_params = None
    for batch in args.batches:
        for deterministic in (True, False):
            rate, n_params = _throughput(comm, 4, deterministic, batch, args.samples,
                                         args.epochs, 1)
            rows.append({"ranks": comm.Get_size(), "batch": batch,
                         "mode": "fixed-order" if deterministic else "native",
                         "samples_per_sec": rate})
    coll = _collectives(comm, n_params) if comm.Get_size() > 1 else None
    # every rank times a shard's backward at once, as in training (the cores are shared)
    backward = {batch: _backward_seconds(batch // 4) for batch in args.batches}
    if comm.Get_rank() == 0:
        print(json.dumps({"rows": rows, "collectives": coll, "n_params": n_params,
                          "backward": backward}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", nargs=2, type=float, metavar=("MLP_US", "RESNET20_US"),
                        help="print only the alpha-beta scaling model, from measured "
                             "microseconds of training compute per sample")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.model:
        print(model_table([("784-256-128-10 MLP", 235146, args.model[0] * 1e-6),
                           ("ResNet-20 (1x28x28 inputs)", 272186, args.model[1] * 1e-6)]))
        return

    rows = []
    for batch in args.batches:
        for threads, shards, label in ((2, None, "1 process, 2 threads, unsharded"),
                                       (1, 4, "1 process, 1 thread, shards=4")):
            time.sleep(1.0)
            rate, n_params = _throughput(None, shards, True, batch, args.samples,
                                         args.epochs, threads)
            rows.append((label, batch, rate))
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.path.exists(here) else shutil.which("mpiexec")
    coll = None
    if mpiexec is None:
        print("no mpiexec: MPI rows skipped", file=sys.stderr)
    else:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for ranks in (1, 2):
            time.sleep(1.0)
            cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                   "--worker", "--samples", str(args.samples), "--epochs", str(args.epochs),
                   "--batches", *map(str, args.batches)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            for r in result["rows"]:
                rows.append((f"{r['ranks']} MPI rank(s) x 1 thread, shards=4, {r['mode']}",
                             r["batch"], r["samples_per_sec"]))
            coll = result["collectives"] or coll
            backward = result["backward"]
    print(f"784-256-128-10 MLP ({n_params} parameters), SGD momentum, {args.samples} "
          f"samples, median samples/s over epochs 2..{args.epochs}\n")
    print(f"| configuration | {' | '.join(f'batch {b}' for b in args.batches)} |")
    print(f"| --- | {' | '.join('---:' for _ in args.batches)} |")
    for label in dict.fromkeys(label for label, _, _ in rows):
        cells = [f"{rate:,.0f}" for lab, b, rate in rows if lab == label]
        print(f"| {label} | {' | '.join(cells)} |")
    if coll:
        print(f"\n2 ranks, one step's collective on {n_params} float32 gradients "
              f"({n_params * 4 / 1e6:.2f} MB), median: Allgatherv of one tree node per "
              f"rank {coll['allgatherv'] * 1e6:.0f} us + the tree finished "
              f"{coll['node_sum'] * 1e6:.0f} us; native Allreduce "
              f"{coll['allreduce'] * 1e6:.0f} us")
        print("\nWhat overlapping the exchange with the backward pass could hide at most, "
              "2 ranks, fixed order (per step: min(exchange, one shard's backward)):\n")
        print("| batch | step (2 ranks) | exchange | one shard's backward | at most hidden |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for batch in args.batches:
            rate = next(r for lab, b, r in rows
                        if b == batch and lab.startswith("2 MPI") and "fixed" in lab)
            step = batch / rate
            exchange = coll["allgatherv"] + coll["node_sum"]
            hidden = min(exchange, backward[str(batch)])
            print(f"| {batch} | {step * 1e6:,.0f} us | {exchange * 1e6:,.0f} us | "
                  f"{backward[str(batch)] * 1e6:,.0f} us | {hidden * 1e6:,.0f} us "
                  f"({hidden / step:.0%} of the step) |")


if __name__ == "__main__":
    main()
