"""What a turn's lease costs: one stateless chat turn with and without ``store.turn``.

    python bench/turn_cost.py [--database URL] [--rounds 400] [--history 200]

Both variants do the same work on one pool (context window, append the user's message,
append the reply) on conversations of the same length; the turn variant also takes and
ends the lease. Rounds alternate the two in a seeded random order. Prints medians and p99
in microseconds, the difference, and the statements each variant sends. Without
--database (or $CHATSTORE_DSN) it starts a throw-away embedded PostgreSQL 16.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from uuid import UUID

import chatstore
from chatstore.embedded import start_embedded
from chatstore.migrate import apply_migrations

USER = "turn-bench"


async def plain_turn(store: chatstore.ChatStore, cid: UUID) -> None:
    await store.context_messages(USER, cid, max_tokens=4000)
    await store.append_message(USER, cid, {"role": "user", "content": "add milk"})
    await store.append_message(USER, cid, {"role": "assistant", "content": "added"})


async def leased_turn(store: chatstore.ChatStore, cid: UUID) -> None:
    async with store.turn(USER, cid) as turn:
        await turn.context(max_tokens=4000)
        await turn.append([{"role": "user", "content": "add milk"}])
        await turn.append([{"role": "assistant", "content": "added"}])


async def main(url: str, rounds: int, history: int, seed: int) -> None:
    apply_migrations(url)
    async with await chatstore.connect(url, min_size=1, max_size=1) as store:
        async with store.pool.acquire() as conn:
            await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING",
                               USER)
        seed_messages = [{"role": "user" if i % 2 else "assistant", "content": f"m{i} " * 10,
                          "token_count": 12} for i in range(history)]
        conversations = {
            name: (await store.create_conversation(USER, messages=seed_messages)).id
            for name in ("plain", "turn")}
        variants = {"plain": plain_turn, "turn": leased_turn}
        samples: dict[str, list[float]] = {name: [] for name in variants}
        order = random.Random(seed)
        for _ in range(rounds):
            names = list(variants)
            order.shuffle(names)
            for name in names:
                start = time.perf_counter()
                await variants[name](store, conversations[name])
                samples[name].append((time.perf_counter() - start) * 1e6)
    print(f"load average: {os.getloadavg()}  rounds: {rounds}  seed: {seed}")
    medians = {}
    for name, values in samples.items():
        ordered = sorted(values)
        medians[name] = statistics.median(ordered)
        print(f"{name:>6}: median {medians[name]:8.0f} us   p99 "
              f"{ordered[int(len(ordered) * 0.99) - 1]:8.0f} us")
    print(f"lease: +{medians['turn'] - medians['plain']:.0f} us a turn "
          f"({medians['turn'] / medians['plain']:.2f}x); statements: plain 3 "
          "(context, append, append), turn 5 (+ take_turn, end_turn), each one round trip")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=os.environ.get("CHATSTORE_DSN"))
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.database:
        asyncio.run(main(args.database, args.rounds, args.history, args.seed))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = start_embedded(Path(tmp) / "pgdata", version=16, cleanup="delete")
            try:
                asyncio.run(main(server.dsn, args.rounds, args.history, args.seed))
            finally:
                server.stop()
