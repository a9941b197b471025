"""The speed-ups as bar charts (matplotlib, the `plot` extra)."""
from .harness import PEERS
from .registry import ORDER


def plot(results, path):
    """Bar charts of nncore's speed-up over each peer (log scale), one panel
    per family, saved to `path`. Needs matplotlib (the `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'nncore[plot]'") from None
    families = [f for f in ORDER if results.get(f)] + \
        [f for f in results if f not in ORDER and results[f]]
    fig, axes = plt.subplots(len(families), 1, squeeze=False,
                             figsize=(10, sum(1.2 + 0.22 * len(results[f]) for f in families)))
    colors = {"numpy": "tab:blue", "torch": "tab:orange", "sklearn": "tab:green",
              "onnxruntime": "tab:purple"}
    for ax, fam in zip(axes[:, 0], families):
        rows = results[fam]
        peers = [p for p in PEERS if any(f"ratio_{p}" in r for r in rows)]
        height = 0.8 / max(len(peers), 1)
        for j, p in enumerate(peers):
            ys = [i + j * height for i in range(len(rows))]
            xs = [r.get(f"ratio_{p}", float("nan")) for r in rows]
            # Bars from 1 to the ratio: right of the line nncore is faster.
            ax.barh(ys, [x - 1.0 for x in xs], left=1.0, height=height, color=colors[p],
                    label=f"vs {p}")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
        ax.set_yticklabels([r["case"] + (" ~" if r.get("noisy") else "") for r in rows],
                           fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{fam}: nncore speed-up (peer time / nncore time; > 1 = nncore faster)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
