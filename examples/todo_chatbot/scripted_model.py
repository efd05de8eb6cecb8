"""An offline model for the todo chatbot: the Agents SDK's ``Model`` interface, driven by
simple rules instead of a network call, so the example and its tests need no key.

It reads what a real model would get (the instructions, the history and the new message as
Responses input items, the tools) and answers like one: a command in the user's last message
becomes function calls (``add milk and eggs`` -> two parallel ``add_task`` calls), and once the
tool outputs are in the input it answers in words. Like a Chat Completions model, it gives
every item the SDK's placeholder id, so a history holds many items with the same ``id``.

Commands: ``add <title>[ and <title>...]``, ``list`` / ``show my tasks``, ``complete <id>``,
``rename <id> to <title>``, ``delete <id>``; anything else gets a reply that says how many
earlier messages of the user's it saw (the history at work).

Like a real model it reports what each call cost (usage), estimated at a token per four
characters of the instructions and input, and of the output: what the app records in
chatstore's usage ledger.

It streams too (``Runner.run_streamed``): ``stream_response`` emits the events the Responses
API does (``response.created``, each output item added, its text in a few
``response.output_text.delta`` chunks or its arguments, the item done, ``response.completed``),
pausing ``chunk_delay`` seconds before each text chunk after the first.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from agents import Handoff, ModelResponse, ModelSettings, Tool, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.models.interface import Model, ModelTracing
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
    ResponseUsage,
)

__all__ = ["ScriptedTodoModel", "plan"]

_ADD = re.compile(r"^\s*(?:please\s+)?(?:add|create|remember)\s+(?:a\s+task\s+)?(?:to\s+)?(.+)$",
                  re.IGNORECASE | re.DOTALL)
_LIST = re.compile(r"\b(?:list|show)\b|\bwhat\b.*\btasks?\b", re.IGNORECASE)
_COMPLETE = re.compile(r"\b(?:complete|finish|done|mark)\b\D*(\d+)", re.IGNORECASE)
_DELETE = re.compile(r"\b(?:delete|remove)\b\D*(\d+)", re.IGNORECASE)
_RENAME = re.compile(r"\b(?:rename|update|change)\b\D*(\d+)\s+(?:to\s+)?(.+)$",
                     re.IGNORECASE | re.DOTALL)


def _text_of(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def plan(message: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls a user's message asks for (``[]``: just talk)."""
    if match := _RENAME.search(message):
        return [("update_task", {"task_id": int(match[1]), "title": match[2].strip()})]
    if match := _COMPLETE.search(message):
        return [("complete_task", {"task_id": int(match[1])})]
    if match := _DELETE.search(message):
        return [("delete_task", {"task_id": int(match[1])})]
    if match := _ADD.match(message):
        titles = [t.strip(" .") for t in re.split(r"\s+and\s+|,", match[1]) if t.strip(" .")]
        return [("add_task", {"title": title}) for title in titles]
    if _LIST.search(message):
        return [("list_tasks", {})]
    return []


