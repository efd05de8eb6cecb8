"""Timing one operation across every library, interleaved."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .fixture import Fixture
from .log import log
from .peers import NotSupported, Peer
from .results import Results, Row

Call = Callable[[], Awaitable[Any]]
# A row of the report: (operation, size).
Cell = tuple[str, str]


def for_all(peers: list[Peer], make: Callable[[Peer], Call]) -> dict[str, Call]:
    return {p.name: make(p) for p in peers}


async def measure(fx: Fixture, results: Results, op: str,
                  sizes: dict[str, dict[str, Call]]) -> None:
    """One operation at one or more sizes, each library at each size in turn, round after
    round, in an order shuffled every round: noise, drift and the cost of following another
    library's call hit every cell alike, so ratios across libraries and across sizes come
    from the same moments."""
    await measure_rows(fx, results, {(op, size): calls for size, calls in sizes.items()})


async def measure_rows(fx: Fixture, results: Results, rows: dict[Cell, dict[str, Call]], *,
                       after: dict[Cell, dict[str, Call]] | None = None,
                       rounds: int | None = None, budget: float | None = None) -> None:
    """:func:`measure` for rows of different operations, all in the same shuffled rounds
    (so that a ratio between two operations, such as a fork over a create, comes from the
    same moments). ``after``: an untimed call to run after each call of that row and
    library, warm-ups included (putting back what the timed call changed). ``rounds`` and
    ``budget`` (seconds per cell): the plan's unless given (more samples for a row whose
    cells differ by less than their noise)."""
    rounds = fx.plan.rounds if rounds is None else rounds
    budget = fx.plan.budget_seconds if budget is None else budget
    done = {cell: Row(*cell) for cell in rows}
    untimed = after or {}
    live: dict[tuple[Cell, str], Call] = {}
    for where, calls in rows.items():
        for name, call in calls.items():
            tidy = untimed.get(where, {}).get(name)
            try:
                for _ in range(2):  # warm-up: statement caches, ORM compilation, connections
                    await call()
                    if tidy is not None:
                        await tidy()
            except NotSupported:
                continue  # reported as n/a: the row has no samples for it
            live[(where, name)] = call
            done[where].samples[name] = []
    spent = dict.fromkeys(live, 0.0)
    cells = list(live)
    for _ in range(rounds):
        fx.order.shuffle(cells)
        for cell in cells:
            where, name = cell
            samples = done[where].samples[name]
            if spent[cell] > budget and len(samples) >= 5:
                continue
            started = time.perf_counter()
            await live[cell]()
            elapsed = time.perf_counter() - started
            samples.append(elapsed)
            spent[cell] += elapsed
            tidy = untimed.get(where, {}).get(name)
            if tidy is not None:
                await tidy()
    for (op, size), row in done.items():
        results.rows.append(row)
        log(f"  {op:28} {size:>8}  " + "  ".join(
            f"{n}={(row.median(n) or 0) * 1e3:.2f}ms" for n in row.samples))
