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


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m nncore",
                                     description="nncore: neural networks on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the version, ISA, threads and build details")
    return parser


COMMANDS = {"info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
