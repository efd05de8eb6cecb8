"""Retention against a real PostgreSQL: expiry (ttl), legal holds, delete_user_data's holds,
and purge, which deletes whole trees that expired or went idle, never a held one or one
with a turn in flight, and never an acknowledged write."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore import (
    ChatStore,
    Conflict,
    ConversationHeld,
    InvalidInput,
    NotFound,
    PurgeReport,
    StaleRevision,
    UserDataDeleted,
    _retention,
)
from chatstore._retention import _Due, _purge_tree, _Tally
from chatstore.transfer import export_user, import_file

from ..conftest import REPO

DAY = timedelta(days=1)


def said(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)]


async def db_now(conn: asyncpg.Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """(conversations, messages) rows in the database."""
    row = await conn.fetchrow("SELECT (SELECT count(*) FROM conversations) AS c, "
                              "(SELECT count(*) FROM messages) AS m")
    assert row is not None
    return int(row["c"]), int(row["m"])


async def age(conn: asyncpg.Connection, root: uuid.UUID, days: float = 10) -> None:
    """Make the tree ``root`` look idle for ``days``: every updated_at of its
    conversations (and nothing else: forks_updated_at, a listing's cache, stays)."""
    await conn.execute(
        "UPDATE conversations SET updated_at = now() - $2 * interval '1 day' "
        "WHERE id = $1 OR root_id = $1", root, days)


async def stored_ids(conn: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await conn.fetch("SELECT id FROM conversations")}


# -- expiry: ttl on create, fork and update -------------------------------------------------

async def test_ttl_sets_the_expiry_everywhere_the_conversation_is_read(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    before = await db_now(conn)
    conv = await store.create_conversation("alice", title="temp", ttl=timedelta(hours=2))
    after = await db_now(conn)
    assert conv.expires_at is not None and conv.held is False
    assert before + timedelta(hours=2) <= conv.expires_at
    assert conv.expires_at <= after + timedelta(hours=2, seconds=1)
    plain = await store.create_conversation("alice", messages=said("hi"))
    assert plain.expires_at is None and plain.held is False
    assert (await store.get_conversation("alice", conv.id)).expires_at == conv.expires_at
    listed = {c.id: c for c in (await store.list_conversations("alice")).items}
    assert listed[conv.id].expires_at == conv.expires_at and listed[plain.id].expires_at is None
    everything = {c.id: c for c in (await store.list_conversations("alice", forks=True)).items}
    assert everything[conv.id].expires_at == conv.expires_at
    with_messages = await store.create_conversation("alice", messages=said("a"), ttl=DAY)
    assert with_messages.expires_at is not None and with_messages.message_count == 1


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1), timedelta(days=-3),
                                 timedelta(days=40_000), 3600, 1.5, "1h", True])
async def test_a_ttl_that_is_not_a_positive_duration_is_refused(
        store: ChatStore, conn: asyncpg.Connection, bad: Any) -> None:
    conv = await store.create_conversation("alice", messages=said("a", "b"), ttl=DAY)
    rows = await counts(conn)
    with pytest.raises(InvalidInput) as refused:
        await store.create_conversation("alice", ttl=bad)
    assert refused.value.field == "ttl"
    with pytest.raises(InvalidInput, match="ttl"):
        await store.fork("alice", conv.id, at_seq=1, ttl=bad)
    with pytest.raises(InvalidInput, match="ttl"):
        await store.fork("alice", conv.id, at_seq=1, ttl=bad, new_chat=True)
    with pytest.raises(InvalidInput, match="ttl"):
        await store.update_conversation("alice", conv.id, ttl=bad)
    assert await counts(conn) == rows
    assert await store.get_conversation("alice", conv.id) == conv


