"""Reporting rows: the plain-text table the command line prints and the
Markdown table of the README."""
import math

from .harness import SIDES, SPREAD_LIMIT


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def format_table(rows):
    """A plain-text table of rows (one family or several): each side's
    median time (or samples/s for train and infer), nncore's rate and % of
    the machine limit, the speed-up over each peer (> 1: nncore faster), a
    '~' on noisy rows; then the geometric mean speed-up per group."""
    if not rows:
        return "(no rows)"
    peers = [p for p in SIDES if any(f"{p}_s" in r for r in rows)]
    names = ["nncore"] + peers
    head = f"{'group':<16} {'case':<34} " + " ".join(f"{n:>11}" for n in names)
    widths = {p: max(9, len(p) + 2) for p in peers}
    head += f" {'nncore rate':>18} {'%limit':>7} " + " ".join(
        f"{'x ' + p:>{widths[p]}}" for p in peers)
    lines = ["(per side: median time per call, or samples/s where the rate is samples/s; "
             "rate = GFLOP/s, GB/s or samples/s; %limit = of the FMA peak or memory "
             "bandwidth (conv nets: their FLOPs per sample x samples/s), of the bf16 peak "
             "for bf16 GEMMs; x peer = peer time / nncore time)", head, "-" * len(head)]
    if any(r.get("precision") == "bf16" for r in rows):
        lines.insert(1, "(precision bf16: nncore = nncore in bf16; nncore_f32 = nncore in "
                        "float32; torch = PyTorch float32; torch_bf16 = PyTorch under "
                        "torch.autocast(bfloat16))")
    for r in rows:
        as_rate = r.get("metric") == "samples/s" and r.get("group") != "latency"
        cells = []
        for n in names:
            if f"{n}_s" not in r:
                cells.append(f"{'-':>11}")
            elif as_rate:
                cells.append(f"{r[f'{n}_rate']:>11,.0f}")
            else:
                cells.append(f"{_fmt_time(r[f'{n}_s']):>11}")
        rate = (f"{_fmt_rate(r['nncore_rate'])} {r['metric']}" if r.get("nncore_rate")
                is not None else "")
        pct = f"{r['nncore_pct']:.0f}%" if r.get("nncore_pct") is not None else ""
        ratios = [f"{r[f'ratio_{p}']:>{widths[p]}.2f}" if f"ratio_{p}" in r
                  else f"{'-':>{widths[p]}}" for p in peers]
        flag = " ~" if r.get("noisy") else ""
        lines.append(f"{r['group'][:16]:<16} {r['case'][:34]:<34} " + " ".join(cells)
                     + f" {rate:>18} {pct:>7} " + " ".join(ratios) + flag)
    groups = {}
    for r in rows:
        groups.setdefault((r["family"], r["group"]), []).append(r)
    for (fam, group), rs in groups.items():
        parts = [f"x {p} {geomean(r[f'ratio_{p}'] for r in rs if f'ratio_{p}' in r):.2f}"
                 for p in peers if any(f"ratio_{p}" in r for r in rs)]
        lines.append(f"geomean {fam}/{group} ({len(rs)} rows): " + ", ".join(parts))
    noisy = sum(1 for r in rows if r.get("noisy"))
    lines.append(f"threads={rows[0]['threads']}, isa={rows[0]['isa']}; sides measured in turns "
                 "in one process; medians.")
    if noisy:
        lines.append(f"~ {noisy} of {len(rows)} rows have a wide spread (interquartile range > "
                     f"{SPREAD_LIMIT:.0%} of the median): this machine is shared or noisy; "
                     "compare ratios from one run, or rerun.")
    return "\n".join(lines)


def format_markdown(rows):
    """The rows as a Markdown table (the README's): per side the median time
    per call, or samples/s for training and inference throughput; nncore's
    rate and % of the machine limit; nncore's speed-up over each peer."""
    if not rows:
        return ""
    peers = [p for p in SIDES if any(f"{p}_s" in r for r in rows)]
    bf16 = any(r.get("precision") == "bf16" for r in rows)
    titles = {"nncore": "nncore bf16" if bf16 else "nncore", "nncore_f32": "nncore float32",
              "numpy": "NumPy", "torch": "PyTorch" + (" float32" if bf16 else ""),
              "torch_bf16": "PyTorch autocast bf16", "sklearn": "scikit-learn",
              "onnxruntime": "onnxruntime"}
    names = ["nncore"] + peers

    def as_rate(r):
        return r.get("metric") == "samples/s" and r.get("group") != "latency"
    show_rate = not all(as_rate(r) for r in rows)    # else the nncore column says it
    show_pct = any(r.get("nncore_pct") is not None for r in rows)
    head = ["case"] + [titles[n] for n in names] + ["nncore rate"] * show_rate + \
        ["% limit"] * show_pct + [f"x {titles[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [r["case"] + (" ~" if r.get("noisy") else "")]
        for n in names:
            if f"{n}_s" not in r:
                cells.append("-")
            elif as_rate(r):
                cells.append(f"{r[f'{n}_rate']:,.0f}/s")
            else:
                cells.append(_fmt_time(r[f"{n}_s"]))
        if show_rate:
            cells.append(f"{_fmt_rate(r['nncore_rate'])} {r['metric']}"
                         if r.get("nncore_rate") is not None else "")
        if show_pct:
            cells.append(f"{r['nncore_pct']:.0f}%" if r.get("nncore_pct") is not None else "")
        cells += [f"{r[f'ratio_{p}']:.2f}" if f"ratio_{p}" in r else "-" for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
