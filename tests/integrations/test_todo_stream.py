"""The todo chatbot's streaming endpoint (``POST /api/{user}/chat/stream``, the Vercel AI SDK's
UI message stream over SSE) served by a real uvicorn process on a real PostgreSQL, with the
real Agents SDK and the offline scripted model streaming its text in chunks.

A real server, not httpx's ASGI transport: the transport hands the app no disconnect when the
client goes away, and buffers nothing like a socket does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_todo_burst import Served, _idle_in_transaction, serve

# The model thinks THINK seconds per call, then sends its text in chunks CHUNK_DELAY apart.
THINK = "0.2"
CHUNK_DELAY = 0.3


@pytest.fixture
def streamed(new_database: Callable[..., str], tmp_path: Path) -> Iterator[Served]:
    with serve(new_database(template=False), tmp_path / "server.log", THINK,
               env={"TODO_MODEL_CHUNK_DELAY": str(CHUNK_DELAY)}) as server:
        yield server


def _events(lines: list[str]) -> list[Any]:
    """The SSE ``data:`` payloads: JSON chunks, and the literal ``[DONE]``."""
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def _stream(client: httpx.AsyncClient, body: dict[str, Any],
                  ) -> tuple[httpx.Headers, list[Any], dict[str, float]]:
    """POST a streamed chat and read it to its end: the headers, the events and when (seconds
    after the request was sent) the first text delta and the last event arrived."""
    started = time.monotonic()
    times: dict[str, float] = {}
    lines: list[str] = []
    async with client.stream("POST", "/api/demo/chat/stream", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            lines.append(line)
            if '"type":"text-delta"' in line and "first_delta" not in times:
                times["first_delta"] = time.monotonic() - started
        times["done"] = time.monotonic() - started
        return response.headers, _events(lines), times


async def _messages(client: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/demo/conversations/{cid}/messages",
                                params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _kinds(events: list[Any]) -> list[str]:
    return [e if isinstance(e, str) else e["type"] for e in events]


def _text(events: list[Any]) -> str:
    return "".join(e["delta"] for e in events if isinstance(e, dict)
                   and e["type"] == "text-delta")


async def test_a_streamed_turn_in_order_then_stored_whole(streamed: Served) -> None:
    async with httpx.AsyncClient(base_url=streamed.base, timeout=30) as client:
        headers, events, times = await _stream(client, {"message": "add milk and eggs"})
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["x-vercel-ai-ui-message-stream"] == "v1"
        cid = headers["x-conversation-id"]
        deltas = sum(1 for kind in _kinds(events) if kind == "text-delta")
        assert _kinds(events) == [
            "start", "start-step", "tool-input-available", "tool-input-available",
            "tool-output-available", "tool-output-available", "finish-step",
            "start-step", "text-start", *["text-delta"] * deltas, "text-end", "finish-step",
            "finish", "[DONE]"]
        assert deltas >= 3
        start = events[0]
        assert start["messageMetadata"] == {"conversation_id": cid}
        chunks = [e for e in events if isinstance(e, dict)]
        calls = [e for e in chunks if e["type"] == "tool-input-available"]
        assert [(c["toolName"], c["input"]) for c in calls] == [
            ("add_task", {"title": "milk"}), ("add_task", {"title": "eggs"})]
        outputs = [e for e in chunks if e["type"] == "tool-output-available"]
        assert [o["toolCallId"] for o in outputs] == [c["toolCallId"] for c in calls]
        assert outputs[0]["output"]["added"]["title"] == "milk"
        text_ids = {e["id"] for e in chunks if e["type"].startswith("text-")}
        assert len(text_ids) == 1
        reply = _text(events)
        assert reply.startswith("Done. ")

        # Streamed, not buffered: the first words arrived while the rest was still coming.
        print(f"\nfirst-token latency: {times['first_delta'] * 1000:.0f} ms "
              f"(model thinks {THINK} s per call, 2 calls), whole reply: "
              f"{times['done'] * 1000:.0f} ms")
        assert times["done"] - times["first_delta"] >= (deltas - 1) * CHUNK_DELAY * 0.8

        # The conversation holds the turn whole: the user's message, the calls, their
        # outputs, the full reply; nothing marked incomplete.
        stored = await _messages(client, cid)
        assert [m["role"] for m in stored] == ["user", "assistant", "assistant", "tool",
                                               "tool", "assistant"]
        assert stored[0]["content"] == "add milk and eggs"
        assert stored[-1]["content"] == reply
        assert stored[-1]["item"]["status"] == "completed"
        assert all(not m["metadata"] for m in stored)

        # A second streamed turn on the same conversation: the lease was released at [DONE].
        headers, events, _ = await _stream(client, {"message": "hello again",
                                                    "conversation_id": cid})
        assert headers["x-conversation-id"] == cid
        deltas = sum(1 for kind in _kinds(events) if kind == "text-delta")
        assert _kinds(events) == ["start", "start-step", "text-start",
                                  *["text-delta"] * deltas, "text-end", "finish-step",
                                  "finish", "[DONE]"]
        assert "Before that you said 1 thing(s)" in _text(events)
        stored = await _messages(client, cid)
        assert [m["role"] for m in stored[6:]] == ["user", "assistant"]
        assert stored[-1]["content"] == _text(events)

        # Each streamed turn recorded its model requests (2, then 1) before [DONE].
        usage = (await client.get("/api/demo/usage")).json()["total"]
        assert usage["requests"] == 3 and usage["entries"] == 3
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert await _idle_in_transaction(streamed.url) == []


async def _leave_after(client: httpx.AsyncClient, body: dict[str, Any],
                       deltas: int) -> tuple[str, list[Any]]:
    """Stream a chat and close the connection once ``deltas`` text deltas (0: the ``start``
    event) have arrived; the conversation's id and the events read."""
    lines: list[str] = []
    async with client.stream("POST", "/api/demo/chat/stream", json=body) as response:
        assert response.status_code == 200
        cid = response.headers["x-conversation-id"]
        async for line in response.aiter_lines():
            lines.append(line)
            events = _events(lines)
            if sum(1 for kind in _kinds(events) if kind == "text-delta") >= deltas and events:
                break
    # Leaving the block closes the connection mid-stream (no [DONE] read).
    return cid, _events(lines)


