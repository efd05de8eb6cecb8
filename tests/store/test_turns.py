"""Revisions, chat turns, lossless items, the caller's transaction, and the write-path fixes,
against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore import (
    ChatStore,
    ChatStoreError,
    Conflict,
    ConversationBusy,
    InvalidInput,
    NotFound,
    StaleRevision,
    to_items,
    to_openai_messages,
)
from chatstore.transfer import export_user, import_file

from ..agent_items import every_input_item
from .test_store import fill, snapshot, user


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


async def revision(store: ChatStore, cid: uuid.UUID) -> int:
    return (await store.get_conversation("alice", cid)).revision


# -- revisions -----------------------------------------------------------------------------


async def test_every_change_moves_the_revision_by_exactly_one(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    cid = conv.id
    steps: list[tuple[str, Callable[[], Any], int]] = [
        ("append of three", lambda: store.append_messages(
            "alice", cid, [user("a"), user("b"), user("c")]), 1),
        ("append of one", lambda: store.append_message("alice", cid, user("d")), 1),
        ("keyed append", lambda: store.append_message(
            "alice", cid, user("e", idempotency_key="e")), 1),
        ("keyed replay", lambda: store.append_message(
            "alice", cid, user("e", idempotency_key="e")), 0),
        ("pop", lambda: store.pop_message("alice", cid), 1),
        ("update", lambda: store.update_conversation("alice", cid, title="t"), 1),
        ("update with no field", lambda: store.update_conversation("alice", cid), 0),
        ("clear", lambda: store.clear_messages("alice", cid), 1),
        ("clear of empty", lambda: store.clear_messages("alice", cid), 0),
        ("pop of empty", lambda: store.pop_message("alice", cid), 0),
    ]
    assert conv.revision == 0
    for name, step, moves in steps:
        before = await revision(store, cid)
        await step()
        assert await revision(store, cid) == before + moves, name


async def test_aba_is_a_conflict(store: ChatStore, conn: asyncpg.Connection) -> None:
    """A reads the conversation; B pops the last message and appends another (the same seq
    again); A's compare-and-append must fail although the last seq is what A saw."""
    cid = await fill(store, "alice", 2)
    seen = await store.get_conversation("alice", cid)
    await store.pop_message("alice", cid)
    await store.append_message("alice", cid, assistant("a2"))
    assert (await store.get_conversation("alice", cid)).message_count == seen.message_count
    before = await snapshot(conn)
    with pytest.raises(StaleRevision):
        await store.append_message("alice", cid, user("follow-up to a1"),
                                   expected_revision=seen.revision)
    assert await snapshot(conn) == before


@pytest.mark.parametrize("call", ["pop", "clear", "update", "update_noop", "append"])
async def test_expected_revision_is_checked_on_every_writer(store: ChatStore,
                                                            conn: asyncpg.Connection,
                                                            call: str) -> None:
    cid = (await store.create_conversation("alice")).id  # empty: pop/clear change nothing
    await store.update_conversation("alice", cid, title="moved")  # revision 1
    calls: dict[str, Callable[[int], Awaitable[object]]] = {
        "pop": lambda r: store.pop_message("alice", cid, expected_revision=r),
        "clear": lambda r: store.clear_messages("alice", cid, expected_revision=r),
        "update": lambda r: store.update_conversation("alice", cid, title="x",
                                                      expected_revision=r),
        "update_noop": lambda r: store.update_conversation("alice", cid, expected_revision=r),
        "append": lambda r: store.append_message("alice", cid, user("x"),
                                                 expected_revision=r),
    }
    before = await snapshot(conn)
    with pytest.raises(StaleRevision):
        await calls[call](0)
    assert await snapshot(conn) == before
    await calls[call](1)  # the current revision is accepted


