"""Median latency of chatstore's two hottest calls, beside raw asyncpg running the same SQL.

    python bench/latency.py [--database URL] [--messages 10000] [--rounds 2000]

Without --database (or $CHATSTORE_DSN) it starts a throw-away embedded PostgreSQL 16.
Prints medians and p99 in microseconds, and the ratio chatstore / raw asyncpg (here a plain
connection, no pool). The side-by-side benchmark against other libraries is `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

import chatstore
from chatstore.embedded import start_embedded
from chatstore.migrate import apply_migrations
from chatstore.queries import QUERIES


async def timed(fn: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def main(url: str, messages: int, rounds: int) -> None:
    apply_migrations(url)
    async with await chatstore.connect(url, min_size=1, max_size=1) as store:
        raw = await asyncpg.connect(url)
        await raw.execute("INSERT INTO users (id) VALUES ('bench') ON CONFLICT DO NOTHING")
        conv = await store.create_conversation("bench", title="latency")
        batch = [{"role": "user" if i % 2 else "assistant", "content": f"message {i} " * 8,
                  "token_count": 20} for i in range(1000)]
        for _ in range(messages // 1000):
            await store.append_messages("bench", conv.id, batch)
        await raw.execute("ANALYZE")
        newest = QUERIES["list_messages_newest"]
        append = QUERIES["append_messages"]

        # Interleave the two sides so that machine noise hits both alike.
        results: dict[str, list[float]] = {k: [] for k in
                                           ("store read", "raw read", "store append",
                                            "raw append")}
        for _ in range(10):
            results["store read"] += await timed(
                lambda: store.list_messages("bench", conv.id, limit=50), rounds // 10)
            results["raw read"] += await timed(
                lambda: raw.fetch(newest, "bench", conv.id, 51), rounds // 10)
            results["store append"] += await timed(
                lambda: store.append_message("bench", conv.id,
                                             {"role": "user", "content": "hello there"}),
                rounds // 10)
            results["raw append"] += await timed(
                lambda: raw.fetch(append, "bench", conv.id, ["user"], ["hello there"], [None],
                                  [None], ["{}"], [None], [None], None), rounds // 10)
        await raw.close()

    print(f"conversation of {messages:,} messages (then grown by the appends), "
          f"{rounds} calls each, interleaved; microseconds")
    print(f"{'operation':32} {'median':>9} {'p99':>9}")
    for name, samples in results.items():
        med, p99 = summary(samples)
        print(f"{name:32} {med:9.0f} {p99:9.0f}")
    for op in ("read", "append"):
        ratio = summary(results[f"store {op}"])[0] / summary(results[f"raw {op}"])[0]
        print(f"chatstore / raw asyncpg, {op}: {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default=os.environ.get("CHATSTORE_DSN"))
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    if args.database:
        asyncio.run(main(args.database, args.messages, args.rounds))
    else:
        base = Path(tempfile.mkdtemp(prefix="chatstore-bench-"))
        server = start_embedded(base / "pgdata", version=16, cleanup="delete")
        try:
            asyncio.run(main(server.dsn, args.messages, args.rounds))
        finally:
            server.stop()