def _message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=FAKE_RESPONSES_ID, type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class ScriptedTodoModel(Model):
    """The rule-based offline model (see the module's docstring).

    :param delay: seconds each call "thinks" before answering (a real model takes seconds):
        the latency and burst tests use it to keep turns in flight.
    :param chunk_delay: when streaming, seconds between two chunks of a reply's text (the
        streaming tests use it to disconnect in the middle of a reply).
    :param chunks: when streaming, into about how many deltas a reply's text is cut.
    """

    def __init__(self, delay: float = 0.0, chunk_delay: float = 0.0, chunks: int = 4) -> None:
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.chunks = max(1, chunks)

    def respond(self, items: list[Mapping[str, Any]],
                tools: list[Tool]) -> list[TResponseOutputItem]:
        """The model's output for this input (the part of the SDK call the rules use)."""
        last_user = max((i for i, item in enumerate(items) if item.get("role") == "user"),
                        default=-1)
        if last_user < 0:
            return [_message("Hello! Tell me what to add to your todo list.")]
        outputs = [item for item in items[last_user + 1:]
                   if item.get("type") == "function_call_output"]
        if outputs:
            results = "; ".join(str(item.get("output", "")) for item in outputs)
            return [_message(f"Done. {results}")]
        message = _text_of(items[last_user])
        tool_names = {tool.name for tool in tools}
        calls = [(name, args) for name, args in plan(message) if name in tool_names]
        if calls:
            return [
                ResponseFunctionToolCall(
                    id=FAKE_RESPONSES_ID, type="function_call", name=name,
                    call_id=f"call_{uuid.uuid4().hex[:16]}",
                    arguments=json.dumps(args, ensure_ascii=False),
                )
                for name, args in calls
            ]
        earlier = [_text_of(item) for item in items[:last_user] if item.get("role") == "user"]
        if earlier:
            return [_message(f"You said {message!r}. Before that you said {len(earlier)} "
                             f"thing(s), the last one {earlier[-1]!r}.")]
        return [_message(f"You said {message!r}. I can add, list, complete, rename and "
                         f"delete your tasks.")]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        items: list[Mapping[str, Any]] = (
            [{"role": "user", "content": input}] if isinstance(input, str)
            else [dict(item) for item in input]
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        output = self.respond(items, tools)
        return ModelResponse(output=output, usage=_usage(system_instructions, items, output),
                             response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = await self.get_response(
            system_instructions, input, model_settings, tools, output_schema, handoffs,
            tracing, previous_response_id=previous_response_id,
            conversation_id=conversation_id, prompt=prompt)
        usage = response.usage
        final = Response(
            id="scripted-response", created_at=0, model="scripted-todo-model",
            object="response", output=response.output, tool_choice="auto", tools=[],
            parallel_tool_calls=True, status="completed",
            usage=ResponseUsage(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0)),
        )
        started = final.model_copy(update={"output": [], "status": "in_progress"})
        seq = 0

        def number() -> int:
            nonlocal seq
            seq += 1
            return seq - 1

        yield ResponseCreatedEvent(type="response.created", response=started,
                                   sequence_number=number())
        yield ResponseInProgressEvent(type="response.in_progress", response=started,
                                      sequence_number=number())
        for index, item in enumerate(response.output):
            if isinstance(item, ResponseOutputMessage):
                async for event in self._stream_message(item, index, number):
                    yield event
            elif isinstance(item, ResponseFunctionToolCall):
                yield ResponseOutputItemAddedEvent(
                    type="response.output_item.added", output_index=index,
                    item=item.model_copy(update={"arguments": "", "status": "in_progress"}),
                    sequence_number=number())
                item_id = item.id or item.call_id
                yield ResponseFunctionCallArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta", item_id=item_id,
                    output_index=index, delta=item.arguments, sequence_number=number())
                yield ResponseFunctionCallArgumentsDoneEvent(
                    type="response.function_call_arguments.done", item_id=item_id,
                    output_index=index, arguments=item.arguments, sequence_number=number())
                yield ResponseOutputItemDoneEvent(
                    type="response.output_item.done", output_index=index, item=item,
                    sequence_number=number())
        yield ResponseCompletedEvent(type="response.completed", response=final,
                                     sequence_number=number())

    async def _stream_message(self, item: ResponseOutputMessage, index: int,
                              number: Callable[[], int]) -> AsyncIterator[TResponseStreamEvent]:
        """One output message's events: added, its text in deltas, done."""
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added", output_index=index,
            item=item.model_copy(update={"content": [], "status": "in_progress"}),
            sequence_number=number())
        for part_index, part in enumerate(item.content):
            if not isinstance(part, ResponseOutputText):
                continue
            yield ResponseContentPartAddedEvent(
                type="response.content_part.added", item_id=item.id, output_index=index,
                content_index=part_index, sequence_number=number(),
                part=part.model_copy(update={"text": "", "annotations": []}))
            for n, delta in enumerate(_cut(part.text, self.chunks)):
                if n and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield ResponseTextDeltaEvent(
                    type="response.output_text.delta", item_id=item.id, output_index=index,
                    content_index=part_index, delta=delta, logprobs=[],
                    sequence_number=number())
            yield ResponseTextDoneEvent(
                type="response.output_text.done", item_id=item.id, output_index=index,
                content_index=part_index, text=part.text, logprobs=[],
                sequence_number=number())
            yield ResponseContentPartDoneEvent(
                type="response.content_part.done", item_id=item.id, output_index=index,
                content_index=part_index, part=part, sequence_number=number())
        yield ResponseOutputItemDoneEvent(type="response.output_item.done", output_index=index,
                                          item=item, sequence_number=number())


def _tokens(value: Any) -> int:
    """About a token per four characters of ``value``'s JSON (at least 1)."""
    return max(1, -(-len(json.dumps(value, ensure_ascii=False, default=str)) // 4))


def _usage(instructions: str | None, items: list[Mapping[str, Any]],
           output: list[TResponseOutputItem]) -> Usage:
    inputs = _tokens([instructions or "", items])
    outputs = _tokens([item.model_dump(exclude_unset=True) for item in output])
    return Usage(requests=1, input_tokens=inputs, output_tokens=outputs,
                 total_tokens=inputs + outputs)


def _cut(text: str, chunks: int) -> list[str]:
    """``text`` in about ``chunks`` pieces of about the same length, cut after a space
    where there is one (as a model's tokens end)."""
    if not text:
        return []
    size = max(1, -(-len(text) // chunks))
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.rfind(" ", start + 1, end)
        if end < len(text) and space > start:
            end = space + 1
        pieces.append(text[start:end])
        start = end
    return pieces
