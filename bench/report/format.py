"""Figures as the report and the log print them."""

from __future__ import annotations

from ..plan import TREE_OPS, USAGE_OPS
from ..results import Results, Row


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def table(results: Results) -> list[str]:
    """The latency table: one line per row, each library's median (and ratio to chatstore's)."""
    return rows_table([r for r in results.rows if r.op not in (*TREE_OPS, *USAGE_OPS)],
                      [p.name for p in results.peers])


def trees_table(results: Results) -> list[str]:
    """The conversation trees' table: chatstore, raw asyncpg, then any library that ran one
    of its rows (the Agents SDK's AdvancedSQLiteSession)."""
    rows = [r for r in results.rows if r.op in TREE_OPS]
    names = ["chatstore", "raw asyncpg"]
    for row in rows:
        names += [n for n in row.samples if n not in names]
    return rows_table(rows, names) if rows else []


def usage_table(results: Results) -> list[str]:
    """The table of bench/usage.py's timed rows: chatstore and raw asyncpg."""
    rows = [r for r in results.rows if r.op in USAGE_OPS]
    return rows_table(rows, ["chatstore", "raw asyncpg"]) if rows else []


def rows_table(rows: list[Row], names: list[str]) -> list[str]:
    head = "| operation | size | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for row in rows:
        base = row.median("chatstore")
        cells = []
        for name in names:
            med = row.median(name)
            if med is None:
                cells.append("n/a")
            elif name == "chatstore" or base is None:
                cells.append(f"**{fmt_ms(med)}** (p99 {fmt_ms(row.p99(name))})")
            else:
                cells.append(f"{fmt_ms(med)} ({med / base:.2f}×)")
        lines.append(f"| {row.op} | {row.size} | " + " | ".join(cells) + " |")
    return lines
