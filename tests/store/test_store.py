"""ChatStore against a real PostgreSQL: every method, its results and its errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore import (
    ChatStore,
    Conflict,
    ConnectionLost,
    Conversation,
    InvalidInput,
    Message,
    NewMessage,
    NotFound,
    Role,
    SchemaNotMigrated,
)
from chatstore.models import conversation_from_row, message_from_row, messages_from_rows
from chatstore.sql import QUERIES


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": text, **extra}


async def fill(store: ChatStore, owner: str, n: int) -> uuid.UUID:
    conv = await store.create_conversation(owner)
    await store.append_messages(owner, conv.id, [user(f"m{i}") for i in range(1, n + 1)])
    return conv.id


async def snapshot(conn: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything the chat tables hold, to prove a failed call changed nothing."""
    convs = await conn.fetch("SELECT * FROM conversations ORDER BY user_id, id")
    msgs = await conn.fetch("SELECT * FROM messages ORDER BY user_id, conversation_id, seq")
    return tuple(tuple(r) for r in convs), tuple(tuple(r) for r in msgs)


# -- conversations -----------------------------------------------------------------------


async def test_create_and_get_conversation(store: ChatStore) -> None:
    conv = await store.create_conversation("alice", title="Groceries", metadata={"agent": "todo"})
    assert conv.user_id == "alice" and conv.title == "Groceries"
    assert conv.metadata == {"agent": "todo"} and conv.message_count == 0
    assert conv.created_at.tzinfo is not None and conv.updated_at.tzinfo is not None
    assert await store.get_conversation("alice", conv.id) == conv
    assert await store.get_conversation("alice", str(conv.id)) == conv


async def test_create_conversation_for_unknown_user(store: ChatStore,
                                                    conn: asyncpg.Connection) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        await store.create_conversation("ghost")
    assert await conn.fetchval("SELECT count(*) FROM conversations") == 0


async def test_list_conversations_latest_activity_first_with_cursor(store: ChatStore) -> None:
    ids = [(await store.create_conversation("alice", title=str(i))).id for i in range(5)]
    await store.append_message("alice", ids[1], user("bump"))  # most recent activity now
    await store.create_conversation("bob")

    first = await store.list_conversations("alice", limit=2)
    assert [c.id for c in first.items] == [ids[1], ids[4]]
    assert isinstance(first.next_cursor, str)
    second = await store.list_conversations("alice", limit=2, cursor=first.next_cursor)
    assert [c.id for c in second.items] == [ids[3], ids[2]]
    assert isinstance(second.next_cursor, str)
    third = await store.list_conversations("alice", limit=2, cursor=second.next_cursor)
    assert [c.id for c in third.items] == [ids[0]]
    assert third.next_cursor is None


async def test_list_conversations_empty_and_unknown_user(store: ChatStore) -> None:
    page = await store.list_conversations("bob")
    assert page.items == [] and page.next_cursor is None
    with pytest.raises(NotFound, match="'ghost'"):
        await store.list_conversations("ghost")


async def test_update_conversation(store: ChatStore) -> None:
    conv = await store.create_conversation("alice", title="old", metadata={"a": 1})
    renamed = await store.update_conversation("alice", conv.id, title="new")
    assert renamed.title == "new" and renamed.metadata == {"a": 1}
    assert renamed.updated_at >= conv.updated_at
    remeta = await store.update_conversation("alice", conv.id, metadata={"b": 2})
    assert remeta.title == "new" and remeta.metadata == {"b": 2}
    cleared = await store.update_conversation("alice", conv.id, title=None, metadata=None)
    assert cleared.title is None and cleared.metadata == {}
    assert await store.update_conversation("alice", conv.id) == cleared


async def test_delete_conversation(store: ChatStore, conn: asyncpg.Connection) -> None:
    doomed = await fill(store, "alice", 3)
    kept = await fill(store, "alice", 2)
    await store.delete_conversation("alice", doomed)
    with pytest.raises(NotFound):
        await store.get_conversation("alice", doomed)
    with pytest.raises(NotFound):
        await store.delete_conversation("alice", doomed)
    assert await conn.fetchval("SELECT count(*) FROM messages") == 2
    assert (await store.get_conversation("alice", kept)).message_count == 2


async def test_delete_user_data(store: ChatStore, conn: asyncpg.Connection) -> None:
    await fill(store, "alice", 3)
    await fill(store, "alice", 1)
    bobs = await fill(store, "bob", 2)
    assert await store.delete_user_data("alice") == 2
    assert await conn.fetchval("SELECT count(*) FROM users WHERE id = 'alice'") == 1
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = 'alice'") == 0
    assert (await store.get_conversation("bob", bobs)).message_count == 2
    assert await store.delete_user_data("alice") == 0
    with pytest.raises(NotFound, match="'ghost'"):
        await store.delete_user_data("ghost")


