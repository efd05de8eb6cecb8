"""Load with faults: 8 writers x 500 appends through one pool, on one conversation and on 8,
with random cancellations and a connection kill mixed in."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, ConnectionLost

from .conftest import backends, message

WRITERS = 8
APPENDS = 500


@dataclass
class Tally:
    acknowledged: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # unkeyed, cancelled or lost in flight
    cancelled: int = 0
    lost: int = 0


async def writer(store: ChatStore, cid: uuid.UUID, n: int, tally: Tally,
                 rng: random.Random) -> None:
    for i in range(APPENDS):
        text = f"w{n}-{i}"
        keyed = rng.random() < 0.25
        item = message(text, idempotency_key=text) if keyed else message(text)
        while True:
            call = asyncio.ensure_future(store.append_messages("alice", cid, [item]))
            if rng.random() < 0.03:  # cancel it at a random moment
                await asyncio.sleep(rng.uniform(0, 0.004))
                call.cancel()
            try:
                await call
            except asyncio.CancelledError:
                tally.cancelled += 1
            except ConnectionLost as exc:
                tally.lost += 1
                assert exc.retryable == (keyed or exc.outcome == "not_applied"), exc
            else:
                tally.acknowledged.append(text)
                break
            if not keyed:  # outcome unknown and a retry may duplicate: never retried
                tally.unknown.append(text)
                break
            # keyed: the recipe, retry the same call until it is acknowledged


async def run_load(store: ChatStore, conn: asyncpg.Connection, conversations: list[uuid.UUID],
                   label: str) -> tuple[Tally, int]:
    tally = Tally()
    rng = random.Random(7)
    tasks = [asyncio.ensure_future(writer(store, conversations[n % len(conversations)], n,
                                          tally, random.Random(rng.random())))
             for n in range(WRITERS)]
    started = time.perf_counter()
    await asyncio.sleep(0.5)
    killed = 0
    for pid in await backends(conn):  # one outage in the middle of the load
        killed += bool(await conn.fetchval("SELECT pg_terminate_backend($1::integer)", pid))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    print(f"\n{label}: {WRITERS * APPENDS} appends in {elapsed:.2f} s "
          f"({WRITERS * APPENDS / elapsed:,.0f}/s), {tally.cancelled} cancelled, "
          f"{tally.lost} lost with the {killed} killed connections, "
          f"{len(tally.unknown)} of unknown outcome")
    return tally, killed


async def check(conn: asyncpg.Connection, conversations: list[uuid.UUID],
                tally: Tally) -> None:
    stored: Counter[str] = Counter()
    for cid in conversations:
        rows = await conn.fetch(
            "SELECT seq, content FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # gap-free, unique
        counted = await conn.fetchval(
            "SELECT message_count FROM conversations WHERE id = $1", cid)
        assert counted == len(rows)
        stored.update(r["content"] for r in rows)
    assert all(stored[text] == 1 for text in tally.acknowledged)  # none lost, none twice
    assert all(stored[text] <= 1 for text in tally.unknown)
    assert sum(stored.values()) == len(tally.acknowledged) + sum(
        stored[text] for text in tally.unknown)
    assert len(tally.acknowledged) + len(tally.unknown) == WRITERS * APPENDS


@pytest.mark.parametrize("shape", ["one conversation", "8 conversations"])
async def test_load_with_cancellations_and_a_kill(db_url: str, conn: asyncpg.Connection,
                                                  shape: str) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=8, max_size=8) as store:
        count = 1 if shape == "one conversation" else WRITERS
        conversations = [(await store.create_conversation("alice")).id for _ in range(count)]
        tally, killed = await run_load(store, conn, conversations, shape)
        assert killed >= 1 and tally.cancelled > 0
        await check(conn, conversations, tally)
        await asyncio.sleep(0.2)
        stuck = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'")
        assert stuck == 0
        assert (await store.append_message("alice", conversations[0], message("after"))).seq
