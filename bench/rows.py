"""The benchmark rows that need more than one timed call: load, storage and search.

- load: N concurrent clients doing stateless chat turns for a fixed time;
- storage: bytes per message (table + TOAST + indexes) of the same history in every library,
  each in a database of its own so nothing else is counted;
- search: a common word for one user among many, and the same query on a database holding
  only that user's messages.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chatstore.migrate import apply_migrations
from chatstore.seed import TextPool, seed_database

# -- databases ---------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    """The URL ``dsn`` pointing at database ``name`` instead (socket and options kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def fresh_database(dsn: str, name: str) -> str:
    """Create (or re-create) database ``name`` on ``dsn``'s server, migrated for chatstore;
    return its URL."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(dsn, name)
    await asyncio.to_thread(apply_migrations, url)
    return url


async def drop_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- load --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """Chat turns completed by concurrent clients in a fixed time."""

    clients: int
    seconds: float
    turns: int = 0
    latencies: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        ordered = sorted(self.latencies)
        if not ordered:
            return None
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run_load(turn: Callable[[int], Awaitable[Any]], clients: int,
                   seconds: float) -> LoadResult:
    """``clients`` tasks, client i calling ``turn(i)`` back to back for ``seconds``; counts
    the turns that finished in time. A failing turn stops the run and is reported."""
    result = LoadResult(clients=clients, seconds=seconds)
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        while (started := time.perf_counter()) < deadline:
            await turn(i)
            ended = time.perf_counter()
            result.latencies.append(ended - started)
            result.turns += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    except Exception as exc:  # reported in the table, the other libraries go on
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
    result.seconds = time.perf_counter() - started
    return result


def plot_load(results: dict[str, LoadResult], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if r.turns]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2))
    rates = [results[n].rate for n in names]
    left.barh(names, rates, color="tab:blue")
    left.set_xlabel("chat turns per second (higher is better)")
    left.invert_yaxis()
    for y, rate in enumerate(rates):
        left.text(rate, y, f" {rate:,.0f}", va="center")
    left.set_xlim(0, max(rates, default=1) * 1.15)
    p50 = [(results[n].percentile(0.5) or 0) * 1e3 for n in names]
    p99 = [(results[n].percentile(0.99) or 0) * 1e3 for n in names]
    right.barh(names, p99, color="tab:orange", label="p99")
    right.barh(names, p50, color="tab:green", label="p50")
    for y, (mid, tail) in enumerate(zip(p50, p99, strict=True)):
        right.text(tail, y, f" {mid:.0f} / {tail:.0f}", va="center")
    right.set_xlim(0, max(p99, default=1) * 1.25)
    right.set_xlabel("turn latency, ms: p50 / p99 (lower is better)")
    right.invert_yaxis()
    right.set_yticks(range(len(names)), [""] * len(names))
    right.legend()
    clients = next(iter(results.values())).clients if results else 0
    fig.suptitle(f"{clients} concurrent clients doing stateless chat turns")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- storage -----------------------------------------------------------------------------


def _hex(rng: random.Random, n: int = 24) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def agent_items(rng: random.Random, texts: TextPool, length: int) -> list[dict[str, Any]]:
    """``length`` OpenAI Agents SDK items as ``result.to_input_list()`` gives them: user
    messages, assistant output messages, and one turn in ten a reasoning item, a function
    call and its output."""
    items: list[dict[str, Any]] = []
    while len(items) < length:
        content, _ = texts.text(rng, rng.choice((1, 1, 2, 3)))
        items.append({"role": "user", "content": content})
        if rng.random() < 0.1:
            call_id = "call_" + _hex(rng)
            items.append({"id": "rs_" + _hex(rng, 48), "summary": [], "type": "reasoning"})
            items.append({"arguments": json.dumps({"title": content[:40]}), "call_id": call_id,
                          "name": "add_task", "type": "function_call",
                          "id": "fc_" + _hex(rng, 48), "status": "completed"})
            items.append({"call_id": call_id, "output": json.dumps({"ok": True,
                                                                    "task_id": len(items)}),
                          "type": "function_call_output"})
        content, _ = texts.text(rng, rng.choice((1, 2, 3, 5, 8)))
        items.append({"id": "msg_" + _hex(rng, 48), "content": [{
            "annotations": [], "text": content, "type": "output_text", "logprobs": []}],
            "role": "assistant", "status": "completed", "type": "message"})
    return items[:length]


async def table_bytes(url: str, tables: tuple[str, ...]) -> int:
    """pg_total_relation_size (heap + TOAST + indexes) of ``tables``, after a VACUUM FULL:
    the data's own size, without pages free for reuse (a GIN index fed by inserts keeps its
    pending list's pages, up to 4 MB, which would swamp a small history). Tables that do
    not exist count 0."""
    conn = await asyncpg.connect(url)
    try:
        total = 0
        for table in tables:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                await conn.execute(f'VACUUM (FULL, ANALYZE) "{table}"')
                total += await conn.fetchval("SELECT pg_total_relation_size($1::regclass)",
                                             table)
        return int(total)
    finally:
        await conn.close()


# -- search ------------------------------------------------------------------------------


@dataclass
class SearchData:
    many_url: str  # users x conversations x messages
    solo_url: str  # only the searched user's messages
    user: str
    messages: int
    users: int


async def seed_search(dsn: str, users: int, conversations: int, messages: int,
                      log: Callable[[str], None]) -> SearchData:
    """Two databases seeded with the same generator and seed: one with every user, one with
    only the first. The generator draws the first user's rows first, so that user's
    messages are the same rows in both."""
    many = await fresh_database(dsn, "bench_search_many")
    log(f"seeding {users * conversations * messages:,} messages of {users} users for "
        "search ...")
    await seed_database(many, users=users, conversations=conversations, messages=messages,
                        seed=11, user_prefix="search-")
    solo = await fresh_database(dsn, "bench_search_solo")
    await seed_database(solo, users=1, conversations=conversations, messages=messages,
                        seed=11, user_prefix="search-")
    for url in (many, solo):
        conn = await asyncpg.connect(url)
        await conn.execute("VACUUM (ANALYZE) messages")
        await conn.close()
    return SearchData(many_url=many, solo_url=solo, user="search-000001",
                      messages=users * conversations * messages, users=users)
