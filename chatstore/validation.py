"""Input checks: every argument is checked here, before any SQL runs.

Text policy: PostgreSQL text cannot hold NUL (``\\x00``), jsonb cannot hold ``\\u0000``, and
a lone surrogate (``\\ud800``) cannot be encoded as UTF-8. Tool output from agents does
contain them. With ``text_policy="reject"`` (the default) such text raises
:class:`~chatstore.InvalidInput` naming the field; with ``"replace"`` each such character
becomes U+FFFD (``\\ufffd``), in content, ids, titles and every string of a JSON value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import ValidationError

from .errors import InvalidInput
from .items import project
from .limits import (
    DEFAULT_MAX_CONTENT_BYTES,
    MAX_BATCH,
    MAX_BIGINT,
    MAX_ID_BYTES,
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    MAX_TIMEOUT,
    MAX_TTL_DAYS,
    MIN_TIMEOUT,
    TEXT_LIMITS,
)
from .models import NewMessage, Role

TextPolicy = Literal["reject", "replace"]

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_CHAT_FIELDS = ("role", "content", "tool_calls", "tool_call_id")


def _last_part(field: str) -> str:
    return field.rsplit(".", 1)[-1].rsplit(": ", 1)[-1]


def _string_keys(value: Any, field: str) -> None:
    """Refuse a mapping key that is not a string anywhere in ``value`` (JSON would turn
    ``{1: ...}`` into ``{"1": ...}``: what came back would not be what was given)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(field, f"has a non-string key of type "
                                              f"{type(key).__name__}")
                if isinstance(inner, Mapping | list | tuple):
                    pending.append(inner)
        elif isinstance(item, list | tuple):
            pending.extend(inner for inner in item if isinstance(inner, Mapping | list | tuple))


def byte_size(value: str, field: str, limit: int) -> None:
    """Refuse ``value`` when its UTF-8 form is over ``limit`` bytes (naming both)."""
    if len(value) * 4 <= limit:  # fast path: cannot be over
        return
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidInput(field, f"is {size} bytes, over the limit of {limit}")


