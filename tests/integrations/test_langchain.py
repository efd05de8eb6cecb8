"""ChatStoreMessageHistory against the real langchain-core package and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import asyncpg
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

import chatstore
from chatstore import ChatStore, InvalidInput, NotFound
from chatstore.integrations.langchain import (
    ChatStoreMessageHistory,
    LoopThreadError,
    surface_write_errors,
)

from .conftest import snapshot


def conversation_messages() -> list[BaseMessage]:
    return [
        SystemMessage("You manage todo lists.", id="sys-1"),
        HumanMessage("add milk ✓ and eggs 🥚", id="h-1", name="ann"),
        AIMessage("", id="ai-1", tool_calls=[
            {"name": "add_task", "args": {"title": "milk ✓"}, "id": "call_1",
             "type": "tool_call"},
            {"name": "add_task", "args": {"title": "eggs", "tags": ["x", {"n": 1}]},
             "id": "call_2", "type": "tool_call"},
        ]),
        ToolMessage('{"id": 1}', tool_call_id="call_1", id="t-1"),
        ToolMessage("failed", tool_call_id="call_2", status="error",
                    artifact={"trace": [1, 2]}),
        AIMessage("Added both.", id="ai-2", response_metadata={"model_name": "m"},
                  usage_metadata={"input_tokens": 10, "output_tokens": 3,
                                  "total_tokens": 13},
                  additional_kwargs={"refusal": None, "extra": {"a": [1]}}),
        AIMessage("Let me also check.", tool_calls=[
            {"name": "list_tasks", "args": {}, "id": "call_3", "type": "tool_call"}]),
        ToolMessage("[]", tool_call_id="call_3"),
        HumanMessage(content=[{"type": "text", "text": "what is this?"},
                              {"type": "image_url", "image_url": {"url": "data:,x"}}]),
        AIMessage("plain"),
    ]


async def test_round_trip_of_every_message_class(store: ChatStore, db_url: str,
                                                 conn: asyncpg.Connection) -> None:
    conversation = await store.create_conversation("alice")
    history = ChatStoreMessageHistory(store, "alice", conversation.id)
    messages = conversation_messages()
    await history.aadd_messages(messages)

    got = await history.aget_messages()
    assert got == messages
    assert [type(m) for m in got] == [type(m) for m in messages]
    assert [m.id for m in got] == [m.id for m in messages]
    # On a new store (a new pool, new connections) too.
    async with await chatstore.connect(db_url, min_size=1, max_size=2) as other:
        again = await ChatStoreMessageHistory(other, "alice", str(conversation.id)) \
            .aget_messages()
    assert again == messages

    # The chat columns hold the chat form: search, psql and other integrations read it.
    rows = await conn.fetch("SELECT role, content, tool_calls, tool_call_id FROM messages "
                            "ORDER BY seq")
    assert [r["role"] for r in rows] == ["system", "user", "assistant", "tool", "tool",
                                         "assistant", "assistant", "tool", "user",
                                         "assistant"]
    assert rows[2]["content"] is None
    calls = json.loads(rows[2]["tool_calls"])
    assert calls[1] == {"id": "call_2", "type": "function",
                        "function": {"name": "add_task",
                                     "arguments": json.dumps({"title": "eggs",
                                                              "tags": ["x", {"n": 1}]})}}
    assert rows[3]["tool_call_id"] == "call_1" and rows[3]["content"] == '{"id": 1}'
    assert rows[8]["content"] == "what is this?"
    assert chatstore.to_openai_messages(
        (await store.list_messages("alice", conversation.id, limit=None)).items)[2][
            "tool_calls"][0]["id"] == "call_1"


async def test_reads_chat_messages_written_without_langchain(store: ChatStore) -> None:
    conversation = await store.create_conversation("alice", messages=[
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": '{"a": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "oops"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        {"item": {"type": "reasoning", "id": "rs", "summary": []}},  # no chat form: skipped
        {"role": "assistant", "content": "done"},
    ])
    got = await ChatStoreMessageHistory(store, "alice", conversation.id).aget_messages()
    assert [type(m) for m in got] == [SystemMessage, HumanMessage, AIMessage, ToolMessage,
                                      ToolMessage, AIMessage]
    ai = got[2]
    assert isinstance(ai, AIMessage) and ai.content == ""
    assert ai.tool_calls == [{"name": "f", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
    assert ai.invalid_tool_calls[0]["id"] == "c2"
    assert isinstance(got[3], ToolMessage) and got[3].tool_call_id == "c1"


async def test_after_a_compaction_the_history_is_the_models_view(store: ChatStore) -> None:
    conversation = await store.create_conversation("alice", messages=[
        {"role": "user", "content": f"q{i}"} if i % 2 else
        {"role": "assistant", "content": f"a{i}"} for i in range(1, 7)])
    history = ChatStoreMessageHistory(store, "alice", conversation.id)
    await store.compact("alice", conversation.id,
                        summary={"role": "system", "content": "summary of 1-4"},
                        through_seq=4)
    await history.aadd_messages([HumanMessage("next")])
    got = await history.aget_messages()
    assert [m.content for m in got] == ["summary of 1-4", "q5", "a6", "next"]
    synced = await asyncio.to_thread(lambda: history.messages)
    assert [m.content for m in synced] == [m.content for m in got]
    # The transcript keeps every message, the summary where it was made.
    page = await store.list_messages("alice", conversation.id, limit=None)
    assert [m.content for m in page.items] == ["q1", "a2", "q3", "a4", "q5", "a6",
                                              "summary of 1-4", "next"]


async def test_sync_methods_from_a_worker_thread_while_the_loop_runs(store: ChatStore) -> None:
    conversation = await store.create_conversation("alice")
    history = ChatStoreMessageHistory(store, "alice", conversation.id)
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def work() -> list[BaseMessage]:
        threads.append(threading.get_ident())
        history.add_message(HumanMessage("from a thread", id="x"))
        history.add_messages([AIMessage("reply"), HumanMessage("more")])
        history.add_user_message("convenience")
        return history.messages

    got = await asyncio.to_thread(work)
    assert threads and threads[0] != loop_thread
    assert [m.content for m in got] == ["from a thread", "reply", "more", "convenience"]
    assert await history.aget_messages() == got
    # The work ran on the store's own loop and pool: no second pool was made.
    assert history.store.pool is store.pool
    await asyncio.to_thread(history.clear)
    assert await history.aget_messages() == []
    assert (await store.get_conversation("alice", conversation.id)).message_count == 0


async def test_sync_method_on_the_loop_thread_raises_instead_of_deadlocking(
        store: ChatStore) -> None:
    conversation = await store.create_conversation("alice")
    history = ChatStoreMessageHistory(store, "alice", conversation.id)
    with pytest.raises(LoopThreadError, match="aget_messages"):
        _ = history.messages
    with pytest.raises(LoopThreadError):
        history.add_messages([HumanMessage("no")])
    with pytest.raises(LoopThreadError):
        history.clear()
    assert await history.aget_messages() == []


async def test_runnable_with_message_history_sync_and_async(store: ChatStore) -> None:
    conversation = await store.create_conversation("alice")

    def reply(messages: list[BaseMessage]) -> AIMessage:
        return AIMessage(f"seen {len(messages)} message(s), last {messages[-1].content!r}")

    chain = RunnableWithMessageHistory(
        RunnableLambda(reply),
        lambda session_id: ChatStoreMessageHistory(store, "alice", session_id),
    )
    config: Any = {"configurable": {"session_id": str(conversation.id)}}
    # LangChain's sync path, called from a worker thread as a sync web handler would.
    first = await asyncio.to_thread(chain.invoke, [HumanMessage("one")], config)
    assert first.content == "seen 1 message(s), last 'one'"
    second = await chain.ainvoke([HumanMessage("two")], config)
    assert second.content == "seen 3 message(s), last 'two'"
    got = await ChatStoreMessageHistory(store, "alice", conversation.id).aget_messages()
    assert [m.content for m in got] == ["one", first.content, "two", second.content]


async def test_another_users_conversation_is_invisible(store: ChatStore,
                                                       conn: asyncpg.Connection) -> None:
    conversation = await store.create_conversation("alice")
    await ChatStoreMessageHistory(store, "alice", conversation.id).aadd_messages(
        [HumanMessage("secret")])
    before = await snapshot(conn)
    intruder = ChatStoreMessageHistory(store, "bob", conversation.id)
    with pytest.raises(NotFound):
        await intruder.aget_messages()
    with pytest.raises(NotFound):
        await intruder.aadd_messages([HumanMessage("hi")])
    with pytest.raises(NotFound):
        await intruder.aclear()
    with pytest.raises(NotFound):
        await asyncio.to_thread(lambda: intruder.messages)
    assert await snapshot(conn) == before


async def test_messages_without_a_chat_role_are_refused(store: ChatStore,
                                                        conn: asyncpg.Connection) -> None:
    conversation = await store.create_conversation("alice")
    history = ChatStoreMessageHistory(store, "alice", conversation.id)
    before = await snapshot(conn)
    with pytest.raises(InvalidInput, match=r"messages\[1\]"):
        await history.aadd_messages([HumanMessage("ok"), FunctionMessage(content="r", name="f")])
    assert await snapshot(conn) == before
    with pytest.raises(InvalidInput, match="conversation_id"):
        ChatStoreMessageHistory(store, "alice", "nope")


async def test_sync_methods_in_a_sync_program(store: ChatStore, db_url: str) -> None:
    """A sync script whose store's loop is not running: the call runs that loop."""
    conversation = await store.create_conversation("alice")

    def script() -> list[BaseMessage]:
        loop = asyncio.new_event_loop()
        try:
            own = loop.run_until_complete(chatstore.connect(db_url, min_size=1, max_size=1))
            history = ChatStoreMessageHistory(own, "alice", conversation.id)
            history.add_messages([HumanMessage("sync"), AIMessage("script")])
            got = history.messages
            loop.run_until_complete(own.close())
            return got
        finally:
            loop.close()

    got = await asyncio.to_thread(script)
    assert [m.content for m in got] == ["sync", "script"]
    assert await ChatStoreMessageHistory(store, "alice", conversation.id).aget_messages() == got


