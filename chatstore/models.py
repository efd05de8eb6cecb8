"""chatstore's records: Pydantic v2 models with timezone-aware datetimes."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

__all__ = ["Conversation", "Message", "NewMessage", "Page", "Role"]


class Role(StrEnum):
    """Who speaks in a message (the OpenAI chat roles). ``Role.USER == "user"``."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


def _json_from_text(value: Any) -> Any:
    # A pool that chatstore did not create has no jsonb codec: jsonb then arrives as text.
    return json.loads(value) if isinstance(value, str) else value


class NewMessage(BaseModel):
    """A message to append. ``role`` and the fields below map to the OpenAI chat format.

    :param role: ``system``, ``user``, ``assistant`` or ``tool``.
    :param content: the text; may be ``None`` for an assistant message that only calls tools.
    :param tool_calls: the assistant's tool calls (OpenAI format: a list of objects).
    :param tool_call_id: for a ``tool`` message, the id of the call it answers (required
        there, refused on every other role).
    :param metadata: a JSON object of the backend's own.
    :param token_count: what the message costs in the model's context, when known.
    :param idempotency_key: a retry-safe key: appending the same key to a conversation again
        stores nothing and returns the stored message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    token_count: int | None = Field(default=None, ge=0, le=2**31 - 1)
    idempotency_key: str | None = None

    @field_validator("tool_calls", "metadata", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        return _json_from_text(value)


class Message(NewMessage):
    """A stored message: a :class:`NewMessage` plus where and when it was stored."""

    conversation_id: UUID
    user_id: str
    seq: int
    created_at: AwareDatetime

    def to_openai(self) -> dict[str, Any]:
        """The message as an OpenAI chat-completions message dict."""
        out: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class Conversation(BaseModel):
    """A conversation of one user. ``message_count`` is also the seq of its newest message."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    message_count: int
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @field_validator("metadata", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        return _json_from_text(value)


T = TypeVar("T", Conversation, Message)


class Page(BaseModel, Generic[T]):
    """One page of a listing.

    ``next_cursor`` is ``None`` on the last page. For messages it is a seq (an ``int``) to
    pass as ``before`` (paging backward) or ``after`` (paging forward); for conversations it
    is an opaque string to pass as ``cursor``.
    """

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: int | str | None = None
