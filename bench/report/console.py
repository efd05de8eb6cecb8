"""The summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from ..results import Results
from .format import fmt_ms, table, trees_table
from .targets import targets


def summary(results: Results, path: Path) -> list[str]:
    trees = trees_table(results)
    out = [*table(results), "", *([*trees, ""] if trees else []), ""]
    for clients, load in ((results.plan.load_clients, results.load_results),
                          (results.plan.wide_clients, results.wide_load)):
        for name, r in load.items():
            out.append(f"load {clients:3} {name:28} {r.rate:8,.0f} turns/s  p50 "
                       f"{fmt_ms(r.percentile(0.5))} ms  p99 {fmt_ms(r.percentile(0.99))} ms")
    for kind, sizes in results.storage.items():
        out.append(f"storage, {kind}: " + "  ".join(
            f"{n}={b:,.0f} B/msg" for n, b in sizes.items()))
    out.append("import: " + "  ".join(
        f"{n}={r:,.0f}/s" for n, r in results.import_rates.items()))
    out.append("")
    for t in targets(results):
        status = "met   " if t.met else "n/a   " if t.met is None else "MISSED"
        out.append(f"{status} {t.what}: {t.measured}")
    out.append(f"\norder seed {results.order_seed}; report: {path}")
    return out
