"""Hostile input, property-based (hypothesis): NUL, lone surrogates, huge and empty strings,
deep and odd JSON, extreme integers, SQL fragments, wrong types, across the public methods.

Every call either raises a chatstore error (and then changed nothing) or succeeded and reads
back exactly what was given. The examples per test add up to ``TOTAL_CASES`` (>= 10,000).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatstore
from chatstore import ChatStore, ChatStoreError

EXAMPLES = 2000
CASES: dict[str, int] = {}
STORED: dict[str, int] = {}  # calls that succeeded (and were read back)

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SQL_FRAGMENTS = ["'; DROP TABLE messages; --", "$1", "%s", "\\", "' OR '1'='1", "NULL",
                 "\\x00", "E'\\\\'", "::messages", "*/", "/*", "%", "_", "{}", "[]"]
HUGE = ["x" * ((1 << 20) + 1), "é" * ((1 << 19) + 1), "k" * 513, "t" * 4097]
EXTREME_INTS = [0, -1, 1, 2**31 - 1, 2**31, -2**31 - 1, 2**63 - 1, 2**63, -2**63 - 1,
                2**100, -2**100]

any_char = st.characters(blacklist_categories=())  # includes lone surrogates and NUL
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=any_char, max_size=40),
    st.sampled_from([*SQL_FRAGMENTS, "", "\x00", "�", "a�b", " "]),
    st.sampled_from(HUGE),
)
ints = st.one_of(st.integers(), st.sampled_from(EXTREME_INTS))
odd_values = st.one_of(st.none(), st.booleans(), st.floats(), st.binary(max_size=4),
                       st.just(1.5), st.just(object()), st.just(uuid.uuid4()))


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value] if levels % 2 else {"k": value}
    return value


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, st.floats(), texts),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
metadata = st.one_of(st.dictionaries(texts, json_values, max_size=4),
                     st.integers(0, 120).map(lambda n: {"d": deep(n)}),
                     st.sampled_from([None, {}, [], "x", 3, {1: "int key"}]))
roles = st.sampled_from(["user", "assistant", "system", "tool", "", "admin", None, 3, "USER"])
tool_calls = st.one_of(
    st.none(),
    st.lists(st.fixed_dictionaries({
        "id": texts, "type": st.sampled_from(["function", "x"]),
        "function": st.fixed_dictionaries({"name": texts, "arguments": texts})}),
        max_size=2),
    json_values,
)
items = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output",
                              "reasoning", "web_search_call", "", "x" * 300])},
    optional={"role": roles, "content": st.one_of(texts, json_values),
              "call_id": texts, "name": texts, "arguments": texts, "output": json_values,
              "id": texts, "summary": json_values, "status": texts},
)
item_messages = st.fixed_dictionaries(
    {"item": st.one_of(items, json_values)},
    optional={"token_count": st.one_of(ints, odd_values), "metadata": metadata,
              "idempotency_key": st.one_of(texts, st.none())},
)
chat_messages = st.fixed_dictionaries(
    {"role": roles},
    optional={"content": st.one_of(texts, st.none(), odd_values),
              "tool_calls": tool_calls, "tool_call_id": st.one_of(texts, st.none()),
              "metadata": metadata, "token_count": st.one_of(ints, odd_values),
              "idempotency_key": st.one_of(texts, st.none()),
              "extra_field": texts},
)
messages = st.one_of(chat_messages, item_messages)


@pytest.fixture(scope="module")
async def hostile(module_db_url: str) -> AsyncIterator[tuple[ChatStore, asyncpg.Connection]]:
    conn = await asyncpg.connect(module_db_url)
    await conn.execute("INSERT INTO users (id) VALUES ('alice') ON CONFLICT DO NOTHING")
    store = await chatstore.connect(module_db_url, min_size=1, max_size=2)
    try:
        yield store, conn
    finally:
        await store.close()
        await conn.close()


async def state(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Everything alice has, to compare before and after a failed call."""
    rows = await conn.fetch(
        "SELECT id, title, metadata::text, message_count, updated_at, "
        "(SELECT count(*) FROM messages m "
        " WHERE m.user_id = c.user_id AND m.conversation_id = c.id) AS n "
        "FROM conversations c WHERE user_id = 'alice' ORDER BY id")
    return [tuple(r) for r in rows]


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values. jsonb keeps numbers as exact decimals and prints them without an
    exponent, so 5.3e+16 can come back as the int 53000000000000000: compare the decimals."""
    numbers = int | float
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return Decimal(repr(a)) == Decimal(repr(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def as_text(value: Any) -> Any:
    """What a text field holds after pydantic's lax parsing: UTF-8 bytes become their text."""
    return value.decode() if isinstance(value, bytes) else value


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


async def _conversation(store: ChatStore) -> uuid.UUID:
    page = await store.list_conversations("alice", limit=1)
    if page.items:
        return page.items[0].id
    return (await store.create_conversation("alice")).id


@SETTINGS
@given(user=st.one_of(st.just("alice"), texts), title=st.one_of(st.none(), texts, odd_values),
       meta=metadata)
async def test_create_conversation(hostile: tuple[ChatStore, asyncpg.Connection], user: Any,
                                   title: Any, meta: Any) -> None:
    store, conn = hostile
    count("create_conversation")
    before = await state(conn)
    try:
        made = await store.create_conversation(user, title=title, metadata=meta)
    except ChatStoreError:
        assert await state(conn) == before
        return
    STORED["create_conversation"] = STORED.get("create_conversation", 0) + 1
    got = await store.get_conversation(user, made.id)
    assert got.title == title and same_json(got.metadata, meta or {})
    await store.delete_conversation(user, made.id)


