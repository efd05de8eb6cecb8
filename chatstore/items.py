"""Agent items and chat messages: projections, and context windows the model API accepts.

An *item* is the JSON object an agent framework produced: an OpenAI Responses input item, as
the Agents SDK stores it (``{"type": "function_call", ...}``, ``{"role": "user", ...}``...).
chatstore stores it exactly, next to its *chat-format projection* (``role``, ``content``,
``tool_calls``, ``tool_call_id``), which search, psql, ``to_openai_messages`` and context
windows use. :func:`project` is the one place that decides that projection; docs/api.md
tabulates it.

Everything here is pure Python: no database, unit-tested with hypothesis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Message

__all__ = ["Projection", "compaction_boundary", "project", "to_items", "to_openai_messages",
           "window_rule"]

# Parts of a message's content list whose text is the message's text.
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
_CHAT_ROLES = {"system": "system", "developer": "system", "user": "user",
               "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Projection:
    """The chat columns of an item; ``role is None`` when the item has no chat form."""

    role: str | None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


_NO_CHAT_FORM = Projection(role=None)


def _text(content: Any) -> str | None:
    """The text of a message's content: a string as it is, a list of parts as their text
    parts joined by newlines (images, files and audio stay in the item only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping):
                key = _TEXT_PARTS.get(str(part.get("type")))
                if key is not None and isinstance(part.get(key), str):
                    texts.append(part[key])
        return "\n".join(texts)
    return None


