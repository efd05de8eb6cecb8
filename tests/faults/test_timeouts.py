"""Timeouts: a timed-out write is cancelled on the server (or reported with an unknown
outcome), never left to commit after the caller was told it failed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, Timeout

from .conftest import Bouncer, message


@asynccontextmanager
async def row_locked(db_url: str, cid: uuid.UUID) -> AsyncIterator[None]:
    """Another session holds the conversation's row lock until the block ends (alice's: the
    owner named, as Citus needs for a FOR UPDATE)."""
    blocker = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM conversations "
                                  "WHERE user_id = 'alice' AND id = $1 FOR UPDATE", cid)
            yield
    finally:
        await blocker.close()


async def stored(conn: asyncpg.Connection, cid: uuid.UUID) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM messages WHERE conversation_id = $1) AS n, "
        "(SELECT message_count FROM conversations WHERE id = $1) AS counted", cid)
    assert row is not None
    return int(row["n"]), int(row["counted"])


Write = Callable[[ChatStore, uuid.UUID], Awaitable[object]]
WRITES: dict[str, Write] = {
    "append": lambda s, c: s.append_message("alice", c, message("late")),
    "batch of 3": lambda s, c: s.append_messages("alice", c, [message(str(i))
                                                              for i in range(3)]),
    "keyed": lambda s, c: s.append_messages("alice", c, [message("k", idempotency_key="k")]),
    "clear": lambda s, c: s.clear_messages("alice", c),
    "pop": lambda s, c: s.pop_message("alice", c),
    "update": lambda s, c: s.update_conversation("alice", c, title="late"),
}


async def check_write_times_out_and_never_lands(store: ChatStore, conn: asyncpg.Connection,
                                                db_url: str, write: Write,
                                                kind: str = "statement") -> Timeout:
    conv = await store.create_conversation("alice")
    await store.append_message("alice", conv.id, message("first"))
    before = await stored(conn, conv.id)
    async with row_locked(db_url, conv.id):
        started = time.perf_counter()
        with pytest.raises(Timeout) as caught:
            await write(store, conv.id)
        took = time.perf_counter() - started
    assert took < 2, took
    assert caught.value.kind == kind
    await asyncio.sleep(0.3)  # the lock is gone: a write left running would land now
    assert await stored(conn, conv.id) == before
    title = await conn.fetchval("SELECT title FROM conversations WHERE id = $1", conv.id)
    assert title is None
    return caught.value


@pytest.mark.parametrize("name", sorted(WRITES))
async def test_store_default_statement_timeout(db_url: str, conn: asyncpg.Connection,
                                               name: str) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, statement_timeout=0.3) as store:
        error = await check_write_times_out_and_never_lands(store, conn, db_url, WRITES[name])
        assert error.outcome == "not_applied" and error.retryable


async def test_per_call_override(alice_store: ChatStore, conn: asyncpg.Connection,
                                 db_url: str) -> None:
    for name in ("append", "batch of 3", "keyed"):
        error = await check_write_times_out_and_never_lands(
            alice_store.with_options(statement_timeout=0.25), conn, db_url, WRITES[name])
        assert error.outcome == "not_applied"
    # The override is the view's alone: the store itself still waits.
    conv = await alice_store.create_conversation("alice")
    async with row_locked(db_url, conv.id):
        waiting = asyncio.ensure_future(alice_store.append_message("alice", conv.id,
                                                                   message("waits")))
        await asyncio.sleep(0.5)
        assert not waiting.done()
    assert (await waiting).seq == 1


async def test_statement_timeout_through_pgbouncer(db_url: str, conn: asyncpg.Connection,
                                                   pgbouncer: Bouncer) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(pgbouncer.url(db_url), pooler="transaction",
                                       statement_timeout=0.3) as store:
        for name in ("append", "keyed"):
            await check_write_times_out_and_never_lands(store, conn, db_url, WRITES[name])


async def test_client_side_timeout_cancels_on_the_server(db_url: str,
                                                         conn: asyncpg.Connection) -> None:
    """asyncpg's own command_timeout: the driver gives up and sends a cancel. The outcome is
    reported unknown (the cancel races the commit); here it must still never land, because
    the connection is left to finish its cancel, not terminated."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, command_timeout=0.3) as store:
        for name in ("append", "batch of 3"):
            error = await check_write_times_out_and_never_lands(
                store, conn, db_url, WRITES[name], kind="client")
            assert error.outcome == "unknown" and not error.retryable
        keyed = await check_write_times_out_and_never_lands(
            store, conn, db_url, WRITES["keyed"], kind="client")
        assert keyed.outcome == "unknown" and keyed.retryable
        assert (await store.list_conversations("alice")).items  # the pool still works


async def test_acquire_waits_are_bounded_by_default(db_url: str,
                                                   conn: asyncpg.Connection) -> None:
    """With no acquire_timeout given, a call on an exhausted pool raises Timeout after
    DEFAULT_ACQUIRE_TIMEOUT instead of waiting for ever; None still means for ever."""
    from chatstore.limits import DEFAULT_ACQUIRE_TIMEOUT

    assert 1 <= DEFAULT_ACQUIRE_TIMEOUT <= 30
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=1, max_size=1) as store:
        assert store.call_path.acquire_timeout == DEFAULT_ACQUIRE_TIMEOUT
        borrowed = ChatStore(store.pool)
        assert borrowed.call_path.acquire_timeout == DEFAULT_ACQUIRE_TIMEOUT
        forever = borrowed.with_options(acquire_timeout=None)
        assert forever.call_path.acquire_timeout is None
        conv = await store.create_conversation("alice")
        async with store.pool.acquire():  # the only connection is busy
            # For ever: still waiting well past a short deadline.
            waiting = asyncio.ensure_future(forever.get_conversation("alice", conv.id))
            done, _ = await asyncio.wait([waiting], timeout=0.5)
            assert not done
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
    async with await chatstore.connect(db_url, min_size=1, max_size=1,
                                       acquire_timeout=None) as unbounded:
        assert unbounded.call_path.acquire_timeout is None


async def test_acquire_timeout(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=1, max_size=1,
                                       acquire_timeout=5) as store:
        conv = await store.create_conversation("alice")
        async with store.pool.acquire():  # the only connection is busy
            started = time.perf_counter()
            with pytest.raises(Timeout) as caught:
                await store.with_options(acquire_timeout=0.2).append_message(
                    "alice", conv.id, message("never sent"))
            assert time.perf_counter() - started < 1
        assert caught.value.kind == "acquire"
        assert caught.value.outcome == "not_applied" and caught.value.retryable
        assert await stored(conn, conv.id) == (0, 0)
