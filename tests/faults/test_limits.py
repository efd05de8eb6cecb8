"""Limits on every field, checked before any SQL and named in the error.

The store under test has its pool closed: a call that reached SQL would raise StoreClosed,
so an InvalidInput here proves the check ran first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import chatstore
from chatstore import ChatStore, InvalidInput, StoreClosed

from .conftest import message

CID = uuid.uuid4()
BIG = "x" * (5 << 20)


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": [value]}
    return value


def tool_call(arguments: str = "{}", call_id: str = "c1") -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}]}


Call = Callable[[ChatStore], Awaitable[object]]


async def _enter(manager: AbstractAsyncContextManager[object]) -> None:
    async with manager:
        pass

CASES: list[tuple[str, Call, str]] = [
    ("user_id", lambda s: s.get_conversation("u" * 513, CID), "user_id"),
    ("title", lambda s: s.create_conversation("alice", title=BIG), "title"),
    ("title on update", lambda s: s.update_conversation("alice", CID, title="t" * 4097),
     "title"),
    ("metadata", lambda s: s.create_conversation("alice", metadata={"a": BIG}), "metadata"),
    ("deep metadata", lambda s: s.create_conversation("alice", metadata=deep(40)),
     "metadata"),
    ("very deep metadata", lambda s: s.update_conversation("alice", CID,
                                                           metadata=deep(100_000)),
     "metadata"),
    ("content", lambda s: s.append_message("alice", CID, message(BIG)),
     "messages[0].content"),
    ("message metadata", lambda s: s.append_message("alice", CID, message("x", metadata={
        "a": "y" * (65 << 10)})), "messages[0].metadata"),
    ("tool call arguments", lambda s: s.append_message("alice", CID, tool_call(BIG)),
     "messages[0].tool_calls"),
    ("tool_call_id", lambda s: s.append_message("alice", CID, {
        "role": "tool", "content": "r", "tool_call_id": "c" * 600}),
     "messages[0].tool_call_id"),
    ("idempotency_key", lambda s: s.append_message("alice", CID, message(
        "x", idempotency_key=BIG)), "messages[0].idempotency_key"),
    ("token_count", lambda s: s.append_message("alice", CID, message(
        "x", token_count=2**31)), "messages[0].token_count"),
    ("search query", lambda s: s.search_messages("alice", "q" * 5000), "query"),
    ("before", lambda s: s.list_messages("alice", CID, before=2**40), "before"),
    ("after", lambda s: s.list_messages("alice", CID, after=2**31), "after"),
    ("limit", lambda s: s.list_messages("alice", CID, limit=2**63), "limit"),
    ("expected_revision", lambda s: s.append_message("alice", CID, message("x"),
                                                     expected_revision=2**63),
     "expected_revision"),
    ("negative expected_revision", lambda s: s.clear_messages("alice", CID,
                                                              expected_revision=-1),
     "expected_revision"),
    ("lease_seconds", lambda s: _enter(s.turn("alice", CID, lease_seconds=2**63)),
     "lease_seconds"),
    ("item", lambda s: s.append_message("alice", CID, {"item": {
        "type": "function_call_output", "call_id": "c1", "output": BIG}}),
     "messages[0].item"),
    ("max_tokens", lambda s: s.context_messages("alice", CID, max_tokens=2**63),
     "max_tokens"),
    ("max_messages", lambda s: s.context_messages("alice", CID, max_messages=2**31),
     "max_messages"),
    ("negative max_tokens", lambda s: s.context_messages("alice", CID, max_tokens=-2**70),
     "max_tokens"),
]


@pytest.fixture
async def closed_store(db_url: str) -> AsyncIterator[ChatStore]:
    store = await chatstore.connect(db_url, min_size=0, max_size=1)
    await store.close()
    with pytest.raises(StoreClosed):  # proves a call that reaches SQL fails differently
        await store.get_conversation("alice", CID)
    yield store


@pytest.mark.parametrize(("call", "field"), [(c, f) for _, c, f in CASES],
                         ids=[name for name, _, _ in CASES])
async def test_limit_is_checked_before_sql_and_named(closed_store: ChatStore, call: Call,
                                                     field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await call(closed_store)
    assert caught.value.field == field, caught.value
    assert caught.value.outcome == "not_applied" and not caught.value.retryable
    assert len(str(caught.value)) < 300  # the value itself is never echoed


async def test_values_at_the_limits_are_stored(alice_store: ChatStore) -> None:
    conv = await alice_store.create_conversation(
        "alice", title="t" * 4096, metadata={"a": "m" * ((64 << 10) - 10)})
    stored = await alice_store.append_messages("alice", conv.id, [
        message("x", idempotency_key="k" * 512, metadata={"d": deep(30)}),
        {**tool_call(call_id="c" * 512), "idempotency_key": "k1"},
        {"role": "tool", "content": "r", "tool_call_id": "c" * 512, "token_count": 2**31 - 1,
         "idempotency_key": "k2"},
    ])
    assert [m.seq for m in stored] == [1, 2, 3]
    assert stored[0].idempotency_key == "k" * 512 and stored[0].metadata == {"d": deep(30)}
    page = await alice_store.list_messages("alice", conv.id, before=2**31 - 1)
    assert [m.seq for m in page.items] == [1, 2, 3]
    window = await alice_store.context_messages("alice", conv.id, max_tokens=2**63 - 1)
    assert len(window) == 3