def json_depth(text: str, field: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON text nested deeper than ``limit`` arrays/objects."""
    if text.count("[") + text.count("{") <= limit:  # fast path: cannot be deeper
        return
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise InvalidInput(field, f"is nested more than {limit} levels deep")
        elif char in "]}":
            depth -= 1


def dumps_json(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII kept, NaN refused."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Validator:
    """The input rules of one store: its largest content and its text policy."""

    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES
    text_policy: TextPolicy = "reject"

    def __post_init__(self) -> None:
        if self.text_policy not in ("reject", "replace"):
            raise InvalidInput("text_policy", "must be 'reject' or 'replace'")
        whole_number(self.max_content_bytes, "max_content_bytes", low=1)

    def text(self, value: Any, field: str, *, required: bool = False,
             max_bytes: int | None = None) -> str | None:
        """A text value (``None`` allowed unless ``required``), cleaned per the text policy,
        at most ``max_bytes`` (default: the field's entry in :data:`TEXT_LIMITS`)."""
        if value is None:
            if required:
                raise InvalidInput(field, "is required")
            return None
        if not isinstance(value, str):
            raise InvalidInput(field, f"must be a string, not {type(value).__name__}")
        limit = max_bytes if max_bytes is not None else TEXT_LIMITS.get(_last_part(field))
        if limit is not None:
            byte_size(value, field, limit)
        if _BAD_CHARS.search(value) is None:
            return value
        if self.text_policy == "replace":
            return _BAD_CHARS.sub("\ufffd", value)
        raise InvalidInput(
            field, "contains a NUL character or a lone surrogate, which PostgreSQL cannot store"
        )

    def user_id(self, value: Any) -> str:
        user_id = self.text(value, "user_id", required=True)
        assert user_id is not None
        if not user_id:
            raise InvalidInput("user_id", "must not be empty")
        return user_id

    def json(self, value: Any, field: str, *, max_bytes: int | None = None) -> str | None:
        """A JSON value, cleaned, as JSON text (``None`` stays ``None``), at most
        ``max_bytes`` (default: :data:`MAX_METADATA_BYTES` for metadata, else the store's
        ``max_content_bytes``) and :data:`MAX_JSON_DEPTH` levels deep."""
        if value is None:
            return None
        if not value and isinstance(value, dict):
            return "{}"
        if max_bytes is None:
            max_bytes = (MAX_METADATA_BYTES if _last_part(field) == "metadata"
                         else self.max_content_bytes)
        try:
            text = dumps_json(value)
            json_depth(text, field)
            _string_keys(value, field)
            # Fast path: nothing PostgreSQL refuses (an escaped NUL, a lone surrogate).
            if "\\u0000" not in text:
                text.encode("utf-8")
                byte_size(text, field, max_bytes)
                return text
        except UnicodeEncodeError:
            pass
        except RecursionError:
            raise InvalidInput(field, f"is nested more than {MAX_JSON_DEPTH} levels deep"
                               ) from None
        except (TypeError, ValueError) as exc:
            raise InvalidInput(field, f"is not JSON-serialisable: {exc}") from None
        text = dumps_json(self._clean_json(value, field))
        byte_size(text, field, max_bytes)
        return text

    def _clean_json(self, value: Any, field: str) -> Any:
        if isinstance(value, str):
            return self.text(value, field)
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidInput(field, f"has a non-string key of type "
                                              f"{type(key).__name__}")
                out[self.text(key, field)] = self._clean_json(item, f"{field}.{key}")
            return out
        if isinstance(value, list | tuple):
            return [self._clean_json(item, f"{field}[{i}]") for i, item in enumerate(value)]
        return value

    def metadata(self, value: Any, field: str = "metadata") -> str | None:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput(field, "must be a JSON object (a dict)")
        return self.json(value, field)

    def message(self, value: Any, field: str) -> PreparedMessage:
        """A message to append (a NewMessage or a dict in its shape), checked and encoded."""
        if isinstance(value, NewMessage):
            message = value
        elif isinstance(value, Mapping):
            try:
                message = NewMessage.model_validate(value)
            except ValidationError as exc:
                error = exc.errors()[0]
                # Leave out pydantic's union-member tags ("dict[str,any]"...).
                where = ".".join(str(part) for part in error["loc"]
                                 if isinstance(part, int) or _NAME.fullmatch(part))
                raise InvalidInput(f"{field}.{where}" if where else field,
                                   error["msg"]) from None
        else:
            raise InvalidInput(field, f"must be a NewMessage or a dict, not "
                                      f"{type(value).__name__}")

        if message.item is not None:
            return self._item_message(message, field)
        if message.role is None:
            raise InvalidInput(f"{field}.role", "is required (or give an item)")
        role = Role(message.role)
        if role is Role.TOOL and not message.tool_call_id:
            raise InvalidInput(f"{field}.tool_call_id", "is required on a tool message")
        if role is not Role.TOOL and message.tool_call_id is not None:
            raise InvalidInput(f"{field}.tool_call_id", "is only allowed on a tool message")
        if message.tool_calls is not None and role is not Role.ASSISTANT:
            raise InvalidInput(f"{field}.tool_calls", "is only allowed on an assistant message")
        if message.content is None and not (role is Role.ASSISTANT and message.tool_calls):
            raise InvalidInput(f"{field}.content",
                               "is required (only an assistant message with tool_calls "
                               "may go without)")
        content = self._content(message.content, f"{field}.content")
        return self._prepared(message, field, role.value, content,
                              self.json(message.tool_calls, f"{field}.tool_calls"),
                              self.text(message.tool_call_id, f"{field}.tool_call_id"), None)

    def _prepared(self, message: NewMessage, field: str, role: str | None,
                  content: str | None, tool_calls: str | None, tool_call_id: str | None,
                  item: str | None) -> PreparedMessage:
        return PreparedMessage(
            message=message, role=role, content=content, tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            metadata=self.metadata(message.metadata, f"{field}.metadata") or "{}",
            token_count=message.token_count,
            idempotency_key=self.text(message.idempotency_key, f"{field}.idempotency_key"),
            item=item,
        )

    def _content(self, value: str | None, field: str) -> str | None:
        content = self.text(value, field)
        if content is not None and len(content) * 4 > self.max_content_bytes:
            size = len(content.encode("utf-8"))
            if size > self.max_content_bytes:
                raise InvalidInput(field, f"is {size} bytes, over the limit of "
                                          f"{self.max_content_bytes}")
        return content

    def _item_message(self, message: NewMessage, field: str) -> PreparedMessage:
        """A message given as an agent item: the item as JSON, its chat columns derived."""
        for name in _CHAT_FIELDS:
            if getattr(message, name) is not None:
                raise InvalidInput(f"{field}.{name}", "cannot be given with item: chatstore "
                                                      "derives it from the item")
        item = self.json(message.item, f"{field}.item") or "{}"
        # Project what is stored (the text policy may have replaced characters).
        chat = project(json.loads(item))
        return self._prepared(message, field, chat.role,
                              self._content(chat.content, f"{field}.item"),
                              self.json(chat.tool_calls, f"{field}.item"), chat.tool_call_id,
                              item)

    def messages(self, values: Any) -> list[PreparedMessage]:
        prepared = self._message_list(values)
        if not prepared:
            raise InvalidInput("messages", "must hold at least one message")
        if len(prepared) > MAX_BATCH:
            raise InvalidInput("messages", f"holds {len(prepared)} messages; at most "
                                           f"{MAX_BATCH} per call")
        # A retry of a mixed batch could not tell its unkeyed messages from new ones.
        _keys_all_or_none(prepared, "either every message carries an idempotency_key or "
                                    "none does (a retry of a mixed batch would store its "
                                    "unkeyed messages twice)")
        return prepared

    def compaction(self, summary: Any, messages: Any) -> list[PreparedMessage]:
        """A compaction's summary and the messages stored after it (``ChatStore.compact``),
        checked and encoded: the summary first."""
        prepared = [self.message(summary, "summary")]
        if messages is not None:
            prepared += self._message_list(messages)
        if len(prepared) > MAX_BATCH:
            raise InvalidInput("messages", f"holds {len(prepared) - 1} messages; at most "
                                           f"{MAX_BATCH - 1} follow a summary")
        _keys_all_or_none(prepared, "either the summary and every message carry an "
                                    "idempotency_key or none does (a retry could not tell "
                                    "what was stored)")
        return prepared

    def _message_list(self, values: Any) -> list[PreparedMessage]:
        """Each message of the list ``values``, checked (named ``messages[i]``)."""
        if isinstance(values, NewMessage | Mapping | str | bytes) or not isinstance(
                values, Iterable):
            raise InvalidInput("messages", "must be a list of messages")
        return [self.message(v, f"messages[{i}]") for i, v in enumerate(values)]


    def usage(self, value: Any, field: str = "usage") -> PreparedUsage:
        """A usage entry to record: a mapping, or any object with the fields as attributes
        (a :class:`~chatstore.Usage` included). ``model`` is required; every count is an
        integer from 0 to 2**63 - 1, 0 when absent; ``cost_micros`` an integer in that
        range or ``None``; ``metadata`` a JSON object. A mapping with any other key is
        refused (a misspelt count would silently be 0)."""
        if isinstance(value, Mapping):
            unknown = sorted(str(name) for name in value if name not in USAGE_FIELDS)
            if unknown:
                raise InvalidInput(f"{field}.{unknown[0]}", "is not a usage field (expected "
                                   + ", ".join(USAGE_FIELDS) + ")")
            get = value.get
        elif value is None or isinstance(value, str | bytes | int | float | list | tuple):
            raise InvalidInput(field, "must be a mapping or an object with the usage fields "
                                      f"as attributes, not {type(value).__name__}")
        else:
            def get(name: str, default: Any = None) -> Any:
                return getattr(value, name, default)
        model = self.text(get("model"), f"{field}.model", required=True,
                          max_bytes=MAX_ID_BYTES)
        assert model is not None
        if not model.strip():
            raise InvalidInput(f"{field}.model", "must not be empty")
        counts = {name: whole_number(get(name, 0), f"{field}.{name}", low=0, high=MAX_BIGINT)
                  for name in USAGE_COUNTS}
        cost = get("cost_micros")
        if cost is not None:
            cost = whole_number(cost, f"{field}.cost_micros", low=0, high=MAX_BIGINT)
        metadata = get("metadata")
        return PreparedUsage(model=model, **counts, cost_micros=cost,
                             metadata=self.metadata(metadata, f"{field}.metadata") or "{}")

    def usage_key(self, value: Any, field: str = "key") -> str | None:
        """An idempotency key for a usage entry: ``None``, or a non-empty string of at
        most 512 bytes."""
        key = self.text(value, field, max_bytes=MAX_ID_BYTES)
        if key is not None and not key:
            raise InvalidInput(field, "must not be empty (pass None for no key)")
        return key


#: The counts of a usage entry, in the order record_usage takes them.
USAGE_COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                "requests")
#: Every field a usage mapping may carry.
USAGE_FIELDS = ("model", *USAGE_COUNTS, "cost_micros", "metadata")


@dataclass(frozen=True, slots=True)
class PreparedUsage:
    """A checked usage entry, its metadata as JSON text, ready for ``record_usage``."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    requests: int
    cost_micros: int | None
    metadata: str

    def same_as(self, stored: Any, conversation_id: UUID) -> bool:
        """Whether a stored entry (a :class:`~chatstore.Usage`) records the same as this one
        would in ``conversation_id``."""
        return bool(
            stored.conversation_id == conversation_id
            and stored.model == self.model
            and stored.input_tokens == self.input_tokens
            and stored.output_tokens == self.output_tokens
            and stored.cached_input_tokens == self.cached_input_tokens
            and stored.reasoning_tokens == self.reasoning_tokens
            and stored.requests == self.requests
            and stored.cost_micros == self.cost_micros
            and stored.metadata == json.loads(self.metadata)
        )


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A checked message, with its JSON fields as text, ready for the batch statement."""

    message: NewMessage
    role: str | None
    content: str | None
    tool_calls: str | None
    tool_call_id: str | None
    metadata: str
    token_count: int | None
    idempotency_key: str | None
    item: str | None

    def same_as(self, stored: Any) -> bool:
        """Whether a stored message says the same (role, content, tool calls, item) as this
        one."""
        return bool(
            stored.role == self.role
            and stored.content == self.content
            and (None if self.item is None else json.loads(self.item)) == stored.item
            and stored.tool_call_id == self.tool_call_id
            and (None if self.tool_calls is None else json.loads(self.tool_calls))
            == stored.tool_calls
        )


def conversation_id(value: Any, field: str = "conversation_id") -> UUID:
    """A conversation id given as a ``UUID`` or its string (a session id is a string).

    :raises InvalidInput: anything else (the field ``field``).
    """
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidInput(field, f"{value!r} is not a UUID")


def whole_number(value: Any, field: str, *, low: int, high: int = MAX_BIGINT) -> int:
    """An integer in ``low`` .. ``high`` (default: an int8's largest), so nothing out of a
    column's range reaches the driver."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be an integer, not {type(value).__name__}")
    if value < low or value > high:
        shown = str(value) if abs(value) < 10**30 else f"a {value.bit_length()}-bit number"
        raise InvalidInput(field, f"must be between {low} and {high}, got {shown}")
    return value


def revision(value: Any, field: str = "expected_revision") -> int | None:
    """An expected revision: ``None`` (any) or 0 to 2**63 - 1."""
    return None if value is None else whole_number(value, field, low=0, high=MAX_BIGINT)


def _keys_all_or_none(prepared: list[PreparedMessage], mixed: str) -> None:
    """The idempotency keys of one write: distinct, and on every message or none
    (``mixed`` says why otherwise)."""
    keys = [p.idempotency_key for p in prepared if p.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        raise InvalidInput("messages", "two messages share one idempotency_key")
    if keys and len(keys) != len(prepared):
        raise InvalidInput("messages", mixed)


def seconds(value: Any, field: str, *, low: float, high: float) -> float:
    """A duration in seconds (an int or a float) between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"must be a number of seconds, not {type(value).__name__}")
    if not low <= value <= high:  # also refuses NaN
        raise InvalidInput(field, f"must be between {low:g} and {high:g} seconds, got {value}")
    return float(value)