async def test_revision_races_end_in_conflict_never_in_a_lost_update(store: ChatStore) -> None:
    """16 writers each read the revision and compare-and-set on it: exactly the winners'
    writes are stored and the revision moved once per winner that changed something (a pop
    that wins on an empty conversation changes nothing and moves no revision)."""
    cid = await fill(store, "alice", 1)
    start = await revision(store, cid)

    async def writer(i: int) -> tuple[int, int, int]:
        """(messages added, messages removed, revision seen) of this writer's write."""
        seen = await revision(store, cid)
        try:
            if i % 3:
                await store.append_message("alice", cid, user(f"w{i}"), expected_revision=seen)
                return 1, 0, seen
            popped = await store.pop_message("alice", cid, expected_revision=seen)
            return 0, int(popped is not None), seen
        except Conflict:
            return 0, 0, seen

    outcomes = await asyncio.gather(*(writer(i) for i in range(16)))
    added = sum(a for a, _, _ in outcomes)
    removed = sum(r for _, r, _ in outcomes)
    assert added + removed >= 1  # the first winner always finds something to change
    assert await revision(store, cid) == start + added + removed
    assert (await store.get_conversation("alice", cid)).message_count == 1 + added - removed
    # Compare-and-set: at most one change was made on top of any one revision.
    changed_on = [seen for a, r, seen in outcomes if a or r]
    assert len(changed_on) == len(set(changed_on))


# -- turns ---------------------------------------------------------------------------------


async def test_a_turn_writes_contiguously_and_ends(store: ChatStore) -> None:
    cid = await fill(store, "alice", 2)
    async with store.turn("alice", cid) as turn:
        assert turn.revision == await revision(store, cid)
        window = await turn.context(max_tokens=1000)
        assert [m.content for m in window] == ["m1", "m2"]
        await turn.append([user("q")])
        assert [m.content for m in await turn.context()][-1] == "q"
        await turn.append([assistant("a")])
    assert turn.ended
    assert (await store.get_conversation("alice", cid)).revision == turn.revision + 2
    # The lease is gone: a plain append works again.
    assert (await store.append_message("alice", cid, user("after"))).seq == 5


async def test_the_last_append_ends_the_turn_in_its_commit(store: ChatStore,
                                                           conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 2)

    async def lease(cid: uuid.UUID) -> tuple[Any, ...]:
        return tuple(await conn.fetchrow(
            "SELECT turn_token, turn_expires_at, turn_base_count FROM conversations "
            "WHERE id = $1", cid) or ())

    usage = {"model": "m", "input_tokens": 3, "output_tokens": 4}
    # Each way an append is written: one message, several, one with usage (one statement
    # each), and a keyed one (under the row lock).
    replies: list[list[dict[str, Any]]] = [
        [assistant("a1")], [assistant("a2"), assistant("a3")],
        [assistant("a4")], [{**assistant("a5"), "idempotency_key": "k5"}]]
    for n, reply in enumerate(replies):
        async with store.turn("alice", cid) as turn:
            await turn.append([user(f"q{n}")])
            stored = await turn.append(reply, end=True, usage=usage if n == 2 else None)
            assert turn.ended
            assert await lease(cid) == (None, None, None)
            rev = await revision(store, cid)
            # The conversation is free at once: another writer gets in inside the block.
            await store.update_conversation("alice", cid, title=f"t{n}")
            with pytest.raises(Conflict, match="already ended"):
                await turn.append([user("late")])
        assert await revision(store, cid) == rev + 1  # the exit wrote nothing more
        assert [m.content for m in stored] == [m["content"] for m in reply]
    assert (await store.usage_totals("alice"))[0].output_tokens == 4
    # An exception after the turn ended removes nothing: the turn is over.
    count = (await store.get_conversation("alice", cid)).message_count
    with pytest.raises(RuntimeError):
        async with store.turn("alice", cid) as turn:
            await turn.append([user("q"), assistant("a")], end=True)
            raise RuntimeError("after the end")
    assert (await store.get_conversation("alice", cid)).message_count == count + 2
    # A fork turn that becomes current ends (and moves current) after its last append.
    async with store.turn("alice", cid, fork_at=2) as turn:
        await turn.append([assistant("other")], end=True)
        assert turn.ended
    fork = await store.get_conversation("alice", turn.conversation_id)
    assert fork.current_id == fork.id and fork.message_count == 3
    assert await lease(fork.id) == (None, None, None)
    async with store.turn("alice", cid) as turn:
        with pytest.raises(InvalidInput, match="end"):
            await turn.append([user("q")], end="yes")  # type: ignore[arg-type]
        assert not turn.ended


