"""Chat turns: :class:`Turn`, and the lease protocol behind :meth:`ChatStore.turn`.

A turn holds its conversation with a lease kept in the conversation's row (``turn_token``,
``turn_expires_at``, ``turn_base_count``), never a held connection or a session lock:

* take: ``take_turn`` sets the lease if no turn holds the conversation; if one does whose
  lease ran out, a writer removes it under the row lock first (as an abort would);
* append: each append under the lease extends it (``append_message(s)`` with the token);
* renew / end: one statement each, matching only while this turn holds the lease;
* abort: under the row lock, remove every message appended since the turn began.

A lease lost to another writer makes the old holder's calls raise
:class:`~chatstore.Conflict` ("lease lost") and write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg

from . import _usage, validation
from ._call import CallPath, Conn, retried
from ._compaction import compact
from ._trees import delete, fork, set_current
from ._writes import WriteState, append, lock_for_write, missing, writable
from .errors import ChatStoreError, Conflict, ConversationBusy, ConversationHeld, InvalidInput
from .limits import MAX_LEASE, MAX_SEQ
from .models import Message, NewMessage, Quota, Usage, message_from_row
from .sql import SQL
from .validation import PreparedMessage

if TYPE_CHECKING:
    from .store import ChatStore

__all__ = ["Turn", "hold"]


class Turn:
    """One chat turn in flight: made by :meth:`ChatStore.turn`, not directly.

    :attr revision: the conversation's revision when the lease was taken.
    """

    def __init__(self, store: ChatStore, user_id: str, conversation_id: UUID, token: UUID,
                 revision: int, lease_seconds: float, *, forked: bool = False,
                 make_current: bool = False) -> None:
        self._store = store
        self._calls: CallPath = store.call_path
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.revision = revision
        self._token = token
        self._lease = lease_seconds
        self._state: dict[str, bool] = {"ended": False}
        # A turn that made its fork (fork_at): abort deletes the fork, end makes it current.
        self._forked = forked
        self._make_current = make_current
        #: The messages given to ``store.turn(..., messages=...)``, as stored.
        self.first_messages: list[Message] = []

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

    def using(self, conn: asyncpg.Connection | Conn) -> Turn:
        """The same turn (same lease) running its calls on ``conn``, inside the caller's
        transaction: see :meth:`ChatStore.using`."""
        view = Turn(self._store.using(conn), self.user_id, self.conversation_id, self._token,
                    self.revision, self._lease, forked=self._forked,
                    make_current=self._make_current)
        view._state = self._state
        return view

    async def context(self, max_messages: int | None = None,
                      max_tokens: int | None = None) -> list[Message]:
        """The conversation's context window now, the turn's own appends included; see
        :meth:`ChatStore.context_messages`."""
        return await self._store.context_messages(self.user_id, self.conversation_id,
                                                  max_messages=max_messages,
                                                  max_tokens=max_tokens)

    @retried
    async def append(self, messages: Sequence[NewMessage | Mapping[str, Any]], *,
                     usage: Any = None, usage_key: str | None = None,
                     end: bool = False) -> list[Message]:
        """Append messages under the turn's lease (one revision), extending the lease.

        :param usage: what the model call that produced them cost (as for
            :meth:`ChatStore.record_usage`): recorded in the same commit as the messages
            (one statement for one message without keys), so it costs no commit of its
            own. An abort later removes the messages, never the usage.
        :param usage_key: the usage entry's idempotency key (see
            :meth:`ChatStore.record_usage`).
        :param end: this is the turn's last append: the turn ends in the same commit (in
            the same statement where the append is one), as leaving the block would, so
            the block's exit has nothing left to write. (A ``fork_at`` turn that becomes
            current ends in a statement of its own after the append.)
        :raises Conflict: the lease was lost, or the turn has ended, or ``usage_key`` is
            stored with a different entry; nothing was written.
        :raises InvalidInput: a bad message or usage; nothing was written (the turn goes on).
        """
        self._require_open()
        validator = self._store.validator
        prepared = validator.messages(messages)
        spent = None if usage is None else validator.usage(usage)
        key = validator.usage_key(usage_key, "usage_key")
        if key is not None and spent is None:
            raise InvalidInput("usage_key", "is only allowed with usage")
        if type(end) is not bool:
            raise InvalidInput("end", f"must be True or False, not {type(end).__name__}")
        ending = end and not self._make_current
        stored = await append(self._calls, self.user_id, self.conversation_id, prepared, None,
                              self._token, self._lease, spent, key, end=ending)
        if ending:
            self._state["ended"] = True
        elif end:
            await self._end()
        return stored

    async def record_usage(self, usage: Any, *, key: str | None = None) -> Usage:
        """Record what a model call of this turn cost, in the turn's conversation (the fork,
        for a turn made with ``fork_at``); see :meth:`ChatStore.record_usage`.

        A write of its own, committed at once and not under the lease: it stays when the
        turn aborts (the tokens were spent), and it works whether or not the lease is still
        held. (``turn.append(reply, usage=...)`` records it with the reply instead, in the
        same commit.) Record before an aborted ``fork_at`` turn leaves its block: the abort
        deletes the fork, and recording then raises :class:`~chatstore.NotFound` (what was
        recorded stays).
        """
        return await self._store.record_usage(self.user_id, self.conversation_id, usage,
                                              key=key)

    @retried
    async def compact(self, summary: NewMessage | Mapping[str, Any], *,
                      through_seq: int | None = None,
                      messages: Sequence[NewMessage | Mapping[str, Any]] | None = None,
                      ) -> Message:
        """Compact the conversation under the turn's lease, as :meth:`ChatStore.compact`
        does from outside a turn (which a turn in flight refuses with ``ConversationBusy``):
        the summary is one of the turn's messages, so :meth:`context` starts at it at once,
        and an aborted turn removes it with the rest (the compaction is undone). A tool
        call this turn appended whose results are not all stored yet stays in the view
        (the cut moves back before it).

        :raises Conflict: the lease was lost, or the turn has ended; nothing was written.
        :raises InvalidInput: a bad summary or message, or ``through_seq`` out of range.
        """
        self._require_open()
        prepared = self._store.validator.compaction(summary, messages)
        through = (None if through_seq is None
                   else validation.whole_number(through_seq, "through_seq", low=0,
                                                high=MAX_SEQ))
        return await compact(self._calls, self.user_id, self.conversation_id, prepared,
                             through, None, self._token, self._lease)

    async def renew(self, lease_seconds: float | None = None) -> None:
        """Extend the lease to ``lease_seconds`` (default: the turn's) from now.

        :raises Conflict: the lease was lost, or the turn has ended.
        """
        self._require_open()
        lease = self._lease if lease_seconds is None else validation.seconds(
            lease_seconds, "lease_seconds", low=0.1, high=MAX_LEASE)
        await _holder_statement(self._calls, self.user_id, self.conversation_id,
                                self._token, SQL.renew_turn, lease)
        self._lease = lease

    async def abort(self) -> None:
        """End the turn and remove every message it appended (the conversation is as it was
        when the turn began, apart from its revision, which moves by one if anything was
        removed). A turn made with ``fork_at`` deletes its fork instead.

        :raises Conflict: the lease was lost (the messages are gone already).
        """
        self._require_open()
        self._state["ended"] = True
        if self._forked:
            await _abort_fork(self._calls, self.user_id, self.conversation_id, self._token)
        else:
            await _abort(self._calls, self.user_id, self.conversation_id, self._token)

    async def _end(self) -> None:
        self._state["ended"] = True
        if self._make_current:
            await _end_current(self._calls, self.user_id, self.conversation_id, self._token)
        else:
            await _holder_statement(self._calls, self.user_id, self.conversation_id,
                                    self._token, SQL.end_turn)


@contextlib.asynccontextmanager
async def hold(store: ChatStore, user_id: str, cid: UUID, lease: float,
               wait: float, *, fork_at: int | None = None,
               make_current: bool = True, quota: Quota | None = None,
               first: list[PreparedMessage] | None = None) -> AsyncIterator[Turn]:
    """:meth:`ChatStore.turn` once its arguments are checked: take the lease (waiting up to
    ``wait`` seconds for a turn in flight, polling, no connection held; or on a new fork
    made at ``fork_at``), within ``quota`` if given, append ``first``, yield the turn, end
    it, or abort it on an exception."""
    token = uuid4()
    if fork_at is not None:
        fork_id, revision = await _take_fork(store.call_path, user_id, cid, fork_at, token,
                                             lease, quota)
        turn = Turn(store, user_id, fork_id, token, revision, lease, forked=True,
                    make_current=make_current)
        async with _running(turn):
            if first:
                turn.first_messages = await _append_first(turn, first)
            yield turn
        return
    if (first is not None and len(first) == 1 and quota is None
            and first[0].idempotency_key is None):
        taken = await _take_with_message(store.call_path, user_id, cid, token, lease,
                                         first[0])
        if taken is not None:
            turn = Turn(store, user_id, cid, token, int(taken["revision"]) - 1, lease)
            turn.first_messages = [message_from_row(taken)]
            async with _running(turn):
                yield turn
            return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.02
    while True:
        try:
            revision = await _take(store.call_path, user_id, cid, token, lease, quota)
            break
        except ConversationBusy:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)
    async with _running(Turn(store, user_id, cid, token, revision, lease)) as turn:
        if first:
            turn.first_messages = await _append_first(turn, first)
        yield turn


async def _append_first(turn: Turn, first: list[PreparedMessage]) -> list[Message]:
    """The turn's first append, of messages checked already."""
    return await append(turn._calls, turn.user_id, turn.conversation_id, first, None,
                        turn._token, turn._lease)


@retried
async def _take_with_message(calls: CallPath, user_id: str, cid: UUID, token: UUID,
                             lease: float, p: PreparedMessage) -> asyncpg.Record | None:
    """``take_turn_with_message``: the stored message with the new revision, or ``None``
    when a turn holds the conversation or it is missing (taken the long way then, which
    says which)."""
    async with calls.connection(user_id) as conn, calls.one_statement(conn):
        row: asyncpg.Record | None = await conn.fetchrow(
            SQL.take_turn_with_message, user_id, cid, p.role, p.content, p.tool_calls,
            p.tool_call_id, p.metadata, p.token_count, p.idempotency_key, p.item, token,
            lease)
    return row


@contextlib.asynccontextmanager
async def _running(turn: Turn) -> AsyncIterator[Turn]:
    """Yield ``turn``; end it, or abort it on an exception."""
    try:
        yield turn
    except BaseException:
        if not turn.ended:
            with contextlib.suppress(ChatStoreError):
                await turn.abort()
        raise
    if not turn.ended:
        await turn._end()


@retried
async def _take_fork(calls: CallPath, user_id: str, cid: UUID, at_seq: int, token: UUID,
                     lease: float, quota: Quota | None) -> tuple[UUID, int]:
    """Make the fork of ``cid`` at ``at_seq`` and take its lease: one statement (after a
    read of the quota's window, with a quota)."""
    async with calls.connection(user_id) as conn:
        if quota is not None:
            await _usage.check_quota(conn, user_id, quota)
        async with calls.one_statement(conn):
            made = await fork(calls, conn, user_id, cid, at_seq, messages=None, title=None,
                              metadata=None, make_current=False, new_chat=False,
                              token=token, lease_seconds=lease)
    return made["id"], int(made["revision"])


@retried
async def _end_current(calls: CallPath, user_id: str, cid: UUID, token: UUID) -> None:
    """End the turn ``token`` on the fork it made and make the fork current, together."""
    async with calls.connection(user_id) as conn, calls.atomic(conn):
        root = await set_current(conn, user_id, cid, None)
        found = await conn.fetchval(SQL.end_turn, user_id, cid, token)
        if found is None:
            row = await conn.fetchrow(SQL.get_write_state, user_id, cid)
            if row is None:
                raise await missing(conn, user_id, cid)
            writable(WriteState.of(row), cid, expected_revision=None, token=token)
            raise ChatStoreError(f"conversation {cid}: the turn's lease matched no row "
                                 f"(tree {root})")


@retried
async def _abort_fork(calls: CallPath, user_id: str, cid: UUID, token: UUID) -> None:
    """As the holder ``token``: delete the fork the turn made (and forks made from it).
    If one of them was put under a legal hold meanwhile, the fork stays: only the turn's
    messages go, as any aborted turn's do."""
    try:
        async with calls.connection(user_id) as conn, calls.atomic(conn):
            await delete(conn, user_id, cid, token=token)
    except ConversationHeld:
        await _abort(calls, user_id, cid, token)


@retried
async def _take(calls: CallPath, user_id: str, cid: UUID, token: UUID, lease: float,
                quota: Quota | None) -> int:
    async with calls.connection(user_id) as conn:
        # The common case, no turn in flight: one statement (the quota checked in it).
        async with calls.one_statement(conn):
            revision = await _take_statement(conn, user_id, cid, token, lease, quota)
        if revision is not None:
            return int(revision)
        async with calls.atomic(conn):
            # Busy, or held by a turn whose lease ran out (removed as an abort would; that
            # removal rolls back if the quota then refuses the turn).
            await lock_for_write(conn, user_id, cid, expected_revision=None, token=None)
            revision = await _take_statement(conn, user_id, cid, token, lease, quota)
    if revision is None:
        raise ChatStoreError(f"conversation {cid}: the turn lease could not be taken")
    return int(revision)


async def _take_statement(conn: Conn, user_id: str, cid: UUID, token: UUID, lease: float,
                          quota: Quota | None) -> int | None:
    """``take_turn``, or with a quota ``take_turn_within_quota``: the revision, ``None``
    when the lease was not taken; :class:`QuotaExceeded` when the quota refused it."""
    if quota is None:
        revision: int | None = await conn.fetchval(SQL.take_turn, user_id, cid, token, lease)
        return revision
    row = await conn.fetchrow(SQL.take_turn_within_quota, user_id, cid, token, lease,
                              quota.max_tokens, quota.window)
    assert row is not None
    if row["revision"] is None:
        error = _usage.exceeded(user_id, quota, row["used"], row["resets_on"])
        if error is not None:
            raise error
    return row["revision"]  # type: ignore[no-any-return]


@retried
async def _holder_statement(calls: CallPath, user_id: str, cid: UUID, token: UUID,
                            statement: str, *args: Any) -> None:
    """``SQL.end_turn`` or ``SQL.renew_turn``: one statement that matches only while the
    turn ``token`` holds the lease; a lost lease raises Conflict, a deleted conversation
    NotFound."""
    async with calls.connection(user_id) as conn:
        async with calls.one_statement(conn):
            found = await conn.fetchval(statement, user_id, cid, token, *args)
        if found is None:
            row = await conn.fetchrow(SQL.get_write_state, user_id, cid)
            if row is None:
                raise await missing(conn, user_id, cid)
            writable(WriteState.of(row), cid, expected_revision=None, token=token)
            raise ChatStoreError(f"conversation {cid}: the turn's lease matched no row")


@retried
async def _abort(calls: CallPath, user_id: str, cid: UUID, token: UUID) -> None:
    """Under the row lock, as the holder ``token``: remove the turn's messages, end it."""
    async with calls.connection(user_id) as conn, calls.atomic(conn):
        await lock_for_write(conn, user_id, cid, expected_revision=None, token=token)
        await conn.fetchrow(SQL.abort_turn, user_id, cid, token)
