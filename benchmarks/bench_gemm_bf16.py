"""The bf16 GEMM side by side with nncore's float32 GEMM, NumPy (OpenBLAS,
float32) and PyTorch (float32, and bfloat16 matmul on bfloat16 tensors).

    python benchmarks/bench_gemm_bf16.py [--threads N] [--sizes 256,512,1024] [--budget S]

Every side gets the same thread count and float32 operands, except torch
bf16, which multiplies tensors already converted to bfloat16 (its output is
bfloat16 too: the conversion of the operands is not timed, the one nncore
does while packing is). Sides are timed in turns with a pause before each
block (nncore.bench.harness.time_many); rows give the median and its GFLOP/s.
% of peak: of the bf16 peak measured at this thread count by the vdpbf16ps
probe (csrc/peak_bf16.c, nncore.bench.bf16_peak_gflops; on Zen 4 it is twice
the float32 FMA peak).
"""
import argparse
import sys

import numpy as np

import nncore
from nncore.bench.harness import available_peers, summarize, thread_limits, time_many
from nncore.bench.machine import bf16_peak_gflops, peak_gflops


def cases(sizes):
    out = [("square", f"{s}", "NN", s, s, s) for s in sizes]
    # 784-256-128-10 at batch 1024: forward, input gradient, weight gradient
    for m, k, n in [(1024, 784, 256), (1024, 256, 128)]:
        out.append(("layer", f"fwd {m}x{k}x{n}", "NN", m, k, n))
        out.append(("layer", f"dX  {m}x{k}x{n}", "NT", m, n, k))
        out.append(("layer", f"dW  {m}x{k}x{n}", "TN", k, m, n))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="256,512,1024,2048")
    p.add_argument("--budget", type=float, default=0.6, help="seconds per side and case")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    peers = available_peers(None, ("numpy", "torch"))
    torch = sys.modules.get("torch") if "torch" in peers else None
    rng = np.random.default_rng(0)
    info = nncore.info()
    print(f"nncore {info['version']}: isa {info['isa']}, bf16 kernel {info['bf16_kernel']}, "
          f"amx {info['amx']}, {args.threads} thread(s)")
    with thread_limits(args.threads) as nthreads:
        peak = peak_gflops(nthreads)
        bf16_peak = bf16_peak_gflops(nthreads) or float("nan")
        print(f"float32 FMA peak {peak:.0f} GFLOP/s, bf16 peak (vdpbf16ps) {bf16_peak:.0f}")
        head = (f"{'case':<22}{'f32 GF/s':>9}{'bf16 GF/s':>10}{'bf16/f32':>9}{'%bf16pk':>8}"
                f"{'numpy':>8}{'torch32':>8}{'torchbf':>8}{'bf16/tbf':>9}")
        print(head)
        for group, label, op, m, k, n in cases(sizes):
            ta, tb = op[0] == "T", op[1] == "T"
            a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
            na, nb = (a.T if ta else a), (b.T if tb else b)
            o1, o2, o3 = (np.empty((m, n), np.float32) for _ in range(3))
            fns = {
                "nncore": lambda: nncore.matmul(a, b, trans_a=ta, trans_b=tb, out=o1),
                "bf16": lambda: nncore.matmul(a, b, trans_a=ta, trans_b=tb, out=o2,
                                              precision="bf16"),
                "numpy": lambda: np.matmul(na, nb, out=o3),
            }
            if torch is not None:
                tA, tB = torch.from_numpy(na), torch.from_numpy(nb)
                hA, hB = tA.to(torch.bfloat16), tB.to(torch.bfloat16)
                t32 = torch.empty((m, n), dtype=torch.float32)
                t16 = torch.empty((m, n), dtype=torch.bfloat16)
                fns["torch"] = lambda: torch.matmul(tA, tB, out=t32)
                fns["torch_bf16"] = lambda: torch.matmul(hA, hB, out=t16)
            times = time_many(fns, args.budget, gap=0.15)
            case = f"{label} {op}" if group == "square" else label
            row = summarize("gemm_bf16", group, case, times, nthreads, work=2.0 * m * n * k,
                            metric="GFLOP/s", scale=1e-9, limit=peak)
            r = {name: row[f"{name}_rate"] for name in fns}
            line = (f"{case:<22}{r['nncore']:>9.0f}{r['bf16']:>10.0f}"
                    f"{r['bf16'] / r['nncore']:>9.2f}{100 * r['bf16'] / bf16_peak:>7.0f}%"
                    f"{r['numpy']:>8.0f}")
            if torch is not None:
                line += (f"{r['torch']:>8.0f}{r['torch_bf16']:>8.0f}"
                         f"{r['bf16'] / r['torch_bf16']:>9.2f}")
            print(line + ("  (noisy)" if row["noisy"] else ""), flush=True)


if __name__ == "__main__":
    main()
