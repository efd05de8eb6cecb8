"""Outcome-honest errors: each driver failure, produced for real on a real server, comes out
as its typed chatstore error with the right ``outcome`` and ``retryable``, and no row data."""

from __future__ import annotations

import asyncio
import threading

import asyncpg
import pytest

from chatstore import (
    ChatStore,
    ChatStoreError,
    Conflict,
    Deadlock,
    SchemaChanged,
    SerializationFailure,
    StoreClosed,
    Timeout,
    WrongEventLoop,
)
from chatstore._translate import CallState, translate

from .conftest import message


async def _raised(coro: object) -> BaseException:
    try:
        await coro  # type: ignore[misc]
    except BaseException as exc:
        return exc
    raise AssertionError("expected the statement to fail")


async def test_statement_and_lock_timeouts_are_typed(conn: asyncpg.Connection,
                                                     db_url: str) -> None:
    await conn.execute("SET statement_timeout = 50")
    statement = translate(await _raised(conn.execute("SELECT pg_sleep(1)")), CallState(True))
    await conn.execute("RESET statement_timeout")
    assert isinstance(statement, Timeout) and statement.kind == "statement"
    assert statement.outcome == "not_applied" and statement.retryable

    other = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TABLE locked (id int)")
        async with other.transaction():
            await other.execute("LOCK TABLE locked")
            await conn.execute("SET lock_timeout = 50")
            lock = translate(await _raised(conn.execute("SELECT count(*) FROM locked")),
                             CallState(True))
            await conn.execute("RESET lock_timeout")
    finally:
        await other.close()
    assert isinstance(lock, Timeout) and lock.kind == "lock" and lock.outcome == "not_applied"


async def test_deadlock_and_serialization_failure_are_typed(conn: asyncpg.Connection,
                                                            db_url: str) -> None:
    await conn.execute("CREATE TABLE pair (id int PRIMARY KEY, v int);"
                       "INSERT INTO pair VALUES (1, 0), (2, 0)")
    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute("UPDATE pair SET v = 1 WHERE id = 1")
        await b.execute("UPDATE pair SET v = 1 WHERE id = 2")
        results = await asyncio.gather(a.execute("UPDATE pair SET v = 2 WHERE id = 2"),
                                       b.execute("UPDATE pair SET v = 2 WHERE id = 1"),
                                       return_exceptions=True)
        await ta.rollback()
        await tb.rollback()
        (failure,) = [r for r in results if isinstance(r, BaseException)]
        deadlock = translate(failure, CallState(True))
        assert isinstance(deadlock, Deadlock) and deadlock.retryable
        assert deadlock.outcome == "not_applied"

        ta = a.transaction(isolation="serializable")
        await ta.start()
        assert await a.fetchval("SELECT v FROM pair WHERE id = 1") == 0
        await b.execute("UPDATE pair SET v = 5 WHERE id = 1")
        serial = translate(await _raised(a.execute("UPDATE pair SET v = 6 WHERE id = 1")),
                           CallState(True))
        await ta.rollback()
        assert isinstance(serial, SerializationFailure) and serial.retryable
    finally:
        await a.close()
        await b.close()


async def test_closed_store_is_store_closed_not_retryable(alice_store: ChatStore) -> None:
    await alice_store.close()
    with pytest.raises(StoreClosed) as caught:
        await alice_store.list_conversations("alice")
    assert not caught.value.retryable and caught.value.outcome == "not_applied"


async def test_operators_check_never_puts_row_data_in_the_message(
        alice_store: ChatStore, conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE messages ADD CONSTRAINT no_card_numbers "
                       "CHECK (content !~ '[0-9]{4}-[0-9]{4}')")
    conversation = await alice_store.create_conversation("alice", metadata={"team": "t-42"})
    secret = "my card is 4242-4242, keep it safe"
    with pytest.raises(Conflict) as caught:
        await alice_store.append_message("alice", conversation.id,
                                         message(secret, metadata={"private": "p-99"}))
    text = str(caught.value)
    assert "no_card_numbers" in text
    for leaked in ("4242", "keep it safe", "p-99", "t-42", "alice"):
        assert leaked not in text, text
    assert caught.value.outcome == "not_applied"


async def test_column_type_change_is_retryable_and_the_retry_works(
        alice_store: ChatStore, conn: asyncpg.Connection) -> None:
    conversation = await alice_store.create_conversation("alice", title="t")
    await alice_store.pop_message("alice", conversation.id)  # prepares its statements
    await alice_store.get_conversation("alice", conversation.id)
    await conn.execute("ALTER TABLE conversations ALTER COLUMN title TYPE varchar(500)")
    for call in (alice_store.pop_message, alice_store.get_conversation):
        try:
            await call("alice", conversation.id)
        except SchemaChanged as exc:
            assert exc.retryable and exc.outcome == "not_applied"
        await call("alice", conversation.id)  # the retry works


async def test_second_event_loop_says_so(alice_store: ChatStore) -> None:
    await alice_store.list_conversations("alice")
    caught: list[BaseException] = []

    def other_thread() -> None:
        try:
            asyncio.run(alice_store.list_conversations("alice"))
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(caught) == 1 and isinstance(caught[0], WrongEventLoop)
    assert isinstance(caught[0], ChatStoreError) and "event loop" in str(caught[0])
    assert not caught[0].retryable