# -- appending and reading ---------------------------------------------------------------


async def test_append_message_moves_counter_and_updated_at(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    first = await store.append_message("alice", conv.id, NewMessage(role=Role.USER,
                                                                    content="hello"))
    assert (first.seq, first.role, first.content, first.user_id) == (1, Role.USER, "hello",
                                                                     "alice")
    assert first.conversation_id == conv.id and first.created_at.tzinfo is not None
    after = await store.get_conversation("alice", conv.id)
    assert after.message_count == 1 and after.updated_at > conv.updated_at


async def test_append_messages_batch_keeps_order_and_fields(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "add_task", "arguments": '{"title": "milk"}'}}
    stored = await store.append_messages("alice", conv.id, [
        {"role": "system", "content": "You manage todos."},
        user("add milk", token_count=3, metadata={"client": "web"}),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"},
        {"role": "assistant", "content": "Added milk."},
    ])
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    assert [m.role for m in stored] == ["system", "user", "assistant", "tool", "assistant"]
    assert stored[1].token_count == 3 and stored[1].metadata == {"client": "web"}
    assert stored[2].tool_calls == [call] and stored[2].content is None
    assert stored[3].tool_call_id == "call_1"
    assert stored[3].to_openai() == {"role": "tool", "content": '{"ok": true}',
                                     "tool_call_id": "call_1"}
    page = await store.list_messages("alice", conv.id)
    assert page.items == stored


async def test_list_messages_pages_backward_and_forward(store: ChatStore) -> None:
    cid = await fill(store, "alice", 7)

    newest = await store.list_messages("alice", cid, limit=3)
    assert [m.seq for m in newest.items] == [5, 6, 7] and newest.next_cursor == 5
    older = await store.list_messages("alice", cid, limit=3, before=newest.next_cursor)
    assert [m.seq for m in older.items] == [2, 3, 4] and older.next_cursor == 2
    oldest = await store.list_messages("alice", cid, limit=3, before=older.next_cursor)
    assert [m.seq for m in oldest.items] == [1] and oldest.next_cursor is None

    forward = await store.list_messages("alice", cid, limit=3, after=0)
    assert [m.seq for m in forward.items] == [1, 2, 3] and forward.next_cursor == 3
    rest = await store.list_messages("alice", cid, limit=4, after=3)
    assert [m.seq for m in rest.items] == [4, 5, 6, 7] and rest.next_cursor is None

    exact = await store.list_messages("alice", cid, limit=7)
    assert len(exact.items) == 7 and exact.next_cursor is None
    assert (await store.list_messages("alice", cid, after=7)).items == []


