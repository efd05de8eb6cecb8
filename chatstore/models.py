"""chatstore's records: Pydantic v2 models with timezone-aware datetimes."""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from itertools import repeat
from typing import Any, Generic, Literal, Protocol, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Json

from .errors import InvalidInput
from .limits import MAX_BIGINT

__all__ = [
    "CONVERSATION_COLUMNS",
    "USER_COLUMNS",
    "Alternative",
    "Conversation",
    "Message",
    "NewMessage",
    "Page",
    "PurgeReport",
    "Quota",
    "Role",
    "Usage",
    "UsageTotal",
    "UserDataDeleted",
    "conversation_from_row",
    "message_from_row",
    "messages_from_rows",
    "usage_from_row",
]


class Role(StrEnum):
    """Who speaks in a message (the OpenAI chat roles). ``Role.USER == "user"``."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


# A pool that chatstore did not create has no jsonb codec: jsonb then arrives as JSON text,
# which the Json[...] half of these unions parses (in pydantic-core, no Python validator).
JsonObject = dict[str, Any] | Json[dict[str, Any]]
JsonList = list[dict[str, Any]] | Json[list[dict[str, Any]]]


class NewMessage(BaseModel):
    """A message to append: in chat format (``role`` and the fields below map to the OpenAI
    chat format), or an agent framework's ``item`` from which chatstore derives them.

    :param role: ``system``, ``user``, ``assistant`` or ``tool``; not given with ``item``.
    :param content: the text; may be ``None`` for an assistant message that only calls tools.
    :param tool_calls: the assistant's tool calls (OpenAI format: a list of objects).
    :param tool_call_id: for a ``tool`` message, the id of the call it answers (required
        there, refused on every other role).
    :param metadata: a JSON object of the backend's own.
    :param token_count: what the message costs in the model's context, when known.
    :param idempotency_key: a retry-safe key: appending the same key to a conversation again
        stores nothing and returns the stored message.
    :param item: the exact JSON object an agent framework produced (an OpenAI Responses /
        Agents SDK input item of any type), stored as given and read back equal. With it,
        ``role``, ``content``, ``tool_calls`` and ``tool_call_id`` are derived from the item
        (:func:`chatstore.items.project`) and may not be given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role | None = None
    content: str | None = None
    tool_calls: JsonList | None = None
    tool_call_id: str | None = None
    metadata: JsonObject = Field(default_factory=dict)
    token_count: int | None = Field(default=None, ge=0, le=2**31 - 1)
    idempotency_key: str | None = None
    item: JsonObject | None = None


class Message(NewMessage):
    """A stored message: a :class:`NewMessage` plus where and when it was stored.

    ``role`` is ``None`` only for an item with no chat form (a reasoning item, a web search
    call...); ``item`` is ``None`` for a message appended in chat format.
    ``summary_through`` is set only on a summary stored by
    :meth:`~chatstore.ChatStore.compact`: the seq it summarizes through (the model's view
    starts at the newest summary, then the messages after that seq); ``None`` otherwise.
    """

    conversation_id: UUID
    user_id: str
    seq: int
    created_at: AwareDatetime
    summary_through: int | None = None

    def to_openai(self) -> dict[str, Any]:
        """The message as an OpenAI chat-completions message dict.

        :raises ValueError: the message is an item with no chat form (``role is None``);
            :func:`chatstore.to_openai_messages` skips those, :func:`chatstore.to_items`
            keeps them.
        """
        if self.role is None:
            kind = (self.item or {}).get("type")
            raise ValueError(f"message {self.seq} is a {kind!r} item with no chat form")
        out: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class Conversation(BaseModel):
    """A conversation of one user. ``message_count`` is also the seq of its newest message;
    ``revision`` moves by exactly one with every change and never goes back.

    Every conversation belongs to a tree (docs/api.md, "Conversation trees"): ``root_id``
    is its root (itself for a root); a fork has the ``parent_id`` it was forked from and the
    parent's seq it was forked at (``forked_at``), both ``None`` on a root. ``current_id`` is
    the tree's current version (the root's own id until a fork or
    :meth:`~chatstore.ChatStore.set_current` moves it), the same on every member.

    Retention (docs/api.md, "Retention"): ``expires_at`` is when the tree expires (``ttl=``;
    ``None``: never), kept on its root and the same on every member; ``held`` is this
    conversation's legal hold (:meth:`~chatstore.ChatStore.set_hold`).
    """

    model_config = ConfigDict(frozen=True)

    id: UUID
    user_id: str
    title: str | None
    metadata: JsonObject
    message_count: int
    created_at: AwareDatetime
    updated_at: AwareDatetime
    revision: int
    root_id: UUID
    parent_id: UUID | None
    forked_at: int | None
    current_id: UUID
    expires_at: AwareDatetime | None = None
    held: bool = False


