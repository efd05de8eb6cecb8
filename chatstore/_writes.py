"""What the store's and a turn's writes share: the conversation's row lock and what a writer
checks under it (another turn's lease, a lost lease, a stale revision), and the append
itself. Pop, clear and everything else that changes a tree's shape live in :mod:`._trees`.
Each function runs on a connection from :class:`CallPath` (`_call.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from ._call import CallPath, Conn
from ._translate import constraint_of
from .errors import ChatStoreError, Conflict, ConversationBusy, NotFound, StaleRevision
from .models import Message, message_from_row, usage_from_row
from .sql import SQL
from .validation import PreparedMessage, PreparedUsage

__all__ = ["WriteState", "append", "append_locked", "insert", "lock", "lock_for_write",
           "missing", "record_in_transaction", "require_conversation", "writable"]


@dataclass(frozen=True, slots=True)
class WriteState:
    """A conversation's state as a writer sees it (lock_conversation / get_write_state)."""

    message_count: int
    revision: int
    turn_token: UUID | None
    lease_expired: bool
    #: the seq the turn in flight began at (None: no turn)
    turn_base_count: int | None
    #: the root of the conversation's tree (itself for a root)
    root_id: UUID
    #: other conversations share the tree: a pop or clear must keep what they read
    in_tree: bool
    #: a legal hold: nothing that deletes messages (pop, clear) may run
    held: bool = False

    @classmethod
    def of(cls, row: asyncpg.Record) -> WriteState:
        return cls(row["message_count"], row["revision"], row["turn_token"],
                   bool(row["lease_expired"]), row["turn_base_count"], row["root_id"],
                   bool(row["in_tree"]), bool(row["held"]))


async def missing(conn: Conn, user_id: str, conversation_id: UUID | None = None) -> NotFound:
    """The NotFound to raise: the user, else the user's conversation, is missing."""
    if not await conn.fetchval(SQL.user_exists, user_id):
        return NotFound(f"user {user_id!r} not found")
    return NotFound(f"conversation {conversation_id} not found for user {user_id!r}")


async def require_conversation(conn: Conn, user_id: str, cid: UUID) -> asyncpg.Record:
    """The conversation's row, or the NotFound that says what is missing."""
    row = await conn.fetchrow(SQL.get_conversation, user_id, cid)
    if row is None:
        raise await missing(conn, user_id, cid)
    return row


async def lock(conn: Conn, user_id: str, cid: UUID) -> WriteState:
    row = await conn.fetchrow(SQL.lock_conversation, user_id, cid)
    if row is None:
        raise await missing(conn, user_id, cid)
    return WriteState.of(row)