async def test_update_sets_clears_or_keeps_the_expiry(store: ChatStore,
                                                      conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice", title="a", ttl=DAY)
    kept = await store.update_conversation("alice", conv.id, title="b")
    assert kept.expires_at == conv.expires_at and kept.revision == conv.revision + 1
    longer = await store.update_conversation("alice", conv.id, ttl=timedelta(days=30))
    assert longer.expires_at is not None and conv.expires_at is not None
    assert longer.expires_at > conv.expires_at + timedelta(days=28)
    assert longer.revision == kept.revision + 1 and longer.title == "b"
    cleared = await store.update_conversation("alice", conv.id, ttl=None)
    assert cleared.expires_at is None and cleared.revision == longer.revision + 1
    assert (await store.get_conversation("alice", conv.id)).expires_at is None
    again = await store.update_conversation("alice", conv.id, ttl=DAY,
                                            expected_revision=cleared.revision)
    assert again.expires_at is not None
    # a stale revision writes nothing, the expiry included
    with pytest.raises(StaleRevision):
        await store.update_conversation("alice", conv.id, ttl=None,
                                        expected_revision=cleared.revision)
    assert await store.get_conversation("alice", conv.id) == again
    with pytest.raises(NotFound):
        await store.update_conversation("alice", uuid.uuid4(), ttl=DAY)
    with pytest.raises(NotFound):
        await store.update_conversation("bob", conv.id, ttl=None)
    assert (await store.get_conversation("alice", conv.id)).expires_at == again.expires_at


async def test_a_tree_expires_as_one_and_new_chat_starts_its_own_expiry(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    root = await store.create_conversation("alice", messages=said(*"abcd"), ttl=DAY)
    fork = await store.fork("alice", root.id, at_seq=2)
    assert fork.expires_at == root.expires_at  # the tree's, on every member
    # ttl on a fork sets its tree's expiry: the root's, read through every member
    later = await store.fork("alice", fork.id, at_seq=1, ttl=timedelta(days=7))
    assert later.expires_at is not None and root.expires_at is not None
    assert later.expires_at > root.expires_at + timedelta(days=5)
    for cid in (root.id, fork.id, later.id):
        assert (await store.get_conversation("alice", cid)).expires_at == later.expires_at
    listed = {c.id: c.expires_at for c in
              (await store.list_conversations("alice", forks=True)).items}
    assert set(listed.values()) == {later.expires_at}
    # stored on the root only
    stored = {r["id"]: r["expires_at"] for r in
              await conn.fetch("SELECT id, expires_at FROM conversations")}
    assert stored == {root.id: later.expires_at, fork.id: None, later.id: None}
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE conversations SET expires_at = now() WHERE id = $1",
                           fork.id)
    # update on a fork sets (here: clears) the tree's expiry too
    cleared = await store.update_conversation("alice", later.id, ttl=None)
    assert cleared.expires_at is None
    assert (await store.get_conversation("alice", root.id)).expires_at is None
    # a new chat copies no expiry, and takes its own ttl
    copy = await store.fork("alice", fork.id, at_seq=2, new_chat=True)
    assert copy.expires_at is None and copy.root_id == copy.id
    timed = await store.fork("alice", fork.id, at_seq=2, new_chat=True, ttl=timedelta(hours=1))
    assert timed.expires_at is not None and timed.root_id == timed.id
    assert (await store.get_conversation("alice", root.id)).expires_at is None
    # a fork made in a turn keeps the tree's expiry
    await store.update_conversation("alice", root.id, ttl=DAY)
    async with store.turn("alice", root.id, fork_at=1) as turn:
        await turn.append(said("x"))
    made = await store.get_conversation("alice", turn.conversation_id)
    assert made.expires_at == (await store.get_conversation("alice", root.id)).expires_at
    assert made.expires_at is not None


# -- legal holds --------------------------------------------------------------------------

async def test_set_hold_marks_one_conversation_and_changes_nothing_else(
        store: ChatStore) -> None:
    conv = await store.create_conversation("alice", messages=said("a", "b"))
    fork = await store.fork("alice", conv.id, at_seq=1)
    held = await store.set_hold("alice", fork.id, True)
    assert held.held is True and held.id == fork.id
    assert held.model_dump(exclude={"held"}) == (
        await store.get_conversation("alice", fork.id)).model_dump(exclude={"held"})
    assert held.revision == fork.revision and held.updated_at == fork.updated_at
    assert (await store.get_conversation("alice", conv.id)).held is False
    assert (await store.get_conversation("alice", fork.id)).held is True
    lifted = await store.set_hold("alice", fork.id, False)
    assert lifted.held is False
    with pytest.raises(InvalidInput, match="held"):
        await store.set_hold("alice", conv.id, 1)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await store.set_hold("alice", uuid.uuid4(), True)


async def test_another_users_conversation_cannot_be_held_or_released(
        store: ChatStore) -> None:
    conv = await store.create_conversation("alice", messages=said("a"))
    with pytest.raises(NotFound) as missing:
        await store.set_hold("bob", conv.id, True)
    assert "bob" in str(missing.value) and str(conv.id) in str(missing.value)
    assert (await store.get_conversation("alice", conv.id)).held is False
    await store.set_hold("alice", conv.id, True)
    with pytest.raises(NotFound):
        await store.set_hold("bob", conv.id, False)
    assert (await store.get_conversation("alice", conv.id)).held is True
    with pytest.raises(NotFound):
        await store.set_hold("nobody", conv.id, False)


async def test_a_held_conversation_refuses_delete_until_released(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice", messages=said("a", "b", "c"))
    await store.set_hold("alice", conv.id, True)
    rows = await counts(conn)
    with pytest.raises(ConversationHeld) as refused:
        await store.delete_conversation("alice", conv.id)
    assert isinstance(refused.value, Conflict)
    assert refused.value.held_id == conv.id
    assert "legal hold" in str(refused.value) and "nothing was deleted" in str(refused.value)
    assert await counts(conn) == rows
    await store.set_hold("alice", conv.id, False)
    await store.delete_conversation("alice", conv.id)
    assert await counts(conn) == (0, 0)


async def test_a_hold_in_a_tree_protects_what_deleting_would_take(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    root = await store.create_conversation("alice", messages=said(*"abcdef"))
    left = await store.fork("alice", root.id, at_seq=4, messages=said("L"))
    deeper = await store.fork("alice", left.id, at_seq=5, messages=said("D"))
    right = await store.fork("alice", root.id, at_seq=2, messages=said("R"))
    await store.set_hold("alice", deeper.id, True)
    rows = await counts(conn)
    # the root would take the whole tree, left would take deeper: both refuse
    for target in (root.id, left.id, deeper.id):
        with pytest.raises(ConversationHeld) as refused:
            await store.delete_conversation("alice", target)
        assert refused.value.held_id == deeper.id
    assert await counts(conn) == rows
    # a sibling branch goes; what the held fork reads is handed over, not deleted
    history = [m.content for m in (await store.list_messages("alice", deeper.id,
                                                             limit=None)).items]
    await store.delete_conversation("alice", right.id)
    assert [m.content for m in (await store.list_messages("alice", deeper.id,
                                                          limit=None)).items] == history
    await store.set_hold("alice", deeper.id, False)
    await store.delete_conversation("alice", root.id)
    assert await counts(conn) == (0, 0)


async def test_pop_and_clear_refuse_a_held_conversation(store: ChatStore,
                                                        conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice", messages=said("a", "b"))
    fork = await store.fork("alice", conv.id, at_seq=1, messages=said("f"))
    await store.set_hold("alice", conv.id, True)
    rows = await counts(conn)
    with pytest.raises(ConversationHeld, match="popped"):
        await store.pop_message("alice", conv.id)
    with pytest.raises(ConversationHeld, match="cleared"):
        await store.clear_messages("alice", conv.id)
    assert await counts(conn) == rows
    # appends and a fork of a held tree still work; the fork itself is not held
    await store.append_message("alice", conv.id, {"role": "user", "content": "c"})
    assert (await store.pop_message("alice", fork.id)) is not None
    assert [m.content for m in (await store.list_messages("alice", conv.id)).items] == [
        "a", "b", "c"]


async def test_a_turns_fork_held_meanwhile_stays_when_the_turn_aborts(
        store: ChatStore) -> None:
    conv = await store.create_conversation("alice", messages=said("a", "b"))
    with pytest.raises(RuntimeError):
        async with store.turn("alice", conv.id, fork_at=1) as turn:
            await turn.append(said("x"))
            await store.set_hold("alice", turn.conversation_id, True)
            raise RuntimeError("the model failed")
    kept = await store.get_conversation("alice", turn.conversation_id)
    assert kept.held and kept.message_count == 1  # the turn's message went, the fork stayed
    assert (await store.list_conversations("alice", forks=True)).items


async def test_delete_user_data_keeps_held_trees_whole_and_says_so(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    plain = await store.create_conversation("alice", messages=said("a"))
    root = await store.create_conversation("alice", messages=said("b", "c"))
    fork = await store.fork("alice", root.id, at_seq=1, messages=said("d"))
    held_root = await store.create_conversation("alice", messages=said("e"))
    await store.set_hold("alice", fork.id, True)
    await store.set_hold("alice", held_root.id, True)
    bobs = await store.create_conversation("bob", messages=said("bob"))
    result = await store.delete_user_data("alice")
    assert isinstance(result, UserDataDeleted) and isinstance(result, int)
    assert result == 1 and result.conversations_deleted == 1
    assert result.conversations_kept == 3
    assert "conversations_kept=3" in repr(result)
    assert await stored_ids(conn) == {root.id, fork.id, held_root.id, bobs.id}
    assert [m.content for m in (await store.list_messages("alice", fork.id)).items] == [
        "b", "d"]
    with pytest.raises(NotFound):
        await store.get_conversation("alice", plain.id)
    again = await store.delete_user_data("alice")
    assert again == 0 and again.conversations_kept == 3
    await store.set_hold("alice", fork.id, False)
    await store.set_hold("alice", held_root.id, False)
    last = await store.delete_user_data("alice")
    assert last == 3 and last.conversations_kept == 0
    assert await stored_ids(conn) == {bobs.id}


# -- purge --------------------------------------------------------------------------------

async def test_purge_deletes_expired_trees_whole(store: ChatStore,
                                                 conn: asyncpg.Connection) -> None:
    doomed = await store.create_conversation("alice", messages=said(*"abcde"), ttl=DAY)
    fork = await store.fork("alice", doomed.id, at_seq=3, messages=said("x", "y"))
    deeper = await store.fork("alice", fork.id, at_seq=4, messages=said("z"))
    copy = await store.fork("alice", fork.id, at_seq=2, new_chat=True)  # its own tree
    later = await store.create_conversation("bob", messages=said("b"), ttl=DAY)
    forever = await store.create_conversation("bob", messages=said("c"))
    await conn.execute("UPDATE conversations SET expires_at = now() - interval '1 second' "
                       "WHERE id = $1", doomed.id)
    rows = await counts(conn)
    stored = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = ANY($1::uuid[])",
        [doomed.id, fork.id, deeper.id])
    report = await store.purge()
    assert report == PurgeReport(conversations_deleted=3, messages_deleted=stored,
                                 trees_deleted=1)
    assert report.skipped == {"held": 0, "turn_in_flight": 0}
    assert await stored_ids(conn) == {copy.id, later.id, forever.id}
    assert await counts(conn) == (rows[0] - 3, rows[1] - stored)
    for cid in (doomed.id, fork.id, deeper.id):
        with pytest.raises(NotFound):
            await store.get_conversation("alice", cid)
    assert await store.purge() == PurgeReport()
    # expired=False leaves expired trees alone
    await conn.execute("UPDATE conversations SET expires_at = now() WHERE id = $1", later.id)
    assert await store.purge(expired=False) == PurgeReport()
    assert (await store.purge()).trees_deleted == 1


async def test_purge_deletes_idle_trees_and_keeps_active_ones(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    idle = await store.create_conversation("alice", messages=said("a", "b"))
    idle_fork = await store.fork("alice", idle.id, at_seq=1, messages=said("c"))
    await age(conn, idle.id)  # forks_updated_at stays recent: the tree is idle all the same
    active = await store.create_conversation("alice", messages=said("d"))
    old_root = await store.create_conversation("bob", messages=said("e", "f"))
    await age(conn, old_root.id)
    busy_fork = await store.fork("bob", old_root.id, at_seq=1)  # new activity in the tree
    recent = await store.create_conversation("bob", messages=said("g"))
    await age(conn, recent.id, days=2)
    report = await store.purge(idle_for=timedelta(days=5))
    assert (report.conversations_deleted, report.messages_deleted, report.trees_deleted) == (
        2, 3, 1)
    assert await stored_ids(conn) == {active.id, old_root.id, busy_fork.id, recent.id}
    with pytest.raises(NotFound):
        await store.get_conversation("alice", idle_fork.id)
    # a fork's own late activity keeps its tree
    await age(conn, old_root.id)
    await store.update_conversation("bob", busy_fork.id, title="touched")
    assert (await store.purge(idle_for=timedelta(days=5))).trees_deleted == 0
    assert (await store.purge(idle_for=DAY)).trees_deleted == 1  # recent, 2 days idle
    assert await stored_ids(conn) == {active.id, old_root.id, busy_fork.id}
    with pytest.raises(InvalidInput, match="idle_for"):
        await store.purge(idle_for=timedelta(0))


async def test_purge_never_deletes_held_active_or_in_flight_trees(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    held_root = await store.create_conversation("alice", messages=said("a"), ttl=DAY)
    tree = await store.create_conversation("alice", messages=said("b", "c"), ttl=DAY)
    held_fork = await store.fork("alice", tree.id, at_seq=1)
    flying = await store.create_conversation("bob", messages=said("d"), ttl=DAY)
    crashed = await store.create_conversation("bob", messages=said("e"), ttl=DAY)
    unexpired = await store.create_conversation("bob", messages=said("f"), ttl=DAY)
    fresh = await store.create_conversation("bob", messages=said("g"))
    await store.set_hold("alice", held_root.id, True)
    await store.set_hold("alice", held_fork.id, True)
    for cid in (held_root.id, tree.id, flying.id, crashed.id):
        await conn.execute("UPDATE conversations SET expires_at = now() - interval '1 hour' "
                           "WHERE id = $1", cid)
    for cid in (held_root.id, tree.id, flying.id, crashed.id, unexpired.id):
        await age(conn, cid)
    async with store.turn("bob", flying.id, lease_seconds=300) as turn:
        with pytest.raises(NotFound):  # ending it: the conversation was purged
            async with store.turn("bob", crashed.id, lease_seconds=0.1):
                # a turn whose lease ran out: its process died
                await conn.execute("UPDATE conversations SET turn_expires_at = now() - "
                                   "interval '1 minute' WHERE id = $1", crashed.id)
                for dry_run in (True, False):
                    report = await store.purge(idle_for=timedelta(days=5), dry_run=dry_run)
                    assert report.skipped == {"held": 2, "turn_in_flight": 1}, report
                    # crashed (expired, lease ran out) and unexpired (idle) go
                    assert (report.trees_deleted, report.conversations_deleted,
                            report.messages_deleted) == (2, 2, 2)
                    assert report.dry_run is dry_run
        await turn.append(said("still here"))
    assert await stored_ids(conn) == {held_root.id, tree.id, held_fork.id, flying.id,
                                      fresh.id}
    assert [m.content for m in (await store.list_messages("bob", flying.id)).items] == [
        "d", "still here"]
    await store.set_hold("alice", held_fork.id, False)
    # the turn ended: flying goes, and so do the tree and its fork, no longer held
    assert (await store.purge()).conversations_deleted == 3
    assert await stored_ids(conn) == {held_root.id, fresh.id}


async def test_dry_run_deletes_nothing_and_reports_what_purge_then_does(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    rng = random.Random(7)
    for n in range(30):
        user = "alice" if n % 2 else "bob"
        conv = await store.create_conversation(
            user, messages=said(*"abcdefgh"[:rng.randint(1, 8)]),
            ttl=DAY if rng.random() < 0.5 else None)
        if rng.random() < 0.4:
            await store.fork(user, conv.id, at_seq=1, messages=said("f"))
        if rng.random() < 0.6:
            await age(conn, conv.id, days=rng.choice([1, 10]))
        if rng.random() < 0.3:
            await conn.execute("UPDATE conversations SET expires_at = now() WHERE id = $1 "
                               "AND expires_at IS NOT NULL", conv.id)
        if rng.random() < 0.15:
            await store.set_hold(user, conv.id, True)
    rows = await counts(conn)
    seen: list[int] = []
    dry = await store.purge(idle_for=timedelta(days=5), batch_size=4, dry_run=True,
                            progress=seen.append)
    assert await counts(conn) == rows
    assert dry.dry_run and dry.conversations_deleted > 0 and dry.skipped["held"] > 0
    assert sum(seen) == dry.conversations_deleted
    real = await store.purge(idle_for=timedelta(days=5), batch_size=3)
    assert real.model_dump(exclude={"dry_run"}) == dry.model_dump(exclude={"dry_run"})
    assert await counts(conn) == (rows[0] - real.conversations_deleted,
                                  rows[1] - real.messages_deleted)
    # what is left is not due, or held
    again = await store.purge(idle_for=timedelta(days=5), batch_size=100)
    assert again.conversations_deleted == 0 and again.skipped == real.skipped


async def test_purge_skips_a_tree_another_session_holds_and_takes_it_next_time(
        store: ChatStore, db_url: str, conn: asyncpg.Connection) -> None:
    locked = await store.create_conversation("alice", messages=said("a"), ttl=DAY)
    free = await store.create_conversation("alice", messages=said("b"), ttl=DAY)
    await conn.execute("UPDATE conversations SET expires_at = now()")
    other = await asyncpg.connect(db_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM conversations WHERE user_id = 'alice' "
                                "AND id = $1 FOR UPDATE", locked.id)
            report = await asyncio.wait_for(store.purge(), timeout=10)  # never waits
        assert report.skipped == {"held": 0, "turn_in_flight": 0, "locked": 1}
        assert report.trees_deleted == 1
        assert await stored_ids(conn) == {locked.id}
        # a fork row locked elsewhere (an update on it in flight) also keeps the tree
        fork = await store.fork("alice", locked.id, at_seq=1)
        async with other.transaction():
            await other.execute("UPDATE conversations SET title = 'x' "
                                "WHERE user_id = 'alice' AND id = $1", fork.id)
            report = await asyncio.wait_for(store.purge(), timeout=10)
        assert report.skipped.get("locked") == 1 and report.trees_deleted == 0
    finally:
        await other.close()
    assert (await store.purge()).conversations_deleted == 2
    assert await stored_ids(conn) == set()
    del free


async def test_a_tree_written_to_after_selection_is_checked_again_under_the_lock(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    """The candidate scan reads without locks; between it and the tree's lock, a write may
    make the tree no longer due (an append, a new expiry, a hold, a turn): purge reads
    again under the lock and keeps it."""
    now = await db_now(conn)
    conv = await store.create_conversation("alice", messages=said("a"), ttl=DAY)
    await age(conn, conv.id)
    due = _Due(expired_by=now, idle_before=now - timedelta(days=5))  # as the scan saw it

    async def attempt() -> _Tally:
        tally = _Tally()
        async with store.pool.acquire() as c, c.transaction():
            await _purge_tree(c, "alice", conv.id, due, tally)
        return tally

    # written to after the scan: active again, and not expired
    await store.append_message("alice", conv.id, {"role": "user", "content": "new"})
    assert (await attempt()).skipped == {"held": 0, "turn_in_flight": 0, "changed": 1}
    await age(conn, conv.id)
    await store.set_hold("alice", conv.id, True)
    assert (await attempt()).skipped == {"held": 1, "turn_in_flight": 0}
    await store.set_hold("alice", conv.id, False)
    async with store.turn("alice", conv.id):
        assert (await attempt()).skipped == {"held": 0, "turn_in_flight": 1}
    await age(conn, conv.id)
    tally = await attempt()
    assert (tally.trees, tally.conversations, tally.messages) == (1, 1, 2)
    assert await stored_ids(conn) == set()
    assert (await attempt()).skipped == {"held": 0, "turn_in_flight": 0}  # gone: nothing


async def test_purge_loses_no_acknowledged_write(store: ChatStore, conn: asyncpg.Connection,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns on active conversations and appends to idle ones, while purge deletes idle
    trees in small batches: every write that was acknowledged is still there afterwards,
    and every idle tree nobody wrote to is gone. Besides the appends at random times, every
    fifth tree purge is about to lock gets one in the window between purge's scan and its
    lock (the race a re-check under the lock must catch: the tree is kept, "changed")."""
    locking = _retention._purge_tree
    in_window: list[uuid.UUID] = []

    async def racing(conn: Any, user_id: str, root: uuid.UUID, *args: Any) -> None:
        if len(acknowledged.get(root, [None])) == 0 and hash(root) % 5 == 0:
            await store.append_message(user_id, root, {"role": "user", "content": "back"})
            acknowledged[root].append("back")
            in_window.append(root)
        await locking(conn, user_id, root, *args)

    monkeypatch.setattr(_retention, "_purge_tree", racing)
    active = [await store.create_conversation("alice" if n % 2 else "bob",
                                              messages=said("start"))
              for n in range(6)]
    idle = []
    for n in range(60):
        user = "alice" if n % 2 else "bob"
        conv = await store.create_conversation(user, messages=said("old", "older"))
        if n % 3 == 0:
            await store.fork(user, conv.id, at_seq=1, messages=said("branch"))
        await age(conn, conv.id)
        idle.append(conv)
    acknowledged: dict[uuid.UUID, list[str]] = {c.id: [] for c in active + idle}
    lost: list[uuid.UUID] = []
    stop = asyncio.Event()

    async def chat(conv: chatstore.Conversation) -> None:
        n = 0
        while not stop.is_set():
            async with store.turn(conv.user_id, conv.id, wait_seconds=5) as turn:
                await turn.append(said(f"q{n}"))
                await asyncio.sleep(0)
                await turn.append([{"role": "assistant", "content": f"a{n}"}])
            acknowledged[conv.id] += [f"q{n}", f"a{n}"]
            n += 1

    async def revive(rng: random.Random) -> None:
        for conv in rng.sample(idle, 25):
            await asyncio.sleep(rng.random() * 0.02)
            try:
                await store.append_message(conv.user_id, conv.id,
                                           {"role": "user", "content": "back"})
            except NotFound:
                lost.append(conv.id)  # purge got there first: not acknowledged
            else:
                acknowledged[conv.id].append("back")

    chats = [asyncio.create_task(chat(c)) for c in active]
    revived = asyncio.create_task(revive(random.Random(3)))
    reports = []
    for _ in range(3):
        reports.append(await store.purge(idle_for=DAY, batch_size=2))
        await asyncio.sleep(0.01)
    await revived
    stop.set()
    await asyncio.gather(*chats)
    reports.append(await store.purge(idle_for=DAY))
    for conv in active + idle:
        written = acknowledged[conv.id]
        if not written:
            continue
        history = [m.content for m in (await store.list_messages(
            conv.user_id, conv.id, limit=None)).items]
        assert history[-len(written):] == written, (conv.id, written, history)
    kept = await stored_ids(conn)
    assert {c.id for c in active} <= kept
    assert all(conv.id not in kept for conv in idle if not acknowledged[conv.id])
    assert sum(r.trees_deleted for r in reports) == sum(
        1 for conv in idle if not acknowledged[conv.id])
    assert sum(len(v) for v in acknowledged.values()) > 20
    assert in_window and sum(r.skipped.get("changed", 0) for r in reports) >= len(in_window)


async def test_purge_refuses_bad_arguments_and_row_level_security(db_url: str,
                                                                  store: ChatStore) -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        await store.purge(batch_size=0)
    with pytest.raises(InvalidInput, match="idle_for"):
        await store.purge(idle_for=-DAY)
    with pytest.raises(InvalidInput, match="idle_for"):
        await store.purge(idle_for=30)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="expired"):
        await store.purge(expired="yes")  # type: ignore[arg-type]
    assert await store.purge(expired=False) == PurgeReport()
    async with await chatstore.connect(db_url, min_size=1, max_size=2,
                                       row_level_security=True) as rls:
        with pytest.raises(InvalidInput, match="row_level_security"):
            await rls.purge(idle_for=DAY)


# -- export and import --------------------------------------------------------------------

async def test_export_and_import_carry_expiry_and_holds(store: ChatStore,
                                                        new_database: Any) -> None:
    root = await store.create_conversation("alice", messages=said("a", "b"), ttl=DAY)
    fork = await store.fork("alice", root.id, at_seq=1, messages=said("c"))
    await store.set_hold("alice", fork.id, True)
    plain = await store.create_conversation("alice", messages=said("d"))
    lines = [line async for line in export_user(store, "alice")]
    assert len(lines) == 3
    target_url = new_database()
    async with await chatstore.connect(target_url, min_size=1, max_size=2) as target:
        await import_file(target, lines, create_users=True)
        for cid in (root.id, fork.id, plain.id):
            assert await target.get_conversation("alice", cid) == (
                await store.get_conversation("alice", cid))
        assert (await target.get_conversation("alice", fork.id)).held
        assert (await target.get_conversation("alice", fork.id)).expires_at == root.expires_at
        assert [line async for line in export_user(target, "alice")] == lines
        with pytest.raises(ConversationHeld):
            await target.delete_conversation("alice", root.id)


async def test_a_file_from_before_retention_imports_without_expiry_or_hold(
        store: ChatStore) -> None:
    line = ('{"id": "00000000-0000-0000-0000-0000000000aa", "user_id": "alice", '
            '"title": "old", "metadata": {}, "message_count": 1, '
            '"created_at": "2025-01-01T00:00:00+00:00", '
            '"updated_at": "2025-01-01T00:00:00+00:00", "revision": 1, "messages": '
            '[{"role": "user", "content": "hi", "seq": 1, "metadata": {}, '
            '"token_count": null, "idempotency_key": null, '
            '"created_at": "2025-01-01T00:00:00+00:00"}]}')
    report = await import_file(store, [line])
    assert report.conversations_imported == 1
    conv = await store.get_conversation("alice", uuid.UUID(int=0xAA))
    assert conv.expires_at is None and conv.held is False
    assert conv.updated_at == datetime(2025, 1, 1, tzinfo=UTC)
    # and it is idle: purge takes it
    assert (await store.purge(idle_for=timedelta(days=30))).messages_deleted == 1


# -- the docs -----------------------------------------------------------------------------

async def test_the_worked_operator_example_in_the_api_docs_runs(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    """docs/api.md's worked operator example, run as written: the held conversation
    survives delete_conversation and delete_user_data, and the nightly purge takes what
    is due."""
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("### A worked operator example", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    case = await store.create_conversation("alice", messages=said("the case"))
    other = await store.create_conversation("alice", messages=said("other"))
    idle = await store.create_conversation("bob", messages=said("old"))
    await age(conn, idle.id, days=100)
    logged: list[str] = []

    class Log:
        def info(self, message: str, *args: Any) -> None:
            logged.append(message % args)

    namespace: dict[str, Any] = {"store": store, "user_id": "alice",
                                 "case_chat_id": case.id, "log": Log()}
    body = "".join(f"    {line}\n" for line in code.splitlines())
    exec(f"async def example():\n{body}    return locals()\n", namespace)
    done = await namespace["example"]()
    assert logged[0].startswith("kept: conversation") and "legal hold" in logged[0]
    # delete_user_data took alice's other two chats; purge took bob's idle one
    assert done["erased"] == 2 and done["erased"].conversations_kept == 1
    assert logged[1] == ("purged 1 conversations (1 messages); kept {'held': 0, "
                         "'turn_in_flight': 0}")
    assert await stored_ids(conn) == {case.id}
    assert other.id not in await stored_ids(conn)
