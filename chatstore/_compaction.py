"""Compaction that keeps the transcript: :meth:`ChatStore.compact` and :meth:`Turn.compact`.

A compaction appends a summary message (``messages.summary_through``: the seq it summarizes
through) and deletes nothing. The model's view of a conversation (``SQL.view_messages``,
``SQL.context_messages_by_tokens``) is the newest summary on its history, then the messages
after that seq; ``list_messages``, search and export still read every message. Under the
conversation's row lock, the cut asked for moves back so that it never separates a tool
call from its results (:func:`chatstore.items.compaction_boundary`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ._call import CallPath, Conn
from ._writes import insert, lock_for_write
from .errors import ChatStoreError, Conflict, InvalidInput
from .items import compaction_boundary
from .models import Message, message_from_row
from .sql import SQL
from .validation import PreparedMessage

__all__ = ["compact"]


async def compact(calls: CallPath, user_id: str, cid: UUID, prepared: list[PreparedMessage],
                  through: int | None, expected: int | None, token: UUID | None,
                  lease_seconds: float | None) -> Message:
    """Store ``prepared[0]`` as a summary through ``through`` (``None``: the conversation's
    ``message_count``), moved back off any tool call whose results straddle it, followed by
    ``prepared[1:]``, in one transaction under the row lock; from outside any turn
    (``token`` None) or under the turn ``token``'s lease. Returns the summary."""
    keyed = prepared[0].idempotency_key is not None
    async with calls.connection(user_id, idempotent=keyed) as conn, calls.atomic(conn):
        state = await lock_for_write(conn, user_id, cid, expected_revision=expected,
                                     token=token)
        if keyed:
            replayed = await _replayed(conn, user_id, cid, prepared)
            if replayed is not None:
                return replayed
        count = state.message_count
        wanted = count if through is None else through
        if wanted > count:
            raise InvalidInput("through_seq", f"must be from 0 to the conversation's "
                                              f"message_count ({count}); nothing was written")
        in_flight_after = state.turn_base_count if token is not None else None
        boundary = await _boundary(conn, user_id, cid, wanted, count, in_flight_after)
        rows = await insert(conn, user_id, cid, prepared, None, token, lease_seconds,
                            summary_through=boundary)
        if not rows:
            raise ChatStoreError(f"conversation {cid}: the compaction matched no row under "
                                 "its row lock; nothing was written")
    return message_from_row(rows[0])


async def _replayed(conn: Conn, user_id: str, cid: UUID,
                    prepared: list[PreparedMessage]) -> Message | None:
    """The stored summary when this compaction (every key, the same content) is stored
    already; ``None`` when none of its keys is; else :class:`Conflict`."""
    keys = [p.idempotency_key for p in prepared]
    stored = {row["idempotency_key"]: message_from_row(row)
              for row in await conn.fetch(SQL.find_messages_by_key, user_id, cid, keys)}
    if not stored:
        return None
    summary = stored.get(prepared[0].idempotency_key)
    if (summary is not None and summary.summary_through is not None
            and all(p.idempotency_key in stored and p.same_as(stored[p.idempotency_key])
                    for p in prepared)):
        return summary
    taken = next(p.idempotency_key for p in prepared if p.idempotency_key in stored)
    raise Conflict(f"idempotency_key {taken!r} is already stored in conversation {cid}, "
                   "but not by this same compaction; nothing was written")


async def _boundary(conn: Conn, user_id: str, cid: UUID, wanted: int, count: int,
                    in_flight_after: int | None) -> int:
    """The seq the summary may summarize through: ``wanted``, moved back off straddling
    tool calls. Reads the tool links after the cut (and after the compacting turn's start:
    its calls in flight); only when a result there answers a call before them, also those
    before, back to the current view's start (a call before it is out of the view already).
    A cut at the end, outside a turn, reads nothing."""
    start = wanted if in_flight_after is None else min(wanted, in_flight_after)
    if start >= count:
        return wanted  # nothing after the cut, nothing in flight: no call can straddle it
    links = [_link(row) for row in await conn.fetch(SQL.tool_links, user_id, cid, start,
                                                    count)]
    if _answers_earlier(links):
        row = await conn.fetchrow(SQL.newest_summary, user_id, cid)
        low = row["summary_through"] if row is not None else 0
        if low >= start:  # the current view starts after the cut: a call anywhere before
            low = 0
        links += [_link(row) for row in await conn.fetch(SQL.tool_links, user_id, cid, low,
                                                         start)]
    return compaction_boundary(links, wanted, in_flight_after=in_flight_after)


def _link(row: Any) -> tuple[int, list[str | None], str | None]:
    return row["seq"], row["call_ids"], row["answers"]


def _answers_earlier(links: list[tuple[int, list[str | None], str | None]]) -> bool:
    """Whether a result among ``links`` answers no call among them (its call, if stored,
    comes before them)."""
    called: set[str] = set()
    for _, ids, answered in sorted(links, key=lambda link: link[0]):
        called.update(str(call_id) for call_id in ids or ())
        if answered is not None and answered not in called:
            return True
    return False
