"""The summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from ..results import Results
from .format import fmt_ms, table, trees_table, usage_table
from .targets import targets


def summary(results: Results, path: Path) -> list[str]:
    trees, usage = trees_table(results), usage_table(results)
    latency = table(results) if any(r.op == "newest 50" for r in results.rows) else []
    out = [*latency, "", *([*trees, ""] if trees else []),
           *([*usage, ""] if usage else []), ""]
    for clients, load in ((results.plan.load_clients, results.load_results),
                          (results.plan.wide_clients, results.wide_load)):
        for name, r in load.items():
            out.append(f"load {clients:3} {name:28} {r.rate:8,.0f} turns/s  p50 "
                       f"{fmt_ms(r.percentile(0.5))} ms  p99 {fmt_ms(r.percentile(0.99))} ms")
    for kind, sizes in results.storage.items():
        out.append(f"storage, {kind}: " + "  ".join(
            f"{n}={b:,.0f} B/msg" for n, b in sizes.items()))
    if results.purge is not None:
        p = results.purge
        out.append(f"purge {p.rate:,.0f} messages/s ({p.messages_deleted:,} in {p.seconds:.1f} s)")
        for name, r in (("without purge", p.without), ("during purge", p.during)):
            if r is not None:
                out.append(f"  {name:14} {r.rate:8,.0f} turns/s  p50 "
                           f"{fmt_ms(r.percentile(0.5))} ms  p99 {fmt_ms(r.percentile(0.99))} ms")
    out.append("import: " + "  ".join(
        f"{n}={r:,.0f}/s" for n, r in results.import_rates.items()))
    out.append("")
    for t in targets(results):
        status = "met   " if t.met else "n/a   " if t.met is None else "MISSED"
        out.append(f"{status} {t.what}: {t.measured}")
    out.append(f"\norder seed {results.order_seed}; report: {path}")
    return out