async def test_a_turn_can_start_with_its_first_messages(store: ChatStore,
                                                      conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 2)
    before = await store.get_conversation("alice", cid)
    async with store.turn("alice", cid, messages=[user("q")]) as turn:
        assert [(m.seq, m.content) for m in turn.first_messages] == [(3, "q")]
        assert turn.revision == before.revision  # the lease was taken before the append
        assert (await revision(store, cid)) == before.revision + 1
        assert [m.content for m in await turn.context()][-1] == "q"
        with pytest.raises(ConversationBusy):
            await store.append_message("alice", cid, user("outside"))
        with pytest.raises(ConversationBusy):  # and a second turn writes nothing
            await store.turn("alice", cid, messages=[user("x")]).__aenter__()
        await turn.append([assistant("a")], end=True)
    assert [m.content for m in (await store.list_messages("alice", cid)).items] == [
        "m1", "m2", "q", "a"]
    # An abort removes the first messages too.
    rows = await conn.fetch("SELECT seq, content FROM messages ORDER BY seq")
    with pytest.raises(RuntimeError):
        async with store.turn("alice", cid, messages=[user("gone")]) as turn:
            raise RuntimeError("model failed")
    assert await conn.fetch("SELECT seq, content FROM messages ORDER BY seq") == rows
    # The other ways in (several messages, a keyed one, a quota, a fork) append them
    # right after taking the lease.
    quota = chatstore.Quota(max_tokens=1000, window="day")
    ways: list[dict[str, Any]] = [
        {"messages": [user("q1"), user("q2")]},
        {"messages": [user("q3", idempotency_key="k3")]},
        {"messages": [user("q4")], "quota": quota},
        {"messages": [user("q5")], "fork_at": 4},
    ]
    for way in ways:
        async with store.turn("alice", cid, **way) as turn:
            assert [m.content for m in turn.first_messages] == [
                m["content"] for m in way["messages"]]
            count = (await store.get_conversation("alice", turn.conversation_id)).message_count
            assert turn.first_messages[-1].seq == count
    # Refused: nothing written, no lease taken; a missing conversation is NotFound.
    state = await snapshot(conn)
    with pytest.raises(InvalidInput, match=r"messages\[0\]"):
        store.turn("alice", cid, messages=[{"role": "tool", "content": "no call id"}])
    with pytest.raises(NotFound):
        await store.turn("alice", uuid.uuid4(), messages=[user("q")]).__aenter__()
    assert await snapshot(conn) == state


async def test_outside_writes_during_a_turn_are_busy(store: ChatStore,
                                                     conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 2)
    async with store.turn("alice", cid) as turn:
        await turn.append([user("q")])
        before = await snapshot(conn)
        writes: dict[str, Callable[[], Awaitable[object]]] = {
            "append": lambda: store.append_message("alice", cid, user("x")),
            "keyed append": lambda: store.append_message(
                "alice", cid, user("x", idempotency_key="k")),
            "pop": lambda: store.pop_message("alice", cid),
            "clear": lambda: store.clear_messages("alice", cid),
            "second turn": lambda: store.turn("alice", cid).__aenter__(),
        }
        for name, call in writes.items():
            with pytest.raises(ConversationBusy):
                await call()
            assert await snapshot(conn) == before, name
        # Reads, updates and deletes of the conversation still work.
        assert len((await store.list_messages("alice", cid)).items) == 3
        renamed = await store.update_conversation("alice", cid, title="renamed")
        assert renamed.title == "renamed"
        await turn.append([assistant("a")])
    assert [m.content for m in (await store.list_messages("alice", cid)).items] == [
        "m1", "m2", "q", "a"]


