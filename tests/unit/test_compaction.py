"""The compaction cut (chatstore.items.compaction_boundary) without a database: against a
brute-force model over random histories of tool calls and results, at every cut; the store's
tests (tests/store/test_compaction.py) check the same through PostgreSQL."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatstore.items import compaction_boundary

from ..tool_histories import HISTORY, build_history, call, model_cut


def links_of(messages: list[dict[str, Any]]) -> list[tuple[int, list[str], str | None]]:
    """What the tool_links statement reads: (seq, call ids, answered call id)."""
    links = []
    for seq, m in enumerate(messages, 1):
        item = m.get("item") or {}
        ids = [c["id"] for c in m.get("tool_calls") or ()]
        if item.get("type") == "function_call":
            ids = [item["call_id"]]
        answered = m.get("tool_call_id") or (
            item["call_id"] if item.get("type") == "function_call_output" else None)
        if ids or answered:
            links.append((seq, ids, answered))
    return links


@settings(max_examples=300, deadline=None)
@given(steps=HISTORY, pick=st.integers(0, 10**6))
def test_the_cut_is_the_highest_no_pair_straddles(steps: list[tuple[Any, ...]],
                                                  pick: int) -> None:
    messages, pairs = build_history(steps)
    through = pick % (len(messages) + 1)
    assert compaction_boundary(links_of(messages), through) == model_cut(pairs, through)


def test_calls_in_flight_hold_the_cut_back_only_after_the_turns_start() -> None:
    messages = [{"role": "user", "content": "q"}, call("old"),             # 1, 2
                {"role": "user", "content": "q"}, call("new", "other"),    # 3, 4
                {"role": "tool", "tool_call_id": "other", "content": "r"}]  # 5
    links = links_of(messages)
    assert compaction_boundary(links, 5) == 5  # unanswered calls do not move it
    assert compaction_boundary(links, 5, in_flight_after=2) == 3  # "new" is in flight
    assert compaction_boundary(links, 5, in_flight_after=4) == 5  # made before the turn
    assert compaction_boundary(links, 4) == 3  # "other" is answered after the cut
    # a missing call id counts as "None", as the window rule counts it
    assert compaction_boundary([(1, [None], None), (2, [], "None")], 1) == 0