def _output_text(output: Any) -> str:
    """A tool output as text: a string as it is, a list of parts as their text, anything else
    as compact JSON."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        text = _text(output)
        if text:
            return text
    return json.dumps(output, ensure_ascii=False, separators=(",", ":"))


def project(item: Mapping[str, Any]) -> Projection:
    """The chat-format projection of an item (see the table in docs/api.md).

    - a message (``type`` ``"message"`` or no ``type``, with a ``role``): that role
      (``developer`` becomes ``system``) and the text of its content;
    - ``function_call``: an assistant message with one tool call (``call_id``, ``name``,
      ``arguments``);
    - ``function_call_output``: a tool message answering ``call_id``, content its output;
    - ``custom_tool_call`` / ``custom_tool_call_output``: the same, with a ``custom`` call;
    - every other type (``reasoning``, web/file search, computer, MCP, image generation,
      code interpreter, shell calls, item references, types that do not exist yet): no chat
      form (``role`` ``None``); the item is kept, context windows and
      :func:`to_openai_messages` skip it.
    """
    kind = item.get("type")
    if kind is None or kind == "message":
        role = _CHAT_ROLES.get(str(item.get("role")))
        content = _text(item.get("content"))
        if role is None or content is None:
            return _NO_CHAT_FORM
        return Projection(role=role, content=content)
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return _NO_CHAT_FORM
    if kind == "function_call":
        name, arguments = item.get("name"), item.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, str):
            return _NO_CHAT_FORM
        return Projection(role="assistant", tool_calls=[{
            "id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}])
    if kind == "custom_tool_call":
        name, text = item.get("name"), item.get("input")
        if not isinstance(name, str) or not isinstance(text, str):
            return _NO_CHAT_FORM
        return Projection(role="assistant", tool_calls=[{
            "id": call_id, "type": "custom", "custom": {"name": name, "input": text}}])
    if kind in ("function_call_output", "custom_tool_call_output"):
        return Projection(role="tool", content=_output_text(item.get("output")),
                          tool_call_id=call_id)
    return _NO_CHAT_FORM


# -- windows -------------------------------------------------------------------------------


def _call_ids(message: Message) -> list[str]:
    return [str(call.get("id")) for call in message.tool_calls or ()
            if isinstance(call, Mapping)]


def window_rule(messages: Sequence[Message]) -> list[Message]:
    """Drop what would make a window invalid input for the model API.

    A tool result whose call is not in the window is dropped, and so is an assistant
    message with a tool call whose results are not all in the window (a call whose result is
    not stored yet included), matched by call id, also when parallel calls are separate rows.
    Dropping a call drops its results in turn, until nothing changes. Order is kept.
    """
    if not any(m.tool_calls or m.role == "tool" for m in messages):
        return list(messages)  # the common window: nothing to match, one cheap pass
    keep = [True] * len(messages)
    while True:
        answered = {m.tool_call_id for m, k in zip(messages, keep, strict=True)
                    if k and m.role == "tool" and m.tool_call_id is not None}
        changed = False
        called: set[str] = set()
        for i, message in enumerate(messages):
            if keep[i] and message.tool_calls:
                ids = _call_ids(message)
                if all(call_id in answered for call_id in ids):
                    called.update(ids)
                else:
                    keep[i] = False
                    changed = True
        for i, message in enumerate(messages):
            if keep[i] and message.role == "tool" and message.tool_call_id not in called:
                keep[i] = False
                changed = True
        if not changed:
            return [m for m, k in zip(messages, keep, strict=True) if k]


def compaction_boundary(links: Iterable[tuple[int, Sequence[str | None], str | None]],
                        through: int, *, in_flight_after: int | None = None) -> int:
    """Where a compaction asked to summarize through seq ``through`` may cut: the highest seq
    ``b <= through`` such that no tool call at or before ``b`` has a result after it.

    ``links`` are the messages (of the range that matters, any order) that call tools or
    answer a call: ``(seq, call ids, answered call id)``. A result is matched to the nearest
    call before it with its id (the window rule's matching: ``tool_calls[].id`` against
    ``tool_call_id``, a missing id counting as ``"None"``). The cut moves back to just
    before a call whose results straddle it, again until none does, so the summarized part
    and the model's view each hold a call together with all its results: never a call or a
    result without the other.

    A call none of whose results is stored yet does not move the cut (it may never be
    answered; the window rule leaves it out of windows), except with ``in_flight_after``:
    then a call after that seq (one the compacting turn appended) whose results are not all
    stored counts as in flight, and the cut moves back before it, so that the results it
    still gets land in the view next to it.
    """
    calls: dict[str, list[int]] = {}
    answers: list[tuple[int, str]] = []
    for seq, ids, answered in links:
        for call_id in ids or ():
            calls.setdefault(str(call_id), []).append(seq)
        if answered is not None:
            answers.append((seq, answered))
    pairs: list[tuple[int, int]] = []  # (call seq, result seq)
    answered_by: dict[tuple[int, str], int] = {}  # (call seq, id) -> a result's seq
    for seq, answered in answers:
        before = [call for call in calls.get(answered, ()) if call < seq]
        if before:
            pairs.append((max(before), seq))
            answered_by[(max(before), answered)] = seq
    if in_flight_after is not None:
        for call_id, seqs in calls.items():
            for call in seqs:
                if call > in_flight_after and (call, call_id) not in answered_by:
                    pairs.append((call, 1 << 62))  # its result is yet to come
    boundary = through
    moved = True
    while moved:
        moved = False
        for call, result in pairs:
            if call <= boundary < result:
                boundary = call - 1
                moved = True
    return boundary


def to_openai_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """The Chat Completions message list of a window.

    Messages with no chat form (``role is None``: reasoning and hosted-tool items) are
    skipped; an assistant message that carries only tool calls is merged into the assistant
    message before it when that one also calls tools, so parallel calls that the Agents SDK
    stored as separate items become one assistant message, as the API expects.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role is None:
            continue
        chat = message.to_openai()
        previous = out[-1] if out else None
        if (chat["role"] == "assistant" and chat.get("tool_calls") and not chat["content"]
                and previous is not None and previous["role"] == "assistant"
                and previous.get("tool_calls")):
            previous["tool_calls"] = [*previous["tool_calls"], *chat["tool_calls"]]
            continue
        out.append(chat)
    return out


def to_items(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Responses-API input items of a window: each message's stored ``item`` as it is, and
    for a message appended in chat format, the equivalent items (an assistant message with
    tool calls becomes its text, if any, and one ``function_call`` item per call)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.item is not None:
            out.append(message.item)
            continue
        role = message.role
        if role == "tool":
            out.append({"type": "function_call_output", "call_id": message.tool_call_id,
                        "output": message.content or ""})
            continue
        if message.content is not None or not message.tool_calls:
            out.append({"role": str(role), "content": message.content or ""})
        for call in message.tool_calls or ():
            function = call.get("function") or {}
            out.append({"type": "function_call", "call_id": call.get("id"),
                        "name": function.get("name"), "arguments": function.get("arguments")})
    return out