async def test_a_refused_write_in_runnable_with_message_history_reaches_the_caller(
        store: ChatStore, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    """LangChain writes the history in a tracer callback and only logs what it raises: the
    chain answers and the turn is lost. surface_write_errors() gives the caller the error,
    on the async path and on the sync one (run from a worker thread)."""
    conversation = await store.create_conversation("alice")
    model = FakeListChatModel(responses=["noted"])
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"),
                                               ("human", "{input}")])
    made: list[ChatStoreMessageHistory] = []

    def history_of(session_id: str) -> ChatStoreMessageHistory:
        made.append(ChatStoreMessageHistory(store, "alice", session_id))
        return made[-1]

    chain = RunnableWithMessageHistory(prompt | model, history_of,
                                       input_messages_key="input",
                                       history_messages_key="history")
    config: Any = {"configurable": {"session_id": str(conversation.id)}}
    hostile = {"input": "remember the code 4711\x00 please"}

    # What LangChain does by itself: a reply, a log line, nothing stored.
    before = await snapshot(conn)
    with caplog.at_level(logging.WARNING, "langchain_core"):
        reply = await chain.ainvoke(hostile, config)
    assert reply.content == "noted"
    assert "InvalidInput" in caplog.text
    assert await snapshot(conn) == before
    assert isinstance(made[-1].last_write_error, InvalidInput)

    # With surface_write_errors, the caller learns of it, on both paths.
    with pytest.raises(InvalidInput) as caught, surface_write_errors():
        await chain.ainvoke(hostile, config)
    assert caught.value.field == "messages[0].content"
    with pytest.raises(InvalidInput) as caught, surface_write_errors():
        await asyncio.to_thread(chain.invoke, hostile, config)
    assert caught.value.field == "messages[0].content"
    assert "4711" not in str(caught.value)
    assert await snapshot(conn) == before

    # A write that works raises nothing and clears the history's record.
    with surface_write_errors() as errors:
        assert (await chain.ainvoke({"input": "hello"}, config)).content == "noted"
    assert errors == [] and made[-1].last_write_error is None
    stored = await ChatStoreMessageHistory(store, "alice", conversation.id).aget_messages()
    assert [m.content for m in stored] == ["hello", "noted"]


