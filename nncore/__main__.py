"""The command line: python -m nncore <command>."""
import argparse
import sys


def cmd_info(args):
    import nncore
    for key, value in nncore.info().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:>14}: {value}")
    return 0


LANDSCAPE_DATA = ("digits", "fashion-mnist")


def add_landscape_parser(sub):
    p = sub.add_parser("landscape", help="plot the loss landscape around a saved model "
                       "(Li et al. 2018)")
    p.add_argument("model", metavar="MODEL", help="a model file written by nncore.save")
    p.add_argument("--data", choices=LANDSCAPE_DATA, default="digits",
                   help="evaluate the loss on this data set's training samples (default digits)")
    p.add_argument("--out", default="landscape.png",
                   help="output image; .png, .svg or .pdf (default landscape.png)")
    p.add_argument("--dims", type=int, choices=(1, 2), default=2)
    p.add_argument("--steps", type=int, default=21, help="grid points per axis (default 21)")
    p.add_argument("--span", type=float, default=1.0,
                   help="the grid runs from -span to span on each axis (default 1)")
    p.add_argument("--normalization", choices=("filter", "layer", "none"), default="filter")
    p.add_argument("--kind", choices=("contour", "surface", "line"), default=None,
                   help="plot kind (default: line for --dims 1, contour for 2)")
    p.add_argument("--samples", type=int, default=10000,
                   help="use the first N training samples (default 10000)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions")


def cmd_landscape(args):
    import os
    import time

    import numpy as np

    import nncore
    from nncore import datasets

    from nncore import landscape

    # Check everything cheap before the grid is computed.
    problem = None
    if args.samples < 1:
        problem = "--samples must be >= 1"
    elif os.path.splitext(args.out)[1].lower() not in landscape.PLOT_FORMATS:
        problem = f"--out {args.out}: use a {', '.join(landscape.PLOT_FORMATS)} file name"
    elif args.kind is not None and (args.kind == "line") != (args.dims == 1):
        problem = f"--kind {args.kind} does not fit --dims {args.dims}"
    else:
        try:
            landscape._matplotlib()
        except ImportError as exc:
            problem = str(exc)
    if problem:
        print(f"landscape: {problem}", file=sys.stderr)
        return 2
    try:
        model = nncore.load(args.model)
        if args.data == "digits":
            X, y = datasets.load_digits()
        else:
            (X, y), _ = datasets.load_fashion_mnist()
    except (OSError, ValueError) as exc:
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    X, y = X[:args.samples], y[:args.samples]
    loss = nncore.CrossEntropyLoss()
    start = time.perf_counter()
    try:
        result = nncore.loss_landscape(
            model, loss, X, y, dims=args.dims, steps=args.steps, span=args.span,
            normalization=None if args.normalization == "none" else args.normalization,
            seed=args.seed, batch_size=args.batch_size)
    except ValueError as exc:   # e.g. the model does not take this data's features
        print(f"landscape: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    result.plot(args.out, kind=args.kind,
                title=f"{os.path.basename(args.model)} on {args.data} "
                      f"({len(X)} samples, {args.normalization}-normalised directions)")
    print(f"{result.losses.size} points x {len(X)} samples in {seconds:.2f} s; loss "
          f"{np.nanmin(result.losses):.4f}..{np.nanmax(result.losses):.4f}", end="")
    if args.steps % 2:
        centre = result.losses[tuple(len(c) // 2 for c in result.coords)]
        print(f", at the model {centre:.4f}", end="")
    print()
    print(f"wrote {args.out}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m nncore",
                                     description="nncore: neural networks on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA, threads and build details")
    add_landscape_parser(sub)
    return parser


COMMANDS = {"info": cmd_info, "landscape": cmd_landscape}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
