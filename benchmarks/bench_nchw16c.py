"""Predict of a frozen ResNet-20 with its convolutions' tensors in NCHW
against nChw16c (nncore/_predict_plan.pxi).

    python benchmarks/bench_nchw16c.py [--threads 1 2] [--batch 1] [--rounds 16]
                                       [--mode auto|always]

Two frozen copies of the model, recorded with ``_core.set_plan_nchw16c``
"never" and `mode` ("auto": the default rule; "always": past it), take
turns in one process
(nncore.bench.harness.time_many: a pause and an untimed call before each
block). Prints the median of each side's per-round medians, the median of
the per-round ratios, the plan's calls, and the core-to-core latency
measured after the run (on a VM the host may place the two vCPUs close
together or far apart; see docs/measurements.md).
"""
import argparse

import numpy as np

from nncore import _core
from nncore.bench.cnn import build_net, images
from nncore.bench.harness import thread_limits, time_many


def frozen_with(mode, x):
    previous = _core.set_plan_nchw16c(mode)
    try:
        model = build_net("resnet20", 28).freeze()
        model.predict(x)                    # recorded now, with this setting
    finally:
        _core.set_plan_nchw16c(previous)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds per side")
    ap.add_argument("--mode", choices=["auto", "always"], default="auto")
    args = ap.parse_args()
    x = images(args.batch, 28)[0]
    for threads in args.threads:
        with thread_limits(threads):
            models = {"nchw": frozen_with("never", x), "nchw16c": frozen_with(args.mode, x)}
            t = time_many({name: (lambda m=m: m.predict(x)) for name, m in models.items()},
                          args.budget, rounds=args.rounds)
            # each side's calls, by round: the rounds' medians
            a, b = (np.median(np.reshape(t[name], (args.rounds, -1)), axis=1) * 1e6
                    for name in ("nchw", "nchw16c"))
            kinds = [k for ws in models["nchw16c"]._workspaces for p in ws.plans.values()
                     for k in p.kinds]
            near = min(_core.core_to_core_ns() for _ in range(5)) if threads > 1 else 0.0
            print(f"{threads} thread(s), batch {args.batch}: NCHW {np.median(a):.1f} us, "
                  f"nChw16c {np.median(b):.1f} us, NCHW / nChw16c per round "
                  f"{np.median(a / b):.3f}; {sum(' ' in k for k in kinds)} of "
                  f"{kinds.count('conv') + sum(' ' in k for k in kinds)} convolutions in "
                  f"nChw16c, {kinds.count('to_nchw16c') + kinds.count('from_nchw16c')} "
                  f"conversions; core to core {near:.0f} ns", flush=True)


if __name__ == "__main__":
    main()
