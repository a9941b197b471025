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


def cmd_bench(args):
    import json

    from . import bench
    from . import _core
    if args.isa:
        _core.set_isa(args.isa)
    print(bench.machine())
    rows = bench.run(args.family, quick=args.quick, threads=args.threads)
    print(bench.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench.machine(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def build_parser():
    from .bench import FAMILIES

    parser = argparse.ArgumentParser(prog="python -m nncore",
                                     description="nncore: neural networks on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA, threads and build details")
    bench = sub.add_parser("bench", help="benchmark nncore against NumPy, side by side")
    bench.add_argument("family", choices=sorted(FAMILIES),
                       help="; ".join(f"{k}: {v[1]}" for k, v in sorted(FAMILIES.items())))
    bench.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    bench.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    bench.add_argument("--isa", help="force an nncore kernel path (generic, avx2, avx512)")
    bench.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return parser


COMMANDS = {"info": cmd_info, "bench": cmd_bench}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
