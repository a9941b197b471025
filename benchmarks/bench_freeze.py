"""One-image predict of a model against the same model frozen for inference.

    python benchmarks/bench_freeze.py [--threads 1 2] [--rounds 30] [--calls 60]

For the small CNN and ResNet-20 (nncore.bench.cnn.build_net, 28x28 images),
``model.predict`` (weights packed on every call) and ``model.freeze().predict``
(packed once) take turns in one process: per round each side makes `calls`
calls after a short pause, and the round's median per call is kept. Prints
the medians over the rounds and the median of the per-round ratio frozen /
predict (the ratio is what to compare on a shared machine).
"""
import argparse
import time

import numpy as np

from nncore.bench.cnn import build_net, images
from nncore.bench.harness import thread_limits


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=60)
    args = ap.parse_args()
    x = images(1, 28)[0]
    for threads in args.threads:
        with thread_limits(threads):
            for net in ("cnn", "resnet20"):
                model = build_net(net, 28)
                frozen = model.freeze()
                sides = (model.predict, frozen.predict)
                for fn in sides:            # warm: plans recorded, packs made
                    for _ in range(200):
                        fn(x)
                medians = ([], [])
                for _ in range(args.rounds):
                    for side, fn in enumerate(sides):
                        time.sleep(0.01)
                        ts = []
                        for _ in range(args.calls):
                            t = time.perf_counter()
                            fn(x)
                            ts.append(time.perf_counter() - t)
                        medians[side].append(np.median(ts))
                a, b = (np.array(m) * 1e6 for m in medians)
                print(f"{threads} thread(s) {net}: predict {np.median(a):.1f} us, frozen "
                      f"{np.median(b):.1f} us, frozen / predict per round "
                      f"{np.median(b / a):.3f}", flush=True)


if __name__ == "__main__":
    main()
