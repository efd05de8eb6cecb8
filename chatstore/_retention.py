"""Retention: :meth:`ChatStore.purge`, which deletes whole trees that expired or went idle.

How it keeps live chats fast and never loses an acknowledged write:

* The candidates are found by a keyset scan across users (``purge_expired`` on
  ``conversations_expires_at_idx``, then ``purge_idle`` on
  ``conversations_root_updated_at_idx``), read without locks, ``batch_size`` trees at a
  time; each scan row also says whether the tree has a held conversation or a turn in
  flight, so those are counted as skipped without touching them.
* The due trees of a batch are deleted in one short transaction, one tree at a time and
  each root first: ``lock_purge_root`` takes the root's row lock with ``SKIP LOCKED`` (a
  live chat holding it is never waited for: the tree is skipped, and the next purge tries
  again), then ``lock_purge_tree``, in a snapshot taken after that lock, locks the tree's
  other rows (``SKIP LOCKED`` too) and reads again what decides. Every write that could
  make a tree not due (an append, a fork, a new expiry, a hold, a turn) either committed
  before the root's lock, and is seen, or waits for it, and then finds the tree gone
  (``NotFound``): no acknowledged write is deleted.
* ``delete_tree`` deletes the root and its forks; their messages go by cascade.

The three passes are measured against one clock reading (``purge_clock``), so a dry run and
the purge after it count the same trees when nothing changed in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from ._call import CallPath, Conn, retried
from .models import PurgeReport
from .sql import SQL

__all__ = ["purge"]

Position = tuple[datetime, str, UUID]
_START: Position = (datetime.min.replace(tzinfo=UTC), "", UUID(int=0))


@dataclass
class _Tally:
    """Counts of a purge, or of one batch (merged into the purge's once it committed)."""

    conversations: int = 0
    messages: int = 0
    trees: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"held": 0,
                                                             "turn_in_flight": 0})

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def delete(self, conversations: int, messages: int) -> None:
        self.conversations += conversations
        self.messages += messages
        self.trees += 1

    def add(self, other: _Tally) -> None:
        self.conversations += other.conversations
        self.messages += other.messages
        self.trees += other.trees
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


@dataclass(frozen=True)
class _Due:
    """When a tree is due: its root expired at or before ``expired_by`` (``None``: expiry
    not purged), or its latest activity is before ``idle_before`` (``None``: idleness not
    purged)."""

    expired_by: datetime | None
    idle_before: datetime | None

    def __call__(self, expires_at: datetime | None, active_at: datetime | None) -> bool:
        if (self.expired_by is not None and expires_at is not None
                and expires_at <= self.expired_by):
            return True
        return (self.idle_before is not None and active_at is not None
                and active_at < self.idle_before)


async def purge(calls: CallPath, *, idle_for: timedelta | None, expired: bool,
                batch_size: int, dry_run: bool,
                progress: Callable[[int], None] | None) -> PurgeReport:
    """See :meth:`ChatStore.purge` (arguments already checked)."""
    tally = _Tally()
    if expired or idle_for is not None:
        now = await _clock(calls)
        due = _Due(now if expired else None, None if idle_for is None else now - idle_for)
        passes: list[tuple[str, tuple[Any, ...]]] = []
        if due.expired_by is not None:
            passes.append((SQL.purge_expired, (due.expired_by,)))
        if due.idle_before is not None:
            passes.append((SQL.purge_idle, (due.idle_before,)))
        for statement, bound in passes:
            # purge_idle leaves out the trees the expiry pass already saw.
            extra = (due.expired_by,) if statement == SQL.purge_idle else ()
            position = _START
            while True:
                batch, position = await _batch(calls, statement, bound, extra, position,
                                               batch_size, due, dry_run)
                if batch is None:
                    break
                tally.add(batch)
                if progress is not None:
                    progress(batch.conversations)
    return PurgeReport(conversations_deleted=tally.conversations,
                       messages_deleted=tally.messages, trees_deleted=tally.trees,
                       skipped=tally.skipped, dry_run=dry_run)


@retried
async def _clock(calls: CallPath) -> datetime:
    async with calls.connection(idempotent=True) as conn:
        now: datetime = await conn.fetchval(SQL.purge_clock)
    return now


@retried
async def _batch(calls: CallPath, statement: str, bound: tuple[Any, ...],
                 extra: tuple[Any, ...], position: Position, batch_size: int, due: _Due,
                 dry_run: bool) -> tuple[_Tally | None, Position]:
    """The next batch of candidates after ``position``: counted (dry run), or deleted in
    one transaction. ``None`` when the scan is done. Safe to run again after a failure:
    nothing is counted until the batch's transaction committed."""
    batch = _Tally()
    async with calls.connection() as conn:
        rows = await conn.fetch(statement, *bound, *position, batch_size, *extra)
        if not rows:
            return None, position
        last = rows[-1]
        following: Position = (last["position"], last["user_id"], last["id"])
        todo = []
        for row in rows:
            if row["held"]:
                batch.skip("held")
            elif row["in_flight"]:
                batch.skip("turn_in_flight")
            elif dry_run:
                batch.delete(row["conversations"], row["messages"])
            else:
                todo.append(row)
        if todo:
            async with calls.atomic(conn):
                for row in todo:
                    await _purge_tree(conn, row["user_id"], row["id"], due, batch)
    return batch, following


async def _purge_tree(conn: Conn, user_id: str, root: UUID, due: _Due,
                      batch: _Tally) -> None:
    """In the batch's transaction: lock the tree ``root`` (never waiting), check it is
    still due, and delete it whole; or count why not."""
    if await conn.fetchval(SQL.lock_purge_root, user_id, root) is None:
        if await conn.fetchrow(SQL.get_write_state, user_id, root) is not None:
            batch.skip("locked")
        return  # else deleted meanwhile: nothing to do
    state: asyncpg.Record | None = await conn.fetchrow(SQL.lock_purge_tree, user_id, root)
    assert state is not None  # an aggregate: one row
    if state["locked"] < state["conversations"]:
        batch.skip("locked")
    elif state["held"]:
        batch.skip("held")
    elif state["in_flight"]:
        batch.skip("turn_in_flight")
    elif not due(state["expires_at"], state["active_at"]):
        batch.skip("changed")
    else:
        deleted = await conn.fetch(SQL.delete_tree, user_id, root)
        if deleted:
            batch.delete(len(deleted), state["messages"])
        else:  # delete_tree refuses a held tree; the locks say none is
            batch.skip("held")
