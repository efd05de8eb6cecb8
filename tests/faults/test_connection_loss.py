"""Connection loss: killed backends and a whole-server restart.

A lost connection is dropped from the pool with no second failure from the same outage, and
a restart under a write load loses no acknowledged write; the store recovers by itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, ChatStoreError, ConnectionLost

from ..conftest import Server
from .conftest import backends, message

FIGURES: dict[str, int] = {}


async def kill_all_and_wait(conn: asyncpg.Connection) -> int:
    """Terminate every other backend on this database and wait until they are gone."""
    pids = await backends(conn)
    for pid in pids:
        await conn.fetchval("SELECT pg_terminate_backend($1::integer)", pid)
    for _ in range(200):
        alive = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids)
        if not alive:
            break
        await asyncio.sleep(0.01)
    return len(pids)


async def hundred_calls(store: ChatStore, cid: uuid.UUID, tag: str) -> None:
    """100 calls, 10 at a time, reads and writes: every one must succeed."""
    for batch in range(10):
        await asyncio.gather(*(
            store.append_message("alice", cid, message(f"{tag} {batch}.{i}")) if i % 2
            else store.list_messages("alice", cid, limit=5)
            for i in range(10)))


async def test_killing_every_pooled_backend_then_100_calls_all_succeed(
        db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=8, max_size=8) as store:
        cid = (await store.create_conversation("alice")).id
        killed = 0
        for round_ in range(10):
            # Every pooled connection busy at once, so all 8 exist, then all killed idle.
            await asyncio.gather(*(store.list_messages("alice", cid) for _ in range(16)))
            killed += await kill_all_and_wait(conn)
            await hundred_calls(store, cid, f"r{round_}")
        assert killed >= 80
        FIGURES["backends killed (idle)"] = killed
        print(f"\nkilled {killed} idle pooled backends in 10 rounds; the 1,000 calls after "
              "them all succeeded")
    count = await conn.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1",
                                cid)
    assert count == 10 * 50


async def test_calls_in_flight_when_killed_report_unknown_then_all_succeed(
        db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    errors: list[BaseException] = []
    async with await chatstore.connect(db_url, min_size=8, max_size=8) as store:
        cid = (await store.create_conversation("alice")).id
        for round_ in range(5):
            blocker = await asyncpg.connect(db_url)
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM conversations WHERE user_id = 'alice' AND id = $1 "
                                  "FOR UPDATE", cid)
            calls: list[asyncio.Future[Any]] = [asyncio.ensure_future(store.append_message(
                "alice", cid, message(f"in flight {round_}.{i}"))) for i in range(4)]
            calls += [asyncio.ensure_future(store.append_messages("alice", cid, [message(
                f"keyed {round_}.{i}", idempotency_key=f"k{round_}.{i}")])) for i in range(4)]
            for _ in range(200):  # until all 8 wait for the row lock
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'")
                if waiting == 8:
                    break
                await asyncio.sleep(0.01)
            for pid in await backends(conn, but=await blocker.fetchval(
                    "SELECT pg_backend_pid()")):
                await conn.fetchval("SELECT pg_terminate_backend($1::integer)", pid)
            results = await asyncio.gather(*calls, return_exceptions=True)
            await tx.rollback()
            await blocker.close()
            for i, result in enumerate(results):
                assert isinstance(result, ConnectionLost), result
                assert result.outcome == "unknown"
                assert result.retryable == (i >= 4)  # only the keyed ones
                assert "released back to the pool" not in str(result)
            errors += [r for r in results if isinstance(r, BaseException)]
            await hundred_calls(store, cid, f"after {round_}")
        FIGURES["calls killed in flight"] = len(errors)
        print(f"\n{len(errors)} calls killed in flight: all ConnectionLost(outcome=unknown), "
              "none landed; the 500 calls after them all succeeded")
    assert len(errors) == 40
    count = await conn.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1",
                                cid)
    assert count == 5 * 50  # nothing killed in flight landed


def _restart(server: Server, data_directory: str) -> None:
    assert server.bin_dir is not None
    owner = Path(data_directory).stat().st_uid
    subprocess.run(
        [str(server.bin_dir / "pg_ctl"), "restart", "-D", data_directory, "-m", "fast", "-w",
         "-t", "60", "-l", str(Path(data_directory) / "restart.log")],
        check=True, capture_output=True, user=owner if os.geteuid() == 0 else None,
    )


async def test_server_restart_under_load_loses_no_acknowledged_write(
        pg_server: Server, db_url: str, conn: asyncpg.Connection) -> None:
    if os.environ.get("CHATSTORE_TEST_DSN") or pg_server.bin_dir is None:
        pytest.skip("server restart: needs the embedded test server (CHATSTORE_TEST_DSN set)")
    data_directory = await conn.fetchval("SHOW data_directory")
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    await conn.close()
    acknowledged: dict[uuid.UUID, list[str]] = {}
    failures: dict[str, int] = {}
    stop = asyncio.Event()
    async with await chatstore.connect(db_url, min_size=4, max_size=8) as store:
        conversations = [(await store.create_conversation("alice")).id for _ in range(4)]
        for cid in conversations:
            acknowledged[cid] = []

        async def writer(n: int) -> None:
            cid = conversations[n % 4]
            i = 0
            while not stop.is_set() or i < 20:
                key = f"w{n}-{i}"
                try:
                    await store.append_messages("alice", cid, [message(key,
                                                                       idempotency_key=key)])
                except ChatStoreError as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    assert exc.retryable, exc  # keyed: always safe to retry
                    await asyncio.sleep(0.05 + random.random() * 0.05)
                    continue  # the recipe: retry the same keyed call
                acknowledged[cid].append(key)
                i += 1

        writers = [asyncio.ensure_future(writer(n)) for n in range(8)]
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        await asyncio.to_thread(_restart, pg_server, data_directory)
        down = time.perf_counter() - started
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), 60)
        # The same store, not rebuilt, works.
        assert (await store.list_conversations("alice")).items
    print(f"\nserver restart: {down:.2f} s down, {sum(map(len, acknowledged.values()))} "
          f"writes acknowledged, failures retried: {failures}")
    check = await asyncpg.connect(db_url)
    try:
        for cid, keys in acknowledged.items():
            rows = await check.fetch("SELECT seq, content FROM messages "
                                     "WHERE conversation_id = $1 ORDER BY seq", cid)
            assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
            assert sorted(r["content"] for r in rows) == sorted(keys)  # none lost, none twice
            assert await check.fetchval("SELECT message_count FROM conversations "
                                        "WHERE id = $1", cid) == len(rows)
    finally:
        await check.close()
    assert sum(failures.values()) > 0  # the restart was felt
    FIGURES["writes checked across a restart"] = sum(map(len, acknowledged.values()))


async def test_a_turn_survives_every_pooled_backend_killed_between_its_calls(
        db_url: str, conn: asyncpg.Connection) -> None:
    """Turn.append, renew and the turn's end each succeed after every pooled backend was
    killed while idle (on a fresh connection; tests/test_call_path.py shows each of them is
    retried when the pool hands out one the outage broke)."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=4, max_size=4) as store:
        cid = (await store.create_conversation("alice")).id
        async with store.turn("alice", cid) as turn:
            await asyncio.gather(*(store.list_messages("alice", cid) for _ in range(8)))
            assert await kill_all_and_wait(conn) >= 4  # the pool's four, and any others
            stored = await turn.append([message("after the outage")])
            assert [m.seq for m in stored] == [1]
            await kill_all_and_wait(conn)
            await turn.renew()
            await kill_all_and_wait(conn)
        # The turn ended (its lease is gone) and its message stayed.
        row = await conn.fetchrow("SELECT turn_token, message_count FROM conversations "
                                  "WHERE id = $1", cid)
        assert row is not None and row["turn_token"] is None and row["message_count"] == 1