class Alternative(BaseModel):
    """One version of the message at a seq (:meth:`~chatstore.ChatStore.alternatives`).

    :param message: the stored message, as read through ``conversation_id``.
    :param conversation_id: a conversation whose history holds it: the tree's current
        version if that one does, else the most recently active one.
    :param current: it is the message on the asked conversation's own history.
    """

    model_config = ConfigDict(frozen=True)

    message: Message
    conversation_id: UUID
    current: bool


class Usage(BaseModel):
    """One entry of the usage ledger (:meth:`~chatstore.ChatStore.record_usage`): what one
    model call (or agent run) of a user cost, in the conversation it was spent in.

    Token counts are whole numbers from 0 to 2**63 - 1. ``input_tokens`` includes
    ``cached_input_tokens``; ``output_tokens`` includes ``reasoning_tokens`` (the providers'
    convention). ``cost_micros`` is the cost in millionths of the operator's currency, or
    ``None`` when unknown. ``key`` is the idempotency key it was recorded under, if any.
    ``conversation_id`` may name a conversation deleted since: entries outlive it.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    conversation_id: UUID
    key: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    requests: int
    cost_micros: int | None
    metadata: JsonObject
    created_at: AwareDatetime


class UsageTotal(BaseModel):
    """Usage summed over a range (:meth:`~chatstore.ChatStore.usage_totals`).

    ``key`` is the group's value: ``None`` (no grouping), the model's name (``by="model"``),
    the UTC day, a :class:`datetime.date` (``by="day"``), or the conversation's id
    (``by="conversation"``, a deleted conversation's included). ``cost_micros`` sums the
    entries' costs, an entry without one counting 0; ``entries`` is how many were summed.
    """

    model_config = ConfigDict(frozen=True)

    key: str | date | UUID | None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0
    cost_micros: int = 0
    entries: int = 0


QuotaWindow = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class Quota:
    """A plan's token limit, for :meth:`~chatstore.ChatStore.turn`: a turn does not start
    once the user's ``input_tokens + output_tokens`` in the current UTC ``window`` (the
    calendar day, or the calendar month) have reached ``max_tokens``
    (:class:`~chatstore.QuotaExceeded`).

    :param max_tokens: 0 to 2**63 - 1 (0 refuses every turn).
    :param window: ``"day"`` or ``"month"``, in UTC.
    :raises InvalidInput: a bad limit or window.
    """

    max_tokens: int
    window: QuotaWindow = "day"

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise InvalidInput("max_tokens", f"must be an integer, not "
                                             f"{type(self.max_tokens).__name__}")
        if not 0 <= self.max_tokens <= MAX_BIGINT:
            raise InvalidInput("max_tokens", f"must be between 0 and {MAX_BIGINT}")
        if self.window not in ("day", "month"):
            raise InvalidInput("window", "must be 'day' or 'month'")


class PurgeReport(BaseModel):
    """What :meth:`~chatstore.ChatStore.purge` deleted (with ``dry_run``: would delete).

    :param conversations_deleted: conversations deleted, forks included.
    :param messages_deleted: stored message rows deleted with them.
    :param trees_deleted: trees deleted (each whole: its root and every fork).
    :param skipped: trees that were due but kept, by reason: ``"held"`` (a conversation of
        the tree is held), ``"turn_in_flight"`` (a turn whose lease has not run out holds
        one); both always present. Only when they happened: ``"locked"`` (another session
        held a row of the tree at that moment: a live chat) and ``"changed"`` (written to
        after purge selected it: it was no longer due under the lock).
    :param dry_run: nothing was deleted; the counts are what a purge would have deleted.
    """

    model_config = ConfigDict(frozen=True)

    conversations_deleted: int = 0
    messages_deleted: int = 0
    trees_deleted: int = 0
    skipped: dict[str, int] = Field(default_factory=lambda: {"held": 0,
                                                             "turn_in_flight": 0})
    dry_run: bool = False


class UserDataDeleted(int):
    """What :meth:`~chatstore.ChatStore.delete_user_data` returns: the number of
    conversations deleted (an ``int``, as before holds existed), and
    :attr:`conversations_kept`, the ones left in place because they, or a conversation of
    their tree, are held."""

    conversations_kept: int

    def __new__(cls, deleted: int, kept: int = 0) -> UserDataDeleted:
        value = super().__new__(cls, deleted)
        value.conversations_kept = kept
        return value

    @property
    def conversations_deleted(self) -> int:
        """The number of conversations deleted (the value itself)."""
        return int(self)

    def __repr__(self) -> str:
        return (f"UserDataDeleted(conversations_deleted={int(self)}, "
                f"conversations_kept={self.conversations_kept})")


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


# -- rows from the database --------------------------------------------------------------
#
# Rows that chatstore's own statements read are built into models without validating them
# again: the schema already guarantees every type (role CHECK, jsonb object/array CHECKs,
# integers, timestamptz, which asyncpg returns timezone-aware). This is what
# BaseModel.model_construct does, minus its per-field Python loop, and it is three times
# cheaper than model_validate for a page of 50 messages. tests/store/test_store.py checks that
# it builds exactly what model_validate would, for every statement that returns rows.


class _Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


_ROLES: dict[str | None, Role | None] = {role.value: role for role in Role}
_ROLES[None] = None
M = TypeVar("M", bound=BaseModel)
_new = object.__new__
_run = deque[Any](maxlen=0).extend  # consumes an iterator in C, keeping nothing
# BaseModel's own slot setters, called directly: a third cheaper than object.__setattr__,
# which looks each name up through the class's MRO first.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _construct(cls: type[M], values: dict[str, Any]) -> M:
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model


def _json(value: Any) -> Any:
    # Without chatstore's codec (a borrowed pool), json and jsonb arrive as text.
    return json.loads(value) if type(value) is str else value


def message_from_row(row: _Row) -> Message:
    """A :class:`Message` from a row of one of chatstore's statements (trusted, not
    re-validated)."""
    return _construct(Message, {
        "role": _ROLES[row["role"]],
        "content": row["content"],
        "tool_calls": _json(row["tool_calls"]),
        "tool_call_id": row["tool_call_id"],
        "metadata": _json(row["metadata"]),
        "token_count": row["token_count"],
        "idempotency_key": row["idempotency_key"],
        "item": _json(row["item"]),
        "conversation_id": row["conversation_id"],
        "user_id": row["user_id"],
        "seq": row["seq"],
        "created_at": row["created_at"],
        "summary_through": row["summary_through"],
    })


def conversation_from_row(row: _Row) -> Conversation:
    """A :class:`Conversation` from a row of one of chatstore's statements (trusted)."""
    return _construct(Conversation, {
        "id": row["id"],
        "user_id": row["user_id"],
        "title": row["title"],
        "metadata": _json(row["metadata"]),
        "message_count": row["message_count"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "revision": row["revision"],
        "root_id": row["root_id"],
        "parent_id": row["parent_id"],
        "forked_at": row["forked_at"],
        "current_id": row["current_id"],
        "expires_at": row["expires_at"],
        "held": row["held"],
    })


def usage_from_row(row: _Row) -> Usage:
    """A :class:`Usage` from a row of one of chatstore's statements (trusted)."""
    return _construct(Usage, {
        "user_id": row["user_id"],
        "conversation_id": row["conversation_id"],
        "key": row["key"],
        "model": row["model"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cached_input_tokens": row["cached_input_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "requests": row["requests"],
        "cost_micros": row["cost_micros"],
        "metadata": _json(row["metadata"]),
        "created_at": row["created_at"],
    })


# -- lean reads: many rows of one conversation, or of one user ---------------------------
#
# The reads that return many messages (pages, the whole history, context windows, search)
# select their columns in the model's field order, leave out the key columns the caller
# already passed (user_id; conversation_id too when the read is within one conversation),
# and build each model's __dict__ with one dict display (constant keys, columns by
# position, unpacked in the loop's target: an eighth cheaper than indexing the row eleven
# times): about half the cost of copying a template and updating it from zip(). All the
# models of one read share one __pydantic_fields_set__ (every field is set): one tracked
# object fewer per row for the garbage collector. Messages are frozen, so only code that
# mutates model_fields_set itself could notice the sharing (docs/api.md says so).

class _Columns(Protocol):
    def __getitem__(self, index: int, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


_MESSAGE_FIELDS = tuple(Message.model_fields)
#: The columns of a read within one conversation, in this order (tests/store/test_queries.py).
CONVERSATION_COLUMNS = ("role", "content", "tool_calls", "tool_call_id", "metadata",
                        "token_count", "idempotency_key", "item", "seq", "created_at",
                        "summary_through")
#: The columns of a read across one user's conversations (search), in this order.
USER_COLUMNS = ("role", "content", "tool_calls", "tool_call_id", "metadata", "token_count",
                "idempotency_key", "item", "conversation_id", "seq", "created_at",
                "summary_through")
# The dict displays below unpack the row in these positions and list the keys in the
# model's field order (which repr and iteration follow); tests/store/test_store.py checks that
# every lean statement builds exactly what model_validate builds, field order included.
_JSON_FIELDS = ("tool_calls", "metadata", "item")
# Below this many rows (a young pass's worth of allocations: 700 / 2) the collector is left
# alone: a page of 50 rarely sets off a pass at all.
_PAUSE_FROM = 350


def _conversation_dicts(rows: Sequence[_Columns], user_id: str,
                        cid: UUID) -> list[dict[str, Any]]:
    roles = _ROLES
    return [{"role": roles[role], "content": content, "tool_calls": calls,
             "tool_call_id": call_id, "metadata": metadata, "token_count": tokens,
             "idempotency_key": key, "item": item, "conversation_id": cid,
             "user_id": user_id, "seq": seq, "created_at": created_at,
             "summary_through": through}
            for (role, content, calls, call_id, metadata, tokens, key, item, seq, created_at,
                 through) in rows]


def _user_dicts(rows: Sequence[_Columns], user_id: str) -> list[dict[str, Any]]:
    roles = _ROLES
    return [{"role": roles[role], "content": content, "tool_calls": calls,
             "tool_call_id": call_id, "metadata": metadata, "token_count": tokens,
             "idempotency_key": key, "item": item, "conversation_id": cid,
             "user_id": user_id, "seq": seq, "created_at": created_at,
             "summary_through": through}
            for (role, content, calls, call_id, metadata, tokens, key, item, cid, seq,
                 created_at, through) in rows]


def messages_from_rows(rows: Sequence[_Columns], user_id: str,
                       conversation_id: UUID | None = None) -> list[Message]:
    """:class:`Message` models from the rows of a lean read (trusted, not re-validated).

    With ``conversation_id``, the rows hold :data:`CONVERSATION_COLUMNS`; without it,
    :data:`USER_COLUMNS`. The models share one ``__pydantic_fields_set__``.
    """
    # Two tracked objects per row survive (the model and its __dict__) while the rows are
    # built, and nothing here can make a reference cycle. With the collector running, a
    # history of 20,000 rows set off about 85 young passes, 8 middle ones and, every call or
    # two, a full pass over everything the caller's process holds: that made the build four
    # times slower in a process holding 400,000 objects (bench/outside.py). The build pauses
    # the collector instead (synchronous: no other coroutine runs meanwhile) when it is on;
    # the allocations still count, so the first allocation afterwards runs one young pass
    # over the new objects, and the older generations' passes follow at their usual pace.
    paused = len(rows) > _PAUSE_FROM and gc.isenabled()
    if paused:
        gc.disable()
    try:
        if conversation_id is None:
            dicts = _user_dicts(rows, user_id)
        else:
            dicts = _conversation_dicts(rows, user_id, conversation_id)
        # metadata is never NULL: text there means no jsonb codec on this connection.
        if dicts and type(dicts[0]["metadata"]) is str:
            for values in dicts:
                for name in _JSON_FIELDS:
                    values[name] = _json(values[name])
        # The models' slots are set by map() over BaseModel's own slot setters: the loop runs
        # in C, a quarter cheaper than a Python loop calling them row by row.
        count = len(dicts)
        models = list(map(_new, repeat(Message, count)))
        _run(map(_set_dict, models, dicts))
        _run(map(_set_fields_set, models, repeat(set(_MESSAGE_FIELDS), count)))
        _run(map(_set_extra, models, repeat(None, count)))
        _run(map(_set_private, models, repeat(None, count)))
    finally:
        if paused:
            gc.enable()
    return models
