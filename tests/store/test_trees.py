"""Conversation trees (fork, edit, regenerate, alternatives, the current version) against a
real PostgreSQL: forks share rows and never copy them, and nothing one conversation of a tree
does changes what another reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatstore
from chatstore import (
    ChatStore,
    Conflict,
    ConversationBusy,
    InvalidInput,
    NotFound,
)


def said(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)]


async def history(store: ChatStore, cid: uuid.UUID, user: str = "alice") -> list[str]:
    """The conversation's history as its contents, after checking that every read of it
    agrees: the whole history, pages both ways, newest N, the context window."""
    page = await store.list_messages(user, cid, limit=None)
    whole = [m.content or "" for m in page.items]
    assert [m.seq for m in page.items] == list(range(1, len(whole) + 1))
    assert all(m.conversation_id == cid for m in page.items)
    assert (await store.get_conversation(user, cid)).message_count == len(whole)
    newest = await store.list_messages(user, cid, limit=3)
    assert [m.content for m in newest.items] == whole[-3:]
    far = await store.list_messages(user, cid, limit=3, before=2**31 - 1)
    assert [m.content for m in far.items] == whole[-3:]
    assert (await store.list_messages(user, cid, limit=3, after=2**31 - 2)).items == []
    if len(whole) > 2:
        middle = len(whole) // 2
        before = await store.list_messages(user, cid, limit=2, before=middle + 1)
        assert [m.content for m in before.items] == whole[max(0, middle - 2):middle]
        after = await store.list_messages(user, cid, limit=2, after=middle)
        assert [m.content for m in after.items] == whole[middle:middle + 2]
    window = await store.context_messages(user, cid, max_tokens=10_000)
    assert [m.content for m in window] == whole
    return whole


async def row_count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


# -- fork ----------------------------------------------------------------------------------

async def test_fork_shares_rows_and_reads_like_a_conversation(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    source = await store.create_conversation("alice", title="plan",
                                             messages=said(*"abcdef"))
    messages_before = await row_count(conn, "messages")
    fork = await store.fork("alice", source.id, at_seq=4)
    assert await row_count(conn, "messages") == messages_before  # nothing copied
    assert await row_count(conn, "conversations") == 2
    assert (fork.root_id, fork.parent_id, fork.forked_at) == (source.id, source.id, 4)
    assert fork.title == "plan" and fork.message_count == 4 and fork.current_id == fork.id
    assert await history(store, fork.id) == list("abcd")

    await store.append_messages("alice", fork.id, said("X", "Y"))
    assert await history(store, fork.id) == [*"abcd", "X", "Y"]
    assert await history(store, source.id) == list("abcdef")
    again = await store.get_conversation("alice", source.id)
    assert (again.revision, again.root_id, again.parent_id, again.current_id) == (
        source.revision, source.id, None, fork.id)

    found = await store.search_messages("alice", "b", conversation_id=fork.id)
    assert [(m.conversation_id, m.seq) for m in found] == [(fork.id, 2)]
    assert [m.conversation_id for m in
            await store.search_messages("alice", "X")] == [fork.id]


async def test_fork_with_messages_is_atomic_and_checks_its_arguments(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    source = await store.create_conversation("alice", messages=said("a", "b"))
    with pytest.raises(InvalidInput) as bad:
        await store.fork("alice", source.id, at_seq=1,
                         messages=[{"role": "user", "content": "ok"}, {"role": "nobody"}])
    assert bad.value.field.startswith("messages[1]")
    with pytest.raises(InvalidInput) as too_far:
        await store.fork("alice", source.id, at_seq=3)
    assert too_far.value.field == "at_seq"
    with pytest.raises(InvalidInput):
        await store.fork("alice", source.id, at_seq=-1)
    assert await row_count(conn, "conversations") == 1
    edited = await store.fork("alice", source.id, at_seq=0, title="new", metadata={"k": 1},
                              messages=[{"role": "user", "content": "A"}])
    assert edited.title == "new" and edited.metadata == {"k": 1}
    assert edited.revision == 1 and await history(store, edited.id) == ["A"]


async def test_new_chat_is_a_tree_of_its_own(store: ChatStore) -> None:
    source = await store.create_conversation("alice", messages=said(*"abc"))
    copy = await store.fork("alice", source.id, at_seq=2, new_chat=True)
    assert (copy.root_id, copy.parent_id, copy.forked_at, copy.current_id) == (
        copy.id, None, None, copy.id)
    assert (await store.get_conversation("alice", source.id)).current_id == source.id
    await store.delete_conversation("alice", source.id)
    assert await history(store, copy.id) == list("ab")
    listed = await store.list_conversations("alice")
    assert [c.id for c in listed.items] == [copy.id]


async def test_list_conversations_shows_each_tree_once_by_its_latest_activity(
        store: ChatStore) -> None:
    first = await store.create_conversation("alice", messages=said("a"))
    second = await store.create_conversation("alice", messages=said("b"))
    fork = await store.fork("alice", first.id, at_seq=1)
    await store.append_message("alice", fork.id, {"role": "assistant", "content": "c"})
    trees = await store.list_conversations("alice")
    assert [(c.id, c.current_id) for c in trees.items] == [(first.id, fork.id),
                                                           (second.id, second.id)]
    everything = await store.list_conversations("alice", forks=True)
    assert {c.id for c in everything.items} == {first.id, second.id, fork.id}
    paged = await store.list_conversations("alice", limit=1)
    assert isinstance(paged.next_cursor, str)
    rest = await store.list_conversations("alice", limit=1, cursor=paged.next_cursor)
    assert [c.id for c in paged.items + rest.items] == [first.id, second.id]
    assert rest.next_cursor is None


async def test_fork_during_a_turn_only_up_to_its_start(store: ChatStore) -> None:
    source = await store.create_conversation("alice", messages=said("a", "b"))
    async with store.turn("alice", source.id) as turn:
        await turn.append(said("c"))
        fork = await store.fork("alice", source.id, at_seq=2)
        with pytest.raises(ConversationBusy):
            await store.fork("alice", source.id, at_seq=3)
        await turn.abort()
    assert await history(store, fork.id) == ["a", "b"]


# -- shared rows never change ----------------------------------------------------------------

async def test_every_mutation_of_a_source_leaves_its_forks_as_they_were(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    source = await store.create_conversation("alice", messages=said(*"abcdef"))
    at4 = await store.fork("alice", source.id, at_seq=4, messages=said("x"))
    at6 = await store.fork("alice", source.id, at_seq=6)
    deep = await store.fork("alice", at4.id, at_seq=5, messages=said("y"))
    expected = {at4.id: [*"abcd", "x"], at6.id: list("abcdef"), deep.id: [*"abcd", "x", "y"]}

    async def forks_unchanged() -> None:
        for cid, contents in expected.items():
            assert await history(store, cid) == contents

    popped = await store.pop_message("alice", source.id)
    assert popped is not None and (popped.content, popped.seq) == ("f", 6)
    assert await history(store, source.id) == list("abcde")
    await forks_unchanged()
    await store.append_message("alice", source.id, {"role": "user", "content": "g"})
    assert await history(store, source.id) == [*"abcde", "g"]
    await forks_unchanged()
    async with store.turn("alice", source.id) as turn:
        await turn.append(said("t"))
        await turn.abort()
    await forks_unchanged()
    assert await store.clear_messages("alice", source.id) == 6
    assert await history(store, source.id) == []
    await forks_unchanged()
    await store.delete_conversation("alice", at4.id)  # deep was forked from it: gone too
    with pytest.raises(NotFound):
        await store.get_conversation("alice", deep.id)
    assert await history(store, at6.id) == list("abcdef")
    # every row still stored is read by someone: nothing leaked
    assert await row_count(conn, "messages") == 6


async def test_mutations_of_a_fork_leave_its_source_as_it_was(store: ChatStore) -> None:
    source = await store.create_conversation("alice", messages=said(*"abcd"))
    fork = await store.fork("alice", source.id, at_seq=3)
    grandchild = await store.fork("alice", fork.id, at_seq=3)
    for _ in range(2):  # into the shared part
        await store.pop_message("alice", fork.id)
    assert await history(store, fork.id) == ["a"]
    await store.append_message("alice", fork.id, {"role": "user", "content": "z"})
    assert await history(store, fork.id) == ["a", "z"]
    assert await history(store, source.id) == list("abcd")
    assert await history(store, grandchild.id) == list("abc")
    await store.clear_messages("alice", fork.id)
    assert await history(store, source.id) == list("abcd")
    assert await history(store, grandchild.id) == list("abc")


async def test_expired_turn_on_a_source_leaves_forks_alone(store: ChatStore) -> None:
    source = await store.create_conversation("alice", messages=said("a", "b"))
    fork = await store.fork("alice", source.id, at_seq=2)
    with pytest.raises(Conflict):
        async with store.turn("alice", source.id, lease_seconds=0.1) as stalled:
            await stalled.append(said("lost"))
            await asyncio.sleep(0.3)
            async with store.turn("alice", source.id) as taker:  # takes over: "lost" goes
                await taker.append(said("won"))
            await stalled.append(said("late"))  # lease lost
    assert await history(store, source.id) == ["a", "b", "won"]
    assert await history(store, fork.id) == ["a", "b"]


async def test_deleting_a_root_deletes_its_tree(store: ChatStore,
                                                conn: asyncpg.Connection) -> None:
    source = await store.create_conversation("alice", messages=said("a", "b"))
    fork = await store.fork("alice", source.id, at_seq=1, messages=said("c"))
    await store.fork("alice", fork.id, at_seq=2)
    await store.delete_conversation("alice", source.id)
    assert await row_count(conn, "conversations") == 0
    assert await row_count(conn, "messages") == 0


async def test_deleting_the_current_fork_moves_current_to_its_parent(
        store: ChatStore) -> None:
    source = await store.create_conversation("alice", messages=said("a", "b"))
    fork = await store.fork("alice", source.id, at_seq=1)
    child = await store.fork("alice", fork.id, at_seq=1)
    assert (await store.get_conversation("alice", source.id)).current_id == child.id
    await store.delete_conversation("alice", fork.id)
    assert (await store.get_conversation("alice", source.id)).current_id == source.id


# -- edit and regenerate through a turn -------------------------------------------------------

async def test_regenerate_and_edit_through_turns(store: ChatStore,
                                                 conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice", messages=said("q1", "a1", "q2", "a2"))
    async with store.turn("alice", chat.id, fork_at=3) as regen:
        assert regen.conversation_id != chat.id
        # not current while the turn runs: never a half-made version
        assert (await store.get_conversation("alice", chat.id)).current_id == chat.id
        await regen.append([{"role": "assistant", "content": "a2'"}])
    assert (await store.get_conversation("alice", chat.id)).current_id == regen.conversation_id
    assert await history(store, regen.conversation_id) == ["q1", "a1", "q2", "a2'"]

    async with store.turn("alice", regen.conversation_id, fork_at=2) as edit:
        await edit.append(said("q2 edited", "a2 again"))
    assert await history(store, edit.conversation_id) == ["q1", "a1", "q2 edited", "a2 again"]

    versions = await store.alternatives("alice", regen.conversation_id, 4)
    assert [(v.message.content, v.current) for v in versions] == [("a2", False),
                                                                  ("a2'", True)]
    assert [v.conversation_id for v in versions] == [chat.id, regen.conversation_id]
    assert versions[1].message.conversation_id == regen.conversation_id
    third = await store.alternatives("alice", chat.id, 3)
    assert [(v.message.content, v.current, v.conversation_id) for v in third] == [
        ("q2", True, regen.conversation_id), ("q2 edited", False, edit.conversation_id)]
    assert [v.message.content for v in await store.alternatives("alice", chat.id, 1)] == [
        "q1"]

    conversations = await row_count(conn, "conversations")
    with pytest.raises(RuntimeError):
        async with store.turn("alice", chat.id, fork_at=1) as aborted:
            await aborted.append(said("gone"))
            raise RuntimeError("the model failed")
    assert await row_count(conn, "conversations") == conversations  # no fork left behind
    with pytest.raises(NotFound):
        await store.get_conversation("alice", aborted.conversation_id)
    assert (await store.get_conversation("alice", chat.id)).current_id == edit.conversation_id


async def test_alternatives_checks_seq(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("a"))
    for seq in (0, 2):
        with pytest.raises(InvalidInput) as bad:
            await store.alternatives("alice", chat.id, seq)
        assert bad.value.field == "seq"


async def test_twenty_concurrent_regenerations(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("q", "a"))

    async def regenerate(n: int) -> uuid.UUID:
        async with store.turn("alice", chat.id, fork_at=1) as turn:
            await asyncio.sleep(0.01 * (n % 3))
            await turn.append([{"role": "assistant", "content": f"a{n}"}])
        return turn.conversation_id

    forks = await asyncio.gather(*(regenerate(n) for n in range(20)))
    assert len(set(forks)) == 20
    root = await store.get_conversation("alice", chat.id)
    assert root.current_id in forks
    versions = await store.alternatives("alice", chat.id, 2)
    assert sorted(v.message.content or "" for v in versions) == sorted(
        ["a", *(f"a{n}" for n in range(20))])
    assert len({v.conversation_id for v in versions}) == 21
    assert [v.current for v in versions].count(True) == 1
    for n, fork in enumerate(forks):
        assert await history(store, fork) == ["q", f"a{n}"]


async def test_set_current_with_expected_current(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("q", "a"))
    one = await store.fork("alice", chat.id, at_seq=1, messages=said("b"))
    two = await store.fork("alice", chat.id, at_seq=1, messages=said("c"))
    root = await store.set_current("alice", one.id, expected_current=two.id)
    assert root.id == chat.id and root.current_id == one.id
    revision = (await store.get_conversation("alice", one.id)).revision
    with pytest.raises(Conflict):
        await store.set_current("alice", chat.id, expected_current=two.id)
    assert (await store.get_conversation("alice", chat.id)).current_id == one.id
    assert (await store.get_conversation("alice", one.id)).revision == revision
    assert (await store.set_current("alice", chat.id)).current_id == chat.id
    with pytest.raises(InvalidInput) as bad:
        await store.set_current("alice", chat.id, expected_current="nope")
    assert bad.value.field == "expected_current"


async def test_a_fork_fifty_deep(store: ChatStore) -> None:
    cid = (await store.create_conversation("alice", messages=said("m0"))).id
    expected = ["m0"]
    for level in range(1, 51):
        fork = await store.fork("alice", cid, at_seq=len(expected),
                                messages=[{"role": "user", "content": f"m{level}"}])
        cid = fork.id
        expected.append(f"m{level}")
    assert await history(store, cid) == expected
    assert [m.content for m in (await store.list_messages("alice", cid, limit=5,
                                                          before=30)).items] == expected[24:29]


async def test_ownership_of_every_tree_call(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("q", "a"))
    fork = await store.fork("alice", chat.id, at_seq=1)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.fork("bob", chat.id, at_seq=1),
        lambda: store.fork("bob", fork.id, at_seq=0, new_chat=True),
        lambda: store.alternatives("bob", chat.id, 1),
        lambda: store.set_current("bob", fork.id),
        lambda: store.list_messages("bob", fork.id),
        lambda: store.delete_conversation("bob", fork.id),
        lambda: store.pop_message("bob", fork.id),
        lambda: store.fork("alice", uuid.uuid4(), at_seq=0),
        lambda: store.set_current("alice", uuid.uuid4()),
        lambda: store.alternatives("alice", uuid.uuid4(), 1),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()

    async def bob_turn() -> None:
        async with store.turn("bob", chat.id, fork_at=1):
            pass

    with pytest.raises(NotFound):
        await bob_turn()
    assert (await store.get_conversation("alice", chat.id)).current_id == fork.id
    assert (await store.list_conversations("bob", forks=True)).items == []


# -- against a model of paths ------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("fork"), st.integers(0, 99), st.integers(0, 99), st.integers(0, 2)),
    st.tuples(st.just("append"), st.integers(0, 99), st.integers(1, 3)),
    st.tuples(st.just("pop"), st.integers(0, 99)),
    st.tuples(st.just("clear"), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.integers(0, 99)),
    st.tuples(st.just("abort"), st.integers(0, 99), st.integers(1, 2)),
    st.tuples(st.just("fork_abort"), st.integers(0, 99), st.integers(0, 99)),
), min_size=1, max_size=14)


async def run_against_model(db_url: str, user: str, ops: list[tuple[Any, ...]]) -> None:
    async with await chatstore.connect(db_url, min_size=1, max_size=2) as store:
        await store.call_path.pool.execute("INSERT INTO users (id) VALUES ($1)", user)
        root = await store.create_conversation(user, messages=said("r1", "r2", "r3"))
        paths: dict[uuid.UUID, list[str]] = {root.id: ["r1", "r2", "r3"]}
        parents: dict[uuid.UUID, uuid.UUID | None] = {root.id: None}
        for counter, op in enumerate(ops, 1):
            alive = sorted(paths)
            cid = alive[op[1] % len(alive)]
            if op[0] == "fork":
                at = op[2] % (len(paths[cid]) + 1)
                new = [f"f{counter}.{i}" for i in range(op[3])]
                fork = await store.fork(user, cid, at_seq=at, messages=said(*new) or None)
                paths[fork.id], parents[fork.id] = paths[cid][:at] + new, cid
            elif op[0] == "append":
                new = [f"a{counter}.{i}" for i in range(op[2])]
                await store.append_messages(user, cid, said(*new))
                paths[cid] += new
            elif op[0] == "pop":
                popped = await store.pop_message(user, cid)
                assert (popped.content if popped else None) == (
                    paths[cid].pop() if paths[cid] else None)
            elif op[0] == "clear":
                assert await store.clear_messages(user, cid) == len(paths[cid])
                paths[cid] = []
            elif op[0] == "delete":
                await store.delete_conversation(user, cid)
                doomed = {cid}
                while True:
                    more = {c for c, p in parents.items() if p in doomed} - doomed
                    if not more:
                        break
                    doomed |= more
                for gone in doomed:
                    del paths[gone], parents[gone]
                if not paths:
                    return
            elif op[0] == "abort":
                async with store.turn(user, cid) as turn:
                    await turn.append(said(*(f"t{i}" for i in range(op[2]))))
                    await turn.abort()
            elif op[0] == "fork_abort":
                with pytest.raises(LookupError):
                    async with store.turn(user, cid,
                                          fork_at=op[2] % (len(paths[cid]) + 1)) as turn:
                        await turn.append(said("lost"))
                        raise LookupError
            for member, contents in paths.items():
                assert await history(store, member, user) == contents, (op, member)
            listed = await store.list_conversations(user, forks=True, limit=200)
            assert {c.id for c in listed.items} == set(paths)
        # every stored row is read by some conversation: nothing leaked, nothing copied
        stored = await store.call_path.pool.fetchval(
            "SELECT count(*) FROM messages WHERE user_id = $1", user)
        distinct = len({text for contents in paths.values() for text in contents})
        assert stored == distinct


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_tree_operations_match_a_model_of_paths(db_url: str,
                                                       ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(run_against_model(db_url, f"u-{uuid.uuid4()}", ops))


# -- export and import ---------------------------------------------------------------------------

async def test_export_import_round_trip_of_a_tree(store: ChatStore, new_database: Any) -> None:
    from chatstore.transfer import export_user, import_file

    chat = await store.create_conversation("alice", title="t", messages=said(*"abcd"))
    one = await store.fork("alice", chat.id, at_seq=2, messages=said("x"))
    two = await store.fork("alice", one.id, at_seq=3, messages=said("y"))
    await store.pop_message("alice", chat.id)  # "d": read by nobody else, deleted
    await store.pop_message("alice", one.id)  # "x" is handed to two
    await store.set_current("alice", one.id)
    await store.fork("alice", two.id, at_seq=1, new_chat=True)

    async def snapshot_of(target: ChatStore) -> dict[uuid.UUID, Any]:
        listed = await target.list_conversations("alice", forks=True, limit=200)
        return {c.id: (c.model_dump(), await history(target, c.id)) for c in listed.items}

    before = await snapshot_of(store)
    lines = [line async for line in export_user(store, "alice")]
    other_url = new_database()
    other_conn = await asyncpg.connect(other_url)
    await other_conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(other_url, min_size=1, max_size=2) as other:
        report = await import_file(other, lines)
        assert report.conversations_imported == 4
        assert await snapshot_of(other) == before
        assert [line async for line in export_user(other, "alice")] == lines
        assert (await import_file(other, lines)).conversations_imported == 0
        stored = await other_conn.fetchval("SELECT count(*) FROM messages")
        assert stored == await store.call_path.pool.fetchval("SELECT count(*) FROM messages")
        assert [c.id for c in (await other.list_conversations("alice")).items] == [
            c.id for c in (await store.list_conversations("alice")).items]
    await other_conn.close()
