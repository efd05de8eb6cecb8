"""The streaming chat endpoint's machinery: one chat turn answered as the Vercel AI SDK's UI
message stream (Server-Sent Events, what ``useChat`` reads), built on ``Runner.run_streamed``.

    data: {"type":"start","messageId":"msg_…","messageMetadata":{"conversation_id":"…"}}
    data: {"type":"start-step"}
    data: {"type":"tool-input-available","toolCallId":"call_…","toolName":"add_task","input":{…}}
    data: {"type":"tool-output-available","toolCallId":"call_…","output":{…}}
    data: {"type":"finish-step"}
    data: {"type":"start-step"}
    data: {"type":"text-start","id":"txt_…"}
    data: {"type":"text-delta","id":"txt_…","delta":"Done. "}
    data: {"type":"text-end","id":"txt_…"}
    data: {"type":"finish-step"}
    data: {"type":"finish"}
    data: [DONE]

(chunk names as in the AI SDK's ``uiMessageChunkSchema``, headers as its
``uiMessageStreamHeaders``; a failed run sends ``{"type":"error","errorText":…}`` and
``[DONE]``.)

How one request runs. :class:`StreamedChat` runs the turn in a task of its own, apart from the
request: it takes the turn (``store.turn``: a busy conversation is a 409 before any byte of
the stream is sent), runs the agent streamed with a :class:`SettledSession` bound to the turn,
and puts the stream's chunks on a queue the response reads. Nothing holds a pooled
connection while the model streams: the session's writes and the tools' statements borrow
one for a statement or two, as in the non-streaming endpoint.

When the client goes away (Starlette cancels the response, or, on an ASGI 2.4 server, a
``receive`` watcher sees ``http.disconnect``), :meth:`StreamedChat.stop` cancels the run
(``RunResultStreaming.cancel()``). The turn's task then keeps what the client was sent and
ends the turn normally: the user's message stays (stored by the SDK before the model ran,
else by the task), and the reply's text so far, if the SDK had not stored it whole, is
appended as ONE assistant message whose ``metadata`` is ``{"incomplete": true}`` (its item,
an output message, says ``"status": "incomplete"``, the Responses API's own word for a
cut-off message, because an item must hold some status and ``completed`` would be false).
The turn is never left half written: it ends (user message, any tool calls and outputs the
SDK stored, the partial reply) or, when the run itself failed, aborts (nothing stays).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from uuid import UUID, uuid4

from agents import Agent, RunConfig, Runner, RunResultStreaming
from agents.items import TResponseInputItem
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chatstore import ChatStore, ChatStoreError, Quota, Turn
from chatstore.integrations.openai_agents import ChatStoreSession

from .agent import TodoContext

__all__ = ["UI_MESSAGE_STREAM_HEADERS", "ChatStream", "SettledSession", "StreamedChat",
           "UIMessageStream", "sse"]

log = logging.getLogger("todo_chatbot")

#: The AI SDK's ``uiMessageStreamHeaders`` (``content-type`` comes from the response's media
#: type; ``connection`` is the server's business).
UI_MESSAGE_STREAM_HEADERS = {
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
DONE = "data: [DONE]\n\n"
MAX_TURNS = 8


def sse(chunk: dict[str, Any]) -> str:
    """One UI message stream chunk as a Server-Sent Event. ASCII-escaped JSON: a lone
    surrogate in a model's text cannot make encoding the event fail."""
    return f"data: {json.dumps(chunk, ensure_ascii=True, separators=(',', ':'))}\n\n"


def _json_or_text(value: Any) -> Any:
    try:
        return json.loads(str(value))
    except ValueError:
        return value


class SettledSession(ChatStoreSession):
    """A :class:`ChatStoreSession` whose writes finish even when the run is cancelled.

    The SDK writes a step's items while it runs; a disconnect cancels the run, possibly in
    the middle of such a write, whose outcome would then be unknown. Here each write runs
    in a task of its own, shielded: the run's cancellation does not cut it, :meth:`settle`
    waits for every write, and :attr:`stored` lists exactly the items that were stored.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored: list[TResponseInputItem] = []
        self._writes: set[asyncio.Task[None]] = set()

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        async def write() -> None:
            await ChatStoreSession.add_items(self, items)
            self.stored.extend(items)

        task = asyncio.create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait for every write in flight (their failures are the run's: ignored here)."""
        while self._writes:
            await asyncio.wait(set(self._writes))

    def stored_user_message(self) -> bool:
        return any(isinstance(item, dict) and item.get("role") == "user"
                   for item in self.stored)

    def stored_replies(self) -> int:
        """How many assistant messages (``type: message``) this session stored."""
        return sum(1 for item in self.stored if isinstance(item, dict)
                   and item.get("role") == "assistant" and item.get("type") == "message")


