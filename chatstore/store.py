"""The store: a thin asyncpg layer over chatstore's named statements."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeAlias, TypeVar, cast
from urllib.parse import unquote
from uuid import UUID, uuid4

import asyncpg

from . import _input
from ._input import Checker, PreparedMessage, TextPolicy
from .errors import (
    CallState,
    ChatStoreError,
    Conflict,
    ConnectionLost,
    ConversationBusy,
    InvalidInput,
    NotFound,
    SchemaNotMigrated,
    StaleRevision,
    WrongEventLoop,
    chatstore_error,
    is_connection_lost,
    retry_safe,
    translate_errors,
)
from .items import window_rule
from .models import (
    Conversation,
    Message,
    NewMessage,
    Page,
    conversation_from_row,
    message_from_row,
    messages_from_rows,
)
from .queries import QUERIES
from .urls import parse_url

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["ChatStore", "Pooler", "Turn", "connect", "init_connection"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

# Strong references: pydantic caches parametrised generic models only weakly, so a bare
# Page[Message](...) per call can rebuild the class (about a millisecond) after a GC pass.
_MessagePage = Page[Message]
_ConversationPage = Page[Conversation]

_Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_NOTHING: Final = contextlib.nullcontext()  # stateless: one for every call

# The columns check_schema() requires, taken from the models the statements feed.
_REQUIRED_COLUMNS: Mapping[str, frozenset[str]] = {
    "users": frozenset({"id"}),
    "conversations": frozenset(Conversation.model_fields),
    # search_vector: search reads it (migration 0003), no model carries it.
    "messages": frozenset(Message.model_fields) | {"search_vector"},
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


_DEFAULT_LEASE = 120.0
_MAX_LEASE = 86_400.0


@dataclass(frozen=True, slots=True)
class _WriteState:
    """A conversation's state as a writer checks it (lock_conversation / get_write_state)."""

    message_count: int
    revision: int
    turn_token: UUID | None
    lease_expired: bool

    @classmethod
    def of(cls, row: asyncpg.Record) -> _WriteState:
        return cls(row["message_count"], row["revision"], row["turn_token"],
                   bool(row["lease_expired"]))


class _PooledCall:
    """``async with``: a pooled connection for one store call, and what a failure means.

    Driver exceptions become chatstore errors (:func:`~chatstore.errors.chatstore_error`);
    a connection that broke is dropped (:meth:`ChatStore._drop`), and when it broke before
    this call put anything on the wire the error is marked stale, for ``_retry_stale``.
    A class rather than an ``@asynccontextmanager`` generator: every call goes through it,
    and the generator machinery cost about 17 us a call when the interpreter's caches are
    cold (as between other libraries' calls in the benchmark).
    """

    __slots__ = ("_conn", "_executed", "_protocol", "_state", "_store")

    def __init__(self, store: ChatStore, state: CallState) -> None:
        self._store = store
        self._state = state

    async def __aenter__(self) -> _Conn:
        store = self._store
        try:
            store._check_loop()
            conn = await store._pool.acquire(timeout=store._acquire_timeout)
        except Exception as exc:
            error = chatstore_error(exc, self._state)
            if error is None:
                raise
            raise error from exc
        self._conn = conn
        self._state.sent = True
        # asyncpg counts the queries a connection has put on the wire: unchanged at a
        # failure means this call executed nothing (the connection was already broken).
        self._protocol = getattr(conn, "_protocol", None)
        self._executed = getattr(self._protocol, "queries_count", None)
        return conn

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        state = self._state
        try:
            if exc is not None and is_connection_lost(exc):
                if self._executed is not None and getattr(
                        self._protocol, "queries_count", None) == self._executed:
                    state.sent, state.stale = False, True
                await self._store._drop(self._conn)
            await self._store._pool.release(self._conn)
        except Exception as failure:  # dropping or releasing failed: say that instead
            error = chatstore_error(failure, state)
            if error is None:
                raise
            raise error from failure
        if isinstance(exc, Exception):
            error = chatstore_error(exc, state)
            if error is not None:
                raise error from exc


