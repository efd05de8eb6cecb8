"""A LangChain chat message history on a chatstore conversation.

    from chatstore.integrations.langchain import ChatStoreMessageHistory

    history = ChatStoreMessageHistory(store, user_id, conversation_id)
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    messages = await history.aget_messages()

Needs ``langchain-core`` (``pip install 'chatstore[langchain]'``).

How messages are stored: each LangChain message is one chatstore message whose chat columns
hold what they can (``HumanMessage`` -> ``user``, ``AIMessage`` -> ``assistant`` with its
``tool_calls`` in OpenAI format, ``ToolMessage`` -> ``tool`` with ``tool_call_id``,
``SystemMessage`` -> ``system``; content lists become their text), so search, psql,
``context_messages`` and other integrations read them as ordinary chat messages. What the
columns cannot hold (the message class, ``id``, ``name``, ``additional_kwargs``,
``response_metadata``, ``usage_metadata``, a ``ToolMessage``'s ``artifact`` and ``status``,
non-text content) is kept under ``metadata["langchain"]``, and only when it differs from the
field's default. Reading rebuilds the same message. Messages that another writer stored
(chat rows, Agents SDK items) are read by their chat columns; rows without a chat form
(``reasoning`` items, say) are skipped.

A write the history refuses inside ``RunnableWithMessageHistory`` is lost silently:
LangChain writes the history in a tracer callback (``on_end`` of a root listener) and only
logs what it raises. Run the chain inside :func:`surface_write_errors` to get that error::

    with surface_write_errors():                 # re-raises a write the history refused
        reply = await chain.ainvoke({"input": text}, config)

Each history also keeps :attr:`ChatStoreMessageHistory.last_write_error`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
)
from pydantic_core import PydanticSerializationError

from .. import ChatStore, ChatStoreError, InvalidInput, Message
from . import conversation_uuid

__all__ = ["ChatStoreMessageHistory", "LoopThreadError", "surface_write_errors"]

T = TypeVar("T")

METADATA_KEY = "langchain"

# LangChain message type -> chatstore role. ChatMessage ("chat") takes its own role.
_ROLE_OF_TYPE = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "tool",
    "ToolMessageChunk": "tool",
}
_CHAT_TYPES = ("chat", "ChatMessageChunk")
_CHAT_ROLES = ("user", "assistant", "system")


# The write errors of the chain run in progress: a list that surface_write_errors() sets.
# LangChain runs its callbacks in copies of the caller's context (asyncio.gather, worker
# threads): the copies hold the same list, so what a callback appends reaches the caller.
_WRITE_ERRORS: ContextVar[list[Exception] | None] = ContextVar("chatstore_langchain_writes",
                                                                default=None)


@contextmanager
def surface_write_errors() -> Iterator[list[Exception]]:
    """Re-raise, on the way out, the first write a :class:`ChatStoreMessageHistory` refused
    inside the block (an ``InvalidInput`` for a NUL, a ``ConnectionLost``...).

    ``RunnableWithMessageHistory`` writes the history in a tracer callback and LangChain only
    logs a callback's exception, so without this the chain returns its reply and the turn is
    not stored. Wrap the call that runs the chain (``invoke``, ``ainvoke``, or the
    ``asyncio.to_thread`` running ``invoke``): its callbacks run in copies of this context and
    report to it. Yields the list of errors seen; when the block itself raises, that
    exception goes on and the list is left to the caller.
    """
    errors: list[Exception] = []
    token = _WRITE_ERRORS.set(errors)
    try:
        yield errors
    finally:
        _WRITE_ERRORS.reset(token)
    if errors:
        raise errors[0]


class LoopThreadError(ChatStoreError, RuntimeError):
    """A sync method (``messages``, ``add_messages``, ``clear``) was called on the thread
    that runs the store's event loop: waiting there for the loop would deadlock. Use the
    async methods (``aget_messages``, ``aadd_messages``, ``aclear``) from async code."""


def _text_of(content: str | list[str | dict[str, Any]]) -> str:
    """The text of a message's content: the string, or the text blocks of a list, joined."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(parts)


def _openai_tool_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": call["id"], "type": "function",
         "function": {"name": call["name"],
                      "arguments": json.dumps(call["args"], ensure_ascii=False)}}
        for call in tool_calls
    ]


