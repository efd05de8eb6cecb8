"""Agent items without a database: projections, the window rule, chat and item lists.

The window rule is checked with hypothesis over generated histories shaped like the ones
agents write: turns of a user message, tool rounds whose parallel calls are one assistant
row (Chat Completions) or separate rows (the Agents SDK), results in any order, reasoning
items, and a last turn still in flight (calls whose results are not stored yet).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstore import Message, to_items, to_openai_messages
from chatstore.errors import InvalidInput
from chatstore.items import project, window_rule
from chatstore.validation import Validator

CID = uuid.UUID(int=1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def message(seq: int, **fields: Any) -> Message:
    """A stored message built the way the store builds one (validated); an item without
    chat fields gets its projection."""
    if "item" in fields and "role" not in fields:
        chat = project(fields["item"])
        fields |= {"role": chat.role, "content": chat.content, "tool_calls": chat.tool_calls,
                   "tool_call_id": chat.tool_call_id}
    return Message.model_validate({"conversation_id": CID, "user_id": "u", "seq": seq,
                                   "created_at": NOW, **fields})


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


# -- projections ---------------------------------------------------------------------------

PROJECTIONS: list[tuple[dict[str, Any], tuple[Any, ...]]] = [
    ({"role": "user", "content": "hi"}, ("user", "hi", None, None)),
    ({"role": "developer", "content": "be brief"}, ("system", "be brief", None, None)),
    ({"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
      "content": [{"type": "output_text", "text": "a", "annotations": []},
                  {"type": "refusal", "refusal": "b"}]}, ("assistant", "a\nb", None, None)),
    ({"role": "user", "content": [{"type": "input_text", "text": "look"},
                                  {"type": "input_image", "image_url": "https://x/y.png",
                                   "detail": "auto"}]}, ("user", "look", None, None)),
    ({"type": "function_call", "call_id": "c1", "name": "add_task",
      "arguments": "{\"t\": 1}", "id": "fc_1"},
     ("assistant", None, [{"id": "c1", "type": "function",
                           "function": {"name": "add_task", "arguments": "{\"t\": 1}"}}], None)),
    ({"type": "function_call_output", "call_id": "c1", "output": "done"},
     ("tool", "done", None, "c1")),
    ({"type": "function_call_output", "call_id": "c1",
      "output": [{"type": "input_text", "text": "part"}]}, ("tool", "part", None, "c1")),
    ({"type": "custom_tool_call", "call_id": "c2", "name": "grammar", "input": "x"},
     ("assistant", None, [{"id": "c2", "type": "custom",
                           "custom": {"name": "grammar", "input": "x"}}], None)),
    ({"type": "custom_tool_call_output", "call_id": "c2", "output": "ok"},
     ("tool", "ok", None, "c2")),
    ({"type": "reasoning", "id": "rs_1", "summary": []}, (None, None, None, None)),
    ({"type": "web_search_call", "id": "ws_1", "status": "completed"}, (None, None, None, None)),
    ({"type": "a_type_from_the_future", "payload": {"x": [1]}}, (None, None, None, None)),
    ({"type": "function_call", "name": "no call id", "arguments": "{}"},
     (None, None, None, None)),
]


@pytest.mark.parametrize(("item", "expected"), PROJECTIONS)
def test_projection_of_each_item_type(item: dict[str, Any], expected: tuple[Any, ...]) -> None:
    chat = project(item)
    assert (chat.role, chat.content, chat.tool_calls, chat.tool_call_id) == expected


def test_item_message_refuses_chat_fields_and_keeps_the_item() -> None:
    check = Validator()
    item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    prepared = check.message({"item": item, "token_count": 3, "idempotency_key": "k"}, "m")
    assert prepared.role == "assistant" and prepared.item is not None
    for field in ("role", "content", "tool_calls", "tool_call_id"):
        value: Any = "user" if field == "role" else "x"
        if field == "tool_calls":
            value = [call("c")]
        with pytest.raises(InvalidInput) as caught:
            check.message({"item": item, field: value}, "m")
        assert caught.value.field == f"m.{field}"


def test_mixed_keyed_batches_are_refused() -> None:
    with pytest.raises(InvalidInput, match="every message carries an idempotency_key"):
        Validator().messages([{"role": "user", "content": "a", "idempotency_key": "k"},
                            {"role": "assistant", "content": "b"}])


# -- the window rule -----------------------------------------------------------------------


def test_window_rule_on_the_issues_example() -> None:
    """[function_call c2, output c1, output c2, message]: c1's output lost its call."""
    window = [
        message(2, item={"type": "function_call", "call_id": "c2", "name": "f",
                         "arguments": "{}"}),
        message(3, item={"type": "function_call_output", "call_id": "c1", "output": "1"}),
        message(4, item={"type": "function_call_output", "call_id": "c2", "output": "2"}),
        message(5, role="assistant", content="done"),
    ]
    kept = window_rule(window)
    assert [m.seq for m in kept] == [2, 4, 5]
    assert to_openai_messages(kept) == [
        {"role": "assistant", "content": None, "tool_calls": [call("c2") | {
            "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "2", "tool_call_id": "c2"},
        {"role": "assistant", "content": "done"},
    ]


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    rows: list[dict[str, Any]] = []
    n_calls = 0
    turns = draw(st.integers(1, 4))
    for turn in range(turns):
        rows.append({"role": "user", "content": f"q{turn}"})
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                rows.append({"item": {"type": "reasoning", "id": "rs", "summary": []}})
            if draw(st.booleans()):
                rows.append({"role": "assistant", "content": "thinking aloud"})
            ids = [f"c{n_calls + i}" for i in range(draw(st.integers(1, 3)))]
            n_calls += len(ids)
            if draw(st.booleans()):  # Chat Completions: one row with every call
                rows.append({"role": "assistant", "tool_calls": [call(i) for i in ids]})
            else:  # the Agents SDK: one function_call item per call
                rows.extend({"item": {"type": "function_call", "call_id": i, "name": "f",
                                      "arguments": "{}"}} for i in ids)
            answered = draw(st.permutations(ids))
            last = turn == turns - 1
            if last and draw(st.booleans()):  # still in flight: some results missing
                answered = answered[:draw(st.integers(0, len(answered) - 1))]
            for i in answered:
                if draw(st.booleans()):
                    rows.append({"role": "tool", "content": "r", "tool_call_id": i})
                else:
                    rows.append({"item": {"type": "function_call_output", "call_id": i,
                                          "output": "r"}})
        rows.append({"role": "assistant", "content": f"a{turn}"})
    return [message(seq, **row) for seq, row in enumerate(rows, start=1)]


def assert_valid_chat_list(chat: list[dict[str, Any]]) -> None:
    """What the Chat Completions API accepts: each assistant message with tool_calls is
    followed by exactly one tool message per call (any order), and no tool message
    appears anywhere else."""
    i = 0
    while i < len(chat):
        entry = chat[i]
        assert entry["role"] != "tool", (i, chat)
        if entry["role"] == "assistant" and entry.get("tool_calls"):
            ids = [c["id"] for c in entry["tool_calls"]]
            results = []
            while i + 1 < len(chat) and chat[i + 1]["role"] == "tool":
                results.append(chat[i + 1]["tool_call_id"])
                i += 1
            assert sorted(results) == sorted(ids), (ids, results, chat)
        i += 1


@settings(max_examples=400, deadline=None)
@given(histories())
def test_every_window_is_valid_model_input(history: list[Message]) -> None:
    for start in range(len(history)):  # a window is always the newest messages
        window = window_rule(history[start:])
        assert_valid_chat_list(to_openai_messages(window))
        items = to_items(window)
        seen_calls: set[str] = set()
        for item in items:
            if item.get("type") == "function_call":
                seen_calls.add(item["call_id"])
            elif item.get("type") == "function_call_output":
                assert item["call_id"] in seen_calls, items
        # Nothing else is dropped: user, text and reasoning rows all stay.
        plain = [m.seq for m in history[start:] if not m.tool_calls and m.role != "tool"]
        assert set(plain) <= {m.seq for m in window}
        # A call group whose results are all in the window stays whole.
        answered = {m.tool_call_id for m in history[start:] if m.role == "tool"}
        for m in history[start:]:
            ids = {c["id"] for c in m.tool_calls or ()}
            if ids and ids <= answered:  # call ids are unique in these histories
                assert m in window


def test_to_openai_merges_split_parallel_calls_and_skips_reasoning() -> None:
    rows = [
        message(1, role="user", content="q"),
        message(2, item={"type": "reasoning", "id": "rs", "summary": []}),
        message(3, role="assistant", tool_calls=[call("a")],
                item={"type": "function_call", "call_id": "a", "name": "f",
                      "arguments": "{}"}),
        message(4, role="assistant", tool_calls=[call("b")],
                item={"type": "function_call", "call_id": "b", "name": "f",
                      "arguments": "{}"}),
        message(5, role="tool", content="ra", tool_call_id="a"),
        message(6, role="tool", content="rb", tool_call_id="b"),
    ]
    chat = to_openai_messages(rows)
    assert [c["role"] for c in chat] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in chat[1]["tool_calls"]] == ["a", "b"]
    with pytest.raises(ValueError, match="'reasoning' item with no chat form"):
        rows[1].to_openai()


def test_to_items_converts_chat_rows() -> None:
    rows = [
        message(1, role="user", content="q"),
        message(2, role="assistant", content="let me see", tool_calls=[call("a")]),
        message(3, role="tool", content="ra", tool_call_id="a"),
    ]
    assert to_items(rows) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "let me see"},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": "ra"},
    ]