class ChatStore:
    """Conversation history of a backend's users, on PostgreSQL.

    Every method takes the owner's ``user_id`` and every statement filters on it: another
    user's conversation raises the same :class:`~chatstore.NotFound` as a missing one.
    Every change runs in one transaction (or, on :meth:`using`, one savepoint of the
    caller's transaction), pinned to READ COMMITTED whatever the database's default; a
    driver exception never reaches the caller.

    :param pool: an asyncpg pool; borrowed (not closed by :meth:`close`) unless made by
        :func:`connect`.
    :param max_content_bytes: the largest message content accepted, in UTF-8 bytes.
    :param text_policy: ``"reject"`` text with NUL characters or lone surrogates
        (:class:`~chatstore.InvalidInput`), or ``"replace"`` them with U+FFFD.
    :param statement_timeout: seconds a call's statements may run, lock waits included,
        before the server cancels and rolls them back (:class:`~chatstore.Timeout`,
        ``outcome="not_applied"``); ``None``: no limit. See :meth:`with_options`.
    :param acquire_timeout: seconds to wait for a pooled connection; ``None``: no limit.
    :param row_level_security: set ``chatstore.user_id`` to the caller's user in the
        transaction of every call (``chatstore/sql/rls.sql``'s policies read it).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_content_bytes: int = 1 << 20,
        text_policy: TextPolicy = "reject",
        statement_timeout: float | None = None,
        acquire_timeout: float | None = None,
        row_level_security: bool = False,
        _owns_pool: bool = False,
        _read_committed_sessions: bool = False,
        _session_timeout: float | None = None,
    ) -> None:
        if text_policy not in ("reject", "replace"):
            raise InvalidInput("text_policy", "must be 'reject' or 'replace'")
        _input.whole_number(max_content_bytes, "max_content_bytes", low=1)
        self._pool = pool
        self._check = Checker(max_content_bytes=max_content_bytes, text_policy=text_policy)
        self._owns_pool = _owns_pool
        # connect() starts every session with default_transaction_isolation = read committed,
        # so a one-statement write needs no BEGIN of its own; a borrowed pool gets one.
        self._read_committed_sessions = _read_committed_sessions
        self._bound: _Conn | asyncpg.Connection | None = None
        self._statement_timeout = _input.timeout(statement_timeout, "statement_timeout")
        self._acquire_timeout = _input.timeout(acquire_timeout, "acquire_timeout")
        self._row_level_security = bool(row_level_security)
        # The statement_timeout every pooled session already has (set at connect): a call
        # with this timeout needs no per-transaction setting.
        self._session_timeout = _session_timeout

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool this store runs on."""
        return self._pool

    def using(self, conn: asyncpg.Connection | _Conn) -> ChatStore:
        """The same API on a connection the caller holds, inside the caller's transaction.

        Every statement runs on ``conn``. Where a call needs atomicity, it opens a savepoint
        inside the caller's open transaction (or its own READ COMMITTED transaction when none
        is open), never a transaction of its own around the caller's work; so a backend can
        write a row of its own and a message in one transaction::

            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO tasks ...")
                await store.using(conn).append_message(user_id, cid, tool_result)

        The caller's isolation level applies to the caller's transaction: under REPEATABLE
        READ or SERIALIZABLE, concurrent writers to one conversation can make the caller's
        transaction fail with :class:`~chatstore.ChatStoreError` (SQLSTATE 40001).
        """
        view = copy.copy(self)
        view._bound = conn
        view._owns_pool = False
        return view

    def with_options(self, *, statement_timeout: float | _Unset | None = UNSET,
                     acquire_timeout: float | _Unset | None = UNSET) -> ChatStore:
        """The same store (same pool) with other timeouts, for one call or a few:
        ``await store.with_options(statement_timeout=0.5).append_message(...)``.

        :param statement_timeout: seconds a call's statements may run (lock waits included)
            before the server cancels and rolls them back (:class:`~chatstore.Timeout`,
            ``kind="statement"``, ``outcome="not_applied"``); ``None``: no limit.
        :param acquire_timeout: seconds to wait for a pooled connection
            (:class:`~chatstore.Timeout`, ``kind="acquire"``); ``None``: wait as long as it
            takes.
        """
        view = copy.copy(self)
        view._owns_pool = False
        if not isinstance(statement_timeout, _Unset):
            view._statement_timeout = _input.timeout(statement_timeout, "statement_timeout")
        if not isinstance(acquire_timeout, _Unset):
            view._acquire_timeout = _input.timeout(acquire_timeout, "acquire_timeout")
        return view

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

    def _call_settings(self, user_id: str | None) -> tuple[str | None, str | None] | None:
        """The per-transaction settings a call needs (row-level-security user, statement
        timeout in milliseconds), or ``None`` when it needs none."""
        timeout = None
        if self._statement_timeout != self._session_timeout:
            timeout = str(round((self._statement_timeout or 0) * 1000))
        if not self._row_level_security and timeout is None:
            return None
        return (user_id if self._row_level_security else None), timeout

    def _connection(self, user_id: str | None = None, *,
                    idempotent: bool = False) -> AbstractAsyncContextManager[_Conn]:
        """A pooled connection (or the bound one) for one call; driver errors become
        chatstore errors.

        :param user_id: the caller's user, for row-level security
            (``set_config('chatstore.user_id', ..., true)`` in the call's transaction).
        :param idempotent: retrying the call is safe whatever happened (a read, or a write
            whose messages all carry idempotency keys); decides ``retryable`` when the
            outcome is unknown.

        With row-level security or a per-call statement timeout the call runs in one
        transaction that starts by setting them (``is_local``: they end with it, so a pooled
        connection never carries them to its next user). A connection that broke is dropped
        and the pool's other connections are expired (the same outage usually took them too).
        """
        state = CallState(idempotent=idempotent)
        settings = self._call_settings(user_id)
        if self._bound is None and settings is None:
            return _PooledCall(self, state)  # the common case, without a generator
        return self._settings_or_bound_connection(state, settings)

    @asynccontextmanager
    async def _settings_or_bound_connection(
            self, state: CallState, settings: tuple[str | None, str | None] | None,
    ) -> AsyncIterator[_Conn]:
        """:meth:`_connection`'s other cases: a pooled connection whose call first sets its
        per-transaction settings, or the bound connection (:meth:`using`)."""
        if self._bound is None:
            assert settings is not None
            async with _PooledCall(self, state) as conn, \
                    conn.transaction(isolation="read_committed"):
                await conn.execute(QUERIES["set_call_settings"], *settings)
                yield conn
            return
        state.sent = True
        with translate_errors(state):
            bound = cast(_Conn, self._bound)
            if settings is None:
                yield bound
            elif bound.is_in_transaction():  # the settings last to the caller's commit
                await bound.execute(QUERIES["set_call_settings"], *settings)
                yield bound
            else:
                async with bound.transaction(isolation="read_committed"):
                    await bound.execute(QUERIES["set_call_settings"], *settings)
                    yield bound

    async def _drop(self, conn: _Conn) -> None:
        """After a lost connection: close it if asyncpg has not (it may be confused rather
        than closed), and expire the pool's idle connections, so no call gets one the same
        outage broke. Never asks a proxy asyncpg already released (it raises)."""
        try:
            if not conn.is_closed():
                conn.terminate()
        except asyncpg.InterfaceError:
            pass  # asyncpg released it when it saw the connection close
        await self._pool.expire_connections()

    def _check_loop(self) -> None:
        loop = getattr(self._pool, "_loop", None)
        if loop is not None and loop is not asyncio.get_running_loop():
            raise WrongEventLoop("this store's pool was made on another event loop; make "
                                 "one store per event loop (per thread)")

    @asynccontextmanager
    async def _atomic(self, conn: _Conn) -> AsyncIterator[None]:
        """A READ COMMITTED transaction, or a savepoint inside the caller's transaction."""
        if self._bound is not None and conn.is_in_transaction():
            await conn.execute(QUERIES["savepoint"])
            try:
                yield
            except BaseException as exc:
                if not is_connection_lost(exc):
                    await conn.execute(QUERIES["rollback_to_savepoint"])
                    await conn.execute(QUERIES["release_savepoint"])
                raise
            await conn.execute(QUERIES["release_savepoint"])
            return
        async with conn.transaction(isolation="read_committed"):
            yield

    def _one_statement(self, conn: _Conn) -> AbstractAsyncContextManager[None]:
        """Around a one-statement write: nothing when the session already defaults to READ
        COMMITTED (connect()'s pool), else an explicit READ COMMITTED transaction."""
        if self._read_committed_sessions and self._bound is None:
            return _NOTHING
        return self._atomic(conn)

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

    async def _lock(self, conn: _Conn, user_id: str, cid: UUID) -> _WriteState:
        row = await conn.fetchrow(QUERIES["lock_conversation"], user_id, cid)
        if row is None:
            raise await self._missing(conn, user_id, cid)
        return _WriteState.of(row)

    @staticmethod
    def _check_state(state: _WriteState, cid: UUID, *, expected_revision: int | None,
                     token: UUID | None) -> None:
        """Raise what a write in this state must raise: a lost lease for the turn ``token``,
        a busy conversation for a writer from outside any turn, a stale revision."""
        if token is not None:
            if state.turn_token != token:
                raise Conflict(f"conversation {cid}: lease lost: this turn's lease ran out "
                               "and another writer took the conversation over (the turn's "
                               "messages were removed); nothing was written")
        elif state.turn_token is not None:
            raise ConversationBusy(f"conversation {cid} is busy: a chat turn holds it; "
                                   "nothing was written")
        if expected_revision is not None and state.revision != expected_revision:
            raise StaleRevision(cid, expected_revision, state.revision)

    async def _lock_for_write(self, conn: _Conn, user_id: str, cid: UUID, *,
                              expected_revision: int | None,
                              token: UUID | None) -> _WriteState:
        """In a transaction: take the conversation's row lock and check the write may go
        ahead. A writer from outside any turn that finds a turn whose lease ran out removes
        it first, as an abort would (the lock is held, so abort_turn sees all its rows)."""
        state = await self._lock(conn, user_id, cid)
        if token is None and state.turn_token is not None and state.lease_expired:
            await conn.fetchrow(QUERIES["abort_turn"], user_id, cid, state.turn_token)
            state = await self._lock(conn, user_id, cid)
        self._check_state(state, cid, expected_revision=expected_revision, token=token)
        return state

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

    async def create_conversation(
        self, user_id: str, *, title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
    ) -> Conversation:
        """Start a conversation for ``user_id``, optionally with its first messages.

        With ``messages``, the conversation and its messages are written in one transaction
        (revision 1): a rejected message leaves no empty conversation behind.

        :raises NotFound: the user does not exist.
        :raises InvalidInput: an empty user id, a title, metadata or message that cannot be
            stored (nothing is written).
        """
        user_id = self._check.user_id(user_id)
        title = self._check.text(title, "title")
        encoded = self._check.metadata(metadata)
        prepared = None if messages is None else self._check.messages(messages)
        async with self._connection(user_id) as conn:
            try:
                if prepared is None:
                    async with self._one_statement(conn):
                        row = await conn.fetchrow(QUERIES["create_conversation"], user_id,
                                                  title, encoded)
                else:
                    async with self._atomic(conn):
                        row = await conn.fetchrow(QUERIES["create_conversation"], user_id,
                                                  title, encoded)
                        if row is None:
                            raise ChatStoreError("create_conversation returned no row")
                        await self._insert(conn, user_id, row["id"], prepared, 0, None)
                        row = await conn.fetchrow(QUERIES["get_conversation"], user_id,
                                                  row["id"])
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"user {user_id!r} not found") from None
        if row is None:
            raise ChatStoreError("create_conversation returned no row")
        return conversation_from_row(row)

    async def get_conversation(self, user_id: str, conversation_id: UUID | str) -> Conversation:
        """The conversation ``conversation_id`` of ``user_id``.

        :raises NotFound: no such conversation for this user (or no such user).
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection(user_id, idempotent=True) as conn:
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
        async with self._connection(user_id, idempotent=True) as conn:
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
        expected_revision: int | None = None,
    ) -> Conversation:
        """Set the title and/or replace the metadata; a field not passed keeps its value.

        ``metadata=None`` resets it to ``{}``. Moves ``updated_at`` and the revision (by one;
        a call with neither field changes nothing). Allowed while a turn holds the
        conversation.

        :param expected_revision: write only if the conversation is at this revision (checked
            even when no field is given), else :class:`Conflict`.
        :raises NotFound: no such conversation for this user.
        :raises Conflict: ``expected_revision`` is stale; nothing was written.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        set_title = not isinstance(title, _Unset)
        set_metadata = not isinstance(metadata, _Unset)
        new_title = self._check.text(title, "title") if set_title else None
        new_metadata = self._check.metadata(metadata) if set_metadata else None
        expected = _input.revision(expected_revision)
        async with self._connection(user_id) as conn:
            if set_title or set_metadata:
                async with self._one_statement(conn):
                    updated = await conn.fetchrow(QUERIES["update_conversation"], user_id,
                                                  cid, set_title, new_title, set_metadata,
                                                  new_metadata, expected)
                if updated is not None:
                    return conversation_from_row(updated)
            row = await self._require_conversation(conn, user_id, cid)
        if expected is not None and row["revision"] != expected:
            raise StaleRevision(cid, expected, row["revision"])
        if set_title or set_metadata:  # the row matched but the write did not: raced
            raise Conflict(f"conversation {cid} changed during the update; nothing was "
                           "written (try again)")
        return conversation_from_row(row)

    async def delete_conversation(self, user_id: str, conversation_id: UUID | str) -> None:
        """Delete the conversation and all its messages, in one statement (also while a
        turn holds it: the turn's later writes then raise :class:`NotFound`).

        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        async with self._connection(user_id) as conn:
            async with self._one_statement(conn):
                deleted = await conn.fetchval(QUERIES["delete_conversation"], user_id, cid)
            if deleted is None:
                raise await self._missing(conn, user_id, cid)

    async def delete_user_data(self, user_id: str) -> int:
        """Delete every conversation and message of the user, in one transaction.

        The ``users`` row stays: it belongs to the backend.

        :returns: the number of conversations deleted.
        :raises NotFound: the user does not exist.
        """
        user_id = self._check.user_id(user_id)
        async with self._connection(user_id) as conn, self._one_statement(conn):
            row = await conn.fetchrow(QUERIES["delete_user_data"], user_id)
        if row is None:
            raise ChatStoreError("delete_user_data returned no row")
        if not row["user_found"]:
            raise NotFound(f"user {user_id!r} not found")
        return int(row["conversations_deleted"])

    # -- messages ---------------------------------------------------------------------

    async def append_message(self, user_id: str, conversation_id: UUID | str,
                             message: NewMessage | Mapping[str, Any], *,
                             expected_revision: int | None = None) -> Message:
        """Append one message; see :meth:`append_messages`."""
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        prepared = [self._check.message(message, "messages[0]")]
        expected = _input.revision(expected_revision)
        (stored,) = await self._append(user_id, cid, prepared, expected, None, None)
        return stored

    async def append_messages(
        self, user_id: str, conversation_id: UUID | str,
        messages: Sequence[NewMessage | Mapping[str, Any]], *,
        expected_revision: int | None = None,
    ) -> list[Message]:
        """Append messages in order, atomically, with consecutive seqs; one revision.

        The conversation's ``message_count``, ``revision`` (+1 for the whole call) and
        ``updated_at`` move in the same transaction; without idempotency keys it is one
        statement and one round trip. Concurrent appends to one conversation are serialised
        by its row lock.

        :param messages: :class:`NewMessage` objects or dicts of the same shape (up to 10,000),
            in chat format or as agent items (``{"item": {...}}``). Either every message
            carries an ``idempotency_key`` or none does.
        :param expected_revision: compare-and-append: store only if the conversation is at
            this revision, else raise :class:`Conflict` (checked even for a replay).
        :returns: the stored messages, in the order given. A message whose
            ``idempotency_key`` is already stored in this conversation is not stored again:
            the stored one is returned in its place (a full replay moves no revision).
        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        :raises Conflict: ``expected_revision`` is stale, or an idempotency key is stored
            with a different role, content, tool call or item.
        :raises InvalidInput: a bad message (the field is named); nothing is written.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        prepared = self._check.messages(messages)
        expected = _input.revision(expected_revision)
        return await self._append(user_id, cid, prepared, expected, None, None)

    async def _append(self, user_id: str, cid: UUID, prepared: list[PreparedMessage],
                      expected: int | None, token: UUID | None,
                      lease_seconds: float | None) -> list[Message]:
        keyed = prepared[0].idempotency_key is not None
        async with self._connection(user_id, idempotent=keyed) as conn:
            if not keyed:
                # The common case: one statement, which writes only when nothing stands in
                # its way (a stale revision, another turn, a lost lease).
                async with self._one_statement(conn):
                    rows = await self._insert(conn, user_id, cid, prepared, expected, token,
                                              lease_seconds)
                if rows:
                    return [message_from_row(row) for row in rows]
            # Keys to look up, or something in the way: under the row lock, say what (or
            # remove a turn whose lease ran out) and write.
            return await self._append_locked(conn, user_id, cid, prepared, expected, token,
                                             lease_seconds)

    async def _insert(self, conn: _Conn, user_id: str, cid: UUID,
                      prepared: Sequence[PreparedMessage], expected: int | None,
                      token: UUID | None, lease_seconds: float | None = None,
                      ) -> list[asyncpg.Record]:
        try:
            if len(prepared) == 1:
                p = prepared[0]
                return await conn.fetch(
                    QUERIES["append_message"], user_id, cid, p.role, p.content, p.tool_calls,
                    p.tool_call_id, p.metadata, p.token_count, p.idempotency_key, p.item,
                    expected, token, lease_seconds)
            rows: list[asyncpg.Record] = await conn.fetch(
                QUERIES["append_messages"], user_id, cid,
                [p.role for p in prepared],
                [p.content for p in prepared],
                [p.tool_calls for p in prepared],
                [p.tool_call_id for p in prepared],
                [p.metadata for p in prepared],
                [p.token_count for p in prepared],
                [p.idempotency_key for p in prepared],
                [p.item for p in prepared],
                expected, token, lease_seconds,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "messages_pkey":
                raise ChatStoreError(
                    f"conversation {cid}: its message_count is out of step with its "
                    "messages (a row was written behind chatstore's back); nothing was "
                    "written. `chatstore check --repair` finds and fixes this") from None
            raise
        return sorted(rows, key=lambda row: row["seq"]) if len(rows) > 1 else rows

    async def _append_locked(self, conn: _Conn, user_id: str, cid: UUID,
                             prepared: list[PreparedMessage], expected: int | None,
                             token: UUID | None, lease_seconds: float | None) -> list[Message]:
        """Append under the conversation's row lock, then look the idempotency keys up.

        Under the row lock, the key lookup sees every message committed by earlier appends,
        so two retries of one message cannot both store it.
        """
        async with self._atomic(conn):
            await self._lock_for_write(conn, user_id, cid, expected_revision=expected,
                                       token=token)
            keys = [p.idempotency_key for p in prepared if p.idempotency_key is not None]
            stored = {
                row["idempotency_key"]: message_from_row(row)
                for row in (await conn.fetch(QUERIES["find_messages_by_key"], user_id, cid,
                                             keys) if keys else [])
            }
            for p in prepared:
                earlier = stored.get(p.idempotency_key)
                if earlier is not None and not p.same_as(earlier):
                    raise Conflict(
                        f"idempotency_key {p.idempotency_key!r} is already stored in "
                        f"conversation {cid} (seq {earlier.seq}) with different content"
                    )
            fresh = [p for p in prepared if p.idempotency_key not in stored]
            inserted = iter(
                [message_from_row(row)
                 for row in await self._insert(conn, user_id, cid, fresh, None, token,
                                               lease_seconds)]
                if fresh else []
            )
        return [stored[p.idempotency_key] if p.idempotency_key in stored else next(inserted)
                for p in prepared]

    async def list_messages(self, user_id: str, conversation_id: UUID | str, *,
                            limit: int | None = 50, before: int | None = None,
                            after: int | None = None) -> Page[Message]:
        """A page of messages, oldest to newest within the page.

        With neither ``before`` nor ``after``: the newest ``limit`` messages. ``before=S``:
        the ``limit`` messages just older than seq S; ``after=S``: just newer. Each is one
        index range scan, whatever the conversation's length. ``limit=None`` reads the whole
        history, oldest first, in one statement (``next_cursor`` is then ``None``).

        :param limit: page size, 1 to 1000, or ``None`` for everything.
        :returns: a page whose ``next_cursor`` is the seq to pass as ``before`` (paging
            backward) or ``after`` (paging forward), ``None`` when nothing is left that way.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a bad limit or seq, or both ``before`` and ``after`` (or either
            with ``limit=None``).
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        if limit is not None:
            limit = _input.whole_number(limit, "limit", low=1, high=_input.MAX_MESSAGE_PAGE)
        if before is not None and after is not None:
            raise InvalidInput("before", "cannot be combined with after")
        if limit is None and (before is not None or after is not None):
            raise InvalidInput("limit", "None (the whole history) takes no before or after")
        if after is not None:
            after = _input.whole_number(after, "after", low=0, high=_input.MAX_SEQ)
        if before is not None:
            before = _input.whole_number(before, "before", low=1, high=_input.MAX_SEQ)
        async with self._connection(user_id, idempotent=True) as conn:
            if limit is None:
                rows = await conn.fetch(QUERIES["list_messages_all"], user_id, cid)
            elif after is not None:
                rows = await conn.fetch(QUERIES["list_messages_after"], user_id, cid, after,
                                        limit + 1)
            elif before is not None:
                rows = await conn.fetch(QUERIES["list_messages_before"], user_id, cid, before,
                                        limit + 1)
            else:
                rows = await conn.fetch(QUERIES["list_messages_newest"], user_id, cid,
                                        limit + 1)
            if not rows:
                await self._require_conversation(conn, user_id, cid)
        if limit is None:
            return _MessagePage(items=messages_from_rows(rows, user_id, cid))
        more = len(rows) > limit
        page = rows[:limit]
        if after is None:
            page.reverse()
        items = messages_from_rows(page, user_id, cid)
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
        without ``token_count`` counts a quarter of its characters, rounded up, at least 1
        (of its item's JSON when it has one, else of its content plus its tool_calls JSON).

        The window is valid input for the model API: a tool result whose call is outside
        it is left out, and so is a tool call whose results are not all in it (a call whose
        result is not stored yet included), matched by call id, also when parallel calls are
        separate rows. Pass it to :func:`chatstore.to_openai_messages` for the Chat
        Completions list, or :func:`chatstore.to_items` for Responses-API input items.

        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a budget below 1 (or ``max_messages`` above 10,000).
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        cap = _input.MAX_CONTEXT_MESSAGES
        if max_messages is not None:
            cap = _input.whole_number(max_messages, "max_messages", low=1, high=cap)
        if max_tokens is not None:
            max_tokens = _input.whole_number(max_tokens, "max_tokens", low=1,
                                             high=_input.MAX_BIGINT)
        async with self._connection(user_id, idempotent=True) as conn:
            if max_tokens is None:
                rows = await conn.fetch(QUERIES["context_messages_by_count"], user_id, cid, cap)
            else:
                rows = await conn.fetch(QUERIES["context_messages_by_tokens"], user_id, cid,
                                        cap, max_tokens)
            rows.reverse()
            if not rows:
                await self._require_conversation(conn, user_id, cid)
        return window_rule(messages_from_rows(rows, user_id, cid))

    async def pop_message(self, user_id: str, conversation_id: UUID | str, *,
                          expected_revision: int | None = None) -> Message | None:
        """Remove and return the newest message (``None`` if there is none).

        ``message_count`` moves back, so the next append reuses the seq, without a gap;
        the revision moves forward by one (not when there was nothing to pop).

        :param expected_revision: pop only if the conversation is at this revision (checked
            even when it is empty), else :class:`Conflict`.
        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        expected = _input.revision(expected_revision)
        row = await self._locked_write(user_id, cid, expected, "pop_message")
        return None if row is None else message_from_row(row)

    async def clear_messages(self, user_id: str, conversation_id: UUID | str, *,
                             expected_revision: int | None = None) -> int:
        """Delete every message of the conversation (which stays); return how many.

        The revision moves forward by one (not when there was nothing to clear).

        :param expected_revision: clear only if the conversation is at this revision
            (checked even when it is empty), else :class:`Conflict`.
        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        expected = _input.revision(expected_revision)
        row = await self._locked_write(user_id, cid, expected, "clear_messages")
        return 0 if row is None else int(row["removed"])

    async def _locked_write(self, user_id: str, cid: UUID, expected: int | None,
                            statement: str) -> asyncpg.Record | None:
        """Pop or clear: lock, check, write; ``None`` when the conversation is empty."""
        async with self._connection(user_id) as conn, self._atomic(conn):
            state = await self._lock_for_write(conn, user_id, cid,
                                               expected_revision=expected, token=None)
            if state.message_count == 0:
                return None
            row: asyncpg.Record | None = await conn.fetchrow(QUERIES[statement], user_id, cid)
            if row is None:
                raise ChatStoreError(
                    f"conversation {cid}: its message_count ({state.message_count}) is out "
                    "of step with its messages; nothing was changed. `chatstore check "
                    "--repair` finds and fixes this")
            return row

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
        async with self._connection(user_id, idempotent=True) as conn:
            rows = await conn.fetch(QUERIES["search_messages"], user_id, text, cid, limit)
            if not rows:
                if cid is not None:
                    await self._require_conversation(conn, user_id, cid)
                elif not await conn.fetchval(QUERIES["user_exists"], user_id):
                    raise NotFound(f"user {user_id!r} not found")
        return messages_from_rows(rows, user_id)

    # -- turns ------------------------------------------------------------------------

    @asynccontextmanager
    async def turn(self, user_id: str, conversation_id: UUID | str, *,
                   lease_seconds: float = _DEFAULT_LEASE,
                   wait_seconds: float = 0) -> AsyncIterator[Turn]:
        """Hold the conversation for one chat turn: ``async with store.turn(...) as turn``.

        At most one turn is in flight per conversation, and while it is, appends, pops and
        clears from outside it raise :class:`ConversationBusy`: a turn's messages are
        contiguous. Leaving the block normally ends the turn (its messages stay); an
        exception in it (or :meth:`Turn.abort`) removes every message the turn appended.

        The hold is a lease kept in the conversation's row, not a lock or a held
        connection: no connection is held between calls, so it works behind a
        transaction-mode pooler and on Citus. Each :meth:`Turn.append` extends the lease to
        ``lease_seconds`` from then. A lease that runs out (a crashed process) lets the next
        writer in, which removes the stalled turn's messages as an abort would; the old
        holder's later calls then raise :class:`Conflict` ("lease lost") and write nothing.

        :param lease_seconds: how long the lease lasts without an append or renewal
            (0.1 to 86,400).
        :param wait_seconds: how long to wait for a turn in flight to finish (polling, no
            connection held); 0 raises :class:`ConversationBusy` at once.
        :raises ConversationBusy: another turn holds the conversation (after waiting).
        :raises NotFound: no such conversation for this user.
        """
        user_id = self._check.user_id(user_id)
        cid = _input.conversation_id(conversation_id)
        lease = _input.seconds(lease_seconds, "lease_seconds", low=0.1, high=_MAX_LEASE)
        wait = _input.seconds(wait_seconds, "wait_seconds", low=0.0, high=_MAX_LEASE)
        token = uuid4()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.02
        while True:
            try:
                revision = await self._take_turn(user_id, cid, token, lease)
                break
            except ConversationBusy:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.5)
        turn = Turn(self, user_id, cid, token, revision, lease)
        try:
            yield turn
        except BaseException:
            if not turn.ended:
                with contextlib.suppress(ChatStoreError):
                    await turn.abort()
            raise
        if not turn.ended:
            await turn._end()

    async def _take_turn(self, user_id: str, cid: UUID, token: UUID, lease: float) -> int:
        async with self._connection(user_id) as conn:
            # The common case, no turn in flight: one statement.
            async with self._one_statement(conn):
                revision = await conn.fetchval(QUERIES["take_turn"], user_id, cid, token,
                                               lease)
            if revision is not None:
                return int(revision)
            async with self._atomic(conn):
                # Busy, or held by a turn whose lease ran out (removed as an abort would).
                await self._lock_for_write(conn, user_id, cid, expected_revision=None,
                                           token=None)
                revision = await conn.fetchval(QUERIES["take_turn"], user_id, cid, token,
                                               lease)
        if revision is None:
            raise ChatStoreError(f"conversation {cid}: the turn lease could not be taken")
        return int(revision)

    async def _turn_statement(self, user_id: str, cid: UUID, token: UUID, statement: str,
                              *args: Any) -> None:
        """end_turn / renew_turn (one statement) or abort_turn (after the row lock) for the
        holder ``token``; a lost lease raises Conflict, a deleted conversation NotFound."""
        async with self._connection(user_id) as conn:
            if statement == "abort_turn":
                async with self._atomic(conn):
                    await self._lock_for_write(conn, user_id, cid, expected_revision=None,
                                               token=token)
                    await conn.fetchrow(QUERIES[statement], user_id, cid, token)
                return
            async with self._one_statement(conn):
                found = await conn.fetchval(QUERIES[statement], user_id, cid, token, *args)
            if found is None:
                row = await conn.fetchrow(QUERIES["get_write_state"], user_id, cid)
                if row is None:
                    raise await self._missing(conn, user_id, cid)
                self._check_state(_WriteState.of(row), cid, expected_revision=None,
                                  token=token)
                raise ChatStoreError(f"conversation {cid}: {statement} matched no row")


class Turn:
    """One chat turn in flight: made by :meth:`ChatStore.turn`, not directly.

    :attr revision: the conversation's revision when the lease was taken.
    """

    def __init__(self, store: ChatStore, user_id: str, conversation_id: UUID, token: UUID,
                 revision: int, lease_seconds: float) -> None:
        self._store = store
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.revision = revision
        self._token = token
        self._lease = lease_seconds
        self._state: dict[str, bool] = {"ended": False}

    @property
    def store(self) -> ChatStore:
        """The store this turn runs on (bound to the caller's connection after
        :meth:`using`): integrations read the conversation through it while the turn is in
        flight (``ChatStoreSession.for_turn``)."""
        return self._store

    @property
    def ended(self) -> bool:
        """Whether the turn has ended (normally or aborted)."""
        return self._state["ended"]

    def _require_open(self) -> None:
        if self.ended:
            raise Conflict(f"conversation {self.conversation_id}: this turn has already "
                           "ended; nothing was written")

    def using(self, conn: asyncpg.Connection | _Conn) -> Turn:
        """The same turn (same lease) running its calls on ``conn``, inside the caller's
        transaction: see :meth:`ChatStore.using`."""
        view = Turn(self._store.using(conn), self.user_id, self.conversation_id, self._token,
                    self.revision, self._lease)
        view._state = self._state
        return view

    async def context(self, max_messages: int | None = None,
                      max_tokens: int | None = None) -> list[Message]:
        """The conversation's context window now, the turn's own appends included; see
        :meth:`ChatStore.context_messages`."""
        return await self._store.context_messages(self.user_id, self.conversation_id,
                                                  max_messages=max_messages,
                                                  max_tokens=max_tokens)

    async def append(self, messages: Sequence[NewMessage | Mapping[str, Any]],
                     ) -> list[Message]:
        """Append messages under the turn's lease (one revision), extending the lease.

        :raises Conflict: the lease was lost, or the turn has ended; nothing was written.
        :raises InvalidInput: a bad message; nothing was written (the turn goes on).
        """
        self._require_open()
        prepared = self._store._check.messages(messages)
        return await self._store._append(self.user_id, self.conversation_id, prepared, None,
                                         self._token, self._lease)

    async def renew(self, lease_seconds: float | None = None) -> None:
        """Extend the lease to ``lease_seconds`` (default: the turn's) from now.

        :raises Conflict: the lease was lost, or the turn has ended.
        """
        self._require_open()
        lease = self._lease if lease_seconds is None else _input.seconds(
            lease_seconds, "lease_seconds", low=0.1, high=_MAX_LEASE)
        await self._store._turn_statement(self.user_id, self.conversation_id, self._token,
                                          "renew_turn", lease)
        self._lease = lease

    async def abort(self) -> None:
        """End the turn and remove every message it appended (the conversation is as it was
        when the turn began, apart from its revision, which moves by one if anything was
        removed).

        :raises Conflict: the lease was lost (the messages are gone already).
        """
        self._require_open()
        self._state["ended"] = True
        await self._store._turn_statement(self.user_id, self.conversation_id, self._token,
                                          "abort_turn")

    async def _end(self) -> None:
        self._state["ended"] = True
        await self._store._turn_statement(self.user_id, self.conversation_id, self._token,
                                          "end_turn")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _retry_stale(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """Run ``method`` again (twice at most) when it failed on a pooled connection that an
    outage had broken before the call executed anything: the pool has expired its
    connections by then, so the retry gets a fresh one, and the caller sees no failure."""

    @functools.wraps(method)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt in range(3):
            try:
                return await method(*args, **kwargs)
            except ConnectionLost as exc:
                if attempt == 2 or not retry_safe(exc):
                    raise
        raise AssertionError("unreachable")

    return run


for _name, _method in list(vars(ChatStore).items()):
    if not _name.startswith("_") and inspect.iscoroutinefunction(_method) and _name != "close":
        setattr(ChatStore, _name, _retry_stale(_method))


def _resolve_dsn(dsn: str | None) -> str:
    resolved = dsn or os.environ.get("CHATSTORE_DSN") or os.environ.get("DATABASE_URL")
    if not resolved:
        raise InvalidInput("dsn", "no database URL: pass dsn, or set CHATSTORE_DSN or "
                                  "DATABASE_URL")
    return parse_url(resolved).asyncpg()


Pooler = Literal["transaction"]

_PASSWORDS = re.compile(r"^[^:/]+://[^:@/]*:([^@]*)@|[?&]password=([^&]*)")


def _redact(text: str, url: str) -> str:
    """``text`` without the URL's password (asyncpg's messages may quote the URL)."""
    for match in _PASSWORDS.finditer(url):
        for secret in match.groups():
            if secret:
                text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


async def connect(dsn: str | None = None, *, max_content_bytes: int = 1 << 20,
                  text_policy: TextPolicy = "reject", pooler: Pooler | None = None,
                  statement_timeout: float | None = None,
                  acquire_timeout: float | None = None,
                  row_level_security: bool = False, **pool_options: Any) -> ChatStore:
    """Open a pool and return a :class:`ChatStore` that owns it (``close()`` closes it).

    :param dsn: a ``postgresql://`` URL (or any form :func:`chatstore.urls.parse_url`
        reads); ``None`` reads ``$CHATSTORE_DSN``, then ``$DATABASE_URL``.
    :param pooler: ``"transaction"`` when the URL points at a transaction-mode pooler
        (pgbouncer ``pool_mode = transaction``, Neon's, Supabase's): no named prepared
        statements (``statement_cache_size=0``) and no session state (no startup
        settings; timeouts and the row-level-security user are set per transaction).
    :param statement_timeout: default seconds a call's statements may run, lock waits
        included, before the server cancels them (rolled back: :class:`~chatstore.Timeout`);
        ``None``: no limit. Override per call with :meth:`ChatStore.with_options`.
    :param acquire_timeout: default seconds to wait for a pooled connection.
    :param row_level_security: set ``chatstore.user_id`` to the caller's user in the
        transaction of every call, for the policies of ``chatstore/sql/rls.sql``.
    :param pool_options: passed to :func:`asyncpg.create_pool` (``min_size``,
        ``max_size``...). The pool skips asyncpg's session reset on release (a round trip;
        chatstore leaves no session state behind); pass ``reset=None`` to restore it if you
        run statements of your own on ``store.pool`` that change session settings.
    :raises InvalidInput: no URL, or a URL asyncpg cannot read (never retryable).
    :raises ConnectionLost: the server cannot be reached.
    :raises SchemaNotMigrated: the database lacks chatstore's tables (see ``check_schema``).
    """
    url = _resolve_dsn(dsn)
    if pooler not in (None, "transaction"):
        raise InvalidInput("pooler", "must be None or 'transaction'")
    statement_timeout = _input.timeout(statement_timeout, "statement_timeout")
    pool_options.setdefault("init", init_connection)
    pool_options.setdefault("reset", _keep_session)
    pinned = False
    session_timeout = None
    if pooler == "transaction":
        # A pooler hands each transaction to any server session: no named statements, and
        # no startup settings (pgbouncer refuses them); chatstore sets what it needs per
        # transaction instead.
        pool_options["statement_cache_size"] = 0
    else:
        # Pin READ COMMITTED for every session of this pool (a startup parameter: no round
        # trip), so one-statement writes need no BEGIN whatever the database's default; the
        # default statement_timeout rides along the same way.
        settings = dict(pool_options.pop("server_settings", None) or {})
        pinned = settings.setdefault("default_transaction_isolation",
                                     "read committed") == "read committed"
        if statement_timeout is not None:
            settings.setdefault("statement_timeout", str(round(statement_timeout * 1000)))
            session_timeout = statement_timeout
        pool_options["server_settings"] = settings
    with translate_errors(CallState(sent=False)):
        try:
            pool = await asyncpg.create_pool(url, **pool_options)
        except (asyncpg.ClientConfigurationError, ValueError, TypeError) as exc:
            raise InvalidInput("dsn", "cannot use this database URL: "
                               + _redact(str(exc), url)) from None
    store = ChatStore(pool, max_content_bytes=max_content_bytes, text_policy=text_policy,
                      statement_timeout=statement_timeout, acquire_timeout=acquire_timeout,
                      row_level_security=row_level_security, _owns_pool=True,
                      _read_committed_sessions=pinned, _session_timeout=session_timeout)
    try:
        await store.check_schema()
    except BaseException:
        await pool.close()
        raise
    return store