def duration(value: Any, field: str, *, high: timedelta | None = None) -> timedelta:
    """A positive ``timedelta`` (at most ``high``).

    :raises InvalidInput: not a timedelta, zero or negative, or too long (the field
        ``field``).
    """
    if not isinstance(value, timedelta):
        raise InvalidInput(field, f"must be a datetime.timedelta, not {type(value).__name__}")
    if value <= timedelta(0):
        raise InvalidInput(field, f"must be a positive duration, got {value}")
    if high is not None and value > high:
        raise InvalidInput(field, f"must be at most {high.days} days, got {value}")
    return value


def ttl(value: Any, field: str = "ttl") -> timedelta | None:
    """A conversation's time to live: ``None`` (never expires) or a positive ``timedelta``
    of at most 100 years (``MAX_TTL_DAYS``)."""
    if value is None:
        return None
    return duration(value, field, high=timedelta(days=MAX_TTL_DAYS))


def timeout(value: Any, field: str) -> float | None:
    """A timeout in seconds (``None``: no limit): 1 ms to a day."""
    return None if value is None else seconds(value, field, low=MIN_TIMEOUT, high=MAX_TIMEOUT)


def encode_cursor(updated_at: datetime, conversation: UUID) -> str:
    raw = f"{updated_at.isoformat()}|{conversation}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: Any) -> tuple[datetime, UUID]:
    if not isinstance(cursor, str):
        raise InvalidInput("cursor", "must be a string from Page.next_cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        updated_at = datetime.fromisoformat(stamp)
        if updated_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return updated_at, UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor", "is malformed (pass a Page.next_cursor unchanged)") from None
