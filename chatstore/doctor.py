"""``chatstore check [--repair]``: find (and fix) drift between counters and rows.

What chatstore keeps true, and what a row written behind its back breaks:

* each conversation's ``message_count`` equals its highest ``seq`` and its number of
  messages (so seqs are 1..n without gaps: the primary key makes them unique); for a fork,
  the rows stored under it are exactly its own parts (see ``_paths.py``);
* a fork's path finds every row it names (no part beyond its owner's rows), its root
  exists, and a root's ``current_id`` is a conversation of its tree;
* no turn lease is stuck (``turn_expires_at`` long past);
* the schema is the migrations' (none pending, every expected column present).

Conversations are read in keyset batches of ``batch_size`` in primary-key order, so memory
stays bounded whatever the database's size. ``repair=True`` fixes each conversation found
wrong in a transaction of its own, holding its row lock (appends to it wait): a stuck lease
is ended as an abort would end it (the turn's messages go), seq gaps are closed by
renumbering in order, and ``message_count`` is recounted; ``revision`` goes up by one.
Only stuck leases are repaired in a conversation of a tree (renumbering would move rows
other conversations read): the rest is reported for a person to look at.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from ._call import CallPath, Conn
from ._connect import open_call_path
from .migrate import migration_status
from .schema import schema_gaps
from .sql import SQL

__all__ = ["CheckReport", "Violation", "check_database"]

@dataclass
class Violation:
    """One conversation that breaks an invariant; ``problems`` says how."""

    user_id: str
    conversation_id: uuid.UUID
    problems: list[str]
    repaired: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    schema_problems: list[str] = field(default_factory=list)
    conversations_checked: int = 0
    messages_checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.schema_problems and not self.violation_count


def _problems(row: asyncpg.Record, tree: asyncpg.Record | None) -> list[str]:
    """What is wrong with a conversation: ``row`` from check_conversations, ``tree`` from
    check_tree_member (for a conversation of a tree)."""
    found: list[str] = []
    messages, highest_seq = row["messages"], row["highest_seq"]
    if row["owned"] == row["message_count"]:  # every row its own (a root)
        if messages != highest_seq:
            found.append(f"seqs have gaps: {messages} message(s) but the highest seq is "
                         f"{highest_seq}")
        if row["message_count"] != highest_seq:
            found.append(f"message_count is {row['message_count']} but the highest seq is "
                         f"{highest_seq}")
    elif messages != row["owned"] or highest_seq != row["owned_top"]:
        found.append(f"fork: {messages} row(s) stored under it up to seq {highest_seq}, but "
                     f"its path leaves it {row['owned']} up to seq {row['owned_top']}")
    if tree is not None:
        if tree["broken_parts"]:
            found.append(f"fork: {tree['broken_parts']} part(s) of its path name rows that "
                         "are missing (a fork point beyond its parent's rows)")
        if tree["root_missing"]:
            found.append("fork: its root conversation is missing")
        if tree["current_outside"]:
            found.append("root: its current_id is not a conversation of its tree")
    if row["lease_stuck"]:
        found.append("a turn lease ran out long ago and was never ended (stuck)")
    return found


def _tree_problem(violation: Violation) -> bool:
    return any(problem.startswith(("fork:", "root:")) for problem in violation.problems)


async def _schema_problems(conn: Conn, url: str) -> list[str]:
    problems: list[str] = []
    try:
        pending = migration_status(url)[1]
    except Exception as exc:  # yoyo/psycopg: say what, not a traceback
        return [f"cannot read the migrations table: {type(exc).__name__}"]
    if pending:
        problems.append("pending migrations: " + ", ".join(pending)
                        + " (run `chatstore migrate`)")
    for table, columns in schema_gaps(await conn.fetch(SQL.check_schema)).items():
        if columns is None:
            problems.append(f"table {table} is missing")
        else:
            problems.append(f"table {table} lacks column(s) " + ", ".join(columns))
    return problems


async def _repair(calls: CallPath, conn: Conn, violation: Violation,
                  lease_grace: float) -> None:
    user_id, cid = violation.user_id, violation.conversation_id
    async with calls.atomic(conn):
        row = await conn.fetchrow(SQL.lock_conversation_for_repair, user_id, cid,
                                  lease_grace)
        if row is None:
            violation.repaired.append("deleted meanwhile; nothing to repair")
            return
        if row["lease_stuck"]:
            ended = await conn.fetchrow(SQL.abort_turn, user_id, cid, row["turn_token"])
            removed = ended["removed"] if ended else 0
            violation.repaired.append(
                f"ended the stuck turn as an abort: removed {removed} message(s) it added")
        if _tree_problem(violation):
            violation.repaired.append("a tree's paths are not repaired automatically: "
                                      "see docs/api.md, Conversation trees")
            return
        stats = await conn.fetchrow(SQL.conversation_message_stats, user_id, cid)
        assert stats is not None
        if stats["messages"] != stats["highest_seq"]:
            await conn.execute(SQL.shift_message_seqs, user_id, cid,
                               stats["highest_seq"])
            await conn.execute(SQL.renumber_message_seqs, user_id, cid)
            violation.repaired.append(
                f"closed seq gaps: renumbered {stats['messages']} message(s) 1..{stats['messages']}"
                " in their order")
        count = await conn.fetchval(SQL.recount_conversation, user_id, cid)
        if count is not None:
            violation.repaired.append(f"message_count set to {count}")


async def check_database(
    url: str, *, repair: bool = False, lease_grace: float = 600.0, batch_size: int = 2000,
    keep: int = 1000, progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check (and with ``repair`` fix) the database at ``url``; see the module docstring.

    :param lease_grace: a lease counts as stuck this many seconds after it ran out.
    :param keep: at most this many violations are kept in the report (all are counted
        and, with ``repair``, repaired), so memory stays bounded.
    """
    report = CheckReport()
    calls = await open_call_path(url, min_size=1, max_size=1)
    try:
        async with calls.connection() as conn:
            report.schema_problems = await _schema_problems(conn, url)
            if report.schema_problems:
                return report  # the statements below need the migrated schema
            after: tuple[str, uuid.UUID] = ("", uuid.UUID(int=0))
            while True:
                rows = await conn.fetch(SQL.check_conversations, *after, batch_size,
                                        lease_grace)
                if not rows:
                    break
                for row in rows:
                    tree = (await conn.fetchrow(SQL.check_tree_member, row["user_id"],
                                                row["id"]) if row["in_tree"] else None)
                    found = _problems(row, tree)
                    if not found:
                        continue
                    violation = Violation(row["user_id"], row["id"], found)
                    report.violation_count += 1
                    if repair:
                        await _repair(calls, conn, violation, lease_grace)
                    if len(report.violations) < keep:
                        report.violations.append(violation)
                report.conversations_checked += len(rows)
                report.messages_checked += sum(r["messages"] for r in rows)
                if progress:
                    progress(len(rows))
                after = (rows[-1]["user_id"], rows[-1]["id"])
    finally:
        await calls.close()
    return report