@SETTINGS
@given(batch=st.lists(messages, min_size=0, max_size=3),
       expected=st.one_of(st.none(), st.just("current"), ints, odd_values),
       in_turn=st.booleans())
async def test_append_messages(hostile: tuple[ChatStore, asyncpg.Connection],
                               batch: list[dict[str, Any]], expected: Any,
                               in_turn: bool) -> None:
    store, conn = hostile
    count("append_messages")
    cid = await _conversation(store)
    if expected == "current":
        expected = (await store.get_conversation("alice", cid)).revision
    before = await state(conn)
    try:
        if in_turn:
            async with store.turn("alice", cid) as turn:
                stored = await turn.append(batch)
        else:
            stored = await store.append_messages("alice", cid, batch,
                                                 expected_revision=expected)
    except ChatStoreError:
        assert await state(conn) == before
        return
    STORED["append_messages"] = STORED.get("append_messages", 0) + 1
    STORED["items"] = STORED.get("items", 0) + sum("item" in m for m in batch)
    page = await store.list_messages("alice", cid, limit=len(batch))
    by_seq = {m.seq: m for m in page.items}
    for given_message, result in zip(batch, stored, strict=True):
        back = by_seq.get(result.seq, result)  # a repeated key returns the earlier one
        if "item" in given_message:
            given_item = given_message["item"]
            if isinstance(given_item, str):  # JSON text of an object: stored parsed
                given_item = json.loads(given_item)
            if back.seq in by_seq:
                assert same_json(back.item, given_item)
            continue
        assert back.role is not None and back.role.value == given_message["role"]
        if back.seq in by_seq:
            assert back.content == as_text(given_message.get("content"))
            assert same_json(back.tool_calls, given_message.get("tool_calls"))
            assert same_json(back.metadata, given_message.get("metadata") or {})
            assert back.token_count == given_message.get("token_count")


@SETTINGS
@given(title=st.one_of(st.none(), texts, odd_values), meta=metadata,
       which=st.sampled_from(["title", "metadata", "both"]),
       cid=st.one_of(st.none(), texts, st.uuids()))
async def test_update_conversation(hostile: tuple[ChatStore, asyncpg.Connection], title: Any,
                                   meta: Any, which: str, cid: Any) -> None:
    store, conn = hostile
    count("update_conversation")
    target = cid if cid is not None else await _conversation(store)
    before = await state(conn)
    kwargs: dict[str, Any] = {}
    if which in ("title", "both"):
        kwargs["title"] = title
    if which in ("metadata", "both"):
        kwargs["metadata"] = meta
    try:
        updated = await store.update_conversation("alice", target, **kwargs)
    except ChatStoreError:
        assert await state(conn) == before
        return
    got = await store.get_conversation("alice", updated.id)
    if "title" in kwargs:
        assert got.title == title
    if "metadata" in kwargs:
        assert same_json(got.metadata, meta or {})


@SETTINGS
@given(limit=st.one_of(ints, odd_values), before=st.one_of(st.none(), ints, odd_values),
       after=st.one_of(st.none(), ints, odd_values),
       max_messages=st.one_of(st.none(), ints, odd_values),
       max_tokens=st.one_of(st.none(), ints, odd_values),
       query=st.one_of(texts, odd_values), cursor=st.one_of(st.none(), texts, odd_values),
       cid=st.one_of(st.none(), texts, st.uuids()))
async def test_reads(hostile: tuple[ChatStore, asyncpg.Connection], limit: Any, before: Any,
                     after: Any, max_messages: Any, max_tokens: Any, query: Any, cursor: Any,
                     cid: Any) -> None:
    store, conn = hostile
    count("reads")
    target = cid if cid is not None else await _conversation(store)
    snapshot = await state(conn)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.list_messages("alice", target, limit=limit, before=before, after=after),
        lambda: store.context_messages("alice", target, max_messages=max_messages,
                                       max_tokens=max_tokens),
        lambda: store.search_messages("alice", query, limit=limit,
                                      conversation_id=None if cid is None else target),
        lambda: store.list_conversations("alice", limit=limit, cursor=cursor),
        lambda: store.get_conversation("alice", target),
    ]
    for call in calls:
        with contextlib.suppress(ChatStoreError):
            await call()
    assert await state(conn) == snapshot


@SETTINGS
@given(user=st.one_of(st.just("alice"), texts, odd_values),
       cid=st.one_of(texts, st.uuids(), odd_values),
       op=st.sampled_from(["pop", "clear", "delete", "get", "delete_user"]))
async def test_ids_everywhere(hostile: tuple[ChatStore, asyncpg.Connection], user: Any,
                              cid: Any, op: str) -> None:
    """Odd user ids and conversation ids on the calls that take only ids: nothing of alice's
    changes unless the call names her and one of her conversations."""
    store, conn = hostile
    count("ids")
    snapshot = await state(conn)
    try:
        if op == "pop":
            await store.pop_message(user, cid)
        elif op == "clear":
            await store.clear_messages(user, cid)
        elif op == "delete":
            await store.delete_conversation(user, cid)
        elif op == "get":
            await store.get_conversation(user, cid)
        elif user != "alice":
            await store.delete_user_data(user)
    except ChatStoreError:
        assert await state(conn) == snapshot
        return
    if user != "alice":
        assert await state(conn) == snapshot


def test_cases_tried() -> None:
    """Runs last in this module: the figure, and the floor of 10,000."""
    total = sum(CASES.values())
    print(f"\nhostile input: {total} generated cases ({CASES}); stored and read back: "
          f"{STORED}")
    assert total >= 10_000, CASES
