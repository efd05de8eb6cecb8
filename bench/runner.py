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


def for_all(peers: list[Peer], make: Callable[[Peer], Call]) -> dict[str, Call]:
    return {p.name: make(p) for p in peers}


async def measure(fx: Fixture, results: Results, op: str,
                  sizes: dict[str, dict[str, Call]]) -> None:
    """One operation at one or more sizes, each library at each size in turn, round after
    round, in an order shuffled every round: noise, drift and the cost of following another
    library's call hit every cell alike, so ratios across libraries and across sizes come
    from the same moments."""
    rows = {size: Row(op, size) for size in sizes}
    live: dict[tuple[str, str], Call] = {}
    for size, calls in sizes.items():
        for name, call in calls.items():
            try:
                await call()  # warm-up: statement caches, ORM compilation, connections
                await call()
            except NotSupported:
                continue  # reported as n/a: the row has no samples for it
            live[(size, name)] = call
            rows[size].samples[name] = []
    spent = dict.fromkeys(live, 0.0)
    cells = list(live)
    for _ in range(fx.plan.rounds):
        fx.order.shuffle(cells)
        for cell in cells:
            samples = rows[cell[0]].samples[cell[1]]
            if spent[cell] > fx.plan.budget_seconds and len(samples) >= 5:
                continue
            started = time.perf_counter()
            await live[cell]()
            elapsed = time.perf_counter() - started
            samples.append(elapsed)
            spent[cell] += elapsed
    for size, row in rows.items():
        results.rows.append(row)
        log(f"  {op:28} {size:>8}  " + "  ".join(
            f"{n}={(row.median(n) or 0) * 1e3:.2f}ms" for n in row.samples))
