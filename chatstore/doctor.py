"""``chatstore check [--repair]``: find (and fix) drift between counters and rows.

What chatstore keeps true, and what a row written behind its back breaks:

* each conversation's ``message_count`` equals its highest ``seq`` and its number of
  messages (so seqs are 1..n without gaps: the primary key makes them unique); for a fork,
  the rows stored under it are exactly its own parts (see ``_paths.py``);
* a fork's path finds every row it names (no part beyond its owner's rows), its root
  exists, and a root's ``current_id`` is a conversation of its tree;
* no turn lease is stuck (``turn_expires_at`` long past);
* the usage rollups equal the ledger: every row of ``usage_daily`` (per user, UTC day and
  model) and of ``usage_conversation_daily`` (the same per conversation) holds what the
  user's ``usage_entries`` of that key sum to, and no rollup row lacks entries;
* the schema is the migrations' (none pending, every expected column present).

Conversations are read in keyset batches of ``batch_size`` in primary-key order, so memory
stays bounded whatever the database's size. ``repair=True`` fixes each conversation found
wrong in a transaction of its own, holding its row lock (appends to it wait): a stuck lease
is ended as an abort would end it (the turn's messages go), seq gaps are closed by
renumbering in order, and ``message_count`` is recounted; ``revision`` goes up by one.
Only stuck leases are repaired in a conversation of a tree (renumbering would move rows
other conversations read): the rest is reported for a person to look at.

The rollups are compared in batches of ``batch_size`` users, each batch in one statement (one
snapshot: an entry and its rollups commit together, so a recording in flight is in neither
and never shows as a difference). A user whose rollups differ is reported with how many keys
of each table differ (never the rows). ``repair=True`` rebuilds that user's rollups from the
ledger in a transaction of its own that first takes ``LOCK TABLE usage_entries IN SHARE ROW
EXCLUSIVE MODE``: every statement that writes usage holds ROW EXCLUSIVE on usage_entries from
its start to its commit, so the lock waits for the recordings in flight and holds new ones
(of every user) until the rebuild commits, while totals and quota checks read on. The wait
for the lock is bounded (``lock_timeout``, a few tries); a user whose lock never came is
reported as not repaired. On Citus the same lock, taken on the coordinator, holds the
recordings that go through it (all of chatstore's).
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

__all__ = ["CheckReport", "UsageViolation", "Violation", "check_database"]

# How long a usage repair waits for its lock, and how many times it tries.
USAGE_LOCK_TIMEOUT = "2s"
USAGE_LOCK_TRIES = 3

@dataclass
class Violation:
    """One conversation that breaks an invariant; ``problems`` says how."""

    user_id: str
    conversation_id: uuid.UUID
    problems: list[str]
    repaired: list[str] = field(default_factory=list)


@dataclass
class UsageViolation:
    """A user whose usage rollups differ from the ledger; ``problems`` says which table and
    how many of its keys."""

    user_id: str
    problems: list[str]
    repaired: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    schema_problems: list[str] = field(default_factory=list)
    conversations_checked: int = 0
    messages_checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    usage_users_checked: int = 0  # users with usage entries or rollup rows
    usage_entries_checked: int = 0
    usage_violations: list[UsageViolation] = field(default_factory=list)
    usage_violation_count: int = 0
    usage_unrepaired: int = 0  # with repair: users whose rollups could not be locked

    @property
    def ok(self) -> bool:
        return (not self.schema_problems and not self.violation_count
                and not self.usage_violation_count)


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


def _usage_problems(row: asyncpg.Record) -> list[str]:
    found: list[str] = []
    for table, count, key in (
            ("usage_daily", row["daily_keys"], "user, day, model"),
            ("usage_conversation_daily", row["conversation_keys"],
             "user, conversation, day, model")):
        if count:
            found.append(f"{table}: {count} key(s) ({key}) differ from what the ledger "
                         "sums to (wrong sums, missing or stray rows)")
    return found


async def _repair_usage(calls: CallPath, conn: Conn, violation: UsageViolation) -> bool:
    """Rebuild one user's rollups from the ledger under the lock (see the module
    docstring); ``False`` when the lock never came (nothing changed)."""
    for _ in range(USAGE_LOCK_TRIES):
        try:
            async with calls.atomic(conn):
                await conn.fetchval(SQL.set_lock_timeout, USAGE_LOCK_TIMEOUT)
                await conn.execute(SQL.lock_usage_for_repair)
                cleared = await conn.fetchrow(SQL.clear_usage_rollups, violation.user_id)
                assert cleared is not None
                daily = _rows(await conn.execute(SQL.rebuild_usage_daily, violation.user_id))
                per_conversation = _rows(await conn.execute(
                    SQL.rebuild_usage_conversation_daily, violation.user_id))
        except asyncpg.LockNotAvailableError:
            continue  # rolled back: nothing changed
        violation.repaired.append(
            f"rebuilt the rollups from the ledger: usage_daily {cleared['daily_rows']} -> "
            f"{daily} row(s), usage_conversation_daily {cleared['conversation_rows']} -> "
            f"{per_conversation} row(s)")
        return True
    violation.repaired.append(
        f"not repaired: usage_entries stayed locked by writers ({USAGE_LOCK_TRIES} waits of "
        f"{USAGE_LOCK_TIMEOUT}); nothing was changed, run again")
    return False


def _rows(status: str) -> int:
    """The row count of a command status (``INSERT 0 5``)."""
    return int(status.split()[-1])


async def _check_usage(calls: CallPath, conn: Conn, report: CheckReport, *, repair: bool,
                       batch_size: int, keep: int,
                       progress: Callable[[int], None] | None) -> None:
    """Compare the rollups with the ledger, ``batch_size`` users at a time."""
    after = ""
    while True:
        users = [r["id"] for r in await conn.fetch(SQL.check_usage_users, after, batch_size)]
        if not users:
            return
        rows = await conn.fetch(SQL.check_usage_rollups, users)
        for row in rows:
            found = _usage_problems(row)
            if not found:
                continue
            violation = UsageViolation(row["user_id"], found)
            report.usage_violation_count += 1
            if repair and not await _repair_usage(calls, conn, violation):
                report.usage_unrepaired += 1
            if len(report.usage_violations) < keep:
                report.usage_violations.append(violation)
        entries = sum(r["entries"] for r in rows)
        report.usage_users_checked += len(rows)
        report.usage_entries_checked += entries
        if progress:
            progress(entries)
        after = users[-1]


async def check_database(
    url: str, *, repair: bool = False, lease_grace: float = 600.0, batch_size: int = 2000,
    keep: int = 1000, progress: Callable[[int], None] | None = None,
    usage_progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check (and with ``repair`` fix) the database at ``url``; see the module docstring.

    :param lease_grace: a lease counts as stuck this many seconds after it ran out.
    :param batch_size: conversations, then users, read at a time.
    :param keep: at most this many violations of each kind are kept in the report (all
        are counted and, with ``repair``, repaired), so memory stays bounded.
    :param progress: called with the number of conversations of each batch checked.
    :param usage_progress: called with the number of usage entries of each batch of
        users checked.
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
            await _check_usage(calls, conn, report, repair=repair, batch_size=batch_size,
                               keep=keep, progress=usage_progress)
    finally:
        await calls.close()
    return report