class UIMessageStream:
    """Agents SDK stream events -> the AI SDK's UI message stream chunks, remembering the
    text of the reply in progress (what the client was sent of it)."""

    def __init__(self) -> None:
        self.messages_started = 0
        self.text = ""
        self.text_item_id: str | None = None
        self._text_id: str | None = None
        self._step_open = False

    def chunks(self, event: StreamEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if isinstance(event, RawResponsesStreamEvent):
            data: Any = event.data
            kind = getattr(data, "type", None)
            item = getattr(data, "item", None)
            if kind == "response.created":
                out += self.close_step()
                out.append({"type": "start-step"})
                self._step_open = True
            elif kind == "response.output_item.added" and getattr(item, "type", None) == "message":
                out += self._end_text()
                self.messages_started += 1
                self.text = ""
                self.text_item_id = getattr(item, "id", None)
            elif kind == "response.output_text.delta" and data.delta:
                if self._text_id is None:
                    self._text_id = f"txt_{uuid4().hex}"
                    out.append({"type": "text-start", "id": self._text_id})
                self.text += data.delta
                out.append({"type": "text-delta", "id": self._text_id, "delta": data.delta})
            elif kind == "response.output_item.done" and getattr(item, "type", None) == "message":
                out += self._end_text()
        elif isinstance(event, RunItemStreamEvent):
            raw: Any = event.item.raw_item
            if event.name == "tool_called" and getattr(raw, "type", None) == "function_call":
                out.append({"type": "tool-input-available", "toolCallId": raw.call_id,
                            "toolName": raw.name, "input": _json_or_text(raw.arguments)})
            elif event.name == "tool_output" and isinstance(raw, dict):
                out.append({"type": "tool-output-available",
                            "toolCallId": str(raw.get("call_id")),
                            "output": _json_or_text(getattr(event.item, "output", None))})
        return out

    def _end_text(self) -> list[dict[str, Any]]:
        if self._text_id is None:
            return []
        chunk = {"type": "text-end", "id": self._text_id}
        self._text_id = None
        return [chunk]

    def close_step(self) -> list[dict[str, Any]]:
        out = self._end_text()
        if self._step_open:
            out.append({"type": "finish-step"})
            self._step_open = False
        return out

    def partial_item(self) -> dict[str, Any]:
        """The reply so far as a Responses output message marked ``incomplete``."""
        item: dict[str, Any] = {
            "type": "message", "role": "assistant", "status": "incomplete",
            "content": [{"type": "output_text", "text": self.text, "annotations": []}],
        }
        if self.text_item_id:
            item["id"] = self.text_item_id
        return item


class StreamedChat:
    """One streamed chat turn, run in a task of its own (see the module's docstring).

    ``await chat.begin()`` waits until the turn is taken (and raises what taking it raised:
    ``ConversationBusy``...); :meth:`events` is the response body; :meth:`stop` is what a
    disconnect calls.

    :param started_here: the request created the conversation: a failed run deletes it (a
        stopped one keeps it: it holds the user's message).
    """

    # The running turns' tasks (the event loop keeps only weak references).
    _running: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, store: ChatStore, agent: Agent[TodoContext], run_config: RunConfig,
                 user_id: str, conversation_id: UUID, message: str, *, started_here: bool,
                 history_tokens: int, quota: Quota | None = None) -> None:
        self.store = store
        self.agent = agent
        self.run_config = run_config
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.message = message
        self.started_here = started_here
        self.history_tokens = history_tokens
        self.quota = quota
        self.message_id = f"msg_{uuid4().hex}"
        self.stopped = False
        self._finished = False
        self._result: RunResultStreaming | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run())
        self._running.add(self.task)
        self.task.add_done_callback(self._running.discard)

    async def begin(self) -> None:
        """Wait until the turn is taken; if this wait is cancelled, the run is stopped."""
        try:
            await asyncio.shield(self._taken)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """The client went away: cancel the run (the task keeps the partial reply and ends
        the turn). Nothing once the run has finished."""
        if self._finished or self.stopped:
            return
        self.stopped = True
        if self._result is not None:
            self._result.cancel()

    async def events(self) -> AsyncIterator[str]:
        """The response body: the chunks as the run makes them, until the turn has ended."""
        try:
            while (chunk := await self._queue.get()) is not None:
                yield chunk
        finally:
            self.stop()

    def _put(self, chunk: dict[str, Any]) -> None:
        if not self.stopped:
            self._queue.put_nowait(sse(chunk))

    async def _run(self) -> None:
        completed = False
        try:
            async with self.store.turn(self.user_id, self.conversation_id,
                                       quota=self.quota) as turn:
                self._taken.set_result(None)
                completed = await self._stream(turn)
        except BaseException as exc:
            if self.started_here:
                try:
                    await self.store.delete_conversation(self.user_id, self.conversation_id)
                except ChatStoreError:
                    log.warning("could not delete conversation %s", self.conversation_id)
            if not self._taken.done():
                if isinstance(exc, Exception):
                    self._taken.set_exception(exc)
                else:
                    self._taken.cancel()
            else:
                log.error("streamed turn on %s failed", self.conversation_id, exc_info=exc)
                text = str(exc) if isinstance(exc, ChatStoreError) else "the reply failed"
                self._put({"type": "error", "errorText": f"{text}; nothing of this turn "
                                                         "was kept"})
                self._queue.put_nowait(DONE)
            if not isinstance(exc, Exception):
                raise
        else:
            if completed:
                # Only now, the turn ended: a client that sends its next message on [DONE]
                # never finds the conversation busy.
                self._queue.put_nowait(DONE)
        finally:
            self._finished = True
            self._queue.put_nowait(None)

    async def _stream(self, turn: Turn) -> bool:
        """Run the agent streamed inside ``turn``; whether it completed (else it was
        stopped, and what the client was sent is kept)."""
        session = SettledSession.for_turn(turn, max_tokens=self.history_tokens)
        ui = UIMessageStream()
        result = Runner.run_streamed(
            self.agent, self.message, session=session,
            context=TodoContext(user_id=self.user_id, store=self.store),
            run_config=self.run_config, max_turns=MAX_TURNS)
        self._result = result
        if self.stopped:  # the client left while the turn was being taken
            result.cancel()
        self._put({"type": "start", "messageId": self.message_id,
                   "messageMetadata": {"conversation_id": str(self.conversation_id)}})
        try:
            async for event in result.stream_events():
                for chunk in ui.chunks(event):
                    self._put(chunk)
        finally:
            # Whatever happened, no write of the run is in flight past this point.
            await session.settle()
            # What the model calls cost so far is recorded whether the run completed, was
            # stopped or failed (a failed turn aborts; its usage stays).
            await self._record_usage(session, result)
        if not self.stopped:
            for chunk in ui.close_step():
                self._put(chunk)
            self._put({"type": "finish", "finishReason": "stop"})
            return True
        await self._keep_partial(turn, session, ui)
        return False

    async def _record_usage(self, session: SettledSession,
                            result: RunResultStreaming) -> None:
        try:
            await session.store_run_usage(result)
        except ChatStoreError:  # the client has its answer already: say it in the log
            log.warning("could not record the usage of a streamed turn on %s",
                        self.conversation_id, exc_info=True)

    async def _keep_partial(self, turn: Turn, session: SettledSession,
                            ui: UIMessageStream) -> None:
        """After a stop: the user's message and the reply so far stay, as one turn."""
        kept: list[dict[str, Any]] = []
        if not session.stored_user_message():
            # Stopped before the SDK stored its input (the same item it would store).
            kept.append({"item": {"content": self.message, "role": "user"}})
        if ui.text and session.stored_replies() < ui.messages_started:
            kept.append({"item": ui.partial_item(), "metadata": {"incomplete": True}})
        if kept:
            await turn.append(kept)
        log.info("client left conversation %s mid-reply: kept %d character(s) of it",
                 self.conversation_id, len(ui.text))


class ChatStream(StreamingResponse):
    """The response of :class:`StreamedChat`: its events as ``text/event-stream`` with the
    UI message stream's headers, and the run stopped whenever the response ends early.

    Starlette itself watches for a disconnect on ASGI servers before spec 2.4 (uvicorn's is
    2.3) and cancels the body; on a 2.4 server it only learns of it when a send fails,
    which a model thinking for a minute would delay, so this response watches ``receive``
    there itself.
    """

    def __init__(self, chat: StreamedChat, headers: dict[str, str] | None = None) -> None:
        super().__init__(chat.events(), media_type="text/event-stream",
                         headers={**UI_MESSAGE_STREAM_HEADERS, **(headers or {})})
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = tuple(int(part) for part in
                     str(scope.get("asgi", {}).get("spec_version", "2.0")).split("."))
        watcher = asyncio.create_task(self._watch(receive)) if spec >= (2, 4) else None
        try:
            await super().__call__(scope, receive, send)
        finally:
            if watcher is not None:
                watcher.cancel()
            self.chat.stop()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.chat.stop()
