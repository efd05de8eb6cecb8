"""The usage ledger: recording an entry (one statement that also moves the rollups), reading
totals (rollups for whole UTC days, the ledger for the partial days at the ends), and the
quota's window. :meth:`ChatStore.record_usage`, :meth:`Turn.record_usage`,
:meth:`ChatStore.usage_totals` and the quota check of :meth:`ChatStore.turn` run these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg

from ._call import CallPath, Conn
from ._writes import missing
from .errors import Conflict, InvalidInput, QuotaExceeded
from .models import Quota, Usage, UsageTotal, usage_from_row
from .sql import SQL
from .validation import PreparedUsage

__all__ = ["Grouping", "Range", "check_quota", "exceeded", "grouping", "record", "totals",
           "usage_range"]

Grouping = Literal["model", "day", "conversation"]
_GROUPINGS = (None, "model", "day", "conversation")


async def record(calls: CallPath, user_id: str, cid: UUID, prepared: PreparedUsage,
                 key: str | None) -> Usage:
    """Record ``prepared`` for the conversation ``cid`` (which must exist), once per
    ``key``: one statement when it is new; a key already stored returns the stored entry if
    it says the same, else :class:`Conflict`."""
    async with calls.connection(user_id, idempotent=key is not None) as conn:
        async with calls.one_statement(conn):
            row = await conn.fetchrow(
                SQL.record_usage, user_id, cid, key, prepared.model, prepared.input_tokens,
                prepared.output_tokens, prepared.cached_input_tokens,
                prepared.reasoning_tokens, prepared.requests, prepared.cost_micros,
                prepared.metadata)
        if row is not None:
            return usage_from_row(row)
        if key is not None:
            # Stored already (a retry, or a concurrent call with the key that committed
            # first: the insert waited for it, so this statement's snapshot sees it).
            stored = await conn.fetchrow(SQL.find_usage_by_key, user_id, key)
            if stored is not None:
                return _replay(usage_from_row(stored), prepared, cid, key)
        raise await missing(conn, user_id, cid)


def _replay(stored: Usage, prepared: PreparedUsage, cid: UUID, key: str) -> Usage:
    if not prepared.same_as(stored, cid):
        raise Conflict(f"usage key {key!r} is already stored for this user with a different "
                       "entry (conversation, model, counts, cost or metadata); nothing was "
                       "written")
    return stored


# -- totals ---------------------------------------------------------------------------------

_MIDNIGHT = time(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Range:
    """A totals range split for reading: whole UTC days ``[first_day, end_day)`` from the
    rollups (``None``: unbounded), and up to two spans of instants from the ledger."""

    first_day: date | None
    end_day: date | None
    head: tuple[datetime | None, datetime | None]
    tail: tuple[datetime | None, datetime | None]

    def args(self) -> tuple[Any, ...]:
        return (self.first_day, self.end_day, *self.head, *self.tail)


_NONE: tuple[datetime | None, datetime | None] = (None, None)


def _instant(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(field, f"must be a timezone-aware datetime, not "
                                  f"{type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "must be timezone-aware (a naive datetime has no instant)")
    return value.astimezone(UTC)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, _MIDNIGHT)


def usage_range(since: Any, until: Any) -> Range:
    """Split ``[since, until)`` (``None``: unbounded) into whole UTC days and the partial
    days at its ends.

    :raises InvalidInput: a bound that is not a timezone-aware datetime, or ``until``
        before ``since``.
    """
    start = None if since is None else _instant(since, "since")
    end = None if until is None else _instant(until, "until")
    if start is not None and end is not None and end < start:
        raise InvalidInput("until", "must not be before since")
    # The whole days: from the first midnight at or after start, to the last at or before end.
    first_day = None
    if start is not None:
        first_day = start.date()
        if start.timetz() != _MIDNIGHT:
            if first_day == date.max:
                raise InvalidInput("since", "is out of range")
            first_day += timedelta(1)
    end_day = None if end is None else end.date()
    if first_day is not None and end_day is not None and end_day <= first_day:
        # No whole day in the range: it is read from the ledger alone.
        return Range(first_day, first_day, (start, end), _NONE)
    head = _NONE
    if start is not None and first_day is not None and start < _start_of(first_day):
        head = (start, _start_of(first_day))
    tail = _NONE
    if end is not None and end_day is not None and _start_of(end_day) < end:
        tail = (_start_of(end_day), end)
    return Range(first_day, end_day, head, tail)


def grouping(by: Any) -> Grouping | None:
    if by not in _GROUPINGS:
        raise InvalidInput("by", "must be None, 'model', 'day' or 'conversation'")
    return by  # type: ignore[no-any-return]


async def totals(conn: Conn, user_id: str, span: Range, cid: UUID | None,
                 by: Grouping | None) -> list[UsageTotal]:
    """The totals over ``span``, optionally of one conversation, grouped ``by``."""
    rows: Sequence[asyncpg.Record]
    if cid is not None:
        rows = await conn.fetch(SQL.usage_totals_of_conversation, user_id, *span.args(), cid,
                                None if by == "conversation" else by)
    elif by == "conversation":
        rows = await conn.fetch(SQL.usage_totals_by_conversation, user_id, *span.args())
    else:
        rows = await conn.fetch(SQL.usage_totals, user_id, *span.args(), by)
    found = [_total(row, by) for row in rows]
    if by is None and not found:
        return [UsageTotal(key=None)]
    return found


def _total(row: asyncpg.Record, by: Grouping | None) -> UsageTotal:
    key = None if by is None else row["conversation_id" if by == "conversation" else by]
    return UsageTotal(
        key=key, input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        reasoning_tokens=int(row["reasoning_tokens"]), requests=int(row["requests"]),
        cost_micros=int(row["cost_micros"]), entries=int(row["entries"]))


# -- quotas ---------------------------------------------------------------------------------

def exceeded(user_id: str, quota: Quota, used: Any, resets_on: date) -> QuotaExceeded | None:
    """The error to raise when ``used`` tokens have reached the quota, else ``None``."""
    spent = int(used)
    if spent < quota.max_tokens:
        return None
    return QuotaExceeded(user_id, limit=quota.max_tokens, used=spent,
                         resets_at=_start_of(resets_on), window=quota.window)


async def check_quota(conn: Conn, user_id: str, quota: Quota) -> None:
    """Raise :class:`QuotaExceeded` if the user's quota window is spent (a read)."""
    row = await conn.fetchrow(SQL.usage_in_window, user_id, quota.window)
    assert row is not None
    error = exceeded(user_id, quota, row["used"], row["resets_on"])
    if error is not None:
        raise error