def writable(state: WriteState, cid: UUID, *, expected_revision: int | None,
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


async def lock_for_write(conn: Conn, user_id: str, cid: UUID, *,
                         expected_revision: int | None, token: UUID | None) -> WriteState:
    """In a transaction: take the conversation's row lock and check the write may go
    ahead. A writer from outside any turn that finds a turn whose lease ran out removes
    it first, as an abort would (the lock is held, so abort_turn sees all its rows)."""
    state = await lock(conn, user_id, cid)
    if token is None and state.turn_token is not None and state.lease_expired:
        await conn.fetchrow(SQL.abort_turn, user_id, cid, state.turn_token)
        state = await lock(conn, user_id, cid)
    writable(state, cid, expected_revision=expected_revision, token=token)
    return state


async def insert(conn: Conn, user_id: str, cid: UUID, prepared: Sequence[PreparedMessage],
                 expected: int | None, token: UUID | None,
                 lease_seconds: float | None = None, *,
                 summary_through: int | None = None,
                 end: bool = False) -> list[asyncpg.Record]:
    """Insert ``prepared`` after the conversation's last message, in seq order; no rows
    when something stands in the way (a stale revision, another turn, a lost lease).
    With ``summary_through``, the first message is a summary through that seq
    (:mod:`._compaction`); with ``end``, the insert also ends the turn ``token``."""
    try:
        if len(prepared) == 1:
            p = prepared[0]
            return await conn.fetch(
                SQL.append_message, user_id, cid, p.role, p.content, p.tool_calls,
                p.tool_call_id, p.metadata, p.token_count, p.idempotency_key, p.item,
                expected, token, lease_seconds, summary_through, end)
        rows: list[asyncpg.Record] = await conn.fetch(
            SQL.append_messages, user_id, cid,
            [p.role for p in prepared],
            [p.content for p in prepared],
            [p.tool_calls for p in prepared],
            [p.tool_call_id for p in prepared],
            [p.metadata for p in prepared],
            [p.token_count for p in prepared],
            [p.idempotency_key for p in prepared],
            [p.item for p in prepared],
            expected, token, lease_seconds, summary_through, end,
        )
    except asyncpg.UniqueViolationError as exc:
        if constraint_of(exc) == "messages_pkey":
            raise ChatStoreError(
                f"conversation {cid}: its message_count is out of step with its "
                "messages (a row was written behind chatstore's back); nothing was "
                "written. `chatstore check --repair` finds and fixes this") from None
        raise
    return sorted(rows, key=lambda row: row["seq"]) if len(rows) > 1 else rows


async def append(calls: CallPath, user_id: str, cid: UUID, prepared: list[PreparedMessage],
                 expected: int | None, token: UUID | None,
                 lease_seconds: float | None, usage: PreparedUsage | None = None,
                 usage_key: str | None = None, *, end: bool = False) -> list[Message]:
    """Append checked messages, from outside any turn (``token`` None) or under the turn
    ``token``'s lease (extended to ``lease_seconds``); see ``ChatStore.append_messages``.
    With ``usage``, a usage entry of the conversation is recorded in the same commit (in
    the same statement for one message without keys). With ``end``, the turn ``token``
    ends in the same commit (in the same statement where there is one)."""
    keyed = prepared[0].idempotency_key is not None
    retry_safe = keyed and (usage is None or usage_key is not None)
    async with calls.connection(user_id, idempotent=retry_safe) as conn:
        if not keyed and (usage is None or (usage_key is None and len(prepared) == 1)):
            # The common case: one statement, which writes only when nothing stands in
            # its way (a stale revision, another turn, a lost lease).
            async with calls.one_statement(conn):
                if usage is None:
                    rows = await insert(conn, user_id, cid, prepared, expected, token,
                                        lease_seconds, end=end)
                else:
                    rows = await _insert_with_usage(conn, user_id, cid, prepared[0],
                                                    expected, token, lease_seconds, usage,
                                                    end)
            if rows:
                return [message_from_row(row) for row in rows]
        # Keys to look up, or something in the way: under the row lock, say what (or
        # remove a turn whose lease ran out) and write.
        return await append_locked(calls, conn, user_id, cid, prepared, expected, token,
                                    lease_seconds, usage, usage_key, end=end)


async def _insert_with_usage(conn: Conn, user_id: str, cid: UUID, p: PreparedMessage,
                             expected: int | None, token: UUID | None,
                             lease_seconds: float | None,
                             usage: PreparedUsage, end: bool) -> list[asyncpg.Record]:
    """``insert`` of one message and a keyless usage entry, in one statement."""
    return await conn.fetch(
        SQL.append_message_with_usage, user_id, cid, p.role, p.content, p.tool_calls,
        p.tool_call_id, p.metadata, p.token_count, p.idempotency_key, p.item, expected, token,
        lease_seconds, usage.model, usage.input_tokens, usage.output_tokens,
        usage.cached_input_tokens, usage.reasoning_tokens, usage.requests, usage.cost_micros,
        usage.metadata, end)


async def append_locked(calls: CallPath, conn: Conn, user_id: str, cid: UUID,
                         prepared: list[PreparedMessage], expected: int | None,
                         token: UUID | None, lease_seconds: float | None,
                         usage: PreparedUsage | None = None,
                         usage_key: str | None = None, *, end: bool = False) -> list[Message]:
    """Append under the conversation's row lock, then look the idempotency keys up (and
    record ``usage``, and with ``end`` end the turn ``token``, in the same transaction).

    Under the row lock, the key lookup sees every message committed by earlier appends,
    so two retries of one message cannot both store it.
    """
    async with calls.atomic(conn):
        await lock_for_write(conn, user_id, cid, expected_revision=expected, token=token)
        keys = [p.idempotency_key for p in prepared if p.idempotency_key is not None]
        stored = {
            row["idempotency_key"]: message_from_row(row)
            for row in (await conn.fetch(SQL.find_messages_by_key, user_id, cid, keys)
                        if keys else [])
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
             for row in await insert(conn, user_id, cid, fresh, None, token, lease_seconds)]
            if fresh else []
        )
        if usage is not None:
            await record_in_transaction(conn, user_id, cid, usage, usage_key)
        if end:
            await conn.fetchval(SQL.end_turn, user_id, cid, token)
    return [stored[p.idempotency_key] if p.idempotency_key in stored else next(inserted)
            for p in prepared]


async def record_in_transaction(conn: Conn, user_id: str, cid: UUID, usage: PreparedUsage,
                                key: str | None) -> None:
    """Record ``usage`` in the caller's transaction (the conversation is locked, so it
    exists): a key already stored with the same entry records nothing, with another entry
    raises :class:`Conflict` (rolling the caller's writes back)."""
    row = await conn.fetchrow(
        SQL.record_usage, user_id, cid, key, usage.model, usage.input_tokens,
        usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens,
        usage.requests, usage.cost_micros, usage.metadata)
    if row is not None or key is None:
        return
    stored = await conn.fetchrow(SQL.find_usage_by_key, user_id, key)
    if stored is None or not usage.same_as(usage_from_row(stored), cid):
        raise Conflict(f"usage key {key!r} is already stored for this user with a different "
                       "entry (conversation, model, counts, cost or metadata); nothing was "
                       "written")
