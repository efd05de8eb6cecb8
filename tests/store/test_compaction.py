"""Compaction (store.compact, turn.compact): the model's view starts at the newest summary
while the transcript keeps every message; the cut never separates a tool call from its
results; on forks, pops and aborted turns the view follows the history."""

from __future__ import annotations

import asyncio
import json
import uuid
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
    Message,
    NotFound,
    StaleRevision,
)
from chatstore.sql import QUERIES

from ..conftest import explain
from ..tool_histories import HISTORY, build_history, call, model_cut, result


def said(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)]


def summary_of(text: str) -> dict[str, Any]:
    return {"role": "system", "content": f"summary: {text}"}


def texts(messages: list[Message]) -> list[str]:
    return [m.content or "" for m in messages]


async def views(store: ChatStore, cid: uuid.UUID, user: str = "alice") -> list[str]:
    """The model's view, after checking that every read of it agrees: view_messages,
    context_messages by count and by tokens, with and without a limit."""
    view = await store.view_messages(user, cid)
    assert await store.context_messages(user, cid) == view
    assert await store.context_messages(user, cid, max_tokens=10**9) == view
    assert await store.view_messages(user, cid, limit=10**6) == view
    if view:
        assert await store.view_messages(user, cid, limit=1) == view[-1:]
        assert await store.context_messages(user, cid, max_messages=2) == view[-2:]
        assert await store.view_messages(user, cid, limit=len(view)) == view
    return texts(view)