def _langchain_tool_calls(tool_calls: list[dict[str, Any]]) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI-format tool calls as LangChain ``tool_calls`` and ``invalid_tool_calls``."""
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for call in tool_calls:
        function = call.get("function") or {}
        name = function.get("name")
        arguments = function.get("arguments")
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            args = None
        if isinstance(args, dict):
            valid.append({"name": name, "args": args, "id": call.get("id"),
                          "type": "tool_call"})
        else:
            invalid.append({"name": name, "args": arguments, "id": call.get("id"),
                            "error": "arguments are not a JSON object",
                            "type": "invalid_tool_call"})
    return valid, invalid


def message_to_chatstore(message: BaseMessage, field: str = "message") -> dict[str, Any]:
    """A LangChain message as a chatstore message dict (see the module's docstring).

    :raises InvalidInput: a message type with no chat role (``FunctionMessage``,
        ``RemoveMessage``, a ``ChatMessage`` whose role is not user, assistant or system),
        or fields that are not JSON-serialisable.
    """
    kind = message.type
    if kind in _ROLE_OF_TYPE:
        role = _ROLE_OF_TYPE[kind]
    elif kind in _CHAT_TYPES and getattr(message, "role", None) in _CHAT_ROLES:
        role = message.role  # type: ignore[attr-defined]
    else:
        raise InvalidInput(field, f"a {type(message).__name__} has no chat role chatstore "
                                  f"can store (user, assistant, system or tool)")
    try:
        dumped: dict[str, Any] = message.model_dump(mode="json")
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise InvalidInput(field, f"is not JSON-serialisable: {exc}") from None

    out: dict[str, Any] = {"role": role}
    kept: dict[str, Any] = {}
    content = message.content
    if isinstance(content, str):
        out["content"] = content
    else:
        out["content"] = _text_of(content)
        kept["content"] = dumped["content"]
    if role == "assistant" and isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = _openai_tool_calls(dumped["tool_calls"])
        if content == "":
            out["content"] = None
    if role == "tool":
        out["tool_call_id"] = dumped["tool_call_id"]

    held_in_columns = {"content", "type", "tool_call_id"}
    if "tool_calls" in out:
        held_in_columns.add("tool_calls")
    fields = type(message).model_fields
    for name, value in dumped.items():
        if name in held_in_columns:
            continue
        field_info = fields.get(name)
        if field_info is not None and not field_info.is_required():
            default = field_info.get_default(call_default_factory=True)
            if value == default:
                continue
        kept[name] = value
    out["metadata"] = {METADATA_KEY: {"type": kind, **kept}}
    return out


def message_from_chatstore(message: Message) -> BaseMessage | None:
    """The LangChain message a stored chatstore message holds (``None`` for a row with no
    chat form, such as a ``reasoning`` item)."""
    if message.role is None:
        return None
    role = message.role.value
    saved = message.metadata.get(METADATA_KEY)
    if isinstance(saved, dict) and isinstance(saved.get("type"), str):
        data = {k: v for k, v in saved.items() if k != "type"}
        data.setdefault("content", message.content or "")
        if message.tool_calls and "tool_calls" not in data:
            data["tool_calls"], _ = _langchain_tool_calls(message.tool_calls)
        if message.tool_call_id is not None:
            data["tool_call_id"] = message.tool_call_id
        if saved["type"] in _CHAT_TYPES:
            data.setdefault("role", role)
        return messages_from_dict([{"type": saved["type"], "data": data}])[0]
    content = message.content or ""
    if role == "user":
        return HumanMessage(content=content)
    if role == "system":
        return SystemMessage(content=content)
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=message.tool_call_id or "")
    valid, invalid = _langchain_tool_calls(message.tool_calls or [])
    return AIMessage(content=content, tool_calls=valid, invalid_tool_calls=invalid)


class ChatStoreMessageHistory(BaseChatMessageHistory):
    """LangChain's ``BaseChatMessageHistory`` on one conversation of one user.

    :param store: the application's :class:`~chatstore.ChatStore`.
    :param user_id: the owner; another user's conversation raises
        :class:`~chatstore.NotFound` on use, exactly like a missing one.
    :param conversation_id: the conversation (a ``UUID`` or its string); create it first
        with ``store.create_conversation``.
    :param loop: the event loop the store's pool runs on (default: the pool's own). The
        sync methods hand their work to this loop.

    The async methods (``aget_messages``, ``aadd_messages``, ``aclear``) run on the caller's
    loop, which must be the store's. The sync ones (``messages``, ``add_messages``,
    ``add_message``, ``clear``) may be called from any other thread, as LangChain's sync
    runnables do from their worker threads: they run the async method on the store's loop
    (``asyncio.run_coroutine_threadsafe``) and wait for it, so the application's one pool
    serves them. Called on the loop's own thread they raise :class:`LoopThreadError` instead
    of deadlocking; when no loop runs the store's, they run it until the call completes.
    """

    def __init__(self, store: ChatStore, user_id: str, conversation_id: UUID | str, *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__()
        self.store = store
        self.user_id = user_id
        self.conversation_id = conversation_uuid(conversation_id)
        self._loop = loop
        #: The error of the last ``add_messages``/``aadd_messages`` that failed, ``None``
        #: once one succeeds (LangChain's callbacks swallow it; see surface_write_errors).
        self.last_write_error: Exception | None = None

    def _wrote(self, error: Exception | None) -> None:
        self.last_write_error = error
        errors = _WRITE_ERRORS.get()
        if error is not None and errors is not None:
            errors.append(error)

    # -- async ---------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The conversation as the model sees it, oldest first (rows with no chat form left
        out): every message, or after a :meth:`~chatstore.ChatStore.compact`, the newest
        summary and what follows it (:meth:`~chatstore.ChatStore.view_messages`, what
        ``RunnableWithMessageHistory`` puts in the prompt). The whole transcript stays
        readable with :meth:`~chatstore.ChatStore.list_messages`.

        :raises NotFound: no such conversation for this user.
        """
        view = await self.store.view_messages(self.user_id, self.conversation_id)
        out: list[BaseMessage] = []
        for stored in view:
            converted = message_from_chatstore(stored)
            if converted is not None:
                out.append(converted)
        return out

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append the messages in one atomic call (nothing for an empty sequence).

        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a message chatstore cannot store (named by its index).
        :raises ConversationBusy: a chat turn holds the conversation.

        A failure is also kept in :attr:`last_write_error` and reported to an enclosing
        :func:`surface_write_errors`.
        """
        try:
            await self._append(messages)
        except Exception as exc:
            self._wrote(exc)
            raise
        self._wrote(None)

    async def _append(self, messages: Sequence[BaseMessage]) -> None:
        rows = [message_to_chatstore(m, f"messages[{i}]") for i, m in enumerate(messages)]
        if rows:
            await self.store.append_messages(self.user_id, self.conversation_id, rows)

    async def aclear(self) -> None:
        """Delete the conversation's messages (the conversation stays).

        :raises NotFound: no such conversation for this user.
        """
        await self.store.clear_messages(self.user_id, self.conversation_id)

    # -- sync ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the conversation (see :meth:`aget_messages`), from a sync caller."""
        return self._run_sync(self.aget_messages)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """:meth:`aadd_messages` from a sync caller (the failure recorded in this thread's
        context, which the store's loop does not share)."""
        try:
            self._run_sync(lambda: self._append(messages))
        except Exception as exc:
            self._wrote(exc)
            raise
        self._wrote(None)

    def clear(self) -> None:
        """:meth:`aclear` from a sync caller."""
        self._run_sync(self.aclear)

    def _store_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        # asyncpg keeps the loop a pool was made on as ``_loop``; a pool only works there.
        loop = getattr(self.store.pool, "_loop", None)
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise LoopThreadError("cannot tell which event loop the store's pool runs on; "
                                  "pass loop= to ChatStoreMessageHistory")
        return loop

    def _run_sync(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self._store_loop()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise LoopThreadError(
                "a sync method of ChatStoreMessageHistory was called on the thread that runs "
                "the store's event loop, where waiting would deadlock; await aget_messages(), "
                "aadd_messages() or aclear() instead, or call it from a worker thread")
        if loop.is_closed():
            raise LoopThreadError("the store's event loop is closed")
        if not loop.is_running():
            if running is not None:
                raise LoopThreadError("the store's event loop is not running, and this thread "
                                      "runs another one")
            return loop.run_until_complete(call())
        return asyncio.run_coroutine_threadsafe(call(), loop).result()
