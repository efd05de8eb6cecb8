"""Median latency of chatstore's two hottest calls, beside raw asyncpg running the same SQL.

    python bench/latency.py [--database URL] [--messages 10000] [--rounds 2000] [--seed N]

Without --database (or $CHATSTORE_DSN) it starts a throw-away embedded PostgreSQL 16.
Prints medians and p99 in microseconds, and the ratio chatstore / raw asyncpg. raw asyncpg
runs the same statements on a pool of its own made by ``chatstore.connect`` (same pool type,
JSON codec and reset hook, one connection each), and every round runs the four calls in a
shuffled order (seeded, printed). The side-by-side benchmark against other libraries is
`python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

import chatstore
from chatstore.embedded import start_embedded
from chatstore.migrate import apply_migrations
from chatstore.sql import SQL


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def main(url: str, messages: int, rounds: int, seed: int) -> None:
    apply_migrations(url)
    async with await chatstore.connect(url, min_size=1, max_size=1) as store, \
            await chatstore.connect(url, min_size=1, max_size=1) as floor:
        raw: asyncpg.Pool = floor.pool
        await raw.execute("INSERT INTO users (id) VALUES ('bench') ON CONFLICT DO NOTHING")
        conv = await store.create_conversation("bench", title="latency")
        batch = [{"role": "user" if i % 2 else "assistant", "content": f"message {i} " * 8,
                  "token_count": 20} for i in range(1000)]
        for _ in range(messages // 1000):
            await store.append_messages("bench", conv.id, batch)
        await raw.execute("ANALYZE")
        newest = SQL.list_messages_newest
        append = SQL.append_message  # what append_message runs for one message

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "store read": lambda: store.list_messages("bench", conv.id, limit=50),
            "raw read": lambda: raw.fetch(newest, "bench", conv.id, 51),
            "store append": lambda: store.append_message(
                "bench", conv.id, {"role": "user", "content": "hello there"}),
            "raw append": lambda: raw.fetch(append, "bench", conv.id, "user", "hello there",
                                            None, None, "{}", None, None, None, None, None,
                                            None, None, False),
        }
        for call in calls.values():  # warm-up: prepared statements, codecs
            await call()
        # Every round runs each call once, in a shuffled order: noise, drift and the cost
        # of following another call hit both sides alike.
        order = random.Random(seed)
        names = list(calls)
        results: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            order.shuffle(names)
            for name in names:
                start = time.perf_counter()
                await calls[name]()
                results[name].append((time.perf_counter() - start) * 1e6)

    print(f"conversation of {messages:,} messages (then grown by the appends), "
          f"{rounds} calls each, interleaved in a shuffled order (seed {seed}); microseconds")
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
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the call order (default: a fresh one, printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    if args.database:
        asyncio.run(main(args.database, args.messages, args.rounds, seed))
    else:
        base = Path(tempfile.mkdtemp(prefix="chatstore-bench-"))
        server = start_embedded(base / "pgdata", version=16, cleanup="delete")
        try:
            asyncio.run(main(server.dsn, args.messages, args.rounds, seed))
        finally:
            server.stop()