async def test_list_messages_of_empty_conversation(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    page = await store.list_messages("alice", conv.id)
    assert page.items == [] and page.next_cursor is None


async def test_concurrent_appends_get_consecutive_seqs(store: ChatStore,
                                                       conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice")

    async def writer(w: int) -> None:
        for i in range(200):
            await store.append_message("alice", conv.id, user(f"w{w}-{i}"))

    await asyncio.gather(*(writer(w) for w in range(8)))
    seqs = await conn.fetch("SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq",
                            conv.id)
    assert [r["seq"] for r in seqs] == list(range(1, 1601))
    assert (await store.get_conversation("alice", conv.id)).message_count == 1600
    # Each writer's own messages kept their order.
    contents = [r["content"] for r in await conn.fetch(
        "SELECT content FROM messages WHERE conversation_id = $1 ORDER BY seq", conv.id)]
    for w in range(8):
        mine = [c for c in contents if c.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(200)]


async def test_idempotent_retry_stores_once(store: ChatStore, conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice")
    first = await store.append_message("alice", conv.id, user("pay", idempotency_key="k1"))
    again = await store.append_message("alice", conv.id, user("pay", idempotency_key="k1"))
    assert again == first
    assert (await store.get_conversation("alice", conv.id)).message_count == 1

    # A batch retried after a partial success stores only what is new, in order.
    batch = [user("pay", idempotency_key="k1"), user("more", idempotency_key="k2"),
             user("most", idempotency_key="k3")]
    result = await store.append_messages("alice", conv.id, batch)
    assert [m.seq for m in result] == [1, 2, 3]
    assert await conn.fetchval("SELECT count(*) FROM messages") == 3
    revision = (await store.get_conversation("alice", conv.id)).revision
    assert await store.append_messages("alice", conv.id, batch) == result
    assert (await store.get_conversation("alice", conv.id)).revision == revision

    # A batch mixing keyed and unkeyed messages is refused: its retry could not tell the
    # unkeyed ones from new ones.
    before = await snapshot(conn)
    with pytest.raises(InvalidInput, match="every message carries an idempotency_key"):
        await store.append_messages("alice", conv.id, [user("q", idempotency_key="k9"),
                                                       user("unkeyed")])
    assert await snapshot(conn) == before

    before = await snapshot(conn)
    with pytest.raises(Conflict, match="'k1'"):
        await store.append_message("alice", conv.id, user("different", idempotency_key="k1"))
    assert await snapshot(conn) == before


async def test_concurrent_retries_of_one_key_store_once(store: ChatStore,
                                                        conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice")
    results = await asyncio.gather(*(
        store.append_message("alice", conv.id, user("once", idempotency_key="same"))
        for _ in range(8)))
    assert {m.seq for m in results} == {1}
    assert await conn.fetchval("SELECT count(*) FROM messages") == 1


async def test_compare_and_append(store: ChatStore, conn: asyncpg.Connection) -> None:
    conv = await store.create_conversation("alice")
    assert conv.revision == 0
    await store.append_messages("alice", conv.id, [user("a")], expected_revision=0)
    await store.append_messages("alice", conv.id, [user("b"), user("c")], expected_revision=1)
    assert (await store.get_conversation("alice", conv.id)).revision == 2
    before = await snapshot(conn)
    with pytest.raises(chatstore.StaleRevision, match="at revision 2, not 1") as caught:
        await store.append_message("alice", conv.id, user("stale"), expected_revision=1)
    assert (caught.value.expected, caught.value.current) == (1, 2)
    with pytest.raises(Conflict):
        await store.append_message("alice", conv.id, user("stale", idempotency_key="x"),
                                   expected_revision=1)
    assert await snapshot(conn) == before
    # A keyed compare-and-append stores once; its replay is checked against the revision
    # too (the caller learns the current one from the error).
    landed = await store.append_message("alice", conv.id, user("d", idempotency_key="d"),
                                        expected_revision=2)
    assert landed.seq == 4
    with pytest.raises(chatstore.StaleRevision) as caught:
        await store.append_message("alice", conv.id, user("d", idempotency_key="d"),
                                   expected_revision=2)
    assert caught.value.current == 3
    assert await store.append_message("alice", conv.id, user("d", idempotency_key="d"),
                                      expected_revision=3) == landed
    assert (await store.get_conversation("alice", conv.id)).revision == 3


async def test_pop_and_clear_keep_seqs_gap_free(store: ChatStore) -> None:
    cid = await fill(store, "alice", 3)
    popped = await store.pop_message("alice", cid)
    assert popped is not None and popped.seq == 3 and popped.content == "m3"
    assert (await store.get_conversation("alice", cid)).message_count == 2
    assert (await store.append_message("alice", cid, user("again"))).seq == 3

    assert await store.clear_messages("alice", cid) == 3
    assert (await store.get_conversation("alice", cid)).message_count == 0
    assert await store.pop_message("alice", cid) is None
    assert await store.clear_messages("alice", cid) == 0
    assert (await store.append_message("alice", cid, user("fresh"))).seq == 1


# -- context window ----------------------------------------------------------------------


async def test_context_window_token_budget(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    await store.append_messages("alice", conv.id, [
        user("one", token_count=10), user("two", token_count=10),
        user("three", token_count=10), user("four", token_count=5),
    ])
    def contents(window: list[Message]) -> list[str | None]:
        return [m.content for m in window]

    assert contents(await store.context_messages("alice", conv.id, max_tokens=24)) == [
        "three", "four"]
    assert contents(await store.context_messages("alice", conv.id, max_tokens=25)) == [
        "two", "three", "four"]
    assert len(await store.context_messages("alice", conv.id, max_tokens=35)) == 4
    assert await store.context_messages("alice", conv.id, max_tokens=4) == []


async def test_context_window_counts_missing_token_counts_by_length(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    await store.append_messages("alice", conv.id, [user("x" * 40), user("y" * 8)])
    # 40 characters count 10 tokens, 8 count 2.
    assert [m.content for m in await store.context_messages("alice", conv.id,
                                                            max_tokens=11)] == ["y" * 8]
    assert len(await store.context_messages("alice", conv.id, max_tokens=12)) == 2


async def test_context_window_message_budget(store: ChatStore) -> None:
    cid = await fill(store, "alice", 10)
    window = await store.context_messages("alice", cid, max_messages=4)
    assert [m.seq for m in window] == [7, 8, 9, 10]
    assert [m.seq for m in await store.context_messages("alice", cid)] == list(range(1, 11))
    both = await store.context_messages("alice", cid, max_messages=4, max_tokens=2)
    assert [m.seq for m in both] == [9, 10]


async def test_context_window_keeps_tool_calls_whole(store: ChatStore) -> None:
    conv = await store.create_conversation("alice")
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": "f", "arguments": "{}"}} for i in (1, 2)]
    await store.append_messages("alice", conv.id, [
        user("question", token_count=1),
        {"role": "assistant", "tool_calls": calls, "token_count": 1},
        {"role": "tool", "content": "r1", "tool_call_id": "c1", "token_count": 1},
        {"role": "tool", "content": "r2", "tool_call_id": "c2", "token_count": 1},
        {"role": "assistant", "content": "answer", "token_count": 1},
    ])
    # Budgets that would cut between the call and its results drop the orphaned results.
    for budget in (2, 3):
        window = await store.context_messages("alice", conv.id, max_tokens=budget)
        assert [m.content for m in window] == ["answer"], budget
        window = await store.context_messages("alice", conv.id, max_messages=budget)
        assert [m.content for m in window] == ["answer"], budget
    window = await store.context_messages("alice", conv.id, max_messages=4)
    assert [m.role for m in window] == ["assistant", "tool", "tool", "assistant"]


# -- search ------------------------------------------------------------------------------


async def test_search_messages(store: ChatStore) -> None:
    a = await store.create_conversation("alice")
    b = await store.create_conversation("alice")
    await store.append_messages("alice", a.id, [user("buy oat milk"), user("walk the dog")])
    await store.append_messages("alice", b.id, [user("milk milk milk everywhere"),
                                                user("milk again")])
    bobs = await store.create_conversation("bob")
    await store.append_message("bob", bobs.id, user("bob also wants milk"))

    found = await store.search_messages("alice", "milk")
    assert {m.user_id for m in found} == {"alice"} and len(found) == 3
    assert found[0].content == "milk milk milk everywhere"  # best rank first
    assert [m.content for m in found[1:]] == ["milk again", "buy oat milk"]  # newest first
    only_a = await store.search_messages("alice", "milk", conversation_id=a.id)
    assert [m.content for m in only_a] == ["buy oat milk"]
    assert await store.search_messages("alice", "zebra") == []
    assert await store.search_messages("alice", "!!! ...") == []  # no lexemes: no match
    without_oat = await store.search_messages("alice", "milk -oat")
    assert {m.content for m in without_oat} == {"milk milk milk everywhere", "milk again"}
    assert len(await store.search_messages("alice", "milk", limit=1)) == 1
    with pytest.raises(NotFound):
        await store.search_messages("ghost", "milk")
    with pytest.raises(NotFound):
        await store.search_messages("alice", "zebra", conversation_id=bobs.id)


# The contract's order, spelled out on the message text itself (no owner lexeme, no plan
# tricks): of the newest max(limit, 100) matches, best ts_rank first, newest first among
# equals; what search_messages must return, row for row.
REFERENCE_SEARCH = """
WITH newest AS (
    SELECT conversation_id, seq, created_at,
           COALESCE(content, chatstore_item_text(item), '') AS text
    FROM messages
    WHERE user_id = $1
      AND to_tsvector('simple', COALESCE(content, chatstore_item_text(item), ''))
          @@ websearch_to_tsquery('simple', $2)
      AND numnode(websearch_to_tsquery('simple', $2)) > 0
      AND ($3::uuid IS NULL OR conversation_id = $3::uuid)
    ORDER BY created_at DESC, conversation_id, seq DESC
    LIMIT GREATEST($4::integer, 100)
)
SELECT conversation_id, seq
FROM newest
ORDER BY ts_rank(to_tsvector('simple', text), websearch_to_tsquery('simple', $2)) DESC,
         created_at DESC, conversation_id, seq DESC
LIMIT $4"""


async def test_search_returns_the_contracts_rows_in_its_order(store: ChatStore) -> None:
    """Best ts_rank first, newest first among equals, then conversation and seq: against the
    order spelled out on the text, for ties of rank and of created_at (a batch shares its
    created_at), phrases, or, negation, the conversation filter and limits; prepared
    statements switch to a generic plan after five runs, so each query runs more often."""
    convs = [await store.create_conversation("alice") for _ in range(3)]
    texts = ["milk", "milk milk", "oat milk", "tea with milk", "milk tea milk", "tea",
             "oat", "milk and oat milk", "no dairy", "milk"]
    for i, conv in enumerate(convs):
        await store.append_messages("alice", conv.id, [user(t) for t in texts[i:] + texts])
    await store.append_message("alice", convs[0].id, user("milk"))  # newer than the rest
    bobs = await store.create_conversation("bob")
    await store.append_messages("bob", bobs.id, [user(t) for t in texts])
    queries = ["milk", "milk tea", '"oat milk"', "milk or tea", "milk -tea", "oat", "-milk"]
    compared = 0
    for query in queries:
        for cid in (None, convs[1].id):
            for limit in (1, 3, 20, 1000):
                expected = [(r["conversation_id"], r["seq"]) for r in await store.pool.fetch(
                    REFERENCE_SEARCH, "alice", query, cid, limit)]
                for _ in range(2):
                    found = await store.search_messages("alice", query, limit=limit,
                                                        conversation_id=cid)
                    assert [(m.conversation_id, m.seq) for m in found] == expected, (
                        query, cid, limit)
                    assert {m.user_id for m in found} <= {"alice"}
                compared += len(expected)
    assert compared > 400


async def test_search_ranks_only_the_newest_matches(store: ChatStore) -> None:
    """Ranking re-tokenises each match, so only the newest max(limit, 100) matches are
    ranked: an old best match behind 100 newer ones is not returned, unless the limit
    reaches back to it."""
    conv = await store.create_conversation("alice")
    await store.append_message("alice", conv.id, user("milk milk milk milk"))
    for start in range(0, 120, 40):
        await store.append_messages("alice", conv.id, [
            user(f"milk and a long tail of words number {n}") for n in range(start, start + 40)])
    found = await store.search_messages("alice", "milk", limit=5)
    assert len(found) == 5 and all(m.seq > 21 for m in found), [m.seq for m in found]
    assert "milk milk milk milk" not in {m.content for m in found}
    wide = await store.search_messages("alice", "milk", limit=121)
    assert wide[0].seq == 1 and wide[0].content == "milk milk milk milk"
    for limit in (5, 100, 121):
        expected = [(r["conversation_id"], r["seq"]) for r in await store.pool.fetch(
            REFERENCE_SEARCH, "alice", "milk", None, limit)]
        found = await store.search_messages("alice", "milk", limit=limit)
        assert [(m.conversation_id, m.seq) for m in found] == expected, limit


async def test_search_finds_item_text_stored_once(store: ChatStore) -> None:
    """A message item's text is stored once, in the item (content NULL in the row), and
    search, reads, the append's result and export all give it back as content."""
    conv = await store.create_conversation("alice")
    items = [{"role": "user", "content": "buy oat milk"},
             {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "milk is on the list",
                           "annotations": []}]},
             {"type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "two"},
                          {"type": "output_text", "text": "parts milk"}]},
             {"type": "function_call_output", "call_id": "c1", "output": "milk added"}]
    appended = await store.append_messages("alice", conv.id, [{"item": i} for i in items])
    texts = ["buy oat milk", "milk is on the list", "two\nparts milk", "milk added"]
    assert [m.content for m in appended] == texts
    stored = await store.pool.fetch("SELECT content FROM messages WHERE user_id = 'alice' "
                                    "ORDER BY seq")
    # once: the first two are read from the item; the others are stored as they are
    assert [r["content"] for r in stored] == [None, None, "two\nparts milk", "milk added"]
    page = await store.list_messages("alice", conv.id)
    assert [m.content for m in reversed(page.items)] == texts or [
        m.content for m in page.items] == texts
    found = await store.search_messages("alice", "milk")
    assert sorted(m.content or "" for m in found) == sorted(texts)
    assert [m.item for m in found if m.seq == 2] == [items[1]]
    one = await store.append_message("alice", conv.id, {"item": items[0]})
    assert one.content == "buy oat milk"
    # an item with no chat form is never found by its words (the index reads the item's
    # text where content is NULL; search keeps only rows with a chat form)
    await store.append_message("alice", conv.id, {"item": {
        "type": "reasoning", "id": "rs_1", "summary": [],
        "content": [{"type": "reasoning_text", "text": "thoughts about milk"}]}})
    assert await store.search_messages("alice", "thoughts") == []
    assert len(await store.search_messages("alice", "milk")) == 5


# -- ownership ---------------------------------------------------------------------------

# Every conversation-scoped method, called as user `u` on conversation `c`.
CALLS = {
    "get_conversation": lambda s, u, c: s.get_conversation(u, c),
    "update_conversation": lambda s, u, c: s.update_conversation(u, c, title="pwned"),
    "update_conversation_noop": lambda s, u, c: s.update_conversation(u, c),
    "delete_conversation": lambda s, u, c: s.delete_conversation(u, c),
    "append_message": lambda s, u, c: s.append_message(u, c, user("x")),
    "append_messages_keyed": lambda s, u, c: s.append_messages(
        u, c, [user("x", idempotency_key="k")]),
    "append_messages_cas": lambda s, u, c: s.append_messages(u, c, [user("x")],
                                                             expected_revision=2),
    "list_messages": lambda s, u, c: s.list_messages(u, c),
    "list_messages_before": lambda s, u, c: s.list_messages(u, c, before=2),
    "list_messages_after": lambda s, u, c: s.list_messages(u, c, after=0),
    "context_messages": lambda s, u, c: s.context_messages(u, c, max_tokens=100),
    "context_messages_by_count": lambda s, u, c: s.context_messages(u, c, max_messages=5),
    "pop_message": lambda s, u, c: s.pop_message(u, c),
    "clear_messages": lambda s, u, c: s.clear_messages(u, c),
    "search_messages": lambda s, u, c: s.search_messages(u, "secret", conversation_id=c),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_another_users_conversation_is_not_found(store: ChatStore,
                                                       conn: asyncpg.Connection,
                                                       call: Any) -> None:
    conv = await store.create_conversation("alice")
    await store.append_messages("alice", conv.id, [user("secret"), user("secret 2")])
    missing = uuid.uuid4()
    before = await snapshot(conn)

    with pytest.raises(NotFound) as theirs:
        await call(store, "bob", conv.id)
    with pytest.raises(NotFound) as nobodys:
        await call(store, "bob", missing)

    assert await snapshot(conn) == before
    # Same error, same wording: the id is the only difference.
    assert str(theirs.value).replace(str(conv.id), "ID") == \
        str(nobodys.value).replace(str(missing), "ID")


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_unknown_user_is_named(store: ChatStore, conn: asyncpg.Connection,
                                     call: Any) -> None:
    conv = await store.create_conversation("alice")
    before = await snapshot(conn)
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        await call(store, "ghost", conv.id)
    assert await snapshot(conn) == before


# -- bad input ---------------------------------------------------------------------------

BAD_INPUT = {
    "unknown role": ("messages[0].role", lambda s, c: s.append_message(
        "alice", c, {"role": "wizard", "content": "x"})),
    "tool without tool_call_id": ("messages[0].tool_call_id", lambda s, c: s.append_message(
        "alice", c, {"role": "tool", "content": "x"})),
    "tool_call_id on user": ("messages[1].tool_call_id", lambda s, c: s.append_messages(
        "alice", c, [user("ok"), user("x", tool_call_id="c1")])),
    "NUL in content": ("messages[0].content", lambda s, c: s.append_message(
        "alice", c, user("a\x00b"))),
    "lone surrogate in content": ("messages[0].content", lambda s, c: s.append_message(
        "alice", c, user("a\ud800b"))),
    "NUL in metadata": ("messages[0].metadata.note", lambda s, c: s.append_message(
        "alice", c, user("x", metadata={"note": "a\x00"}))),
    "NUL in tool output": ("messages[1].content", lambda s, c: s.append_messages(
        "alice", c, [{"role": "assistant", "tool_calls": [{"id": "c"}]},
                     {"role": "tool", "tool_call_id": "c", "content": "\x00"}])),
    "content too large": ("messages[0].content", lambda s, c: s.append_message(
        "alice", c, user("é" * (1 << 19) + "x"))),
    "missing content": ("messages[0].content", lambda s, c: s.append_message(
        "alice", c, {"role": "user"})),
    "negative token_count": ("messages[0].token_count", lambda s, c: s.append_message(
        "alice", c, user("x", token_count=-1))),
    "unknown message field": ("messages[0].colour", lambda s, c: s.append_message(
        "alice", c, user("x", colour="red"))),
    "empty batch": ("messages", lambda s, c: s.append_messages("alice", c, [])),
    "duplicate keys in batch": ("messages", lambda s, c: s.append_messages(
        "alice", c, [user("a", idempotency_key="k"), user("b", idempotency_key="k")])),
    "bad expected_revision": ("expected_revision", lambda s, c: s.append_messages(
        "alice", c, [user("a")], expected_revision=-1)),
    "huge expected_revision": ("expected_revision", lambda s, c: s.pop_message(
        "alice", c, expected_revision=2**63)),
    "huge before": ("before", lambda s, c: s.list_messages("alice", c, before=2**40)),
    "huge max_tokens": ("max_tokens", lambda s, c: s.context_messages(
        "alice", c, max_tokens=2**63)),
    "item with role": ("messages[0].role", lambda s, c: s.append_message(
        "alice", c, {"item": {"role": "user", "content": "x"}, "role": "user"})),
    "item not an object": ("messages[0].item", lambda s, c: s.append_message(
        "alice", c, {"item": ["a"]})),
    "lease too short": ("lease_seconds", lambda s, c: s.turn(
        "alice", c, lease_seconds=0).__aenter__()),
    "limit None with before": ("limit", lambda s, c: s.list_messages(
        "alice", c, limit=None, before=3)),
    "limit zero": ("limit", lambda s, c: s.list_messages("alice", c, limit=0)),
    "limit too large": ("limit", lambda s, c: s.list_messages("alice", c, limit=1001)),
    "limit not int": ("limit", lambda s, c: s.list_messages("alice", c, limit="5")),
    "before and after": ("before", lambda s, c: s.list_messages("alice", c, before=3,
                                                                  after=1)),
    "before zero": ("before", lambda s, c: s.list_messages("alice", c, before=0)),
    "conversation limit": ("limit", lambda s, c: s.list_conversations("alice", limit=0)),
    "malformed cursor": ("cursor", lambda s, c: s.list_conversations("alice",
                                                                     cursor="not-a-cursor")),
    "not a uuid": ("conversation_id", lambda s, c: s.get_conversation("alice", "42")),
    "not a uuid on append": ("conversation_id", lambda s, c: s.append_message(
        "alice", "nope", user("x"))),
    "empty user id": ("user_id", lambda s, c: s.create_conversation("")),
    "user id not a string": ("user_id", lambda s, c: s.list_conversations(7)),
    "NUL in title": ("title", lambda s, c: s.create_conversation("alice", title="a\x00")),
    "metadata not an object": ("metadata", lambda s, c: s.update_conversation(
        "alice", c, metadata=[1, 2])),
    "metadata not JSON": ("metadata", lambda s, c: s.create_conversation(
        "alice", metadata={"x": object()})),
    "zero token budget": ("max_tokens", lambda s, c: s.context_messages("alice", c,
                                                                         max_tokens=0)),
    "too many context messages": ("max_messages", lambda s, c: s.context_messages(
        "alice", c, max_messages=10_001)),
    "empty search": ("query", lambda s, c: s.search_messages("alice", "  ")),
}


@pytest.mark.parametrize(("field", "call"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_is_refused_and_changes_nothing(store: ChatStore,
                                                        conn: asyncpg.Connection,
                                                        field: str, call: Any) -> None:
    cid = await fill(store, "alice", 2)
    before = await snapshot(conn)
    with pytest.raises(InvalidInput) as caught:
        await call(store, cid)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert await snapshot(conn) == before


async def test_replace_policy_stores_replacement_characters(db_url: str,
                                                            conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, text_policy="replace") as store:
        conv = await store.create_conversation("alice", title="t\x00")
        stored = await store.append_message(
            "alice", conv.id, user("a\x00b\ud800", metadata={"k\x00": ["\x00"]}))
    assert conv.title == "t\ufffd"
    assert stored.content == "a\ufffdb\ufffd"
    assert stored.metadata == {"k\ufffd": ["\ufffd"]}


async def test_content_limit_is_configurable(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, max_content_bytes=10) as store:
        conv = await store.create_conversation("alice")
        await store.append_message("alice", conv.id, user("0123456789"))
        with pytest.raises(InvalidInput, match="11 bytes, over the limit of 10"):
            await store.append_message("alice", conv.id, user("0123456789x"))


# -- connections, schema, failures -------------------------------------------------------


async def test_connect_reads_the_environment(db_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATSTORE_DSN", raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    store = await chatstore.connect()
    await store.close()
    assert store.pool._closed  # type: ignore[attr-defined]  # not in asyncpg's stubs


async def test_unmigrated_database_names_what_is_missing(new_database: Any) -> None:
    empty = new_database(template=False)
    with pytest.raises(SchemaNotMigrated, match=r"table conversations.*table messages"):
        await chatstore.connect(empty)


async def test_missing_column_is_named(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE messages DROP COLUMN idempotency_key")
    with pytest.raises(SchemaNotMigrated, match=r"column messages\.idempotency_key"):
        await chatstore.connect(db_url)


async def test_database_without_migration_0005_is_named(db_url: str,
                                                        conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE messages DROP COLUMN summary_through")
    with pytest.raises(SchemaNotMigrated, match=r"column messages\.summary_through"):
        await chatstore.connect(db_url)


async def test_database_without_migration_0006_is_named_on_use(
        db_url: str, conn: asyncpg.Connection) -> None:
    """A database at 0005 has every column, but not chatstore_item_text: the first read
    names the schema as out of date."""
    await conn.execute("DROP FUNCTION chatstore_item_text(jsonb) CASCADE")
    store = await chatstore.connect(db_url)
    try:
        await store.pool.execute("INSERT INTO users (id) VALUES ('alice')")
        conv = await store.create_conversation("alice")
        with pytest.raises(SchemaNotMigrated, match="out of date"):
            await store.list_messages("alice", conv.id)
    finally:
        await store.close()


async def test_borrowed_pool_without_codec(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with asyncpg.create_pool(db_url, min_size=1, max_size=2) as pool:
        store = ChatStore(pool)
        await store.check_schema()
        conv = await store.create_conversation("alice", metadata={"a": [1]})
        msg = await store.append_message("alice", conv.id, user("x", metadata={"b": 2}))
        assert conv.metadata == {"a": [1]} and msg.metadata == {"b": 2}
        await store.close()  # borrowed: stays open
        assert await pool.fetchval("SELECT 1") == 1


async def test_killed_connection_is_connection_lost_then_recovers(
        store: ChatStore, conn: asyncpg.Connection, db_url: str) -> None:
    """A backend killed in the middle of a call (pg_terminate_backend, a failover)."""
    cid = await fill(store, "alice", 2)
    blocker = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM conversations WHERE user_id = 'alice' AND id = $1 "
                                  "FOR UPDATE", cid)
            call = asyncio.ensure_future(store.append_message("alice", cid, user("lost")))
            waiting = None
            for _ in range(100):  # until the append waits for the row lock
                waiting = await conn.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting, "the append never waited for the lock"
            assert await conn.fetchval("SELECT pg_terminate_backend($1::integer)", waiting)
            with pytest.raises(ConnectionLost) as caught:
                await call
            # Sent, then lost: it may have committed, so a blind retry is not safe.
            assert caught.value.outcome == "unknown" and not caught.value.retryable
    finally:
        await blocker.close()
    # Nothing half-written, and the pool replaced the dead connection.
    assert [m.seq for m in (await store.list_messages("alice", cid)).items] == [1, 2]
    assert (await store.append_message("alice", cid, user("again"))).seq == 3


async def test_cancelled_append_writes_nothing_and_pool_survives(
        store: ChatStore, db_url: str) -> None:
    conv = await store.create_conversation("alice")
    blocker = await asyncpg.connect(db_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM conversations WHERE user_id = 'alice' AND id = $1 "
                                  "FOR UPDATE", conv.id)
        for call in (
            store.append_message("alice", conv.id, user("never")),
            store.append_message("alice", conv.id, user("never", idempotency_key="k")),
            store.clear_messages("alice", conv.id),
        ):
            task = asyncio.ensure_future(call)
            await asyncio.sleep(0.2)  # the statement now waits for the row lock
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await tx.rollback()
    finally:
        await blocker.close()
    assert (await store.get_conversation("alice", conv.id)).message_count == 0
    assert (await store.append_message("alice", conv.id, user("after"))).seq == 1
    assert (await store.list_messages("alice", conv.id)).items[0].content == "after"


async def test_rows_build_exactly_what_validation_would(store: ChatStore,
                                                        conn: asyncpg.Connection) -> None:
    """message_from_row / messages_from_rows / conversation_from_row skip re-validation of
    database rows; they must give the very models model_validate gives, for every statement
    returning rows (lean reads: with the keys the caller passed)."""
    conv = await store.create_conversation("alice", title="t", metadata={"k": [1, "x"]})
    await store.append_messages("alice", conv.id, [
        user("hi", token_count=2, metadata={"m": {"n": None}}, idempotency_key="i"),
    ])
    await store.append_messages("alice", conv.id, [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "r", "tool_call_id": "c"},
        {"item": {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                                  "text": "hi ü"}]}},
        {"item": {"role": "assistant", "content": [{"type": "output_text", "text": "hi",
                                                    "annotations": []}]}},
    ])
    args = {
        "get_conversation": ("alice", conv.id),
        "list_conversations": ("alice", 5),
        "list_messages_newest": ("alice", conv.id, 10),
        "list_messages_all": ("alice", conv.id),
        "list_messages_after": ("alice", conv.id, 0, 10),
        "find_messages_by_key": ("alice", conv.id, ["i"]),
        "context_messages_by_tokens": ("alice", conv.id, 10, 100),
        "search_messages": ("alice", "hi", None, 10),
    }
    for statement, values in args.items():
        rows = await store.pool.fetch(QUERIES[statement], *values)
        assert rows, statement
        keys = list(rows[0].keys())
        if "seq" in keys and "user_id" not in keys:  # a lean read: the caller's keys left out
            known = {"user_id": "alice", "conversation_id": conv.id}
            within = "conversation_id" not in keys
            built_all: list[Any] = messages_from_rows(rows, "alice",
                                                      conv.id if within else None)
            shared = {id(m.model_fields_set) for m in built_all}
            assert len(shared) == 1 and built_all[0].model_fields_set == set(Message.model_fields)
        for index, row in enumerate(rows):
            if "seq" in keys and "user_id" not in keys:
                built: Any = built_all[index]
                validated: Any = Message.model_validate({**known, **dict(row)})
            elif "seq" in keys:
                built = message_from_row(row)
                validated = Message.model_validate(dict(row))
            else:
                built = conversation_from_row(row)
                validated = Conversation.model_validate(dict(row))
            assert built == validated, statement
            assert built.model_fields_set == validated.model_fields_set, statement
            assert built.model_dump() == validated.model_dump()
            assert built.model_dump_json() == validated.model_dump_json()
            assert repr(built) == repr(validated)
            assert type(built.role if hasattr(built, "role") else built.id) is type(
                validated.role if hasattr(validated, "role") else validated.id)
    # Without chatstore's codec (a borrowed pool) json arrives as text and is parsed.
    raw = await conn.fetchrow(QUERIES["get_conversation"], "alice", conv.id)
    assert raw is not None
    assert isinstance(raw["metadata"], str)
    assert conversation_from_row(raw).metadata == {"k": [1, "x"]}
    as_text = await conn.fetch(QUERIES["list_messages_all"], "alice", conv.id)
    assert isinstance(as_text[0]["metadata"], str)
    assert messages_from_rows(as_text, "alice", conv.id) == [
        Message.model_validate({"user_id": "alice", "conversation_id": conv.id, **dict(row)})
        for row in as_text]
