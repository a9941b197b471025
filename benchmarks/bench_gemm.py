"""SGEMM: nncore.matmul against numpy.matmul (OpenBLAS), side by side.

    python benchmarks/bench_gemm.py [--quick] [--threads N] [--isa ISA] [--json FILE]

A thin wrapper over `python -m nncore bench gemm` (nncore/bench/gemm.py).
"""
import sys

from nncore.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", "gemm", *sys.argv[1:]]))