async def test_an_aborted_turn_leaves_the_conversation_as_it_was(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 2)
    before = await store.get_conversation("alice", cid)
    rows_before = await conn.fetch("SELECT seq, content FROM messages ORDER BY seq")
    with pytest.raises(RuntimeError, match="model failed"):
        async with store.turn("alice", cid) as turn:
            await turn.append([user("q")])
            await turn.append([{"role": "assistant", "tool_calls": [{
                "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}])
            raise RuntimeError("model failed")
    after = await store.get_conversation("alice", cid)
    assert after.message_count == before.message_count == 2
    assert after.revision == before.revision + 3  # two appends, one abort
    assert await conn.fetch("SELECT seq, content FROM messages ORDER BY seq") == rows_before
    assert await conn.fetchval("SELECT turn_token FROM conversations") is None

    # abort() by hand, and a rejected message inside a turn, leave nothing either.
    async with store.turn("alice", cid) as turn:
        await turn.append([user("q")])
        with pytest.raises(InvalidInput):
            await turn.append([{"role": "tool", "content": "no call id"}])
        await turn.abort()
        with pytest.raises(Conflict, match="already ended"):
            await turn.append([user("late")])
    assert await conn.fetch("SELECT seq, content FROM messages ORDER BY seq") == rows_before
    # An abort that removes nothing moves no revision.
    rev = await revision(store, cid)
    async with store.turn("alice", cid) as turn:
        await turn.abort()
    assert await revision(store, cid) == rev


async def test_twenty_concurrent_turns_on_one_conversation(store: ChatStore) -> None:
    """Without waiting, exactly one of 20 overlapping turns gets in; with waiting, all 20
    run one after another and the history reads as whole turns."""
    cid = (await store.create_conversation("alice")).id
    started = asyncio.Event()

    async def request(i: int, wait: float) -> str:
        try:
            async with store.turn("alice", cid, wait_seconds=wait) as turn:
                await turn.append([user(f"q{i}")])
                started.set()
                await asyncio.sleep(0.05)  # the model thinks; no connection is held
                await turn.append([assistant(f"a{i}")])
            return "ok"
        except ConversationBusy:
            return "busy"

    outcomes = await asyncio.gather(*(request(i, 0) for i in range(20)))
    assert outcomes.count("ok") == 1 and outcomes.count("busy") == 19, outcomes

    await store.clear_messages("alice", cid)
    outcomes = await asyncio.gather(*(request(i, 30) for i in range(20)))
    assert outcomes == ["ok"] * 20
    stored = (await store.list_messages("alice", cid, limit=None)).items
    assert len(stored) == 40
    for question, answer in zip(stored[::2], stored[1::2], strict=True):
        assert question.role == "user" and answer.role == "assistant"
        assert answer.content == "a" + (question.content or "")[1:]
    assert [m.seq for m in stored] == list(range(1, 41))


async def test_an_expired_lease_fences_the_old_holder(store: ChatStore,
                                                      conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 1)
    stalled = store.turn("alice", cid, lease_seconds=0.2)
    old = await stalled.__aenter__()
    await old.append([user("stalled question")])
    with pytest.raises(ConversationBusy):
        await store.append_message("alice", cid, user("too early"))
    await asyncio.sleep(0.3)
    # The lease ran out: the next turn takes over and removes the stalled turn's messages.
    async with store.turn("alice", cid) as new:
        assert [m.content for m in await new.context()] == ["m1"]
        before = await snapshot(conn)
        with pytest.raises(Conflict, match="lease lost"):
            await old.append([assistant("late answer")])
        with pytest.raises(Conflict, match="lease lost"):
            await old.renew()
        assert await snapshot(conn) == before
        await new.append([user("fresh")])
    with pytest.raises(Conflict, match="lease lost"):
        await stalled.__aexit__(None, None, None)
    assert [m.content for m in (await store.list_messages("alice", cid)).items] == [
        "m1", "fresh"]


async def test_a_plain_write_after_an_expired_lease_removes_the_stalled_turn(
        store: ChatStore) -> None:
    cid = await fill(store, "alice", 1)
    stalled = store.turn("alice", cid, lease_seconds=0.1)
    old = await stalled.__aenter__()
    await old.append([user("half a turn")])
    await asyncio.sleep(0.2)
    assert (await store.append_message("alice", cid, user("next"))).seq == 2
    assert [m.content for m in (await store.list_messages("alice", cid)).items] == [
        "m1", "next"]


async def test_the_holder_may_renew_and_keep_an_unclaimed_lease(store: ChatStore) -> None:
    cid = await fill(store, "alice", 1)
    async with store.turn("alice", cid, lease_seconds=0.2) as turn:
        await turn.renew(lease_seconds=60)
        await asyncio.sleep(0.3)
        with pytest.raises(ConversationBusy):  # renewed: still held
            await store.append_message("alice", cid, user("x"))
    async with store.turn("alice", cid, lease_seconds=0.1) as turn:
        await asyncio.sleep(0.2)  # ran out, but nobody took it: the holder goes on
        await turn.append([user("still mine")])
    assert (await store.get_conversation("alice", cid)).message_count == 2


async def test_a_turn_holds_no_connection_and_no_session_state(db_url: str,
                                                               conn: asyncpg.Connection) -> None:
    """Pooler-safe: one pooled connection, no statement cache (as behind pgbouncer in
    transaction mode); while the model thinks, the connection is free for other requests,
    and the server holds no lock, open transaction or advisory lock for the turn."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=1, max_size=1,
                                       statement_cache_size=0) as store:
        cid = (await store.create_conversation("alice")).id
        async with store.turn("alice", cid) as turn:
            await turn.append([user("q")])
            # Another request runs on the only pooled connection meanwhile.
            other = await store.create_conversation("alice")
            await store.append_message("alice", other.id, user("elsewhere"))
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'") == 0
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'conversations' AND l.pid <> pg_backend_pid()") == 0
            await turn.append([assistant("a")])
        assert [m.content for m in (await store.list_messages("alice", cid)).items] == [
            "q", "a"]


async def test_a_turn_on_a_missing_or_foreign_conversation(store: ChatStore) -> None:
    cid = await fill(store, "alice", 1)
    with pytest.raises(NotFound):
        async with store.turn("bob", cid):
            pass
    with pytest.raises(NotFound):
        async with store.turn("alice", uuid.uuid4()):
            pass
    # Deleted during the turn: its calls, and ending it, say so.
    with pytest.raises(NotFound):
        async with store.turn("alice", cid) as turn:
            await store.delete_conversation("alice", cid)
            with pytest.raises(NotFound):
                await turn.append([user("into the void")])
            with pytest.raises(NotFound):
                await turn.renew()


# -- create with messages ------------------------------------------------------------------


async def test_create_conversation_with_its_first_messages(store: ChatStore,
                                                           conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice", title="t",
                                           messages=[user("hi"), assistant("hello")])
    assert (conv.message_count, conv.revision) == (2, 1)
    assert [m.content for m in (await store.list_messages("alice", conv.id)).items] == [
        "hi", "hello"]
    before = await snapshot(conn)
    with pytest.raises(InvalidInput, match=r"messages\[1\]"):
        await store.create_conversation("alice", messages=[user("ok"), {"role": "tool"}])
    with pytest.raises(NotFound):
        await store.create_conversation("ghost", messages=[user("hi")])
    with pytest.raises(InvalidInput):
        await store.create_conversation("alice", messages=[])
    assert await snapshot(conn) == before


# -- lossless items ------------------------------------------------------------------------


async def test_items_round_trip_and_project(store: ChatStore, conn: asyncpg.Connection) -> None:
    cid = (await store.create_conversation("alice")).id
    items = [
        {"role": "user", "content": "add milk ünïcode ✓ \U0001f95b"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}],
         "encrypted_content": "gAAAA" + "x" * 100},
        {"type": "function_call", "call_id": "c1", "name": "add_task",
         "arguments": "{\"title\": \"milk\"}", "id": "__fake_id__", "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "list_tasks", "arguments": "{}",
         "id": "__fake_id__", "status": "completed"},
        {"type": "function_call_output", "call_id": "c1", "output": "{\"ok\": true}"},
        {"type": "function_call_output", "call_id": "c2", "output": "[]"},
        {"type": "message", "id": "__fake_id__", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Added.", "annotations": [],
                      "logprobs": []}]},
        {"type": "future_thing",
         "nested": {"deep": [[{"a": None, "b": 1.5e-300, "c": 12345.678, "d": 2**70,
                               "e": 1.0}]]}},
    ]
    stored = await store.append_messages("alice", cid, [{"item": i} for i in items])
    assert [m.item for m in stored] == items
    read = (await store.list_messages("alice", cid, limit=None)).items
    assert [m.item for m in read] == items
    assert [m.role.value if m.role else None for m in read] == [
        "user", None, "assistant", "assistant", "tool", "tool", "assistant", None]
    assert await conn.fetchval(
        "SELECT count(*) FROM messages WHERE item->>'id' = '__fake_id__'") == 3
    # Search and psql see the projection.
    assert [m.seq for m in await store.search_messages("alice", "milk")] == [1]
    chat = to_openai_messages(await store.context_messages("alice", cid))
    assert [c["role"] for c in chat] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["id"] for c in chat[1]["tool_calls"]] == ["c1", "c2"]


async def test_a_window_never_splits_parallel_calls(store: ChatStore) -> None:
    """The issue's case: parallel calls as separate rows and a token budget that cuts
    between them; the window must not start with an output whose call fell outside."""
    cid = (await store.create_conversation("alice")).id
    await store.append_messages("alice", cid, [
        {"item": {"role": "user", "content": "two things"}, "token_count": 40},
        {"item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
         "token_count": 40},
        {"item": {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
         "token_count": 40},
        {"item": {"type": "function_call_output", "call_id": "c1", "output": "1"},
         "token_count": 30},
        {"item": {"type": "function_call_output", "call_id": "c2", "output": "2"},
         "token_count": 30},
        {"item": {"role": "assistant", "content": "done"}, "token_count": 30},
    ])
    window = await store.context_messages("alice", cid, max_tokens=140)
    calls = {c["id"] for m in window for c in m.tool_calls or ()}
    results = {m.tool_call_id for m in window if m.role == "tool"}
    assert results <= calls and calls <= results
    assert [m.seq for m in window] == [3, 5, 6]
    # A call whose result is not stored yet stays out of the window too.
    await store.append_message("alice", cid, {"item": {
        "type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"}})
    window = await store.context_messages("alice", cid)
    assert "c3" not in {c["id"] for m in window for c in m.tool_calls or ()}


# -- the caller's transaction --------------------------------------------------------------


async def test_using_the_callers_transaction(store: ChatStore, conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE tasks (id serial PRIMARY KEY, title text NOT NULL)")
    cid = await fill(store, "alice", 1)
    tool_result = {"role": "tool", "content": "added", "tool_call_id": "c"}

    async with store.pool.acquire() as own:
        # Rolled back: neither the task nor the message.
        tx = own.transaction()
        await tx.start()
        await own.execute("INSERT INTO tasks (title) VALUES ('milk')")
        await store.using(own).append_message("alice", cid, tool_result)
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
        assert (await store.get_conversation("alice", cid)).message_count == 1

        # Committed: both. A chatstore error inside leaves the caller's transaction usable.
        async with own.transaction():
            await own.execute("INSERT INTO tasks (title) VALUES ('milk')")
            with pytest.raises(StaleRevision):
                await store.using(own).append_message("alice", cid, user("x"),
                                                      expected_revision=99)
            # A statement that fails in the database (a row in the way of the next seq) is
            # rolled back to chatstore's savepoint, not the caller's whole transaction.
            await own.execute("INSERT INTO messages (user_id, conversation_id, seq, role, "
                              "content) VALUES ('alice', $1, 2, 'user', 'in the way')", cid)
            with pytest.raises(ChatStoreError, match="out of step"):
                await store.using(own).append_message("alice", cid, user("x"))
            await own.execute("DELETE FROM messages WHERE content = 'in the way'")
            stored = await store.using(own).append_message("alice", cid, tool_result | {
                "tool_call_id": "c2"})
            # A keyed append (a savepoint) in the caller's transaction, too.
            await store.using(own).append_messages("alice", cid, [
                user("k1", idempotency_key="k1")])
        assert stored.seq == 2
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
        assert (await store.get_conversation("alice", cid)).message_count == 3

    # A turn's appends can join the caller's transaction as well.
    async with store.turn("alice", cid) as turn, store.pool.acquire() as own, own.transaction():
        await own.execute("INSERT INTO tasks (title) VALUES ('bread')")
        await turn.using(own).append([tool_result | {"tool_call_id": "c3"}])
    assert await conn.fetchval("SELECT count(*) FROM tasks") == 2


# -- write-path fixes ----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
@pytest.mark.parametrize("borrowed", [False, True], ids=["connect", "borrowed pool"])
async def test_concurrent_appends_under_a_stricter_default_isolation(
        db_url: str, conn: asyncpg.Connection, level: str, borrowed: bool) -> None:
    """Writers pin READ COMMITTED themselves: 400 concurrent appends all land, gap-free,
    whatever default_transaction_isolation the database has."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    dbname = await conn.fetchval("SELECT current_database()")
    await conn.execute(f"ALTER DATABASE {dbname} SET default_transaction_isolation = "
                       f"'{level}'")
    if borrowed:
        pool = await asyncpg.create_pool(db_url, min_size=8, max_size=8,
                                         init=chatstore.init_connection)
        store = ChatStore(pool)
    else:
        store = await chatstore.connect(db_url, min_size=8, max_size=8)
        pool = store.pool
    try:
        assert await pool.fetchval("SHOW default_transaction_isolation") == (
            level if borrowed else "read committed")
        cid = (await store.create_conversation("alice")).id

        async def writer(w: int) -> None:
            for i in range(50):
                if i % 10 == 0:
                    async with store.turn("alice", cid, wait_seconds=30) as turn:
                        await turn.append([user(f"t{w}-{i}")])
                    continue
                message = user(f"w{w}-{i}")
                if i % 10 == 5:
                    message["idempotency_key"] = f"{w}-{i}"
                while True:  # a turn may hold the conversation for a moment
                    try:
                        await store.append_message("alice", cid, message)
                        break
                    except ConversationBusy:
                        await asyncio.sleep(0.005)

        await asyncio.gather(*(writer(w) for w in range(8)))
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", cid)]
        assert seqs == list(range(1, 401))
        conv = await store.get_conversation("alice", cid)
        assert conv.message_count == 400
    finally:
        await pool.close()


async def test_updated_at_never_moves_backward(store: ChatStore, conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 1)
    async with store.pool.acquire() as old, old.transaction():
        # This transaction's now() is older than the append below.
        await old.fetchval("SELECT now()")
        await asyncio.sleep(0.05)
        newer = (await store.append_message("alice", cid, user("newer"))).created_at
        await store.using(old).append_message("alice", cid, user("older clock"))
    conv = await store.get_conversation("alice", cid)
    assert conv.updated_at >= newer


async def test_a_counter_out_of_step_is_an_error_that_changes_nothing(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    cid = await fill(store, "alice", 2)
    # A row written behind chatstore's back, at the seq the next append would take.
    await conn.execute("INSERT INTO messages (user_id, conversation_id, seq, role, content) "
                       "VALUES ('alice', $1, 3, 'user', 'sneaky')", cid)
    before = await snapshot(conn)
    with pytest.raises(ChatStoreError, match="out of step") as caught:
        await store.append_message("alice", cid, user("x"))
    assert "sneaky" not in str(caught.value)
    assert await snapshot(conn) == before
    # A counter ahead of the rows: pop finds no message at message_count.
    await conn.execute("DELETE FROM messages WHERE seq >= 2 AND conversation_id = $1", cid)
    before = await snapshot(conn)
    with pytest.raises(ChatStoreError, match="out of step"):
        await store.pop_message("alice", cid)
    assert await snapshot(conn) == before


async def test_every_sdk_input_item_type_round_trips(store: ChatStore) -> None:
    """Every input item type of the installed OpenAI SDK (what the Agents SDK stores), one
    by one and all in one batch: read back equal, projected as docs/api.md says."""
    samples = every_input_item()
    assert len(samples) >= 25, sorted(samples)
    cid = (await store.create_conversation("alice")).id
    batch = await store.append_messages("alice", cid, [{"item": i} for i in samples.values()])
    single = [await store.append_message("alice", cid, {"item": i}) for i in samples.values()]
    read = (await store.list_messages("alice", cid, limit=None)).items
    assert [m.item for m in read] == [*samples.values(), *samples.values()]
    assert [m.item for m in batch] == [m.item for m in single] == list(samples.values())
    assert to_items(read) == [*samples.values(), *samples.values()]
    roles = {name: m.role.value if m.role else None for name, m in zip(samples, batch,
                                                                       strict=True)}
    chat_form = {"EasyInputMessageParam": "user", "Message": "user",
                 "ResponseOutputMessageParam": "assistant",
                 "ResponseFunctionToolCallParam": "assistant", "FunctionCallOutput": "tool",
                 "ResponseCustomToolCallParam": "assistant",
                 "ResponseCustomToolCallOutputParam": "tool"}
    assert roles == {name: chat_form.get(name) for name in samples}


async def test_export_and_import_keep_items_and_revisions(
        store: ChatStore, new_database: Callable[..., str]) -> None:
    cid = (await store.create_conversation("alice")).id
    await store.append_messages("alice", cid, [
        {"item": {"role": "user", "content": "hi"}},
        {"item": {"type": "reasoning", "id": "rs", "summary": []}},
        {"role": "assistant", "content": "hello"},
    ])
    await store.update_conversation("alice", cid, title="t")
    lines = [line async for line in export_user(store, "alice")]
    target_url = new_database()
    async with await chatstore.connect(target_url) as target:
        report = await import_file(target, lines, create_users=True)
        assert report.messages_imported == 3
        again = [line async for line in export_user(target, "alice")]
        conv = await target.get_conversation("alice", cid)
        read = (await target.list_messages("alice", cid, limit=None)).items
    assert again == lines
    assert conv.revision == 2
    assert [m.item for m in read] == [{"role": "user", "content": "hi"},
                                      {"type": "reasoning", "id": "rs", "summary": []}, None]
