"""Conv-net training and one-image inference, nncore vs PyTorch (CPU).

    python benchmarks/bench_conv_train.py [--threads 2] [--rounds 5] [--nets cnn,resnet20]
                                          [--batches 32,128] [--no-infer] [--profile]
                                          [--clock wall|cpu]

Nets: nncore.models.small_cnn() and resnet(20) on (N, 1, 28, 28) float32
random images, and the same architectures in torch.nn. Training: one epoch
of SGD-momentum (lr 0.01, 0.9) with softmax cross-entropy per timed call,
Trainer.fit for nncore, PyTorch's own loop (zero_grad, forward, loss,
backward, step) for PyTorch. Inference: one image, nncore's
Sequential.predict vs the PyTorch model in eval mode under
torch.inference_mode(). Medians over rounds; the two sides alternate with a
pause before each (idle OpenMP threads of the other side keep spinning).
--profile prints nncore.profile()'s table of one nncore epoch per case.

--clock cpu times with the process's CPU time (time.process_time) instead of
the wall clock: on a shared, loaded machine it leaves out the time the
process waited for a core. Meaningful with --threads 1 only (with more
threads it adds the threads' times, spinning included).
"""
import argparse
import statistics
import time

import numpy as np

import nncore as nn
from nncore.bench.cnn import torch_copy


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def torch_net(name):
    """PyTorch's twin of nn_net(name): the same layers and initial weights
    (nncore.bench.cnn.torch_copy, as `python -m nncore bench conv` uses)."""
    return torch_copy(nn_net(name))


def nn_net(name):
    nn.manual_seed(0)
    return nn.models.small_cnn() if name == "cnn" else nn.models.resnet(20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pause", type=float, default=0.5)
    ap.add_argument("--nets", default="cnn,resnet20")
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--samples", type=int, default=0, help="per epoch (default: by net)")
    ap.add_argument("--no-infer", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    args = ap.parse_args()
    clock = CLOCK[args.clock]
    import torch
    torch.set_num_threads(args.threads)
    nn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for net in args.nets.split(","):
        n = args.samples or (1024 if net == "cnn" else 256)
        X = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        for batch in ([] if args.no_train else [int(b) for b in args.batches.split(",")]):
            model = nn_net(net)
            trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01, momentum=0.9),
                                 batch_size=batch, seed=0)
            tm = torch_net(net)
            opt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
            loss_fn = torch.nn.CrossEntropyLoss()

            def nn_epoch():
                trainer.fit(X, y, epochs=1, verbose=0)

            def torch_epoch():
                tm.train()
                perm = torch.randperm(n)
                for i in range(0, n, batch):
                    idx = perm[i:i + batch]
                    opt.zero_grad()
                    loss_fn(tm(Xt[idx]), yt[idx]).backward()
                    opt.step()

            nn_epoch()
            torch_epoch()
            times = {"nn": [], "torch": []}
            for _ in range(args.rounds):
                for side, fn in (("nn", nn_epoch), ("torch", torch_epoch)):
                    time.sleep(args.pause)
                    t0 = clock()
                    fn()
                    times[side].append(clock() - t0)
            a, b = (n / statistics.median(times[s]) for s in ("nn", "torch"))
            print(f"train {net:8s} b{batch:<4d} nncore {a:8.0f} samples/s  torch {b:8.0f}  "
                  f"x{a / b:5.2f}", flush=True)
            if args.profile:
                with nn.profile() as prof:
                    nn_epoch()
                print(prof.table())
        if args.no_infer:
            continue
        model = nn_net(net)
        trainer = nn.Trainer(model, nn.CrossEntropyLoss(), nn.SGD(0.01), batch_size=32, seed=0)
        trainer.fit(X[:64], y[:64], epochs=1, verbose=0)
        model.eval()
        tm = torch_net(net).eval()
        one, one_t = X[:1].copy(), Xt[:1].clone()

        def nn_one():
            model.predict(one)

        def torch_one():
            with torch.inference_mode():
                tm(one_t)

        reps = 200 if net == "cnn" else 40
        times = {"nn": [], "torch": []}
        for _ in range(args.rounds):
            for side, fn in (("nn", nn_one), ("torch", torch_one)):
                time.sleep(args.pause)
                fn()
                t0 = clock()
                for _ in range(reps):
                    fn()
                times[side].append((clock() - t0) / reps)
        a, b = (statistics.median(times[s]) for s in ("nn", "torch"))
        print(f"infer {net:8s} 1 image nncore {a * 1e6:8.1f} us  torch {b * 1e6:8.1f} us  "
              f"x{b / a:5.2f}", flush=True)


if __name__ == "__main__":
    main()
