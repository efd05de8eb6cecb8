"""The store: a thin asyncpg layer over chatstore's named statements."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from uuid import UUID

import asyncpg

from . import _input
from ._input import Checker, PreparedMessage, TextPolicy
from .errors import (
    ChatStoreError,
    Conflict,
    InvalidInput,
    NotFound,
    SchemaNotMigrated,
    is_connection_lost,
    translate_errors,
)
from .models import (
    Conversation,
    Message,
    NewMessage,
    Page,
    conversation_from_row,
    message_from_row,
)
from .queries import QUERIES
from .urls import parse_url

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["ChatStore", "connect", "init_connection"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

# Strong references: pydantic caches parametrised generic models only weakly, so a bare
# Page[Message](...) per call can rebuild the class (about a millisecond) after a GC pass.
_MessagePage = Page[Message]
_ConversationPage = Page[Conversation]

_Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# The columns check_schema() requires, taken from the models the statements feed.
_REQUIRED_COLUMNS: Mapping[str, frozenset[str]] = {
    "users": frozenset({"id"}),
    "conversations": frozenset(Conversation.model_fields),
    "messages": frozenset(Message.model_fields),
}


def _decode_json(text: str) -> Any:
    # Most metadata is the empty object: skip the parser for it.
    return {} if text == "{}" else json.loads(text)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init`` hook: decode json and jsonb into Python values.

    Pass it as ``asyncpg.create_pool(..., init=chatstore.init_connection)`` when a backend
    builds the pool itself (chatstore also works without it, a little slower).
    """
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=json.dumps,
                                  decoder=_decode_json, format="text")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset`` hook: nothing to undo. chatstore's statements change no session state
    (no SET, LISTEN or advisory lock), and asyncpg rolls back an open transaction itself
    before calling this; the default reset would cost a round trip on every release."""


class ChatStore:
    """Conversation history of a backend's users, on PostgreSQL.

    Every method takes the owner's ``user_id`` and every statement filters on it: another
    user's conversation raises the same :class:`~chatstore.NotFound` as a missing one.
    Every change runs in one transaction; a driver exception never reaches the caller.

    :param pool: an asyncpg pool; borrowed (not closed by :meth:`close`) unless made by
        :func:`connect`.
    :param max_content_bytes: the largest message content accepted, in UTF-8 bytes.
    :param text_policy: ``"reject"`` text with NUL characters or lone surrogates
        (:class:`~chatstore.InvalidInput`), or ``"replace"`` them with U+FFFD.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_content_bytes: int = 1 << 20,
        text_policy: TextPolicy = "reject",
        _owns_pool: bool = False,
    ) -> None:
        if text_policy not in ("reject", "replace"):
            raise InvalidInput("text_policy", "must be 'reject' or 'replace'")
        _input.whole_number(max_content_bytes, "max_content_bytes", low=1)
        self._pool = pool
        self._check = Checker(max_content_bytes=max_content_bytes, text_policy=text_policy)
        self._owns_pool = _owns_pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool this store runs on."""
        return self._pool

    async def close(self) -> None:
        """Close the pool if this store made it (:func:`connect`); a borrowed pool stays open."""
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> ChatStore:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Conn]:
        """A pooled connection; driver errors become chatstore errors, and a connection
        that broke is terminated so the pool replaces it."""
        with translate_errors():
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except BaseException as exc:
                    if is_connection_lost(exc) and not conn.is_closed():
                        conn.terminate()
                    raise

    async def _missing(self, conn: _Conn, user_id: str,
                       conversation_id: UUID | None = None) -> NotFound:
        """The NotFound to raise: the user, else the user's conversation, is missing."""
        if not await conn.fetchval(QUERIES["user_exists"], user_id):
            return NotFound(f"user {user_id!r} not found")
        return NotFound(f"conversation {conversation_id} not found for user {user_id!r}")

    async def _require_conversation(self, conn: _Conn, user_id: str,
                                    conversation_id: UUID) -> asyncpg.Record:
        row = await conn.fetchrow(QUERIES["get_conversation"], user_id, conversation_id)
        if row is None:
            raise await self._missing(conn, user_id, conversation_id)
        return row

    # -- schema -----------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Check that the database has chatstore's tables and columns.

        :raises SchemaNotMigrated: naming every missing table or column.
        """
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["check_schema"])
        present: dict[str, set[str]] = {}
        for row in rows:
            present.setdefault(row["table_name"], set()).add(row["column_name"])
        missing: list[str] = []
        for table, columns in _REQUIRED_COLUMNS.items():
            if table not in present:
                missing.append(f"table {table}")
            else:
                missing.extend(f"column {table}.{c}" for c in sorted(columns - present[table]))
        if missing:
            raise SchemaNotMigrated(
                "database is not migrated for chatstore; missing: " + ", ".join(missing)
                + " (run `chatstore migrate` or `yoyo apply`)"
            )

    # -- conversations ----------------------------------------------------------------

    async def create_conversation(self, user_id: str, *, title: str | None = None,
                                  metadata: Mapping[str, Any] | None = None) -> Conversation:
        """Start a conversation for ``user_id``.

        :raises NotFound: the user does not exist.
        :raises InvalidInput: an empty user id, a title or metadata that cannot be stored.
        """
        user_id = self._check.user_id(user_id)
        title = self._check.text(title, "title")
        encoded = self._check.metadata(metadata)
        async with self._connection() as conn:
            try:
                row = await conn.fetchrow(QUERIES["create_conversation"], user_id, title,
                                          encoded)
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"user {user_id!r} not found") from None
        assert row is not None  # INSERT ... RETURNING gives one row
        return conversation_from_row(row)

    async def get_conversation(self, user_id: str, conversation_id: UUID | str) -> Conversation:
        """The conversation ``conversation_id`` of ``user_id``.

        :raises NotFound: no such conversation for this user (or no such user).
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection() as conn:
            row = await self._require_conversation(conn, user_id, cid)
        return conversation_from_row(row)

    async def list_conversations(self, user_id: str, *, limit: int = 20,
                                 cursor: str | None = None) -> Page[Conversation]:
        """The user's conversations, latest activity (``updated_at``) first.

        :param limit: page size, 1 to 200.
        :param cursor: ``next_cursor`` of the previous page, to read the next one.
        :raises NotFound: the user does not exist.
        :raises InvalidInput: a bad limit or a malformed cursor.
        """
        user_id = self._check.user_id(user_id)
        limit = _input.whole_number(limit, "limit", low=1, high=_input.MAX_CONVERSATION_PAGE)
        async with self._connection() as conn:
            if cursor is None:
                rows = await conn.fetch(QUERIES["list_conversations"], user_id, limit + 1)
            else:
                updated_at, after_id = _input.decode_cursor(cursor)
                rows = await conn.fetch(QUERIES["list_conversations_before"], user_id,
                                        updated_at, after_id, limit + 1)
            if not rows and not await conn.fetchval(QUERIES["user_exists"], user_id):
                raise NotFound(f"user {user_id!r} not found")
        items = [conversation_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = _input.encode_cursor(items[-1].updated_at, items[-1].id)
        return _ConversationPage(items=items, next_cursor=next_cursor)

    async def update_conversation(
        self, user_id: str, conversation_id: UUID | str, *,
        title: str | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
    ) -> Conversation:
        """Set the title and/or replace the metadata; a field not passed keeps its value.

        ``metadata=None`` resets it to ``{}``. Moves ``updated_at``.

        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        set_title = not isinstance(title, _Unset)
        set_metadata = not isinstance(metadata, _Unset)
        new_title = self._check.text(title, "title") if set_title else None
        new_metadata = self._check.metadata(metadata) if set_metadata else None
        async with self._connection() as conn:
            if not (set_title or set_metadata):
                return conversation_from_row(
                    await self._require_conversation(conn, user_id, cid))
            row = await conn.fetchrow(QUERIES["update_conversation"], user_id, cid,
                                      set_title, new_title, set_metadata, new_metadata)
            if row is None:
                raise await self._missing(conn, user_id, cid)
        return conversation_from_row(row)

    async def delete_conversation(self, user_id: str, conversation_id: UUID | str) -> None:
        """Delete the conversation and all its messages, in one statement.

        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection() as conn:
            if await conn.fetchval(QUERIES["delete_conversation"], user_id, cid) is None:
                raise await self._missing(conn, user_id, cid)

    async def delete_user_data(self, user_id: str) -> int:
        """Delete every conversation and message of the user, in one transaction.

        The ``users`` row stays: it belongs to the backend.

        :returns: the number of conversations deleted.
        :raises NotFound: the user does not exist.
        """
        user_id = self._check.user_id(user_id)
        async with self._connection() as conn:
            row = await conn.fetchrow(QUERIES["delete_user_data"], user_id)
        assert row is not None  # an aggregate: always one row
        if not row["user_found"]:
            raise NotFound(f"user {user_id!r} not found")
        return int(row["conversations_deleted"])

    # -- messages ---------------------------------------------------------------------

    async def append_message(self, user_id: str, conversation_id: UUID | str,
                             message: NewMessage | Mapping[str, Any], *,
                             expected_last_seq: int | None = None) -> Message:
        """Append one message; see :meth:`append_messages`."""
        (stored,) = await self.append_messages(user_id, conversation_id, [message],
                                               expected_last_seq=expected_last_seq)
        return stored

    async def append_messages(
        self, user_id: str, conversation_id: UUID | str,
        messages: Sequence[NewMessage | Mapping[str, Any]], *,
        expected_last_seq: int | None = None,
    ) -> list[Message]:
        """Append messages in order, atomically, with consecutive seqs.

        The conversation's ``message_count`` and ``updated_at`` move in the same
        transaction; without idempotency keys it is one statement and one round trip.
        Concurrent appends to one conversation are serialised by its row lock.

        :param messages: :class:`NewMessage` objects or dicts of the same shape (up to 10,000).
        :param expected_last_seq: compare-and-append: store only if the conversation's newest
            seq (its ``message_count``) is this, else raise :class:`Conflict`.
        :returns: the stored messages, in the order given. A message whose
            ``idempotency_key`` is already stored in this conversation is not stored again:
            the stored one is returned in its place.
        :raises NotFound: no such conversation for this user.
        :raises Conflict: ``expected_last_seq`` is stale, or an idempotency key is stored
            with a different role, content or tool call.
        :raises InvalidInput: a bad message (the field is named); nothing is written.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        prepared = self._check.messages(messages)
        if expected_last_seq is not None:
            _input.whole_number(expected_last_seq, "expected_last_seq", low=0)
        keyed = any(p.idempotency_key is not None for p in prepared)
        async with self._connection() as conn:
            if keyed:
                return await self._append_keyed(conn, user_id, cid, prepared,
                                                expected_last_seq)
            rows = await self._insert(conn, user_id, cid, prepared, expected_last_seq)
            if not rows:
                current = await self._require_conversation(conn, user_id, cid)
                raise Conflict(
                    f"conversation {cid} has moved on: its last seq is "
                    f"{current['message_count']}, not {expected_last_seq}"
                )
        return [message_from_row(row) for row in rows]

    async def _insert(self, conn: _Conn, user_id: str, cid: UUID,
                      prepared: Sequence[PreparedMessage],
                      expected_last_seq: int | None) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            QUERIES["append_messages"], user_id, cid,
            [p.role for p in prepared],
            [p.content for p in prepared],
            [p.tool_calls for p in prepared],
            [p.tool_call_id for p in prepared],
            [p.metadata for p in prepared],
            [p.token_count for p in prepared],
            [p.idempotency_key for p in prepared],
            expected_last_seq,
        )
        return sorted(rows, key=lambda row: row["seq"])

    async def _append_keyed(self, conn: _Conn, user_id: str, cid: UUID,
                            prepared: list[PreparedMessage],
                            expected_last_seq: int | None) -> list[Message]:
        """Append with idempotency keys: lock the conversation, then look the keys up.

        Under the row lock, the key lookup sees every message committed by earlier appends,
        so two retries of one message cannot both store it.
        """
        async with conn.transaction(isolation="read_committed"):
            last_seq = await conn.fetchval(QUERIES["lock_conversation"], user_id, cid)
            if last_seq is None:
                raise await self._missing(conn, user_id, cid)
            keys = [p.idempotency_key for p in prepared if p.idempotency_key is not None]
            stored = {
                row["idempotency_key"]: message_from_row(row)
                for row in await conn.fetch(QUERIES["find_messages_by_key"], user_id, cid, keys)
            }
            for p in prepared:
                earlier = stored.get(p.idempotency_key) if p.idempotency_key else None
                if earlier is not None and not p.same_as(earlier):
                    raise Conflict(
                        f"idempotency_key {p.idempotency_key!r} is already stored in "
                        f"conversation {cid} (seq {earlier.seq}) with different content"
                    )
            fresh = [p for p in prepared if p.idempotency_key not in stored]
            if fresh and expected_last_seq is not None and last_seq != expected_last_seq:
                raise Conflict(f"conversation {cid} has moved on: its last seq is "
                               f"{last_seq}, not {expected_last_seq}")
            inserted = iter(
                [message_from_row(row)
                 for row in await self._insert(conn, user_id, cid, fresh, None)]
                if fresh else []
            )
        return [stored[p.idempotency_key] if p.idempotency_key in stored else next(inserted)
                for p in prepared]

    async def list_messages(self, user_id: str, conversation_id: UUID | str, *,
                            limit: int = 50, before: int | None = None,
                            after: int | None = None) -> Page[Message]:
        """A page of messages, oldest to newest within the page.

        With neither ``before`` nor ``after``: the newest ``limit`` messages. ``before=S``:
        the ``limit`` messages just older than seq S; ``after=S``: just newer. Each is one
        index range scan, whatever the conversation's length.

        :param limit: page size, 1 to 1000.
        :returns: a page whose ``next_cursor`` is the seq to pass as ``before`` (paging
            backward) or ``after`` (paging forward), ``None`` when nothing is left that way.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a bad limit or seq, or both ``before`` and ``after``.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        limit = _input.whole_number(limit, "limit", low=1, high=_input.MAX_MESSAGE_PAGE)
        if before is not None and after is not None:
            raise InvalidInput("before", "cannot be combined with after")
        async with self._connection() as conn:
            if after is not None:
                after = _input.whole_number(after, "after", low=0)
                rows = await conn.fetch(QUERIES["list_messages_after"], user_id, cid, after,
                                        limit + 1)
            elif before is not None:
                before = _input.whole_number(before, "before", low=1)
                rows = await conn.fetch(QUERIES["list_messages_before"], user_id, cid, before,
                                        limit + 1)
            else:
                rows = await conn.fetch(QUERIES["list_messages_newest"], user_id, cid,
                                        limit + 1)
            if not rows:
                await self._require_conversation(conn, user_id, cid)
        more = len(rows) > limit
        page = rows[:limit]
        if after is None:
            page.reverse()
        items = [message_from_row(row) for row in page]
        next_cursor = None
        if more:
            next_cursor = items[-1].seq if after is not None else items[0].seq
        return _MessagePage(items=items, next_cursor=next_cursor)

    async def context_messages(self, user_id: str, conversation_id: UUID | str, *,
                               max_messages: int | None = None,
                               max_tokens: int | None = None) -> list[Message]:
        """The newest messages that fit the model's context, oldest first, in one statement
        whose cost follows the size of the window, not of the history.

        Takes messages newest-first while both budgets hold: at most ``max_messages``
        (default and ceiling 10,000) and at most ``max_tokens`` tokens in all. A message
        without ``token_count`` counts ``ceil((len(content) + len(tool_calls JSON)) / 4)``
        tokens, at least 1. The window never starts with a tool result: tool messages
        whose calling assistant message fell outside the budget are left out too, so the
        window starts at a whole turn.

        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a budget below 1 (or ``max_messages`` above 10,000).
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        cap = _input.MAX_CONTEXT_MESSAGES
        if max_messages is not None:
            cap = _input.whole_number(max_messages, "max_messages", low=1, high=cap)
        if max_tokens is not None:
            max_tokens = _input.whole_number(max_tokens, "max_tokens", low=1)
        async with self._connection() as conn:
            if max_tokens is None:
                rows = await conn.fetch(QUERIES["context_messages_by_count"], user_id, cid, cap)
            else:
                rows = await conn.fetch(QUERIES["context_messages_by_tokens"], user_id, cid,
                                        cap, max_tokens)
            if not rows:
                await self._require_conversation(conn, user_id, cid)
        return [message_from_row(row) for row in rows]

    async def pop_message(self, user_id: str, conversation_id: UUID | str) -> Message | None:
        """Remove and return the newest message (``None`` if there is none).

        ``message_count`` moves back, so the next append reuses the seq, without a gap.

        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection() as conn, conn.transaction(isolation="read_committed"):
            count = await conn.fetchval(QUERIES["lock_conversation"], user_id, cid)
            if count is None:
                raise await self._missing(conn, user_id, cid)
            if count == 0:
                return None
            row = await conn.fetchrow(QUERIES["pop_message"], user_id, cid)
        assert row is not None  # the row lock holds message_count > 0 in place
        return message_from_row(row)

    async def clear_messages(self, user_id: str, conversation_id: UUID | str) -> int:
        """Delete every message of the conversation (which stays); return how many.

        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection() as conn, conn.transaction(isolation="read_committed"):
            if await conn.fetchval(QUERIES["lock_conversation"], user_id, cid) is None:
                raise await self._missing(conn, user_id, cid)
            removed = await conn.fetchval(QUERIES["clear_messages"], user_id, cid)
        return int(removed)

    async def search_messages(self, user_id: str, query: str, *, limit: int = 20,
                              conversation_id: UUID | str | None = None) -> list[Message]:
        """Full-text search over the user's messages (web-search syntax: words, "phrases",
        ``or``, ``-word``), best match first and newest first among equals.

        Uses the ``simple`` text-search configuration: no stemming, any language.

        :param conversation_id: search only this conversation.
        :param limit: 1 to 1000.
        :raises NotFound: the user, or the given conversation, does not exist.
        :raises InvalidInput: an empty query or a bad limit.
        """
        user_id = self._check.user_id(user_id)
        text = self._check.text(query, "query", required=True)
        if not text or not text.strip():
            raise InvalidInput("query", "must not be empty")
        limit = _input.whole_number(limit, "limit", low=1, high=_input.MAX_MESSAGE_PAGE)
        cid = None if conversation_id is None else _input.conversation_id(conversation_id)
        async with self._connection() as conn:
            rows = await conn.fetch(QUERIES["search_messages"], user_id, text, cid, limit)
            if not rows:
                if cid is not None:
                    await self._require_conversation(conn, user_id, cid)
                elif not await conn.fetchval(QUERIES["user_exists"], user_id):
                    raise NotFound(f"user {user_id!r} not found")
        return [message_from_row(row) for row in rows]


def _resolve_dsn(dsn: str | None) -> str:
    resolved = dsn or os.environ.get("CHATSTORE_DSN") or os.environ.get("DATABASE_URL")
    if not resolved:
        raise InvalidInput("dsn", "no database URL: pass dsn, or set CHATSTORE_DSN or "
                                  "DATABASE_URL")
    return parse_url(resolved).asyncpg()


async def connect(dsn: str | None = None, *, max_content_bytes: int = 1 << 20,
                  text_policy: TextPolicy = "reject", **pool_options: Any) -> ChatStore:
    """Open a pool and return a :class:`ChatStore` that owns it (``close()`` closes it).

    :param dsn: a ``postgresql://`` URL (or any form :func:`chatstore.urls.parse_url`
        reads); ``None`` reads ``$CHATSTORE_DSN``, then ``$DATABASE_URL``.
    :param pool_options: passed to :func:`asyncpg.create_pool` (``min_size``,
        ``max_size``, ``statement_cache_size=0`` behind pgbouncer in transaction mode...).
        The pool skips asyncpg's session reset on release (a round trip; chatstore leaves
        no session state behind); pass ``reset=None`` to restore it if you run statements
        of your own on ``store.pool`` that change session settings.
    :raises InvalidInput: no URL, or a URL asyncpg cannot read.
    :raises ConnectionLost: the server cannot be reached.
    :raises SchemaNotMigrated: the database lacks chatstore's tables (see ``check_schema``).
    """
    url = _resolve_dsn(dsn)
    pool_options.setdefault("init", init_connection)
    pool_options.setdefault("reset", _keep_session)
    try:
        with translate_errors():
            pool = await asyncpg.create_pool(url, **pool_options)
    except ChatStoreError:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidInput("dsn", f"cannot use this database URL: {exc}") from None
    store = ChatStore(pool, max_content_bytes=max_content_bytes, text_policy=text_policy,
                      _owns_pool=True)
    try:
        await store.check_schema()
    except BaseException:
        await pool.close()
        raise
    return store
