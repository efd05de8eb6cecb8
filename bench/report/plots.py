"""The latency plot of the report (the load row's plot is ``bench.rows.plot_load``)."""

from __future__ import annotations

from pathlib import Path

from ..results import Results


def plot_newest(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for peer in results.peers:
        # plain conversations only (a size that is a number; not the deep fork's row)
        points = [(int(r.size.replace(",", "")), r.median(peer.name)) for r in results.rows
                  if r.op == "newest 50" and r.size.replace(",", "").isdigit()
                  and r.median(peer.name) is not None]
        if points:
            ax.plot([x for x, _ in points], [(y or 0) * 1e3 for _, y in points], marker="o",
                    label=peer.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the conversation")
    ax.set_ylabel("median latency of 'newest 50 messages' (ms)")
    ax.set_title("Reading the newest 50 messages vs history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
