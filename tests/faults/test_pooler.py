"""chatstore behind a real pgbouncer in transaction mode (`pooler="transaction"`)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

import chatstore

from .conftest import Bouncer, message


async def test_concurrent_appends_through_pgbouncer(db_url: str, conn: asyncpg.Connection,
                                                    pgbouncer: Bouncer) -> None:
    """1,600 appends from 16 tasks on 4 conversations through pgbouncer: every one stored
    once, seqs gap-free, counters exact."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    store = await chatstore.connect(pgbouncer.url(db_url), pooler="transaction",
                                    min_size=2, max_size=16)
    try:
        conversations = [(await store.create_conversation("alice")).id for _ in range(4)]

        async def writer(n: int) -> None:
            for i in range(100):
                await store.append_message("alice", conversations[n % 4],
                                           message(f"w{n} m{i}"))

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(16)))
        elapsed = time.perf_counter() - started
        print(f"\npgbouncer (transaction mode): 1600 appends from 16 tasks in {elapsed:.2f} s "
              f"({1600 / elapsed:.0f}/s)")
    finally:
        await store.close()
    for cid in conversations:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)]
        assert seqs == list(range(1, 401))
        assert await conn.fetchval(
            "SELECT message_count FROM conversations WHERE id = $1", cid) == 400
    contents = await conn.fetch("SELECT content FROM messages")
    assert sorted(r["content"] for r in contents) == sorted(
        f"w{n} m{i}" for n in range(16) for i in range(100))
