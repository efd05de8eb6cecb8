"""The store: :class:`ChatStore`, chatstore's public operations.

Each method checks its arguments (:mod:`chatstore.validation`), runs named statements
(:data:`chatstore.sql.SQL`) on a connection from the one call path
(:class:`chatstore._call.CallPath`: timeouts, row-level security, error mapping, retry),
and returns models (:mod:`chatstore.models`). What writes share lives in
:mod:`chatstore._writes`, turns in :mod:`chatstore.turns`, pools in :mod:`chatstore._connect`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn
from uuid import UUID

import asyncpg

from . import _compaction, _retention, _trees, _usage, validation
from ._call import UNSET, CallPath, Conn, Unset, retried
from ._writes import append, insert, missing, require_conversation
from .errors import (
    ChatStoreError,
    Conflict,
    InvalidInput,
    NotFound,
    SchemaNotMigrated,
    StaleRevision,
)
from .items import window_rule
from .limits import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_LEASE,
    DEFAULT_MAX_CONTENT_BYTES,
    DEFAULT_PURGE_BATCH,
    MAX_BIGINT,
    MAX_CONTEXT_MESSAGES,
    MAX_CONVERSATION_PAGE,
    MAX_LEASE,
    MAX_MESSAGE_PAGE,
    MAX_PURGE_BATCH,
    MAX_SEQ,
)
from .models import (
    Alternative,
    Conversation,
    Message,
    NewMessage,
    Page,
    PurgeReport,
    Quota,
    Usage,
    UsageTotal,
    UserDataDeleted,
    conversation_from_row,
    message_from_row,
    messages_from_rows,
)
from .schema import schema_gaps
from .sql import SQL
from .turns import Turn, hold
from .validation import TextPolicy, Validator

__all__ = ["ChatStore"]

# Strong references: pydantic caches parametrised generic models only weakly, so a bare
# Page[Message](...) per call can rebuild the class (about a millisecond) after a GC pass.
_MessagePage = Page[Message]
_ConversationPage = Page[Conversation]


class ChatStore:
    """Conversation history of a backend's users, on PostgreSQL.

    Every method takes the owner's ``user_id`` and every statement filters on it: another
    user's conversation raises the same :class:`~chatstore.NotFound` as a missing one.
    Every change runs in one transaction (or, on :meth:`using`, one savepoint of the
    caller's transaction), pinned to READ COMMITTED whatever the database's default; a
    driver exception never reaches the caller. A call that failed on a pooled connection
    an outage had broken before the call executed anything is retried on a fresh one.

    :param pool: an asyncpg pool; borrowed (not closed by :meth:`close`). :func:`connect`
        makes a store that owns its pool.
    :param max_content_bytes: the largest message content accepted, in UTF-8 bytes.
    :param text_policy: ``"reject"`` text with NUL characters or lone surrogates
        (:class:`~chatstore.InvalidInput`), or ``"replace"`` them with U+FFFD.
    :param statement_timeout: seconds a call's statements may run, lock waits included,
        before the server cancels and rolls them back (:class:`~chatstore.Timeout`,
        ``outcome="not_applied"``); ``None``: no limit. See :meth:`with_options`.
    :param acquire_timeout: seconds a call waits for a pooled connection before it raises
        :class:`~chatstore.Timeout` (``kind="acquire"``): 10 s by default
        (``chatstore.limits.DEFAULT_ACQUIRE_TIMEOUT``; see :func:`chatstore.connect`);
        ``None``: wait for ever.
    :param row_level_security: set ``chatstore.user_id`` to the caller's user in the
        transaction of every call (``chatstore/sql/rls.sql``'s policies read it).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        text_policy: TextPolicy = "reject",
        statement_timeout: float | None = None,
        acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
        row_level_security: bool = False,
    ) -> None:
        self._validate = Validator(max_content_bytes=max_content_bytes,
                                   text_policy=text_policy)
        self._calls = CallPath(pool, statement_timeout=statement_timeout,
                               acquire_timeout=acquire_timeout,
                               row_level_security=row_level_security)

    @classmethod
    def from_call_path(cls, calls: CallPath, validator: Validator) -> ChatStore:
        """A store on an opened call path (:func:`chatstore.connect` makes one this way)."""
        store = cls.__new__(cls)
        store._calls, store._validate = calls, validator
        return store

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool this store runs on."""
        return self._calls.pool

    @property
    def call_path(self) -> CallPath:
        """The call path every statement of this store runs through (its timeouts,
        row-level security, error mapping; bound after :meth:`using`): chatstore's export,
        import and turns run on it."""
        return self._calls

    @property
    def validator(self) -> Validator:
        """This store's input rules (its ``max_content_bytes`` and ``text_policy``)."""
        return self._validate

    def using(self, conn: asyncpg.Connection | Conn) -> ChatStore:
        """The same API on a connection the caller holds, inside the caller's transaction.

        Every statement runs on ``conn``. Where a call needs atomicity, it opens a savepoint
        inside the caller's open transaction (or its own READ COMMITTED transaction when none
        is open), never a transaction of its own around the caller's work; so a backend can
        write a row of its own and a message in one transaction::

            async with app_db.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO tasks ...")
                await store.using(conn).append_message(user_id, cid, tool_result)

        The caller's isolation level applies to the caller's transaction: under REPEATABLE
        READ or SERIALIZABLE, concurrent writers to one conversation can make the caller's
        transaction fail with :class:`~chatstore.ChatStoreError` (SQLSTATE 40001).
        """
        return self.from_call_path(self._calls.using(conn), self._validate)

    def with_options(self, *, statement_timeout: float | Unset | None = UNSET,
                     acquire_timeout: float | Unset | None = UNSET) -> ChatStore:
        """The same store (same pool) with other timeouts, for one call or a few:
        ``await store.with_options(statement_timeout=0.5).append_message(...)``.

        :param statement_timeout: seconds a call's statements may run (lock waits included)
            before the server cancels and rolls them back (:class:`~chatstore.Timeout`,
            ``kind="statement"``, ``outcome="not_applied"``); ``None``: no limit.
        :param acquire_timeout: seconds to wait for a pooled connection
            (:class:`~chatstore.Timeout`, ``kind="acquire"``); ``None``: wait as long as it
            takes.
        """
        return self.from_call_path(
            self._calls.with_options(statement_timeout=statement_timeout,
                                     acquire_timeout=acquire_timeout), self._validate)

    async def close(self) -> None:
        """Close the pool if this store made it (:func:`connect`); a borrowed pool stays open."""
        await self._calls.close()

    async def __aenter__(self) -> ChatStore:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- schema -----------------------------------------------------------------------

    @retried
    async def check_schema(self) -> None:
        """Check that the database has chatstore's tables and columns.

        :raises SchemaNotMigrated: naming every missing table or column.
        """
        async with self._calls.connection() as conn:
            rows = await conn.fetch(SQL.check_schema)
        missing_parts: list[str] = []
        for table, columns in schema_gaps(rows).items():
            if columns is None:
                missing_parts.append(f"table {table}")
            else:
                missing_parts.extend(f"column {table}.{column}" for column in columns)
        if missing_parts:
            raise SchemaNotMigrated(
                "database is not migrated for chatstore; missing: " + ", ".join(missing_parts)
                + " (run `chatstore migrate` or `yoyo apply`)"
            )

    # -- conversations ----------------------------------------------------------------

    @retried
    async def create_conversation(
        self, user_id: str, *, title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
        ttl: timedelta | None = None,
    ) -> Conversation:
        """Start a conversation for ``user_id``, optionally with its first messages.

        With ``messages``, the conversation and its messages are written in one transaction
        (revision 1): a rejected message leaves no empty conversation behind.

        :param ttl: the conversation (its tree) expires this long from now: :meth:`purge`
            then deletes it (a temporary chat). ``None``: it never expires.
        :raises NotFound: the user does not exist.
        :raises InvalidInput: an empty user id, a title, metadata or message that cannot be
            stored, a ``ttl`` that is not a positive ``timedelta`` (nothing is written).
        """
        user_id = self._validate.user_id(user_id)
        title = self._validate.text(title, "title")
        encoded = self._validate.metadata(metadata)
        lifetime = validation.ttl(ttl)
        prepared = None if messages is None else self._validate.messages(messages)
        async with self._calls.connection(user_id) as conn:
            try:
                if prepared is None:
                    async with self._calls.one_statement(conn):
                        row = await conn.fetchrow(SQL.create_conversation, user_id,
                                                  title, encoded, lifetime)
                else:
                    async with self._calls.atomic(conn):
                        row = await conn.fetchrow(SQL.create_conversation, user_id,
                                                  title, encoded, lifetime)
                        if row is None:
                            raise ChatStoreError("create_conversation returned no row")
                        await insert(conn, user_id, row["id"], prepared, 0, None)
                        row = await conn.fetchrow(SQL.get_conversation, user_id,
                                                  row["id"])
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"user {user_id!r} not found") from None
        if row is None:
            raise ChatStoreError("create_conversation returned no row")
        return conversation_from_row(row)

    @retried
    async def get_conversation(self, user_id: str, conversation_id: UUID | str) -> Conversation:
        """The conversation ``conversation_id`` of ``user_id``.

        :raises NotFound: no such conversation for this user (or no such user).
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            row = await require_conversation(conn, user_id, cid)
        return conversation_from_row(row)

    @retried
    async def list_conversations(self, user_id: str, *, limit: int = 20,
                                 cursor: str | None = None,
                                 forks: bool = False) -> Page[Conversation]:
        """The user's chats: one entry per tree (its root, carrying the tree's
        ``current_id``), latest activity anywhere in the tree first. A sidebar lists these
        and opens each one's ``current_id``.

        :param limit: page size, 1 to 200.
        :param cursor: ``next_cursor`` of the previous page (of a listing with the same
            ``forks``), to read the next one.
        :param forks: list every conversation, forks included, each by its own latest
            activity (``updated_at``).
        :raises NotFound: the user does not exist.
        :raises InvalidInput: a bad limit or a malformed cursor.
        """
        user_id = self._validate.user_id(user_id)
        limit = validation.whole_number(limit, "limit", low=1, high=MAX_CONVERSATION_PAGE)
        first, following = ((SQL.list_all_conversations, SQL.list_all_conversations_before)
                            if forks else
                            (SQL.list_conversations, SQL.list_conversations_before))
        async with self._calls.connection(user_id, idempotent=True) as conn:
            if cursor is None:
                rows = await conn.fetch(first, user_id, limit + 1)
            else:
                active_at, after_id = validation.decode_cursor(cursor)
                rows = await conn.fetch(following, user_id, active_at, after_id, limit + 1)
            if not rows and not await conn.fetchval(SQL.user_exists, user_id):
                raise NotFound(f"user {user_id!r} not found")
        items = [conversation_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = validation.encode_cursor(last["active_at"], last["id"])
        return _ConversationPage(items=items, next_cursor=next_cursor)

    @retried
    async def update_conversation(
        self, user_id: str, conversation_id: UUID | str, *,
        title: str | Unset | None = UNSET,
        metadata: Mapping[str, Any] | Unset | None = UNSET,
        ttl: timedelta | Unset | None = UNSET,
        expected_revision: int | None = None,
    ) -> Conversation:
        """Set the title, replace the metadata and/or set the expiry; a field not passed
        keeps its value.

        ``metadata=None`` resets it to ``{}``. Moves ``updated_at`` and the revision (by one;
        a call with no field changes nothing). Allowed while a turn holds the conversation.

        :param ttl: the conversation's tree expires this long from now (the expiry is the
            tree's: on a fork it sets the tree's, see :meth:`purge`); ``None`` clears it
            (never expires).
        :param expected_revision: write only if the conversation is at this revision (checked
            even when no field is given), else :class:`Conflict`.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a bad title, metadata or ``ttl`` (zero or negative); nothing
            was written.
        :raises Conflict: ``expected_revision`` is stale; nothing was written.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        set_title = not isinstance(title, Unset)
        set_metadata = not isinstance(metadata, Unset)
        set_ttl = not isinstance(ttl, Unset)
        new_title = self._validate.text(title, "title") if set_title else None
        new_metadata = self._validate.metadata(metadata) if set_metadata else None
        lifetime = validation.ttl(ttl) if set_ttl else None
        expected = validation.revision(expected_revision)
        arguments = (user_id, cid, set_title, new_title, set_metadata, new_metadata, expected)
        async with self._calls.connection(user_id) as conn:
            if set_ttl:
                # The tree's expiry (its root's row, locked first) and the update, together.
                async with self._calls.atomic(conn):
                    if await conn.fetchrow(SQL.set_tree_expiry, user_id, cid,
                                           lifetime) is None:
                        raise await missing(conn, user_id, cid)
                    updated = await conn.fetchrow(SQL.update_conversation, *arguments)
                    if updated is None:  # undo the expiry too
                        _refused_update(await require_conversation(conn, user_id, cid),
                                        cid, expected)
                return conversation_from_row(updated)
            if set_title or set_metadata:
                async with self._calls.one_statement(conn):
                    updated = await conn.fetchrow(SQL.update_conversation, *arguments)
                if updated is not None:
                    return conversation_from_row(updated)
            row = await require_conversation(conn, user_id, cid)
        if set_title or set_metadata:
            _refused_update(row, cid, expected)
        if expected is not None and row["revision"] != expected:
            raise StaleRevision(cid, expected, row["revision"])
        return conversation_from_row(row)

    @retried
    async def delete_conversation(self, user_id: str, conversation_id: UUID | str) -> None:
        """Delete the conversation and all its messages, in one transaction (also while a
        turn holds it: the turn's later writes then raise :class:`NotFound`).

        Deleting a root deletes its whole tree; deleting a fork deletes it and the forks
        made from it, and never changes what the tree's other conversations read (rows of
        theirs stored under a deleted one are handed over first). If the tree's current
        version is deleted, the deleted fork's parent becomes current.

        :raises NotFound: no such conversation for this user.
        :raises ConversationHeld: (a :class:`Conflict`) the conversation, or a fork that
            would go with it, is under a legal hold (:meth:`set_hold`); nothing was deleted.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        async with self._calls.connection(user_id) as conn, self._calls.atomic(conn):
            await _trees.delete(conn, user_id, cid)

    @retried
    async def delete_user_data(self, user_id: str) -> UserDataDeleted:
        """Delete every conversation and message of the user, and the user's usage ledger
        and its totals, in one transaction, except what a legal hold keeps: a tree with a
        held conversation (:meth:`set_hold`) stays whole, with its messages, and then the
        user's usage stays whole too (its rollups are per user and day, not per tree).

        The ``users`` row stays: it belongs to the backend.

        :returns: the number of conversations deleted (an ``int``), whose
            ``conversations_kept`` counts those left in place because of a hold.
        :raises NotFound: the user does not exist.
        """
        user_id = self._validate.user_id(user_id)
        async with self._calls.connection(user_id) as conn, self._calls.atomic(conn):
            # Every root locked first: set_hold and fork take it, so none slips past.
            await conn.fetchval(SQL.lock_user_trees, user_id)
            row = await conn.fetchrow(SQL.delete_user_data, user_id)
        if row is None:
            raise ChatStoreError("delete_user_data returned no row")
        if not row["user_found"]:
            raise NotFound(f"user {user_id!r} not found")
        return UserDataDeleted(int(row["conversations_deleted"]),
                               int(row["conversations_kept"]))

    # -- messages ---------------------------------------------------------------------

    @retried
    async def append_message(self, user_id: str, conversation_id: UUID | str,
                             message: NewMessage | Mapping[str, Any], *,
                             expected_revision: int | None = None) -> Message:
        """Append one message; see :meth:`append_messages`."""
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        prepared = [self._validate.message(message, "messages[0]")]
        expected = validation.revision(expected_revision)
        (stored,) = await append(self._calls, user_id, cid, prepared, expected, None, None)
        return stored

    @retried
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
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        prepared = self._validate.messages(messages)
        expected = validation.revision(expected_revision)
        return await append(self._calls, user_id, cid, prepared, expected, None, None)

    @retried
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
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        if limit is not None:
            limit = validation.whole_number(limit, "limit", low=1, high=MAX_MESSAGE_PAGE)
        if before is not None and after is not None:
            raise InvalidInput("before", "cannot be combined with after")
        if limit is None and (before is not None or after is not None):
            raise InvalidInput("limit", "None (the whole history) takes no before or after")
        if after is not None:
            after = validation.whole_number(after, "after", low=0, high=MAX_SEQ)
        if before is not None:
            before = validation.whole_number(before, "before", low=1, high=MAX_SEQ)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            if limit is None:
                rows = await conn.fetch(SQL.list_messages_all, user_id, cid)
            elif after is not None:
                rows = await conn.fetch(SQL.list_messages_after, user_id, cid, after,
                                        limit + 1)
            elif before is not None:
                rows = await conn.fetch(SQL.list_messages_before, user_id, cid, before,
                                        limit + 1)
            else:
                rows = await conn.fetch(SQL.list_messages_newest, user_id, cid,
                                        limit + 1)
            if not rows:
                await require_conversation(conn, user_id, cid)
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

    @retried
    async def context_messages(self, user_id: str, conversation_id: UUID | str, *,
                               max_messages: int | None = None,
                               max_tokens: int | None = None) -> list[Message]:
        """The newest messages of the model's view that fit its context, oldest first, in one
        statement whose cost follows the size of the window, not of the history.

        The model's view is the whole history, or after a :meth:`compact`, the newest
        summary followed by the messages after its ``summary_through`` (and everything
        appended since); the window is its newest part, so the summary is in it when the
        messages after it all fit, and comes first.

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
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        cap = MAX_CONTEXT_MESSAGES
        if max_messages is not None:
            cap = validation.whole_number(max_messages, "max_messages", low=1, high=cap)
        if max_tokens is not None:
            max_tokens = validation.whole_number(max_tokens, "max_tokens", low=1,
                                             high=MAX_BIGINT)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            if max_tokens is None:
                rows = await conn.fetch(SQL.view_messages, user_id, cid, cap)
            else:
                rows = await conn.fetch(SQL.context_messages_by_tokens, user_id, cid,
                                        cap, max_tokens)
            rows.reverse()
            if not rows:
                await require_conversation(conn, user_id, cid)
        return window_rule(messages_from_rows(rows, user_id, cid))

    @retried
    async def view_messages(self, user_id: str, conversation_id: UUID | str, *,
                            limit: int | None = None) -> list[Message]:
        """The model's view as stored, oldest first, in one statement: the whole history, or
        after a :meth:`compact`, the newest summary followed by the messages after its
        ``summary_through`` (the summary is not repeated among them) and everything
        appended since. No window rule and no budget: what the Agents SDK session's
        ``get_items`` returns. Use :meth:`context_messages` for a window to send.

        :param limit: the newest ``limit`` messages of the view (the summary only when the
            whole view fits), or ``None`` for all of it. Costs the messages read, not the
            history.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a limit below 1.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        if limit is not None:
            limit = validation.whole_number(limit, "limit", low=1, high=MAX_BIGINT)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            rows = await conn.fetch(SQL.view_messages, user_id, cid, limit)
            rows.reverse()
            if not rows:
                await require_conversation(conn, user_id, cid)
        return messages_from_rows(rows, user_id, cid)

    @retried
    async def compact(self, user_id: str, conversation_id: UUID | str, *,
                      summary: NewMessage | Mapping[str, Any],
                      through_seq: int | None = None,
                      messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
                      expected_revision: int | None = None) -> Message:
        """Compact the conversation for the model, keeping its transcript: append
        ``summary`` (a message in chat format, or ``{"item": ...}`` such as the Responses
        API's ``compaction`` item) as the next message, marked as summarizing messages
        1..``through_seq``. Nothing is deleted: :meth:`list_messages`, search and export
        still read every message, the summary at the seq where it was made.

        From then on the model's view (:meth:`context_messages`, ``turn.context``,
        :meth:`view_messages`, the Agents SDK session's ``get_items``) is the newest
        summary, then the messages after its ``summary_through`` in seq order (the summary
        itself not repeated there), then everything appended later. Popping the summary
        (:meth:`pop_message`, or an aborted turn that appended it) undoes the compaction;
        a fork made at a seq before the summary never sees it, one made after it does.

        The cut never separates a tool call from its results (matched by call id, as the
        window rule matches them): if a call at or before ``through_seq`` has a result
        after it, the cut moves back to just before that call (again, until no call
        straddles it), so the call and all its results stay in the view together; the
        summary then summarizes a little less than asked, never more. The stored
        ``summary_through`` is where the cut ended (``Message.summary_through`` of the
        returned summary). A call with no result stored yet does not move the cut, except
        one appended by the turn that compacts (:meth:`Turn.compact`).

        Like an append: one revision, ``message_count`` + 1 (+ ``len(messages)``),
        ``ConversationBusy`` while a turn holds the conversation (compact inside the turn
        with :meth:`Turn.compact` instead).

        :param summary: the summary message (validated as an appended message).
        :param through_seq: the last seq it summarizes, 0 to the conversation's
            ``message_count`` (the default): ``InvalidInput("through_seq")`` otherwise.
        :param messages: more messages stored right after the summary in the same call and
            revision, which the view shows after it (the rest of a compaction's output: the
            Responses API's ``responses.compact`` returns kept user messages and a
            ``compaction`` item). Either every message of the call, the summary included,
            carries an ``idempotency_key`` or none does; with keys, a replay of the same
            compaction returns the stored summary and writes nothing.
        :param expected_revision: compact only at this revision, else
            :class:`StaleRevision`.
        :returns: the stored summary.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a bad summary or message, or ``through_seq`` out of range;
            nothing was written.
        :raises ConversationBusy: a chat turn holds the conversation.
        :raises Conflict: ``expected_revision`` is stale, or a key is stored already by
            something else than this compaction.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        prepared = self._validate.compaction(summary, messages)
        through = (None if through_seq is None
                   else validation.whole_number(through_seq, "through_seq", low=0,
                                                high=MAX_SEQ))
        expected = validation.revision(expected_revision)
        return await _compaction.compact(self._calls, user_id, cid, prepared, through,
                                         expected, None, None)

    @retried
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
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        expected = validation.revision(expected_revision)
        row = await _trees.truncate(self._calls, user_id, cid, expected, pop=True)
        return None if row is None or isinstance(row, int) else message_from_row(row)

    @retried
    async def clear_messages(self, user_id: str, conversation_id: UUID | str, *,
                             expected_revision: int | None = None) -> int:
        """Delete every message of the conversation (which stays); return how many.

        The revision moves forward by one (not when there was nothing to clear).

        :param expected_revision: clear only if the conversation is at this revision
            (checked even when it is empty), else :class:`Conflict`.
        :raises NotFound: no such conversation for this user.
        :raises ConversationBusy: a chat turn holds the conversation.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        expected = validation.revision(expected_revision)
        removed = await _trees.truncate(self._calls, user_id, cid, expected, pop=False)
        return removed if isinstance(removed, int) else 0

    @retried
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
        user_id = self._validate.user_id(user_id)
        text = self._validate.text(query, "query", required=True)
        if not text or not text.strip():
            raise InvalidInput("query", "must not be empty")
        limit = validation.whole_number(limit, "limit", low=1, high=MAX_MESSAGE_PAGE)
        cid = None if conversation_id is None else validation.conversation_id(conversation_id)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            rows = await conn.fetch(SQL.search_messages, user_id, text, cid, limit)
            if not rows:
                if cid is not None:
                    await require_conversation(conn, user_id, cid)
                elif not await conn.fetchval(SQL.user_exists, user_id):
                    raise NotFound(f"user {user_id!r} not found")
        return messages_from_rows(rows, user_id)

    # -- trees ------------------------------------------------------------------------

    @retried
    async def fork(self, user_id: str, conversation_id: UUID | str, *, at_seq: int,
                   messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
                   title: str | None = None, metadata: Mapping[str, Any] | None = None,
                   make_current: bool = True, new_chat: bool = False,
                   ttl: timedelta | None = None) -> Conversation:
        """A new conversation whose history is this one's messages 1..``at_seq`` followed by
        ``messages``: edit message k by forking at k-1 with the edited message; regenerate
        reply k by forking at k-1 and answering there (:meth:`turn` with ``fork_at`` does
        both as one turn).

        The fork shares the source's stored rows (one row written, whatever ``at_seq``) and
        belongs to the source's tree; for every other call it is just a conversation. The
        source's history and revision do not change. With ``new_chat``, the fork is a new
        tree of its own (its own root, listed separately) holding copies of the messages:
        nothing done to the source's tree ever changes it.

        :param at_seq: 0 to the source's ``message_count``. During a turn on the source,
            only up to the seq the turn began at.
        :param messages: appended to the fork in the same transaction (a rejected message:
            nothing is created).
        :param title: the fork's title (default: the source's).
        :param metadata: the fork's metadata (default: the source's).
        :param make_current: the fork becomes its tree's current version (``current_id``).
        :param ttl: with ``new_chat``, the new chat expires this long from now (without,
            it never does: the source's expiry is not copied). Without ``new_chat``, the
            fork expires with its tree, and ``ttl`` sets the tree's expiry (as
            :meth:`update_conversation` does); without ``ttl`` the tree keeps its own.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: ``at_seq`` out of range, a bad title, metadata, message or
            ``ttl``.
        :raises ConversationBusy: a turn holds the source and ``at_seq`` is after its start.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        at = validation.whole_number(at_seq, "at_seq", low=0, high=MAX_SEQ)
        new_title = self._validate.text(title, "title")
        encoded = None if metadata is None else self._validate.metadata(metadata)
        lifetime = validation.ttl(ttl)
        prepared = None if messages is None else self._validate.messages(messages)
        async with self._calls.connection(user_id) as conn:
            if prepared or new_chat or lifetime is not None:
                async with self._calls.atomic(conn):
                    made = await _trees.fork(
                        self._calls, conn, user_id, cid, at, messages=prepared,
                        title=new_title, metadata=encoded, make_current=make_current,
                        new_chat=new_chat, ttl=lifetime)
                # its messages moved its counters: read it back
                return conversation_from_row(await require_conversation(conn, user_id,
                                                                        made["id"]))
            async with self._calls.one_statement(conn):  # the common case: one statement
                made = await _trees.fork(self._calls, conn, user_id, cid, at, messages=None,
                                         title=new_title, metadata=encoded,
                                         make_current=make_current, new_chat=False)
        return conversation_from_row(made)

    @retried
    async def set_current(self, user_id: str, conversation_id: UUID | str, *,
                          expected_current: UUID | str | None = None) -> Conversation:
        """Make ``conversation_id`` its tree's current version (what "< 2/3 >" switched to).

        Moves no revision: revisions are about history.

        :param expected_current: switch only if the tree's current version is still this
            conversation (the one the UI shows), else :class:`Conflict` and nothing changes:
            a tab never overwrites another tab's choice unknowingly.
        :returns: the tree's root, with its new ``current_id``.
        :raises NotFound: no such conversation for this user.
        :raises Conflict: the current version is not ``expected_current``.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        expected = (None if expected_current is None
                    else validation.conversation_id(expected_current, "expected_current"))
        async with self._calls.connection(user_id) as conn:
            async with self._calls.atomic(conn):
                root = await _trees.set_current(conn, user_id, cid, expected)
            row = await require_conversation(conn, user_id, root)
        return conversation_from_row(row)

    @retried
    async def alternatives(self, user_id: str, conversation_id: UUID | str,
                           seq: int) -> list[Alternative]:
        """The versions of message ``seq``: every distinct stored message that stands at
        ``seq`` after the same messages 1..seq-1 as this conversation's (the same stored
        rows, not equal text), oldest first, in one statement. A message never edited or
        regenerated gives a list of one.

        :param seq: 1 to the conversation's ``message_count``.
        :returns: for each version, the message (as read through the conversation it
            names), a conversation to open to show it (the tree's current version if it
            holds it, else the most recently active one), and whether it is this
            conversation's own (``current``).
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: ``seq`` out of range.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        at = validation.whole_number(seq, "seq", low=1, high=MAX_SEQ)
        async with self._calls.connection(user_id, idempotent=True) as conn:
            rows = await conn.fetch(SQL.alternatives, user_id, cid, at)
            if not rows:
                row = await require_conversation(conn, user_id, cid)
                raise InvalidInput("seq", "must be from 1 to the conversation's "
                                          f"message_count ({row['message_count']})")
        return [Alternative(message=message_from_row(row), conversation_id=row["conversation_id"],
                            current=row["current"]) for row in rows]

    # -- retention --------------------------------------------------------------------

    @retried
    async def set_hold(self, user_id: str, conversation_id: UUID | str,
                       held: bool) -> Conversation:
        """Put the conversation under a legal hold (``held=True``) or lift it.

        While a conversation is held nothing deletes it: :meth:`delete_conversation` on it,
        or on a conversation whose deletion would take it along (its tree's root, a fork it
        was made from), raises :class:`ConversationHeld` (a :class:`Conflict`), and so do
        :meth:`pop_message` and :meth:`clear_messages` on it; :meth:`delete_user_data` and
        :meth:`purge` leave its whole tree in place. Appends, turns and updates go on as
        usual. Moves no revision and no activity time.

        :returns: the conversation, with its new ``held``.
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: ``held`` is not a bool.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        if not isinstance(held, bool):
            raise InvalidInput("held", f"must be a bool, not {type(held).__name__}")
        async with self._calls.connection(user_id) as conn:
            async with self._calls.one_statement(conn):
                row = await conn.fetchrow(SQL.set_hold, user_id, cid, held)
            if row is None:
                raise await missing(conn, user_id, cid)
        return conversation_from_row(row)

    @retried
    async def purge(self, *, idle_for: timedelta | None = None, expired: bool = True,
                    batch_size: int = DEFAULT_PURGE_BATCH, dry_run: bool = False,
                    progress: Callable[[int], None] | None = None) -> PurgeReport:
        """Delete, across every user, the whole trees (a root and all its forks, with their
        messages) that have expired or been idle too long: an operator's call, for a
        scheduled job (``chatstore purge`` runs it).

        A tree is **expired** when its root's ``expires_at`` (set with ``ttl=``) has passed,
        and **idle** when its latest activity anywhere (the greatest ``updated_at`` of its
        conversations) is older than ``idle_for``, both measured against the server's clock
        when the purge starts. It is never deleted while one of its conversations is held
        (``skipped["held"]``) or while a turn whose lease has not run out holds one
        (``skipped["turn_in_flight"]``; a lease that ran out is a crashed turn, as the next
        writer would take it over: its tree is deleted).

        Runs in short transactions of ``batch_size`` trees, each tree locked root first
        with ``SKIP LOCKED``: a live chat is never waited for (a tree one holds at that
        moment is ``skipped["locked"]``, and tried again by the next purge). Under the locks
        each tree is checked once more, so a write acknowledged after purge selected the
        tree (an append, a new fork, a new expiry, a hold) keeps it
        (``skipped["changed"]``); a write that waits for purge's lock finds the tree gone
        (:class:`NotFound`), never acknowledged and lost.

        :param idle_for: delete trees idle longer than this (a positive ``timedelta``);
            ``None``: idle trees are kept.
        :param expired: delete trees whose expiry has passed.
        :param batch_size: trees per transaction, 1 to 10,000.
        :param dry_run: delete nothing; report what would be deleted and skipped (read
            without locks).
        :param progress: called after each batch with the conversations it deleted (or
            would delete).
        :returns: conversations, messages and trees deleted, and the trees skipped, by
            reason.
        :raises InvalidInput: a bad argument, or a store with ``row_level_security`` (purge
            reads every user's rows: run it as a role that may, without the policies'
            per-user setting, as ``chatstore purge`` does).
        """
        idle = None if idle_for is None else validation.duration(idle_for, "idle_for")
        if not isinstance(expired, bool):
            raise InvalidInput("expired", f"must be a bool, not {type(expired).__name__}")
        if not isinstance(dry_run, bool):
            raise InvalidInput("dry_run", f"must be a bool, not {type(dry_run).__name__}")
        size = validation.whole_number(batch_size, "batch_size", low=1, high=MAX_PURGE_BATCH)
        if self._calls.row_level_security:
            raise InvalidInput("row_level_security",
                               "purge reads every user's conversations, which row-level "
                               "security hides: run it on a store without it, as a role the "
                               "policies do not bind (chatstore purge does)")
        return await _retention.purge(self._calls, idle_for=idle, expired=expired,
                                      batch_size=size, dry_run=dry_run, progress=progress)

    # -- turns ------------------------------------------------------------------------

    def turn(self, user_id: str, conversation_id: UUID | str, *,
             fork_at: int | None = None, make_current: bool = True,
             lease_seconds: float = DEFAULT_LEASE,
             wait_seconds: float = 0,
             quota: Quota | None = None,
             messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
             ) -> AbstractAsyncContextManager[Turn]:
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

        With ``fork_at``, the turn runs on a new fork of the conversation made at that seq
        (see :meth:`fork`): edit message k or regenerate reply k with ``fork_at=k-1``.
        Making the fork and taking its lease are one step, ``turn.conversation_id`` names
        the fork, the fork becomes the tree's current version when the turn ends (with
        ``make_current``), and an aborted turn leaves no fork behind (it is deleted, with
        any fork made from it meanwhile).

        :param fork_at: run the turn on a new fork made at this seq (0 to the
            conversation's ``message_count``; during another turn on it, at most the seq
            that turn began at). Never waits: a fork does not wait for a turn in flight.
        :param make_current: with ``fork_at``: the fork becomes current when the turn ends.
        :param lease_seconds: how long the lease lasts without an append or renewal
            (0.1 to 86,400).
        :param wait_seconds: how long to wait for a turn in flight to finish (polling, no
            connection held); 0 raises :class:`ConversationBusy` at once.
        :param quota: a :class:`~chatstore.Quota`: the turn starts only while the user's
            ``input_tokens + output_tokens`` recorded in the quota's current UTC window
            (day or month) are below its ``max_tokens``, checked by the statement that takes
            the lease (for ``fork_at``, by a read just before the one that makes the fork).
            The check is a gate at the start, not a reservation: turns of one user already
            running, or started at the same moment on other conversations, are not counted
            until they record their usage, so together they can pass the limit by what they
            spend (docs/api.md, "Usage and quotas").
        :param messages: the turn's first messages (the user's question), appended as it
            starts, as its first :meth:`Turn.append` would (an abort removes them too); the
            stored ones are ``turn.first_messages``. For one message without an idempotency
            key and without ``fork_at`` or ``quota``, taking the lease and the append are one
            statement: one round trip and one commit fewer. A window read in the turn then
            includes them.
        :raises QuotaExceeded: the quota's window is spent; nothing was written.
        :raises ConversationBusy: another turn holds the conversation (after waiting).
        :raises NotFound: no such conversation for this user.
        :raises InvalidInput: a bad argument or message; nothing was written.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        first = None if messages is None else self._validate.messages(messages)
        lease = validation.seconds(lease_seconds, "lease_seconds", low=0.1, high=MAX_LEASE)
        wait = validation.seconds(wait_seconds, "wait_seconds", low=0.0, high=MAX_LEASE)
        at = None if fork_at is None else validation.whole_number(fork_at, "fork_at", low=0,
                                                                   high=MAX_SEQ)
        if quota is not None and not isinstance(quota, Quota):
            raise InvalidInput("quota", f"must be a chatstore.Quota or None, not "
                                        f"{type(quota).__name__}")
        return hold(self, user_id, cid, lease, wait, fork_at=at, make_current=make_current,
                    quota=quota, first=first)

    # -- usage ------------------------------------------------------------------------

    @retried
    async def record_usage(self, user_id: str, conversation_id: UUID | str, usage: Any, *,
                           key: str | None = None) -> Usage:
        """Record what a model call (or an agent run) cost in the conversation: one entry
        of the usage ledger, and the day's rollups moved with it, in one statement.

        Entries outlive their conversation (deleting it keeps its usage and every total);
        :meth:`delete_user_data` removes them. Recording is not a change to the
        conversation: no revision moves, and a chat turn in flight does not stand in the
        way (:meth:`Turn.record_usage` records within one).

        :param usage: a mapping (or any object with these attributes, a
            :class:`~chatstore.Usage` included): ``model`` (a non-empty string, required),
            ``input_tokens``, ``output_tokens``, ``cached_input_tokens``,
            ``reasoning_tokens``, ``requests`` (integers from 0 to 2**63 - 1; absent: 0),
            ``cost_micros`` (an integer in millionths of the operator's currency, or
            ``None``) and ``metadata`` (a JSON object).
        :param key: an idempotency key (up to 512 bytes): the same key for the same user
            stores one entry; recording it again returns the stored entry, also after the
            conversation was deleted.
        :returns: the stored entry.
        :raises NotFound: no such conversation for this user (also another user's), or no
            such user.
        :raises Conflict: ``key`` is stored already with a different entry (conversation,
            model, counts, cost or metadata); nothing was written.
        :raises InvalidInput: a bad field, named (``usage.input_tokens``...); nothing was
            written.
        """
        user_id = self._validate.user_id(user_id)
        cid = validation.conversation_id(conversation_id)
        prepared = self._validate.usage(usage)
        usage_key = self._validate.usage_key(key)
        return await _usage.record(self._calls, user_id, cid, prepared, usage_key)

    @retried
    async def usage_totals(self, user_id: str, *, since: datetime | None = None,
                           until: datetime | None = None,
                           conversation_id: UUID | str | None = None,
                           by: str | None = None) -> list[UsageTotal]:
        """The user's recorded usage, summed, optionally of one conversation, grouped.

        Whole UTC days are read from the rollups, whatever the number of entries (a month
        reads at most 31 x models rows); a bound that is not a UTC midnight adds the
        ledger's entries of that partial day (docs/api.md, "Usage and quotas").

        :param since: the first instant counted (inclusive), a timezone-aware datetime;
            ``None``: from the first entry.
        :param until: the end (exclusive), a timezone-aware datetime; ``None``: up to now.
        :param conversation_id: only this conversation's usage (a deleted conversation's
            included).
        :param by: ``None`` (one total, all zeros when there is nothing), ``"model"``,
            ``"day"`` (the UTC date) or ``"conversation"``: one :class:`UsageTotal` per
            group that has entries, ordered by its key.
        :raises NotFound: the user does not exist.
        :raises InvalidInput: a naive or non-datetime bound, ``until`` before ``since``, an
            unknown ``by``.
        """
        user_id = self._validate.user_id(user_id)
        span = _usage.usage_range(since, until)
        group = _usage.grouping(by)
        cid = (None if conversation_id is None
               else validation.conversation_id(conversation_id))
        async with self._calls.connection(user_id, idempotent=True) as conn:
            found = await _usage.totals(conn, user_id, span, cid, group)
            if (not found or found[0].entries == 0) and not await conn.fetchval(
                    SQL.user_exists, user_id):
                raise NotFound(f"user {user_id!r} not found")
        return found


def _refused_update(row: Any, cid: UUID, expected: int | None) -> NoReturn:
    """Raise why update_conversation matched no row although the conversation ``row`` is
    there: a stale revision, or a write that raced the update."""
    if expected is not None and row["revision"] != expected:
        raise StaleRevision(cid, expected, row["revision"])
    raise Conflict(f"conversation {cid} changed during the update; nothing was written "
                   "(try again)")
