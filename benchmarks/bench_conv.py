"""Per-layer Conv2d speed, nncore vs PyTorch (CPU), forward and backward.

    python benchmarks/bench_conv.py [--threads 2] [--repeats 15] [--quick] [--clock wall|cpu]

Shapes: the small CNN's Conv2d(1, 32, 3, p=1) at 28x28 and Conv2d(32, 64, 3,
p=1) at 14x14 (batch 32 and 128), ResNet-20's 3x3 convolutions (16, 32, 64
channels at 28x28, 14x14, 7x7; batch 128) and a depthwise 3x3. Forward is
bias + ReLU fused for nncore, F.relu(F.conv2d(...)) under
torch.inference_mode() for PyTorch; backward is dx, dw, db (nncore's
conv2d_backward; PyTorch's autograd through conv2d, timed from the
backward() call). Medians over repeats; the two sides alternate with a pause
before each (idle OpenMP threads of the other side keep spinning for a while).
GFLOP/s counts 2 * N * O * OH * OW * C/groups * KH * KW per pass (backward:
twice that, dx and dw).

--clock cpu times with the process's CPU time (time.process_time) instead of
the wall clock: on a shared, loaded machine it leaves out the time the
process waited for a core. Meaningful with --threads 1 only (with more
threads it adds the threads' times, spinning included).
"""
import argparse
import statistics
import time

import numpy as np

from nncore import _core

# (label, n, c, h, o, groups)
SHAPES = [
    ("cnn conv1 1->32 28x28 b32", 32, 1, 28, 32, 1),
    ("cnn conv1 1->32 28x28 b128", 128, 1, 28, 32, 1),
    ("cnn conv2 32->64 14x14 b32", 32, 32, 14, 64, 1),
    ("cnn conv2 32->64 14x14 b128", 128, 32, 14, 64, 1),
    ("resnet 16->16 28x28 b128", 128, 16, 28, 16, 1),
    ("resnet 32->32 14x14 b128", 128, 32, 14, 32, 1),
    ("resnet 64->64 7x7 b128", 128, 64, 7, 64, 1),
    ("depthwise 64 14x14 b128", 128, 64, 14, 64, 64),
]


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def timeit(fn, repeats, inner, clock=time.perf_counter):
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        times.append((clock() - t0) / inner)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--pause", type=float, default=0.3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    args = ap.parse_args()
    clock = CLOCK[args.clock]
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    _core.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    relu = _core.ACTIVATIONS["relu"]
    rows = []
    for label, n, c, h, o, g in SHAPES[:3] if args.quick else SHAPES:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = (rng.standard_normal((o, c // g, 3, 3)) * 0.1).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        y = np.empty((n, o, h, h), np.float32)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        flops = 2.0 * n * o * h * h * (c // g) * 9
        inner = max(1, int(2e8 / flops))
        xt, wt, bt = torch.tensor(x), torch.tensor(w), torch.tensor(b)
        dyt = torch.tensor(dy)

        def nn_fwd():
            _core.conv2d_forward(x, w, b, y, 1, 1, 1, g, relu)

        def nn_bwd():
            _core.conv2d_backward(x, w, dy, dx, dw, db, 1, 1, 1, g)

        def th_fwd():
            with torch.inference_mode():
                F.relu(F.conv2d(xt, wt, bt, 1, 1, 1, g))

        xg = xt.clone().requires_grad_(True)
        wg = wt.clone().requires_grad_(True)
        bg = bt.clone().requires_grad_(True)
        out = {}

        def th_prep():
            out["y"] = F.conv2d(xg, wg, bg, 1, 1, 1, g)

        def th_bwd():
            out["y"].backward(dyt)

        def th_bwd_timed():
            # autograd graph built outside the timed region would need one
            # forward per backward; time forward+backward and subtract forward
            th_prep()
            th_bwd()

        res = {}
        for side in ("nn", "torch", "nn", "torch"):
            time.sleep(args.pause)
            if side == "nn":
                f = timeit(nn_fwd, args.repeats // 2 + 1, inner, clock)
                bw = timeit(nn_bwd, args.repeats // 2 + 1, max(1, inner // 2), clock)
            else:
                f = timeit(th_fwd, args.repeats // 2 + 1, inner, clock)
                fb = timeit(th_bwd_timed, args.repeats // 2 + 1, max(1, inner // 2), clock)
                with torch.no_grad():
                    pass
                fg = timeit(th_prep, args.repeats // 2 + 1, inner, clock)   # forward with grad
                bw = max(fb - fg, 1e-9)
            res.setdefault(side, []).append((f, bw))
        nf = min(r[0] for r in res["nn"])
        nb = min(r[1] for r in res["nn"])
        tf = min(r[0] for r in res["torch"])
        tb = min(r[1] for r in res["torch"])
        rows.append((label, flops, nf, tf, nb, tb))
        print(f"{label:30s} fwd nn {flops / nf / 1e9:6.1f} torch {flops / tf / 1e9:6.1f} "
              f"GFLOP/s x{tf / nf:5.2f} | bwd nn {2 * flops / nb / 1e9:6.1f} torch "
              f"{2 * flops / tb / 1e9:6.1f} x{tb / nb:5.2f}   "
              f"({nf * 1e3:.3f}/{tf * 1e3:.3f} ms, {nb * 1e3:.3f}/{tb * 1e3:.3f} ms)",
              flush=True)
    gf = np.exp(np.mean([np.log(r[3] / r[2]) for r in rows]))
    gb = np.exp(np.mean([np.log(r[5] / r[4]) for r in rows]))
    print(f"geometric mean speed ratio (torch time / nncore time): forward x{gf:.2f}, "
          f"backward x{gb:.2f}")


if __name__ == "__main__":
    main()