def cost(message: Message) -> int:
    """What a message costs in a token window (the statement's rule, for chat messages)."""
    if message.token_count is not None:
        return message.token_count
    return max(1, -(-len(message.content or "") // 4))


async def check_token_windows(store: ChatStore, cid: uuid.UUID, user: str = "alice") -> None:
    """Every token window is the longest newest part of the view that fits: tried at each
    budget where one more message would fit, and one token below it."""
    view = await store.view_messages(user, cid)
    for k in range(len(view) + 1):
        needed = sum(cost(m) for m in view[len(view) - k:])
        for budget in {b for b in (needed - 1, needed) if b >= 1}:
            window = await store.context_messages(user, cid, max_tokens=budget)
            fits = [j for j in range(len(view) + 1)
                    if sum(cost(m) for m in view[len(view) - j:]) <= budget]
            assert window == view[len(view) - max(fits):], (budget, texts(view))


# -- the view ------------------------------------------------------------------------------


async def test_the_view_starts_at_the_summary_and_the_transcript_keeps_everything(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abcdefghij"))
    summary = await store.compact("alice", chat.id, summary=summary_of("a..j"))
    assert summary.seq == 11 and summary.summary_through == 10
    assert summary.content == "summary: a..j" and summary.role == "system"
    assert await views(store, chat.id) == ["summary: a..j"]

    await store.append_messages("alice", chat.id, said("k", "l"))
    assert await views(store, chat.id) == ["summary: a..j", "k", "l"]
    async with store.turn("alice", chat.id) as turn:
        assert texts(await turn.context()) == ["summary: a..j", "k", "l"]
        assert texts(await turn.context(max_messages=2)) == ["k", "l"]

    # list_messages, search and the conversation's counters see every message
    page = await store.list_messages("alice", chat.id, limit=None)
    assert texts(page.items) == [*"abcdefghij", "summary: a..j", "k", "l"]
    assert [m.summary_through for m in page.items] == [None] * 10 + [10, None, None]
    newest = await store.list_messages("alice", chat.id, limit=3)
    assert newest.items[0].summary_through == 10
    assert [m.seq for m in await store.search_messages("alice", "c")] == [3]
    assert (await store.search_messages("alice", "summary"))[0].summary_through == 10
    conversation = await store.get_conversation("alice", chat.id)
    assert conversation.message_count == 13 and conversation.revision == 3


async def test_a_cut_before_the_end_keeps_the_messages_after_it(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abcdef"))
    summary = await store.compact("alice", chat.id, summary=summary_of("a..d"),
                                  through_seq=4)
    assert (summary.seq, summary.summary_through) == (7, 4)
    assert await views(store, chat.id) == ["summary: a..d", "e", "f"]
    await store.append_message("alice", chat.id, {"role": "user", "content": "g"})
    assert await views(store, chat.id) == ["summary: a..d", "e", "f", "g"]
    # through_seq=0: a summary that replaces nothing comes first, everything follows
    other = await store.create_conversation("alice", messages=said("x", "y"))
    await store.compact("alice", other.id, summary=summary_of("nothing"), through_seq=0)
    assert await views(store, other.id) == ["summary: nothing", "x", "y"]


async def test_budgets_take_the_newest_part_of_the_view(store: ChatStore) -> None:
    """A window is the newest part of the view: the summary comes with it only when every
    message after it fits too, and then first."""
    chat = await store.create_conversation("alice", messages=[
        {"role": "user", "content": "old", "token_count": 100}])
    await store.compact("alice", chat.id, summary={**summary_of("old"), "token_count": 10})
    await store.append_messages("alice", chat.id, [
        {"role": "user", "content": "q", "token_count": 5},
        {"role": "assistant", "content": "r", "token_count": 5}])
    by_tokens = {budget: texts(await store.context_messages("alice", chat.id,
                                                             max_tokens=budget))
                 for budget in (4, 5, 10, 19, 20, 1000)}
    assert by_tokens == {4: [], 5: ["r"], 10: ["q", "r"], 19: ["q", "r"],
                         20: ["summary: old", "q", "r"], 1000: ["summary: old", "q", "r"]}
    assert texts(await store.context_messages("alice", chat.id, max_messages=2,
                                              max_tokens=1000)) == ["q", "r"]
    assert texts(await store.context_messages("alice", chat.id, max_messages=3,
                                              max_tokens=1000)) == ["summary: old", "q", "r"]
    # a cut before the end: the summary comes only after every message of the tail
    cut = await store.create_conversation("alice", messages=[
        {"role": "user", "content": t, "token_count": 5} for t in "abcd"])
    await store.compact("alice", cut.id, summary={**summary_of("a, b"), "token_count": 1},
                        through_seq=2)
    by_tokens = {budget: texts(await store.context_messages("alice", cut.id,
                                                             max_tokens=budget))
                 for budget in (5, 6, 10, 11)}
    assert by_tokens == {5: ["d"], 6: ["d"], 10: ["c", "d"], 11: ["summary: a, b", "c", "d"]}
    await check_token_windows(store, cut.id)
    # a summary without token_count costs a quarter of its characters, like any message
    other = await store.create_conversation("alice", messages=said("x" * 400))
    await store.compact("alice", other.id, summary={"role": "system", "content": "s" * 40})
    assert texts(await store.context_messages("alice", other.id, max_tokens=9)) == []
    assert texts(await store.context_messages("alice", other.id, max_tokens=10)) == ["s" * 40]


async def test_the_newest_summary_wins_and_an_older_one_is_an_ordinary_message(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abcd"))
    await store.compact("alice", chat.id, summary=summary_of("one"))          # 5, through 4
    await store.append_messages("alice", chat.id, said("e", "f"))              # 6, 7
    await store.compact("alice", chat.id, summary=summary_of("two"), through_seq=6)  # 8
    assert await views(store, chat.id) == ["summary: two", "f"]
    # a later summary that cuts before the older one: the older one is in its tail
    await store.compact("alice", chat.id, summary=summary_of("three"), through_seq=3)  # 9
    assert await views(store, chat.id) == [
        "summary: three", "d", "summary: one", "e", "f", "summary: two"]


async def test_a_summary_may_be_an_agent_item(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("hi", "hello"))
    compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"}
    summary = await store.compact("alice", chat.id, summary={"item": compaction})
    assert summary.item == compaction and summary.role is None
    await store.append_message("alice", chat.id, {"item": {"role": "user", "content": "more"}})
    view = await store.view_messages("alice", chat.id)
    assert chatstore.to_items(view) == [compaction, {"role": "user", "content": "more"}]
    assert chatstore.to_openai_messages(view) == [{"role": "user", "content": "more"}]


async def test_messages_that_follow_the_summary_are_part_of_the_view(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abc"))
    summary = await store.compact("alice", chat.id, summary=summary_of("kept users"),
                                  messages=said("a again", "b again"))
    assert summary.seq == 4
    assert await views(store, chat.id) == ["summary: kept users", "a again", "b again"]
    conversation = await store.get_conversation("alice", chat.id)
    assert conversation.message_count == 6 and conversation.revision == 2


async def test_the_worked_compaction_of_the_docs(store: ChatStore) -> None:
    """docs/api.md's "A worked compaction", with a model that answers offline: the window
    stays within the budget turn after turn while the transcript keeps every message."""
    summarize = "Summarize this conversation for yourself."
    asked: list[list[dict[str, Any]]] = []

    async def model(messages: list[dict[str, Any]]) -> str:
        asked.append(messages)
        if messages[-1]["content"] == summarize:
            return "summary of " + str(len(messages) - 1)
        return "reply " + "x" * 400

    async def chat_turn(user_id: str, conversation_id: uuid.UUID, text: str) -> None:
        async with store.turn(user_id, conversation_id) as turn:
            window = await turn.context(max_tokens=600)
            view = await store.view_messages(user_id, conversation_id)
            if view and (not window or window[0].seq != view[0].seq):
                summary = await model([*chatstore.to_openai_messages(view),
                                       {"role": "user", "content": summarize}])
                await turn.compact({"role": "system", "content": summary})
                window = await turn.context(max_tokens=600)
            await turn.append([{"role": "user", "content": text}])
            reply = await model([*chatstore.to_openai_messages(window),
                                 {"role": "user", "content": text}])
            await turn.append([{"role": "assistant", "content": reply}])

    chat = await store.create_conversation("alice")
    for n in range(20):
        await chat_turn("alice", chat.id, f"question {n}")
    replies = [m for m in asked if m[-1]["content"] != summarize]
    assert all(sum(len(m["content"]) for m in sent[:-1]) <= 4 * 600 for sent in replies)
    summaries = [m for m in asked if m[-1]["content"] == summarize]
    assert len(summaries) >= 2
    assert summaries[-1][0]["content"].startswith("summary of ")  # it summarized a summary
    page = await store.list_messages("alice", chat.id, limit=None)
    assert len([m for m in page.items if m.summary_through is None]) == 40
    assert len([m for m in page.items if m.summary_through is not None]) == len(summaries)


# -- arguments, errors, turns ----------------------------------------------------------------


async def test_through_seq_out_of_range_and_bad_summaries_write_nothing(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice", messages=said("a", "b"))
    bad: Any
    for bad in (-1, 3, 1.5, True, "1"):
        with pytest.raises(InvalidInput) as caught:
            await store.compact("alice", chat.id, summary=summary_of("x"), through_seq=bad)
        assert caught.value.field == "through_seq"
        assert bad != 3 or "message_count (2); nothing was written" in str(caught.value)
    wrong: Any
    for wrong, field in (({"role": "tool", "content": "x"}, "summary.tool_call_id"),
                         ({"content": "x"}, "summary.role"),
                         ("text", "summary"),
                         ({"role": "user", "content": "x", "summary_through": 1},
                          "summary.summary_through")):
        with pytest.raises(InvalidInput) as caught:
            await store.compact("alice", chat.id, summary=wrong)
        assert caught.value.field == field
    with pytest.raises(InvalidInput, match="messages"):
        await store.compact("alice", chat.id, summary=summary_of("x"),
                            messages={"role": "user", "content": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="idempotency_key"):
        await store.compact("alice", chat.id,
                            summary={**summary_of("x"), "idempotency_key": "k"},
                            messages=said("y"))
    # appending cannot make a summary
    with pytest.raises(InvalidInput, match="summary_through"):
        await store.append_message("alice", chat.id,
                                   {"role": "user", "content": "x", "summary_through": 1})
    with pytest.raises(NotFound):
        await store.compact("bob", chat.id, summary=summary_of("x"))
    with pytest.raises(NotFound):
        await store.compact("alice", uuid.uuid4(), summary=summary_of("x"))
    with pytest.raises(StaleRevision):
        await store.compact("alice", chat.id, summary=summary_of("x"), expected_revision=0)
    assert await conn.fetchval("SELECT count(*) FROM messages") == 2
    assert (await store.get_conversation("alice", chat.id)).revision == 1
    summary = await store.compact("alice", chat.id, summary=summary_of("x"),
                                  expected_revision=1)
    assert summary.summary_through == 2


async def test_a_retried_compaction_with_keys_stores_once(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("a", "b"))
    keyed = {**summary_of("a, b"), "idempotency_key": "compact-1"}
    follow = [{"role": "user", "content": "a again", "idempotency_key": "compact-1.1"}]
    first = await store.compact("alice", chat.id, summary=keyed, messages=follow)
    again = await store.compact("alice", chat.id, summary=keyed, messages=follow)
    assert again == first
    assert (await store.get_conversation("alice", chat.id)).message_count == 4
    with pytest.raises(Conflict, match="compact-1"):
        await store.compact("alice", chat.id, summary={**keyed, "content": "other"},
                            messages=follow)
    await store.append_message("alice", chat.id, {"role": "user", "content": "c",
                                                  "idempotency_key": "plain"})
    with pytest.raises(Conflict, match="plain"):
        await store.compact("alice", chat.id, summary={**summary_of("c"),
                                                       "idempotency_key": "plain"})
    assert (await store.get_conversation("alice", chat.id)).message_count == 5


async def test_compaction_during_a_turn_goes_through_the_turn(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said("a", "b"))
    async with store.turn("alice", chat.id) as turn:
        with pytest.raises(ConversationBusy):
            await store.compact("alice", chat.id, summary=summary_of("a, b"))
        await turn.append(said("c"))
        summary = await turn.compact(summary_of("a..c"))
        assert summary.summary_through == 3
        assert texts(await turn.context()) == ["summary: a..c"]
        await turn.append(said("d"))
    assert await views(store, chat.id) == ["summary: a..c", "d"]
    with pytest.raises(Conflict, match="ended"):
        await turn.compact(summary_of("late"))


async def test_an_aborted_turn_undoes_its_compaction_and_pop_undoes_one(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abcd"))
    await store.compact("alice", chat.id, summary=summary_of("a..b"), through_seq=2)
    before = await views(store, chat.id)
    assert before == ["summary: a..b", "c", "d"]
    with pytest.raises(RuntimeError):
        async with store.turn("alice", chat.id) as turn:
            await turn.compact(summary_of("all"))
            assert texts(await turn.context()) == ["summary: all"]
            raise RuntimeError("the model failed")
    assert await views(store, chat.id) == before
    popped = await store.pop_message("alice", chat.id)
    assert popped is not None and popped.summary_through == 2
    assert await views(store, chat.id) == ["a", "b", "c", "d"]


# -- trees -------------------------------------------------------------------------------------


async def test_forks_see_the_summaries_on_their_own_history(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=said(*"abcd"))
    await store.compact("alice", chat.id, summary=summary_of("a..c"), through_seq=3)  # 5
    await store.append_messages("alice", chat.id, said("e"))                            # 6
    before = await store.fork("alice", chat.id, at_seq=4)   # made before the summary
    after = await store.fork("alice", chat.id, at_seq=6)    # its history holds the summary
    assert await views(store, before.id) == list("abcd")
    assert await views(store, after.id) == ["summary: a..c", "d", "e"]

    # a compaction on a fork: the fork's view changes, its parent's does not
    await store.append_messages("alice", after.id, said("f"))
    summary = await store.compact("alice", after.id, summary=summary_of("a..f"),
                                  through_seq=6)
    assert summary.conversation_id == after.id and summary.seq == 8
    assert await views(store, after.id) == ["summary: a..f", "f"]
    assert await views(store, chat.id) == ["summary: a..c", "d", "e"]
    # a fork of the fork, at the summary, then deeper: reads go through two path parts
    deeper = await store.fork("alice", after.id, at_seq=8, messages=said("g"))
    assert await views(store, deeper.id) == ["summary: a..f", "f", "g"]
    # a new chat copies the summary with the messages
    copied = await store.fork("alice", deeper.id, at_seq=9, new_chat=True)
    assert await views(store, copied.id) == ["summary: a..f", "f", "g"]
    # popping the summary on the fork hands nothing over and undoes only its compaction
    await store.pop_message("alice", deeper.id)
    assert await store.pop_message("alice", deeper.id) == summary.model_copy(
        update={"conversation_id": deeper.id})
    assert await views(store, deeper.id) == ["summary: a..c", "d", "e", "f"]
    assert await views(store, after.id) == ["summary: a..f", "f"]
    # deleting the parent hands its rows (and the summary) to the forks: views unchanged
    await store.delete_conversation("alice", before.id)
    assert await views(store, after.id) == ["summary: a..f", "f"]


async def test_export_and_import_keep_summaries(store: ChatStore, new_database: Any) -> None:
    from chatstore.transfer import export_user, import_file

    chat = await store.create_conversation("alice", messages=said(*"abc"))
    await store.compact("alice", chat.id, summary=summary_of("a, b"), through_seq=2)
    fork = await store.fork("alice", chat.id, at_seq=4, messages=said("d"))
    await store.compact("alice", fork.id, summary=summary_of("all"))
    lines = [line async for line in export_user(store, "alice")]
    exported = [json.loads(line) for line in lines]
    marked = [m for line in exported for m in line["messages"] if "summary_through" in m]
    assert sorted(m["summary_through"] for m in marked) == [2, 5]
    assert all("summary_through" not in m for line in exported for m in line["messages"]
               if not m["content"].startswith("summary"))

    url = new_database()
    async with await chatstore.connect(url) as other:
        await import_file(other, lines, create_users=True)
        assert [line async for line in export_user(other, "alice")] == lines
        assert await views(other, chat.id) == ["summary: a, b", "c"]
        assert await views(other, fork.id) == ["summary: all"]
        bad = json.loads(lines[0])
        bad["id"] = str(uuid.uuid4())
        bad.pop("path", None)
        bad.update(root_id=bad["id"], current_id=bad["id"], parent_id=None, forked_at=None)
        bad["messages"] = [{**m, "seq": i + 1} for i, m in
                           enumerate(json.loads(lines[-1])["messages"][:1])]
        bad["message_count"] = 1
        bad["messages"][0]["summary_through"] = 1
        with pytest.raises(InvalidInput, match="summary_through"):
            await import_file(other, [json.dumps(bad)])


# -- tool calls at the boundary --------------------------------------------------------------


async def test_the_cut_moves_back_before_a_call_whose_results_follow_it(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=[
        {"role": "user", "content": "q"},                       # 1
        call("c1", "c2"),                                       # 2
        result("c1"),                                           # 3
        result("c2"),                                           # 4
        {"role": "assistant", "content": "done"},               # 5
    ])
    for asked, cut in ((5, 5), (4, 4), (3, 1), (2, 1), (1, 1), (0, 0)):
        summary = await store.compact("alice", chat.id, summary=summary_of(str(asked)),
                                      through_seq=asked)
        assert summary.summary_through == cut, asked
        view = await store.view_messages("alice", chat.id)
        assert [m.seq for m in view] == [summary.seq, *range(cut + 1, 6)], asked
        await store.pop_message("alice", chat.id)
    # agent items: parallel calls stored as one function_call item each
    items = await store.create_conversation("alice", messages=[
        {"item": {"role": "user", "content": "q"}},
        {"item": {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}},
        {"item": {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"}},
        {"item": {"type": "function_call_output", "call_id": "a", "output": "1"}},
        {"item": {"type": "reasoning", "id": "rs", "summary": []}},
        {"item": {"type": "function_call_output", "call_id": "b", "output": "2"}},
    ])
    summary = await store.compact("alice", items.id, summary=summary_of("q"), through_seq=4)
    assert summary.summary_through == 1


async def test_a_call_still_in_flight_in_the_compacting_turn_stays_in_the_view(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=[
        {"role": "user", "content": "old"}, call("abandoned")])
    # from outside a turn, a call without results does not hold the cut back
    outside = await store.compact("alice", chat.id, summary=summary_of("old"))
    assert outside.summary_through == 2
    async with store.turn("alice", chat.id) as turn:
        await turn.append([{"role": "user", "content": "q"}, call("pending")])   # 4, 5
        summary = await turn.compact(summary_of("all"))
        assert summary.summary_through == 4   # before the call the turn made
        await turn.append([result("pending"), {"role": "assistant", "content": "a"}])
        window = await turn.context()
    assert texts(window) == ["summary: all", "", "out pending", "a"]
    assert window[1].tool_calls is not None and window[1].seq == 5


async def check_random_cut(db_url: str, user: str, steps: list[tuple[Any, ...]],
                           pick: int) -> None:
    messages, pairs = build_history(steps)
    through = pick % (len(messages) + 1)
    async with await chatstore.connect(db_url, min_size=1, max_size=1) as store:
        await store.pool.execute("INSERT INTO users (id) VALUES ($1)", user)
        chat = await store.create_conversation(user, messages=messages)
        summary = await store.compact(user, chat.id, summary=summary_of("s"),
                                      through_seq=through)
        cut = summary.summary_through
        assert cut == model_cut(pairs, through), (through, pairs)
        view = await store.view_messages(user, chat.id)
        assert [m.seq for m in view] == [summary.seq, *range(cut + 1, len(messages) + 1)]
        shown = {m.seq for m in view}
        for c, r in pairs:  # no call or result without the other in the view
            assert (c in shown) == (r in shown), (c, r, cut)
        # and the windows built from it are valid input as well
        window = await store.context_messages(user, chat.id, max_tokens=10**6)
        assert window == chatstore.items.window_rule(window)
        assert window[0] == summary


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=HISTORY, pick=st.integers(0, 10**6))
def test_no_call_or_result_is_cut_off_from_the_other(db_url: str, steps: list[tuple[Any, ...]],
                                                    pick: int) -> None:
    asyncio.run(check_random_cut(db_url, f"u-{uuid.uuid4()}", steps, pick))


# -- against a model of views, with forks ------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 99), st.integers(1, 3)),
    st.tuples(st.just("compact"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("pop"), st.integers(0, 99)),
    st.tuples(st.just("fork"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("abort"), st.integers(0, 99)),
), min_size=1, max_size=14)


def model_view(history: list[tuple[str, int | None]]) -> list[str]:
    marks = [i for i, (_, through) in enumerate(history) if through is not None]
    if not marks:
        return [text for text, _ in history]
    newest = marks[-1]
    through = history[newest][1]
    assert through is not None
    return [history[newest][0]] + [text for i, (text, _) in enumerate(history)
                                   if i >= through and i != newest]


async def run_views_against_model(db_url: str, user: str, ops: list[tuple[Any, ...]]) -> None:
    async with await chatstore.connect(db_url, min_size=1, max_size=2) as store:
        await store.pool.execute("INSERT INTO users (id) VALUES ($1)", user)
        root = await store.create_conversation(user, messages=said("r1", "r2"))
        model: dict[uuid.UUID, list[tuple[str, int | None]]] = {
            root.id: [("r1", None), ("r2", None)]}
        for counter, op in enumerate(ops, 1):
            alive = sorted(model)
            cid = alive[op[1] % len(alive)]
            history = model[cid]
            if op[0] == "append":
                new = [f"a{counter}.{i}" for i in range(op[2])]
                await store.append_messages(user, cid, said(*new))
                history += [(text, None) for text in new]
            elif op[0] == "compact":
                through = op[2] % (len(history) + 1)
                text = f"summary {counter}"
                stored = await store.compact(user, cid, summary={"role": "system",
                                                                 "content": text},
                                             through_seq=through)
                assert stored.summary_through == through  # no tool calls: never moved
                history.append((text, through))
            elif op[0] == "pop":
                popped = await store.pop_message(user, cid)
                expected = history.pop() if history else None
                assert (popped.content, popped.summary_through) == expected if popped \
                    else expected is None
            elif op[0] == "fork":
                at = op[2] % (len(history) + 1)
                fork = await store.fork(user, cid, at_seq=at)
                model[fork.id] = list(history[:at])
            elif op[0] == "abort":
                with pytest.raises(LookupError):
                    async with store.turn(user, cid) as turn:
                        await turn.append(said("lost"))
                        await turn.compact({"role": "system", "content": "lost summary"})
                        raise LookupError
            for member, contents in model.items():
                assert await views(store, member, user) == model_view(contents), (op, member)
                page = await store.list_messages(user, member, limit=None)
                assert [(m.content, m.summary_through) for m in page.items] == contents
        for member in model:
            await check_token_windows(store, member, user)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_compactions_on_trees_match_a_model_of_views(db_url: str,
                                                            ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(run_views_against_model(db_url, f"u-{uuid.uuid4()}", ops))


# -- cost ----------------------------------------------------------------------------------------


async def test_the_window_of_a_compacted_long_conversation_reads_what_a_short_one_does(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    """The context window of a compacted 10,000-message conversation reads about the pages a
    50-message one reads: the view's reads stop at the summary's cut (EXPLAIN ANALYZE's
    buffers, which do not depend on timing)."""
    short = await store.create_conversation("alice", messages=[
        {"role": "user", "content": f"short {i}", "token_count": 10} for i in range(50)])
    long = await store.create_conversation("alice")
    for start in range(0, 10_000, 2_500):
        await store.append_messages("alice", long.id, [
            {"role": "user", "content": f"long {i} " + "x" * 200, "token_count": 60}
            for i in range(start, start + 2_500)])
    await store.compact("alice", long.id, summary={**summary_of("long"), "token_count": 10},
                        through_seq=9_951)
    await conn.execute("ANALYZE")
    assert len(await store.context_messages("alice", long.id)) == 50
    for name, args in (("view_messages", (10_000,)),
                       ("context_messages_by_tokens", (10_000, 100_000))):
        pages = {}
        for label, cid in (("short", short.id), ("long", long.id)):
            plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                                       + QUERIES[name], "alice", cid, *args)
            top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            pages[label] = top["Shared Hit Blocks"] + top.get("Shared Read Blocks", 0)
            assert top["Actual Rows"] == 50, (name, label, top["Actual Rows"])
        # the long conversation's 50 rows are wider (more pages) and its index deeper
        assert pages["long"] <= 2 * pages["short"] + 30, (name, pages)
        nodes = await explain(conn, name, "alice", long.id, *args)
        scanned = [n for n in nodes if n.get("Relation Name") == "messages"]
        assert scanned and all(n["Node Type"] == "Index Scan" for n in scanned), (name,
                                                                                scanned)
