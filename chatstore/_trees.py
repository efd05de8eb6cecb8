"""Conversation trees in the database: fork, pop and clear (truncate), delete, the current
version and alternatives. :mod:`._paths` plans what a change hands over; this module takes
the locks and runs the statements.

Lock order: every transaction that locks two rows of a tree locks the root's row first
(``lock_tree``, or ``lock_conversation``, which does it for a fork), so two such
transactions wait for each other instead of deadlocking.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg

from ._call import CallPath, Conn
from ._paths import (
    Member,
    Plan,
    parts_of,
    path_of,
    plan_delete,
    plan_truncate,
    subtree,
)
from ._writes import WriteState, append_locked, lock_for_write, missing
from .errors import (
    ChatStoreError,
    Conflict,
    ConversationBusy,
    ConversationHeld,
    InvalidInput,
    NotFound,
)
from .sql import SQL
from .validation import PreparedMessage, dumps_json

__all__ = ["delete", "fork", "load_tree", "set_current", "truncate"]


async def load_tree(conn: Conn, user_id: str, root: UUID) -> dict[UUID, Member]:
    """Every conversation of the tree ``root`` (call under ``lock_tree``)."""
    return {
        row["id"]: Member(row["id"], row["parent_id"],
                          parts_of(row["id"], row["path_owners"], row["path_ends"],
                                   row["message_count"]),
                          row["created_at"], bool(row["held"]))
        for row in await conn.fetch(SQL.tree_members, user_id, root)
    }


async def _apply(conn: Conn, user_id: str, plan: Plan) -> None:
    """Hand the rows over, then point every reader at their new owner."""
    for move in plan.handovers:
        await conn.execute(SQL.move_messages, user_id, move.owner, move.heir, move.after,
                           move.upto)
    paths = []
    for cid, parts in plan.parts.items():
        path = path_of(cid, parts)
        paths.append((user_id, cid, *(path if path is not None else (None, None))))
    if paths:
        await conn.executemany(SQL.set_path, paths)


async def _lock_root(conn: Conn, user_id: str, root: UUID, cid: UUID) -> UUID:
    """Lock the tree ``root``; its current version. NotFound (for ``cid``) if it is gone."""
    current = await conn.fetchval(SQL.lock_tree, user_id, root)
    if current is None:
        raise await missing(conn, user_id, cid)
    return UUID(str(current))


async def _root_of(conn: Conn, user_id: str, cid: UUID) -> UUID:
    row = await conn.fetchrow(SQL.get_conversation, user_id, cid)
    if row is None:
        raise await missing(conn, user_id, cid)
    return UUID(str(row["root_id"]))


# -- pop and clear ------------------------------------------------------------------------

async def truncate(calls: CallPath, user_id: str, cid: UUID, expected: int | None, *,
                   pop: bool) -> asyncpg.Record | int | None:
    """Pop (the removed message's row) or clear (how many messages left the history)
    under the row lock, after the writer's checks; ``None`` when the conversation is
    empty. In a tree, the rows other conversations read are handed over first."""
    async with calls.connection(user_id) as conn, calls.atomic(conn):
        state = await lock_for_write(conn, user_id, cid, expected_revision=expected,
                                     token=None)
        if state.held:
            raise ConversationHeld(
                f"conversation {cid} is under a legal hold (held): its messages cannot be "
                f"{'popped' if pop else 'cleared'}; nothing was deleted", cid)
        if state.message_count == 0:
            return None
        if state.in_tree:
            return await _truncate_in_tree(conn, user_id, cid, state, pop=pop)
        row: asyncpg.Record | None = await conn.fetchrow(
            SQL.pop_message if pop else SQL.clear_messages, user_id, cid)
        if row is None:
            raise ChatStoreError(
                f"conversation {cid}: its message_count ({state.message_count}) is out "
                "of step with its messages; nothing was changed. `chatstore check "
                "--repair` finds and fixes this")
        return row if pop else int(row["removed"])


async def _truncate_in_tree(conn: Conn, user_id: str, cid: UUID, state: WriteState, *,
                            pop: bool) -> asyncpg.Record | int:
    keep = state.message_count - 1 if pop else 0
    popped = None
    if pop:
        rows = await conn.fetch(SQL.list_messages_newest, user_id, cid, 1)
        if not rows:
            raise ChatStoreError(f"conversation {cid}: its newest message is missing; "
                                 "nothing was changed. `chatstore check` finds this")
        popped = rows[0]
    members = await load_tree(conn, user_id, state.root_id)
    await _apply(conn, user_id, plan_truncate(members, cid, keep))
    await conn.fetchval(SQL.truncate_history, user_id, cid, keep)
    await conn.fetchval(SQL.touch_tree, user_id, state.root_id)
    if popped is None:
        return state.message_count
    return _popped_row(popped, user_id, cid)


def _popped_row(row: asyncpg.Record, user_id: str, cid: UUID) -> asyncpg.Record:
    # a mapping with the columns message_from_row reads
    values = dict(row)
    values.update(user_id=user_id, conversation_id=cid)
    return values  # type: ignore[return-value]


# -- fork -----------------------------------------------------------------------------------

async def fork(calls: CallPath, conn: Conn, user_id: str, source: UUID, at_seq: int, *,
               messages: list[PreparedMessage] | None, title: str | None,
               metadata: str | None, make_current: bool, new_chat: bool,
               token: UUID | None = None, lease_seconds: float | None = None,
               ttl: timedelta | None = None) -> asyncpg.Record:
    """On ``conn`` (in a transaction when there are ``messages``, ``new_chat`` or a
    ``ttl``): a fork of ``source`` at ``at_seq`` (or, with ``new_chat``, a new tree holding
    copies of its messages 1..at_seq), with ``messages`` appended, made the tree's current
    version if asked; with ``token``, the turn ``token`` holds it for ``lease_seconds``.
    With ``ttl``, the expiry of the new tree, or of the source's tree (that the fork joins);
    without, a new tree never expires and the source's keeps its own. Returns its row
    (re-read it after ``messages`` or ``ttl``)."""
    if new_chat:
        return await _copy(conn, user_id, source, at_seq, title, metadata, ttl)
    row: asyncpg.Record | None = await conn.fetchrow(
        SQL.fork_conversation, user_id, source, at_seq, title, metadata, make_current,
        token, lease_seconds)
    if row is None:
        await _why_not(conn, user_id, source, at_seq)
        raise ChatStoreError(f"conversation {source}: the fork was not created")
    if ttl is not None:  # the tree's expiry, on its root (locked already)
        await conn.fetchval(SQL.set_tree_expiry, user_id, row["id"], ttl)
    if messages:
        await append_locked(calls, conn, user_id, row["id"], messages, None, None, None)
    return row


async def _why_not(conn: Conn, user_id: str, source: UUID, at_seq: int,
                   row: asyncpg.Record | None = None) -> None:
    """Raise why ``source`` cannot be forked at ``at_seq``, if it cannot."""
    if row is None:
        row = await conn.fetchrow(SQL.get_write_state, user_id, source)
    if row is None:
        raise await missing(conn, user_id, source)
    count, base = row["message_count"], row["turn_base_count"]
    if at_seq > count:
        raise InvalidInput("at_seq", f"must be from 0 to the conversation's message_count "
                                     f"({count})")
    if row["turn_token"] is not None and (base is None or at_seq > base):
        raise ConversationBusy(
            f"conversation {source} is busy: a chat turn holds it, and a fork may start "
            f"only at or before the turn's first seq ({base}); nothing was written")


async def _copy(conn: Conn, user_id: str, source: UUID, at_seq: int, title: str | None,
                metadata: str | None, ttl: timedelta | None) -> asyncpg.Record:
    """fork(new_chat=True), in the caller's transaction: a new root with copies, expiring
    ``ttl`` from now (``None``: never; the source's expiry is not copied)."""
    row = await conn.fetchrow(SQL.lock_fork_source, user_id, source)
    await _why_not(conn, user_id, source, at_seq, row)
    assert row is not None
    created = await conn.fetchrow(
        SQL.copy_conversation, user_id, row["title"] if title is None else title,
        dumps_json(row["metadata"]) if metadata is None else metadata, at_seq, ttl)
    assert created is not None
    await conn.execute(SQL.copy_history, user_id, source, created["id"], at_seq)
    return created


# -- the current version --------------------------------------------------------------------

async def set_current(conn: Conn, user_id: str, cid: UUID,
                      expected_current: UUID | None) -> UUID:
    """In a transaction: make ``cid`` its tree's current version (if the current one is
    still ``expected_current``, when given). Returns the root's id."""
    root = await _root_of(conn, user_id, cid)
    current = await _lock_root(conn, user_id, root, cid)
    if await conn.fetchrow(SQL.get_conversation, user_id, cid) is None:
        raise await missing(conn, user_id, cid)  # deleted before the root's lock
    if expected_current is not None and current != expected_current:
        raise Conflict(f"conversation {root}: the current version is {current}, not "
                       f"the expected {expected_current}; nothing was changed")
    await conn.execute(SQL.set_current, user_id, root, cid)
    return root


# -- delete ---------------------------------------------------------------------------------

async def delete(conn: Conn, user_id: str, cid: UUID, *, token: UUID | None = None) -> None:
    """In a transaction: delete ``cid`` with the forks made from it (a root: its whole
    tree), after handing the rows that surviving conversations read to one of them. With
    ``token``, only while that turn holds ``cid`` (a turn that made the fork aborts).
    Refuses (:class:`ConversationHeld`) when one of them is held: set_hold takes the root's
    lock first, so the holds read under it are final."""
    root = await _root_of(conn, user_id, cid)
    current = await _lock_root(conn, user_id, root, cid)
    if token is not None:
        await lock_for_write(conn, user_id, cid, expected_revision=None, token=token)
    if root == cid:
        if not await conn.fetch(SQL.delete_tree, user_id, root):  # the root exists: held
            members = await load_tree(conn, user_id, root)
            _refuse_held(cid, members, list(members))
            raise ChatStoreError(f"conversation {cid}: its tree was not deleted, though "
                                 "none of it is held; nothing was deleted")
        return
    members = await load_tree(conn, user_id, root)
    if cid not in members:
        raise NotFound(f"conversation {cid} not found for user {user_id!r}")
    doomed = subtree(members, cid)
    _refuse_held(cid, members, doomed)
    await _apply(conn, user_id, plan_delete(members, doomed))
    await conn.execute(SQL.delete_conversations, user_id, doomed)
    if current in doomed:
        await conn.execute(SQL.set_current, user_id, root, members[cid].parent_id)


def _refuse_held(cid: UUID, members: dict[UUID, Member], doomed: list[UUID]) -> None:
    """Raise ConversationHeld if deleting ``doomed`` (``cid`` and what goes with it) would
    delete a held conversation."""
    held = [member for member in doomed if members[member].held]
    if not held:
        return
    if cid in held:
        raise ConversationHeld(f"conversation {cid} is under a legal hold (held); nothing "
                               "was deleted (lift the hold with set_hold first)", cid)
    raise ConversationHeld(
        f"conversation {cid}: deleting it would delete conversation {held[0]} of its tree, "
        f"which is under a legal hold (held); nothing was deleted", held[0])