async def _settled(client: httpx.AsyncClient, cid: str, count: int,
                   deadline: float = 10.0) -> list[dict[str, Any]]:
    """The conversation's messages once it holds ``count`` of them and no turn is in flight
    (a plain chat is refused with 409 while one is)."""
    stop = time.monotonic() + deadline
    while True:
        stored = await _messages(client, cid)
        if len(stored) >= count:
            return stored
        if time.monotonic() > stop:
            pytest.fail(f"the conversation holds {stored} after {deadline} s")
        await asyncio.sleep(0.05)


async def test_a_client_that_leaves_mid_reply_keeps_its_message_and_the_partial_reply(
        streamed: Served) -> None:
    async with httpx.AsyncClient(base_url=streamed.base, timeout=30) as client:
        cid, events = await _leave_after(client, {"message": "tell me about my week"}, 2)
        received = _text(events)
        assert received and "[DONE]" not in events

        # The user's message and the reply as far as the client got it, marked incomplete,
        # in one turn that ended normally.
        stored = await _settled(client, cid, 2)
        assert [m["role"] for m in stored] == ["user", "assistant"]
        assert stored[0]["content"] == "tell me about my week"
        partial = stored[1]
        assert partial["metadata"] == {"incomplete": True}
        assert partial["item"]["status"] == "incomplete"
        assert partial["content"] == received
        whole = "You said 'tell me about my week'. I can add, list, complete, rename and delete"
        assert len(received) < len(whole) and whole.startswith(received)

        # The turn's lease is released: a new chat on the conversation is answered at once
        # (a turn still in flight would be a 409), and it sees the partial reply as history.
        response = await client.post("/api/demo/chat", json={"message": "add bread",
                                                              "conversation_id": cid})
        assert response.status_code == 200, response.text
        stored = await _messages(client, cid)
        assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant",
                                               "tool", "assistant"]
        assert stored[1]["metadata"] == {"incomplete": True}
    assert await _idle_in_transaction(streamed.url) == []


async def test_a_client_that_leaves_while_the_model_thinks_keeps_its_message(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    # The model thinks 3 s before its first word: the disconnect must be seen with nothing
    # being sent, and stop the run (the reply is never stored whole, seconds later).
    with serve(new_database(template=False), tmp_path / "server.log", "3") as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            left = time.monotonic()
            cid, events = await _leave_after(client, {"message": "hello there"}, 0)
            assert _kinds(events) == ["start"]
            response = None
            while time.monotonic() - left < 2.5:
                response = await client.post("/api/demo/chat", json={
                    "message": "still there?", "conversation_id": cid})
                if response.status_code != 409:
                    break
                await asyncio.sleep(0.05)
            assert response is not None and response.status_code == 200, (
                "the turn was still in flight: the disconnect went unnoticed")
            stored = await _messages(client, cid)
            # The first turn kept only the user's message (no text had been made); the second
            # is whole.
            assert [(m["role"], m["content"]) for m in stored[:2]] == [
                ("user", "hello there"), ("user", "still there?")]
            assert [m["role"] for m in stored] == ["user", "user", "assistant"]
        assert await _idle_in_transaction(server.url) == []