# -- on a fork -------------------------------------------------------------------------------

async def test_a_history_on_a_fork_reads_the_prefix_and_writes_to_the_fork(
        store: ChatStore) -> None:
    """A fork (store.fork) is just a conversation to the history: it reads the messages it
    shares with its source and its own, writes go to it, and clearing it leaves the source
    as it was; so does clearing the source for the fork."""
    messages = conversation_messages()
    conversation = await store.create_conversation("alice")
    source = ChatStoreMessageHistory(store, "alice", conversation.id)
    await source.aadd_messages(messages)
    revision = (await store.get_conversation("alice", conversation.id)).revision
    fork = await store.fork("alice", conversation.id, at_seq=6)
    history = ChatStoreMessageHistory(store, "alice", fork.id)

    assert await history.aget_messages() == messages[:6]
    own = [HumanMessage("edited question", id="h-2"), AIMessage("another answer")]
    await history.aadd_messages(own)
    assert await history.aget_messages() == [*messages[:6], *own]
    assert await source.aget_messages() == messages
    # the sync path, from a worker thread, on the fork
    await asyncio.to_thread(history.add_messages, [HumanMessage("from a thread")])
    got = await asyncio.to_thread(lambda: history.messages)
    assert got == [*messages[:6], *own, HumanMessage("from a thread")]

    await history.aclear()
    assert await history.aget_messages() == []
    assert await source.aget_messages() == messages
    assert (await store.get_conversation("alice", conversation.id)).revision == revision
    await history.aadd_messages([HumanMessage("fresh start")])
    assert await history.aget_messages() == [HumanMessage("fresh start")]

    other = ChatStoreMessageHistory(
        store, "alice", (await store.fork("alice", conversation.id, at_seq=10)).id)
    await source.aclear()
    assert await source.aget_messages() == []
    assert await other.aget_messages() == messages


