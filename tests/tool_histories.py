"""Histories of tool calls and their results for the compaction tests (tests/unit and
tests/store test_compaction.py): chat-format calls (one message, parallel ids) and agent
items (one function_call item per call), results in any order, some calls never answered."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["HISTORY", "build_history", "call", "model_cut", "result"]


def call(*ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in ids]}


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": f"out {call_id}"}


HISTORY = st.lists(st.one_of(
    st.tuples(st.just("say"), st.integers(0, 1)),
    st.tuples(st.just("call"), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("answer"), st.integers(0, 99)),
    st.tuples(st.just("reason"),),
), min_size=1, max_size=25)


def build_history(steps: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]],
                                                         list[tuple[int, int]]]:
    """Messages (chat format or items) from the steps, and the (call seq, result seq)
    pairs among them; calls left open are never answered."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "m1"}]
    open_calls: list[tuple[str, int]] = []
    pairs: list[tuple[int, int]] = []
    for step in steps:
        seq = len(messages) + 1
        if step[0] == "say":
            messages.append({"role": ("user", "assistant")[step[1]], "content": f"m{seq}"})
        elif step[0] == "reason":
            messages.append({"item": {"type": "reasoning", "id": f"r{seq}", "summary": []}})
        elif step[0] == "call":
            ids = [f"c{seq}.{i}" for i in range(step[1])]
            if step[2]:
                messages.append(call(*ids))
                open_calls += [(i, seq) for i in ids]
            else:
                for i in ids:
                    messages.append({"item": {"type": "function_call", "call_id": i,
                                              "name": "f", "arguments": "{}"}})
                    open_calls.append((i, len(messages)))
        elif open_calls:
            call_id, call_seq = open_calls.pop(step[1] % len(open_calls))
            messages.append({"item": {"type": "function_call_output", "call_id": call_id,
                                      "output": "x"}} if step[1] % 2 else result(call_id))
            pairs.append((call_seq, len(messages)))
    return messages, pairs


def model_cut(pairs: list[tuple[int, int]], through: int) -> int:
    """The highest cut at or before ``through`` that no call/result pair straddles."""
    return max(b for b in range(through + 1)
               if not any(c <= b < r for c, r in pairs))
