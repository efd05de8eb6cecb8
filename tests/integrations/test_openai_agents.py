"""ChatStoreSession against the real openai-agents package and a real PostgreSQL."""

from __future__ import annotations

import copy
import json
from typing import Any

import asyncpg
import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.memory import Session, SessionSettings
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage as AgentsUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from chatstore import ChatStore, ConversationBusy, InvalidInput, NotFound
from chatstore.integrations.openai_agents import ChatStoreSession

from ..agent_items import every_input_item
from .conftest import snapshot
from .sdk_items import every_item, item_types

NO_TRACING = RunConfig(tracing_disabled=True)


def user_item(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def items_of(session: ChatStoreSession, **kwargs: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in await session.get_items(**kwargs)]


# -- the protocol ------------------------------------------------------------------------


async def test_is_an_agents_sdk_session(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice", title="Todo")
    assert isinstance(session, Session)
    conversation = await store.get_conversation("alice", session.conversation_id)
    assert conversation.title == "Todo"
    assert session.session_id == str(conversation.id)
    same = ChatStoreSession(store, "alice", str(conversation.id))
    assert same.session_id == session.session_id and same.conversation_id == conversation.id
    with pytest.raises(InvalidInput, match="conversation_id"):
        ChatStoreSession(store, "alice", "not-a-uuid")
    with pytest.raises(NotFound, match="ghost"):
        await ChatStoreSession.create(store, "ghost")


async def test_every_sdk_item_type_round_trips_exactly(store: ChatStore,
                                                      conn: asyncpg.Connection) -> None:
    items = every_item()
    assert len(item_types(items)) >= 25
    session = await ChatStoreSession.create(store, "alice")
    await session.add_items(copy.deepcopy(items))  # type: ignore[arg-type]

    assert await items_of(session) == items
    fresh = ChatStoreSession(store, "alice", session.session_id)
    assert await items_of(fresh) == items
    # Each item is its own row, stored as given, next to its chat projection.
    rows = await conn.fetch("SELECT seq, role, tool_calls, tool_call_id, item FROM messages "
                            "ORDER BY seq")
    assert [json.loads(r["item"]) for r in rows] == items
    by_type: dict[str, Any] = {}
    for row in rows:  # the first row of each type
        by_type.setdefault(str(items[row["seq"] - 1].get("type", "message")), row)
    assert by_type["function_call"]["role"] == "assistant"
    assert by_type["function_call"]["tool_calls"] is not None
    assert by_type["function_call_output"]["role"] == "tool"
    assert by_type["function_call_output"]["tool_call_id"] == "call_a"
    assert by_type["reasoning"]["role"] is None
    assert by_type["hologram_call"]["role"] is None


async def test_a_sample_of_every_input_item_type_round_trips(store: ChatStore) -> None:
    """Every ResponseInputItemParam type the installed openai package declares, each field
    filled (tests/agent_items.py): new SDK types are covered without editing this test."""
    samples = every_input_item()
    assert len(samples) >= 30
    session = await ChatStoreSession.create(store, "alice")
    items = list(samples.values())
    await session.add_items(copy.deepcopy(items))  # type: ignore[arg-type]
    assert await items_of(session) == items
    for i, kind in enumerate(samples):
        assert await items_of(session, limit=len(items) - i) == items[i:], kind


async def test_items_with_the_same_id_are_all_kept(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice")
    repeated = {"type": "message", "id": FAKE_RESPONSES_ID, "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "same", "annotations": []}]}
    await session.add_items([repeated, repeated])  # type: ignore[list-item]
    await session.add_items([repeated])  # type: ignore[list-item]
    assert await items_of(session) == [repeated] * 3


async def test_add_items_is_one_atomic_append(store: ChatStore,
                                              conn: asyncpg.Connection) -> None:
    session = await ChatStoreSession.create(store, "alice")
    await session.add_items([])
    assert (await store.get_conversation("alice", session.conversation_id)).revision == 0
    await session.add_items([user_item(f"m{i}") for i in range(5)])  # type: ignore[misc]
    assert (await store.get_conversation("alice", session.conversation_id)).revision == 1
    before = await snapshot(conn)
    batch: list[Any] = [user_item("fine"), user_item("nul \x00 inside"), user_item("fine too")]
    with pytest.raises(InvalidInput):
        await session.add_items(batch)
    assert await snapshot(conn) == before


# -- get_items limits --------------------------------------------------------------------


async def test_limit_semantics(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice")
    assert await session.get_items() == [] and await session.get_items(limit=3) == []
    items = [user_item(f"m{i}") for i in range(25)]
    await session.add_items(items)  # type: ignore[arg-type]
    assert await items_of(session) == items
    assert await items_of(session, limit=3) == items[-3:]
    assert await items_of(session, limit=1) == items[-1:]
    assert await items_of(session, limit=25) == items
    assert await items_of(session, limit=100) == items
    assert await session.get_items(limit=0) == []
    with pytest.raises(InvalidInput, match="limit"):
        await session.get_items(limit=-1)

    limited = ChatStoreSession(store, "alice", session.conversation_id,
                               session_settings=SessionSettings(limit=2))
    assert await items_of(limited) == items[-2:]
    assert await items_of(limited, limit=4) == items[-4:]  # an explicit limit wins
    as_dict = ChatStoreSession(store, "alice", session.conversation_id,
                               session_settings={"limit": 5})
    assert await items_of(as_dict) == items[-5:]


async def test_limits_across_pages_of_a_long_history(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice")
    items = [user_item(f"m{i}") for i in range(2345)]
    await session.add_items(items)  # type: ignore[arg-type]
    assert await items_of(session) == items
    assert await items_of(session, limit=2100) == items[-2100:]
    assert await items_of(session, limit=1000) == items[-1000:]
    assert await items_of(session, limit=1001) == items[-1001:]
    assert await items_of(session, limit=5000) == items


# -- pop and clear -----------------------------------------------------------------------


async def test_pop_item_and_clear_session(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice")
    assert await session.pop_item() is None
    items = every_item()[:6]
    await session.add_items(items)  # type: ignore[arg-type]
    assert await session.pop_item() == items[-1]
    assert await session.pop_item() == items[-2]
    assert await items_of(session) == items[:-2]

    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    conversation = await store.get_conversation("alice", session.conversation_id)
    assert conversation.message_count == 0  # the conversation stays
    await session.add_items([user_item("again")])  # type: ignore[list-item]
    assert await items_of(session) == [user_item("again")]


# -- another user's conversation ---------------------------------------------------------


async def test_another_users_conversation_is_invisible(store: ChatStore,
                                                       conn: asyncpg.Connection) -> None:
    mine = await ChatStoreSession.create(store, "alice")
    await mine.add_items([user_item("secret")])  # type: ignore[list-item]
    before = await snapshot(conn)
    intruder = ChatStoreSession(store, "bob", mine.conversation_id)
    with pytest.raises(NotFound):
        await intruder.get_items()
    with pytest.raises(NotFound):
        await intruder.get_items(limit=1)
    with pytest.raises(NotFound):
        await intruder.add_items([user_item("hi")])  # type: ignore[list-item]
    with pytest.raises(NotFound):
        await intruder.pop_item()
    with pytest.raises(NotFound):
        await intruder.clear_session()
    with pytest.raises(NotFound):
        await ChatStoreSession(store, "bob", mine.conversation_id, max_tokens=100).get_items()
    assert await snapshot(conn) == before
    assert await items_of(mine) == [user_item("secret")]


# -- Runner.run --------------------------------------------------------------------------


async def test_runner_over_two_turns_with_a_scripted_model(store: ChatStore,
                                                            conn: asyncpg.Connection) -> None:
    added: list[str] = []

    @function_tool
    def add_task(title: str) -> str:
        """Add a task.

        Args:
            title: what to do.
        """
        added.append(title)
        return f"added {title}"

    model = ScriptedModel([
        [function_call("add_task", {"title": "milk"}, call_id="call_1")],
        [assistant_message("Added milk.")],
        [assistant_message("Your list has milk.")],
    ])
    agent = Agent(name="todo", instructions="Manage tasks.", model=model, tools=[add_task])
    session = await ChatStoreSession.create(store, "alice")

    first = await Runner.run(agent, "add milk", session=session, run_config=NO_TRACING)
    assert first.final_output == "Added milk." and added == ["milk"]
    second = await Runner.run(agent, "what is on my list?", session=session,
                              run_config=NO_TRACING)
    assert second.final_output == "Your list has milk."

    # The second turn's model call saw the whole first turn, then the new message.
    seen = [dict(item) for item in model.calls[2].input]
    assert [i.get("type", "message") for i in seen] == [
        "message", "function_call", "function_call_output", "message", "message"]
    assert seen[0]["content"] == "add milk" and seen[-1]["content"] == "what is on my list?"
    assert seen[2]["output"] == "added milk"

    stored = await items_of(ChatStoreSession(store, "alice", session.session_id))
    assert len(stored) == 6 and stored[:5] == seen
    assert stored[5]["role"] == "assistant"
    assert stored[5]["content"][0]["text"] == "Your list has milk."
    roles = [r["role"] for r in await conn.fetch("SELECT role FROM messages ORDER BY seq")]
    assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert (await store.get_conversation("alice", session.conversation_id)).message_count == 6


async def test_run_inside_a_turn_writes_under_its_lease(store: ChatStore) -> None:
    model = ScriptedModel([[assistant_message("hello")]])
    agent = Agent(name="a", model=model)
    conversation = await store.create_conversation("alice")
    outside = ChatStoreSession(store, "alice", conversation.id)
    async with store.turn("alice", conversation.id) as turn:
        session = ChatStoreSession.for_turn(turn)
        assert isinstance(session, Session) and session.session_id == str(conversation.id)
        await Runner.run(agent, "hi", session=session, run_config=NO_TRACING)
        during = await items_of(session)
        assert len(during) == 2 and during[0] == user_item("hi")
        assert await items_of(outside) == during  # reads go on during a turn
        with pytest.raises(ConversationBusy):
            await outside.add_items([user_item("interleaved")])  # type: ignore[list-item]
        with pytest.raises(ConversationBusy):
            await outside.pop_item()
    stored = await items_of(outside)
    assert stored[0] == user_item("hi") and len(stored) == 2
    assert stored[1]["type"] == "message" and stored[1]["role"] == "assistant"


async def test_an_exception_in_the_run_aborts_the_whole_turn(store: ChatStore,
                                                              conn: asyncpg.Connection) -> None:
    @function_tool(failure_error_function=None)
    def explode() -> str:
        """Fail."""
        raise RuntimeError("tool failed")

    session = await ChatStoreSession.create(store, "alice")
    await session.add_items([user_item("earlier"), user_item("turn")])  # type: ignore[list-item]
    before = await items_of(session)
    model = ScriptedModel([
        [function_call("explode", {}, call_id="call_x")],
        [assistant_message("never")],
    ])
    agent = Agent(name="a", model=model, tools=[explode])
    with pytest.raises(Exception, match="tool failed"):
        async with store.turn("alice", session.conversation_id) as turn:
            await Runner.run(agent, "do it", session=ChatStoreSession.for_turn(turn),
                             run_config=NO_TRACING)
    assert await items_of(session) == before
    # The lease is gone: the next turn goes ahead.
    async with store.turn("alice", session.conversation_id) as turn:
        await ChatStoreSession.for_turn(turn).add_items([user_item("next")])  # type: ignore[list-item]
    assert await items_of(session) == [*before, user_item("next")]


async def test_a_turn_on_the_callers_transaction(store: ChatStore,
                                                 conn: asyncpg.Connection) -> None:
    """for_turn(turn.using(conn)): the run's items and the tool's own row commit together,
    or roll back together."""
    await conn.execute("CREATE TABLE notes (body text NOT NULL)")
    session = await ChatStoreSession.create(store, "alice")

    def agent_writing_on(held: Any, then_fail: bool) -> Agent[Any]:
        @function_tool(failure_error_function=None)
        async def note(body: str) -> str:
            """Keep a note.

            Args:
                body: the note.
            """
            await held.execute("INSERT INTO notes (body) VALUES ($1)", body)
            if then_fail:
                raise RuntimeError("tool failed after writing")
            return "noted"

        model = ScriptedModel([[function_call("note", {"body": "n"}, call_id="call_n")],
                               [assistant_message("noted it")]])
        return Agent(name="a", model=model, tools=[note])

    async with store.turn("alice", session.conversation_id) as turn, \
            store.pool.acquire() as held, held.transaction():
        bound = ChatStoreSession.for_turn(turn.using(held))
        await Runner.run(agent_writing_on(held, False), "note n", session=bound,
                         run_config=NO_TRACING)
        assert len(await items_of(bound)) == 4  # the transaction sees its own items
        assert await session.get_items() == []  # nobody else does yet
        assert await conn.fetchval("SELECT count(*) FROM notes") == 0
    assert len(await items_of(session)) == 4
    assert await conn.fetchval("SELECT count(*) FROM notes") == 1

    with pytest.raises(Exception, match="tool failed after writing"):
        async with store.turn("alice", session.conversation_id) as turn, \
                store.pool.acquire() as held, held.transaction():
            await Runner.run(agent_writing_on(held, True), "note again",
                             session=ChatStoreSession.for_turn(turn.using(held)),
                             run_config=NO_TRACING)
    assert len(await items_of(session)) == 4
    assert await conn.fetchval("SELECT count(*) FROM notes") == 1


# -- a token-budgeted history ------------------------------------------------------------


def _round(i: int) -> list[dict[str, Any]]:
    """One turn with two parallel calls stored as separate items (as the SDK does)."""
    return [
        user_item(f"question {i} " + "words " * (i % 4)),
        {"type": "function_call", "id": FAKE_RESPONSES_ID, "call_id": f"c{i}a",
         "name": "lookup", "arguments": json.dumps({"q": "x" * (5 + i)})},
        {"type": "function_call", "id": FAKE_RESPONSES_ID, "call_id": f"c{i}b",
         "name": "lookup", "arguments": json.dumps({"q": "y" * (3 + i)})},
        {"type": "function_call_output", "call_id": f"c{i}a", "output": "result " * (1 + i)},
        {"type": "function_call_output", "call_id": f"c{i}b", "output": "other " * (2 + i)},
        {"type": "message", "id": FAKE_RESPONSES_ID, "role": "assistant",
         "status": "completed",
         "content": [{"type": "output_text", "text": f"answer {i}", "annotations": []}]},
    ]


def _calls_whole(window: list[dict[str, Any]]) -> bool:
    calls = {i["call_id"] for i in window if i.get("type") == "function_call"}
    outputs = {i["call_id"] for i in window if i.get("type") == "function_call_output"}
    return calls == outputs


def _in_order(window: list[dict[str, Any]], items: list[dict[str, Any]]) -> bool:
    position = 0
    for item in window:
        while position < len(items) and items[position] != item:
            position += 1
        if position == len(items):
            return False
        position += 1
    return True


async def test_max_tokens_window_keeps_calls_and_outputs_whole(store: ChatStore) -> None:
    items = [item for i in range(8) for item in _round(i)]
    session = await ChatStoreSession.create(store, "alice")
    await session.add_items(items)  # type: ignore[arg-type]
    sizes = []
    for budget in [*range(1, 120), *range(120, 1500, 7)]:
        window = await items_of(ChatStoreSession(store, "alice", session.conversation_id,
                                                 max_tokens=budget))
        assert _calls_whole(window), (budget, window)
        assert _in_order(window, items), budget
        if window:
            assert window[-1] == items[-1]
        sizes.append(len(window))
    assert sizes == sorted(sizes)  # a bigger budget never shows less
    assert 0 < sizes[len(sizes) // 3] < len(items)  # some budgets cut the history
    assert sizes[-1] == len(items)
    # With a limit as well, both hold.
    both = ChatStoreSession(store, "alice", session.conversation_id, max_tokens=10_000)
    window = await items_of(both, limit=4)
    assert len(window) <= 4 and _calls_whole(window)
    async with store.turn("alice", session.conversation_id) as turn:
        bound = ChatStoreSession.for_turn(turn, max_tokens=10_000)
        assert await items_of(bound) == items


async def test_a_handoff_run_stores_exactly_what_the_sdk_produced(store: ChatStore) -> None:
    billing = Agent(name="billing", instructions="Billing.",
                    model=ScriptedModel([[assistant_message("Billing here: you owe 0.")]]))
    triage_model = ScriptedModel([
        [function_call("transfer_to_billing", {}, call_id="call_handoff")],
    ])
    triage = Agent(name="triage", model=triage_model, handoffs=[billing])
    session = await ChatStoreSession.create(store, "alice")
    result = await Runner.run(triage, "what do I owe?", session=session,
                              run_config=NO_TRACING)
    assert result.last_agent is billing
    stored = await items_of(session)
    assert stored == [dict(item) for item in result.to_input_list()]
    kinds = [(i.get("type"), i.get("name")) for i in stored]
    assert ("function_call", "transfer_to_billing") in kinds
    assert any(i.get("type") == "function_call_output" and i["call_id"] == "call_handoff"
               for i in stored)


async def test_a_streamed_run_uses_the_session_too(store: ChatStore) -> None:
    model = ScriptedModel([[assistant_message("first")], [assistant_message("second")]])
    agent = Agent(name="a", model=model)
    session = await ChatStoreSession.create(store, "alice")
    for text in ("one", "two"):
        streamed = Runner.run_streamed(agent, text, session=session, run_config=NO_TRACING)
        async for _ in streamed.stream_events():
            pass
    stored = await items_of(session)
    assert [i.get("role") for i in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[2] == user_item("two") and stored[3]["content"][0]["text"] == "second"
    assert [dict(i) for i in model.calls[1].input][:2] == stored[:2]


# -- on a fork -------------------------------------------------------------------------------
# A fork (store.fork, or store.turn(..., fork_at=)) is just a conversation to the session:
# it reads the shared prefix and its own items, writes go to the fork, and nothing done
# on the fork changes what its source reads.


async def _source_state(store: ChatStore, session: ChatStoreSession) -> tuple[Any, ...]:
    conversation = await store.get_conversation("alice", session.conversation_id)
    return conversation.revision, conversation.message_count, await items_of(session)


async def test_a_session_on_a_fork_reads_the_prefix_and_writes_to_the_fork(
        store: ChatStore) -> None:
    items = every_item()[:8]
    source = await ChatStoreSession.create(store, "alice")
    await source.add_items(copy.deepcopy(items))  # type: ignore[arg-type]
    before = await _source_state(store, source)
    fork = await store.fork("alice", source.conversation_id, at_seq=5)
    session = ChatStoreSession(store, "alice", fork.id)
    assert session.session_id == str(fork.id) != source.session_id

    assert await items_of(session) == items[:5]
    assert await items_of(session, limit=2) == items[3:5]
    own = [user_item("on the fork"), user_item("and again")]
    await session.add_items(copy.deepcopy(own))  # type: ignore[arg-type]
    assert await items_of(session) == [*items[:5], *own]
    assert await items_of(session, limit=3) == [items[4], *own]  # across the boundary
    assert await _source_state(store, source) == before

    # pop: the fork's own items, then into the prefix it shares with the source
    assert await session.pop_item() == own[1]
    assert await session.pop_item() == own[0]
    assert await session.pop_item() == items[4]
    assert await items_of(session) == items[:4]
    assert await _source_state(store, source) == before
    await session.add_items([user_item("after the pop")])  # type: ignore[list-item]
    assert await items_of(session) == [*items[:4], user_item("after the pop")]

    await session.clear_session()
    assert await session.get_items() == [] and await session.pop_item() is None
    assert (await store.get_conversation("alice", fork.id)).message_count == 0
    assert await _source_state(store, source) == before
    # and the other way: the source's pop and clear leave a fork as it was
    second = ChatStoreSession(store, "alice",
                              (await store.fork("alice", source.conversation_id,
                                                at_seq=8)).id)
    await source.pop_item()
    await source.clear_session()
    assert await items_of(second) == items


async def test_a_fork_of_a_long_history_pages_across_the_shared_prefix(
        store: ChatStore) -> None:
    items = [user_item(f"m{i}") for i in range(2345)]
    source = await ChatStoreSession.create(store, "alice")
    await source.add_items(items)  # type: ignore[arg-type]
    fork = await store.fork("alice", source.conversation_id, at_seq=1500)
    session = ChatStoreSession(store, "alice", fork.id)
    own = [user_item(f"f{i}") for i in range(700)]
    await session.add_items(own)  # type: ignore[arg-type]
    expected = [*items[:1500], *own]
    assert await items_of(session) == expected
    for limit in (700, 701, 1000, 1001, 2100, 5000):
        assert await items_of(session, limit=limit) == expected[-limit:], limit
    budgeted = ChatStoreSession(store, "alice", fork.id, max_tokens=10_000)
    window = await items_of(budgeted)
    assert 700 < len(window) < len(expected) and window == expected[-len(window):]
    assert await items_of(source, limit=3) == items[-3:]


async def test_a_run_in_a_turn_on_a_new_fork_regenerates_a_reply(store: ChatStore) -> None:
    """store.turn(cid, fork_at=k-1) with ChatStoreSession.for_turn: the model sees the
    messages before k, the run's items go to the fork, the source reads what it did."""
    model = ScriptedModel([[assistant_message("first answer")],
                           [assistant_message("second answer")]])
    agent = Agent(name="a", model=model)
    source = await ChatStoreSession.create(store, "alice")
    await Runner.run(agent, "question", session=source, run_config=NO_TRACING)
    before = await _source_state(store, source)
    answered = before[2]
    assert [i.get("role") for i in answered] == ["user", "assistant"]

    # Regenerate reply 2: a fork at 1, the run given no new input (the history is it).
    async with store.turn("alice", source.conversation_id, fork_at=1) as turn:
        assert turn.conversation_id != source.conversation_id
        regenerated = await Runner.run(agent, [], session=ChatStoreSession.for_turn(turn),
                                       run_config=NO_TRACING)
        # the source is not held by the fork's turn: it is read and written as ever
        assert await _source_state(store, source) == before
    assert regenerated.final_output == "second answer"
    assert [dict(i) for i in model.calls[1].input] == answered[:1]
    on_fork = await items_of(ChatStoreSession(store, "alice", turn.conversation_id))
    assert on_fork[:1] == answered[:1] and len(on_fork) == 2
    assert on_fork[1]["content"][0]["text"] == "second answer"
    assert await _source_state(store, source) == before
    versions = await store.alternatives("alice", turn.conversation_id, 2)
    assert [(v.conversation_id, v.current) for v in versions] == [
        (source.conversation_id, False), (turn.conversation_id, True)]
    assert (await store.get_conversation("alice", source.conversation_id)).current_id == \
        turn.conversation_id


async def test_a_failed_run_in_a_turn_on_a_new_fork_leaves_no_fork(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    @function_tool(failure_error_function=None)
    def explode() -> str:
        """Fail."""
        raise RuntimeError("tool failed")

    source = await ChatStoreSession.create(store, "alice")
    await source.add_items([user_item("q"), user_item("a")])  # type: ignore[list-item]
    before = await snapshot(conn)
    model = ScriptedModel([[function_call("explode", {}, call_id="call_x")]])
    agent = Agent(name="a", model=model, tools=[explode])
    with pytest.raises(Exception, match="tool failed"):
        async with store.turn("alice", source.conversation_id, fork_at=1) as turn:
            await Runner.run(agent, "edited", session=ChatStoreSession.for_turn(turn),
                             run_config=NO_TRACING)
    assert len(model.calls) == 1
    with pytest.raises(NotFound):
        await ChatStoreSession(store, "alice", turn.conversation_id).get_items()
    assert await snapshot(conn) == before


# -- usage -------------------------------------------------------------------------------------

def request_usage(inputs: int, outputs: int, cached: int = 0, reasoning: int = 0) -> AgentsUsage:
    return AgentsUsage(requests=1, input_tokens=inputs, output_tokens=outputs,
                       total_tokens=inputs + outputs,
                       input_tokens_details=InputTokensDetails(cached_tokens=cached,
                                                               cache_write_tokens=0),
                       output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning))


def priced_model() -> ScriptedModel:
    """Two model requests (a tool call, then the answer), each reporting its usage."""
    return ScriptedModel([
        ModelStep(output=[function_call("add_task", {"title": "milk"}, call_id="call_u")],
                  usage=request_usage(100, 10, cached=60, reasoning=4)),
        ModelStep(output=[assistant_message("Added milk.")], usage=request_usage(150, 20)),
    ])


@function_tool
def add_task(title: str) -> str:
    """Add a task.

    Args:
        title: what to do.
    """
    return f"added {title}"


async def test_store_run_usage_records_each_request_once(store: ChatStore,
                                                         conn: asyncpg.Connection) -> None:
    session = await ChatStoreSession.create(store, "alice")
    agent = Agent(name="todo", model=priced_model(), tools=[add_task])
    result = await Runner.run(agent, "add milk", session=session, run_config=NO_TRACING)
    first = await session.store_run_usage(result)
    assert [(e.input_tokens, e.output_tokens, e.cached_input_tokens, e.reasoning_tokens,
             e.requests) for e in first] == [(100, 10, 60, 4, 1), (150, 20, 0, 0, 1)]
    assert {e.model for e in first} == {"ScriptedModel"}  # a model object without a name
    assert {e.conversation_id for e in first} == {session.conversation_id}
    assert len({e.key for e in first}) == 2
    # running it twice records once
    assert await session.store_run_usage(result) == first
    assert await conn.fetchval("SELECT count(*) FROM usage_entries") == 2
    (summed,) = await store.usage_totals("alice")
    usage = result.context_wrapper.usage
    assert (summed.input_tokens, summed.output_tokens, summed.requests) == (
        usage.input_tokens, usage.output_tokens, usage.requests) == (250, 30, 2)
    # another run is other entries, even with the same numbers
    again = await Runner.run(Agent(name="todo", model=priced_model(), tools=[add_task]),
                             "add milk", session=session, run_config=NO_TRACING)
    await session.store_run_usage(again, model="gpt-test")
    by_model = await store.usage_totals("alice", by="model")
    assert [(t.key, t.entries) for t in by_model] == [("ScriptedModel", 2), ("gpt-test", 2)]


async def test_store_run_usage_without_request_details_and_with_a_key(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    session = await ChatStoreSession.create(store, "alice")
    # a model whose responses report no usage: the run still counts its request
    result = await Runner.run(Agent(name="a", model=ScriptedModel([[assistant_message("hi")]])),
                              "hi", session=session, run_config=NO_TRACING)
    (entry,) = await session.store_run_usage(result, key="request-7", model="m")
    assert (entry.requests, entry.input_tokens, entry.key) == (1, 0, "request-7:0")
    # the application's key makes a retry from another result (another process) safe too
    assert await session.store_run_usage(result, key="request-7", model="m") == [entry]
    assert await conn.fetchval("SELECT count(*) FROM usage_entries") == 1
    # an agent's model given by name is recorded by that name (here a RunConfig swaps the
    # offline model in, which the result does not say: pass model= in such a case)
    offline = RunConfig(model=ScriptedModel([[assistant_message("hi")]]),
                        tracing_disabled=True)
    named = await Runner.run(Agent(name="b", model="gpt-4.1-mini"), "hi", session=session,
                             run_config=offline)
    (recorded,) = await session.store_run_usage(named)
    assert recorded.model == "gpt-4.1-mini" and recorded.key != entry.key


async def test_run_usage_recorded_in_a_turn_survives_its_abort(store: ChatStore) -> None:
    session = await ChatStoreSession.create(store, "alice")
    agent = Agent(name="todo", model=priced_model(), tools=[add_task])
    with pytest.raises(LookupError):
        async with store.turn("alice", session.conversation_id) as turn:
            bound = ChatStoreSession.for_turn(turn)
            result = await Runner.run(agent, "add milk", session=bound, run_config=NO_TRACING)
            await bound.store_run_usage(result)
            raise LookupError("the reply was refused after the model ran")
    assert await session.get_items() == []  # the turn's items are gone
    (summed,) = await store.usage_totals("alice")
    assert (summed.input_tokens, summed.entries) == (250, 2)  # the tokens were spent


async def test_store_run_usage_on_another_users_conversation_is_not_found(
        store: ChatStore) -> None:
    alices = await ChatStoreSession.create(store, "alice")
    result = await Runner.run(Agent(name="todo", model=priced_model(), tools=[add_task]),
                              "add milk", session=alices, run_config=NO_TRACING)
    with pytest.raises(NotFound):
        await ChatStoreSession(store, "bob", alices.conversation_id).store_run_usage(result)
    assert (await store.usage_totals("bob"))[0].entries == 0


# -- the SDK's compaction session over a ChatStoreSession -----------------------------------
#
# OpenAIResponsesCompactionSession asks the Responses API's responses.compact (server-side)
# for the compacted items; here a real AsyncOpenAI client talks to a MockTransport of httpx2
# (the HTTP library the openai package is built on) that answers as that endpoint does (the
# kept user messages, then a compaction item), so the SDK's own code runs end to end
# offline. The agent's model is the SDK's ScriptedModel.

COMPACTION_ITEM = {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"}


class CompactEndpoint:
    """POST /responses/compact, offline: keeps the user messages of the input and adds a
    compaction item (what the real endpoint returns, minus the encryption)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        import httpx2  # what the openai client is built on

        assert request.url.path.endswith("/responses/compact"), request.url
        body = json.loads(request.content)
        self.requests.append(body)
        kept = [kept_user(item["content"], n) if isinstance(item["content"], str)
                else {**item, "id": f"msg_{n}"}
                for n, item in enumerate(body.get("input") or [])
                if item.get("role") == "user"]
        return httpx2.Response(200, json={
            "id": "resp_compacted", "created_at": 1, "object": "response.compaction",
            "output": [*kept, COMPACTION_ITEM],
            "usage": {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}})


def compacting(session: ChatStoreSession, endpoint: CompactEndpoint,
               **options: Any) -> Any:
    import httpx2
    from agents.memory import OpenAIResponsesCompactionSession
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="offline", http_client=httpx2.AsyncClient(
        transport=httpx2.MockTransport(endpoint)))
    return OpenAIResponsesCompactionSession(session.session_id, session, client=client,
                                            model="gpt-4.1", **options)


def kept_user(text: str, n: int) -> dict[str, Any]:
    return {"type": "message", "role": "user", "id": f"msg_{n}", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


async def test_the_sdks_compaction_session_keeps_the_transcript(store: ChatStore) -> None:
    """Runner.run with the SDK's compaction session around a ChatStoreSession: after the
    turn the SDK compacts (its atomic-replace hook is ChatStore.compact), get_items returns
    the compacted items, the next model call starts from them, and list_messages still
    reads every item the run stored, then the compacted items."""

    @function_tool
    def add_task(title: str) -> str:
        """Add a task.

        Args:
            title: what to do.
        """
        return f"added {title}"

    model = ScriptedModel([
        [function_call("add_task", {"title": "milk"}, call_id="call_1")],
        [assistant_message("Added milk.")],
        [assistant_message("Your list has milk.")],
    ])
    agent = Agent(name="todo", instructions="Manage tasks.", model=model, tools=[add_task])
    endpoint = CompactEndpoint()
    session = await ChatStoreSession.create(store, "alice")
    outer = compacting(session, endpoint, compaction_mode="input",
                       should_trigger_compaction=lambda context: True)

    await Runner.run(agent, "add milk", session=outer, run_config=NO_TRACING)
    assert len(endpoint.requests) == 1
    assert [i.get("type", "message") for i in endpoint.requests[0]["input"]] == [
        "message", "function_call", "function_call_output", "message"]
    compacted = [kept_user("add milk", 0), COMPACTION_ITEM]
    assert await items_of(session) == compacted
    assert await items_of(outer) == compacted

    transcript = (await store.list_messages("alice", session.conversation_id,
                                            limit=None)).items
    assert [m.role.value if m.role else (m.item or {})["type"] for m in transcript] == [
        "user", "assistant", "tool", "assistant", "user", "compaction"]
    assert transcript[0].item == user_item("add milk")
    assert transcript[4].summary_through == 4 and transcript[4].item == compacted[0]
    assert [m.summary_through for m in transcript[5:]] == [None]

    # The next turn's model call starts from the compacted items.
    second = await Runner.run(agent, "what is on my list?", session=outer,
                              run_config=NO_TRACING)
    assert second.final_output == "Your list has milk."
    seen = [dict(item) for item in model.calls[2].input]
    assert seen == [*compacted, user_item("what is on my list?")]
    assert len(endpoint.requests) == 2  # compacted again after the second turn
    assert await items_of(session) == [kept_user("add milk", 0),
                                       kept_user("what is on my list?", 2), COMPACTION_ITEM]
    everything = (await store.list_messages("alice", session.conversation_id,
                                            limit=None)).items
    assert len(everything) == 11 and everything[:6] == transcript
    assert [m.seq for m in everything if m.summary_through is not None] == [5, 9]


async def test_manual_compaction_and_a_turn_with_the_sdks_compaction_session(
        store: ChatStore) -> None:
    endpoint = CompactEndpoint()
    session = await ChatStoreSession.create(store, "alice")
    outer = compacting(session, endpoint, compaction_mode="input")
    await outer.add_items([user_item("one"), user_item("two")])
    await outer.run_compaction({"force": True})
    assert await items_of(session) == [kept_user("one", 0), kept_user("two", 1),
                                       COMPACTION_ITEM]
    page = await store.list_messages("alice", session.conversation_id, limit=None)
    assert [m.seq for m in page.items] == [1, 2, 3, 4, 5]
    assert page.items[2].summary_through == 2

    # Bound to a turn: the compaction is one of the turn's writes, so an exception in the
    # turn undoes it together with the run's items.
    model = ScriptedModel([[assistant_message("three")]])
    agent = Agent(name="a", model=model)
    with pytest.raises(RuntimeError):
        async with store.turn("alice", session.conversation_id) as turn:
            bound = compacting(ChatStoreSession.for_turn(turn), endpoint,
                               compaction_mode="input",
                               should_trigger_compaction=lambda context: True)
            await Runner.run(agent, "three", session=bound, run_config=NO_TRACING)
            assert await items_of(session) == [kept_user("one", 0), kept_user("two", 1),
                                               kept_user("three", 3), COMPACTION_ITEM]
            raise RuntimeError("the request failed after the run")
    assert len(endpoint.requests) == 2
    assert await items_of(session) == [kept_user("one", 0), kept_user("two", 1),
                                       COMPACTION_ITEM]
    # Without the turn, the SDK session's plain clear still clears (it is the user's call).
    await outer.clear_session()
    assert await items_of(session) == []