async def test_runnable_with_message_history_on_a_fork(store: ChatStore) -> None:
    """Edit through LangChain: fork before the message to edit and invoke the chain with
    the fork as its session; the source keeps its version."""
    conversation = await store.create_conversation("alice")

    def reply(messages: list[BaseMessage]) -> AIMessage:
        return AIMessage(f"seen {[m.content for m in messages]}")

    chain = RunnableWithMessageHistory(
        RunnableLambda(reply),
        lambda session_id: ChatStoreMessageHistory(store, "alice", session_id))

    def config(cid: Any) -> Any:
        return {"configurable": {"session_id": str(cid)}}

    await chain.ainvoke([HumanMessage("one")], config(conversation.id))
    await chain.ainvoke([HumanMessage("two")], config(conversation.id))
    fork = await store.fork("alice", conversation.id, at_seq=2)  # before "two"
    edited = await chain.ainvoke([HumanMessage("two, edited")], config(fork.id))
    assert edited.content == "seen ['one', \"seen ['one']\", 'two, edited']"
    source = await ChatStoreMessageHistory(store, "alice", conversation.id).aget_messages()
    assert [m.content for m in source][2] == "two"
    on_fork = await ChatStoreMessageHistory(store, "alice", fork.id).aget_messages()
    assert [m.content for m in on_fork] == [*(m.content for m in source[:2]), "two, edited",
                                            edited.content]
