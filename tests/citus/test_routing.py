"""Each named statement of chatstore/sql/queries.sql on a live Citus cluster: the ones about
one user run on that user's shard. Most are router plans (one task sent to one worker). An
append is an INSERT ... SELECT from a data-modifying CTE, which Citus runs in two steps, each
on the user's one shard (the conversation's UPDATE as a subplan, then the INSERT of the rows
it numbered), in one transaction on that worker. The statements that read the whole database
(the operators' `check` and `status`, an import's batch of many users) fan out by design and
are listed apart, with why; a new statement must join one of the lists."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore.sql import QUERIES

from ..conftest import sql_literal

USER = "alice"
CID = uuid.UUID(int=1)
TOKEN = uuid.UUID(int=2)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _append_one(seq_key: str | None = None) -> tuple[Any, ...]:
    return (USER, CID, "user", "hello", None, None, "{}", 3, seq_key, None, None, None, None,
            None, False)


def _append_many() -> tuple[Any, ...]:
    return (USER, CID, ["user", "assistant"], ["a", "b"], [None, None], [None, None],
            ["{}", "{}"], [1, 1], [None, None], [None, None], None, None, None, None, False)


# Statement -> arguments, for every statement that touches one user's rows.
ROUTED: dict[str, Callable[[], tuple[Any, ...]]] = {
    "user_exists": lambda: (USER,),
    "create_conversation": lambda: (USER, "t", None, timedelta(hours=1)),
    "get_conversation": lambda: (USER, CID),
    "list_conversations": lambda: (USER, 21),
    "list_conversations_before": lambda: (USER, NOW, CID, 21),
    "update_conversation": lambda: (USER, CID, True, "t", False, None, None),
    "delete_tree": lambda: (USER, CID),
    "list_all_conversations": lambda: (USER, 21),
    "list_all_conversations_before": lambda: (USER, NOW, CID, 21),
    "lock_tree": lambda: (USER, CID),
    "tree_members": lambda: (USER, CID),
    "lock_fork_source": lambda: (USER, CID),
    "copy_conversation": lambda: (USER, "t", None, 0, None),
    "set_current": lambda: (USER, CID, CID),
    "touch_tree": lambda: (USER, CID),
    "move_messages": lambda: (USER, CID, uuid.UUID(int=3), 0, 5),
    "set_path": lambda: (USER, CID, None, None),
    "truncate_history": lambda: (USER, CID, 0),
    "delete_conversations": lambda: (USER, [CID]),
    "alternatives": lambda: (USER, CID, 1),
    # an INSERT ... SELECT that Citus pushes down whole to the user's shard
    "copy_history": lambda: (USER, CID, uuid.UUID(int=3), 5),
    "export_messages": lambda: (USER, CID, 0, 1000),
    "lock_user_trees": lambda: (USER,),
    "delete_user_data": lambda: (USER,),
    "lock_conversation": lambda: (USER, CID),
    "get_write_state": lambda: (USER, CID),
    "take_turn": lambda: (USER, CID, TOKEN, 60.0),
    "renew_turn": lambda: (USER, CID, TOKEN, 60.0),
    "end_turn": lambda: (USER, CID, TOKEN),
    "abort_turn": lambda: (USER, CID, TOKEN),
    "find_messages_by_key": lambda: (USER, CID, ["k"]),
    "list_messages_newest": lambda: (USER, CID, 51),
    "list_messages_before": lambda: (USER, CID, 100, 51),
    "list_messages_after": lambda: (USER, CID, 100, 51),
    "list_messages_all": lambda: (USER, CID),
    "context_messages_by_tokens": lambda: (USER, CID, 10_000, 4000),
    "view_messages": lambda: (USER, CID, 51),
    "newest_summary": lambda: (USER, CID),
    "tool_links": lambda: (USER, CID, 0, 10),
    "pop_message": lambda: (USER, CID),
    "clear_messages": lambda: (USER, CID),
    "search_messages": lambda: (USER, "hello world", None, 20),
    "lock_conversation_for_repair": lambda: (USER, CID, 600.0),
    "check_tree_member": lambda: (USER, CID),
    "conversation_message_stats": lambda: (USER, CID),
    "shift_message_seqs": lambda: (USER, CID, 10),
    "renumber_message_seqs": lambda: (USER, CID),
    "recount_conversation": lambda: (USER, CID),
    # check --repair of one user's usage rollups: delete them, sum the ledger again
    "clear_usage_rollups": lambda: (USER,),
    "rebuild_usage_daily": lambda: (USER,),
    "rebuild_usage_conversation_daily": lambda: (USER,),
    # export of one user's usage entries
    "export_usage": lambda: (USER, 1000),
    "export_usage_after": lambda: (USER, NOW, CID, 1000),
    # usage: reads of one user's rollups and ledger, and the quota check taking a lease
    "find_usage_by_key": lambda: (USER, "k"),
    "usage_totals": lambda: (USER, NOW.date(), NOW.date(), NOW, NOW, None, None, "model"),
    "usage_totals_by_conversation": lambda: (USER, None, NOW.date(), None, None, NOW, NOW),
    "usage_totals_of_conversation": lambda: (USER, None, None, None, None, None, None, CID,
                                             "day"),
    "usage_in_window": lambda: (USER, "month"),
    "take_turn_within_quota": lambda: (USER, CID, TOKEN, 60.0, 1000, "day"),
    # retention: everything purge locks and deletes is one tree of one user
    "set_tree_expiry": lambda: (USER, CID, timedelta(hours=1)),
    "set_hold": lambda: (USER, CID, True),
    "lock_purge_root": lambda: (USER, CID),
    "lock_purge_tree": lambda: (USER, CID),
    # users is a reference table: any one node answers.
    "find_unknown_users": lambda: ([USER],),
    "check_usage_users": lambda: ("", 2000),
}
# Run through the coordinator in steps of one task each (see the module's docstring); the
# benchmark (bench/citus.py) gives what the second step costs.
STEPWISE: dict[str, Callable[[], tuple[Any, ...]]] = {
    "append_message": _append_one,
    "take_turn_with_message": lambda: (*_append_one()[:10], TOKEN, 60.0),
    "append_messages": _append_many,
    "fork_conversation": lambda: (USER, CID, 0, None, None, True, None, None),
    # the entry's INSERT ... SELECT, then each rollup's upsert of it
    "record_usage": lambda: (USER, CID, "k", "gpt-test", 1, 2, 0, 0, 1, None, "{}"),
    "append_message_with_usage": lambda: (*_append_one()[:13], "gpt-test", 1, 2, 0, 0, 1,
                                          None, "{}", False),
}
# Statements that are not about one user, and why.
NOT_ROUTED = {
    "check_conversations": "chatstore check: a keyset scan of every conversation, by design",
    "purge_expired": "purge: a keyset scan of every user's expired trees, by design (then "
                     "each tree is locked and deleted on its own shard)",
    "purge_idle": "purge: a keyset scan of every user's idle trees, by design (then each "
                  "tree is locked and deleted on its own shard)",
    "oldest_idle_trees": "chatstore status: the least recently active trees of every user",
    "purge_clock": "no table: the server's clock",
    "count_chat_rows": "chatstore status: counts every row, by design",
    "count_forks": "chatstore status: counts every fork, by design",
    "restore_tree_activity": "after an import: the roots of the batch's forks, of many "
                             "users",
    "import_conversations": "an import's batch holds many users' conversations (one task "
                            "per shard it touches)",
    "import_usage": "an import's batch holds many users' usage entries: Citus pulls the "
                    "batch to the coordinator, inserts it, then upserts each rollup from "
                    "what was inserted, in one distributed transaction",
    "check_usage_rollups": "chatstore check: the rollups of a batch of users against their "
                           "ledger, pushed down whole to every shard they live on, by design",
    "lock_usage_for_repair": "check --repair: LOCK TABLE, a utility statement (Citus takes "
                             "it on the coordinator, where chatstore's writes start)",
    "set_lock_timeout": "session settings",
    "analyze_chat_tables": "ANALYZE, run by chatstore seed: a utility statement",
    "create_users": "users is a reference table: the coordinator reads the batch and writes "
                    "every copy (import, seed and the demo run it, never a chat call)",
    "check_schema": "catalog only (information_schema)",
    "relation_sizes": "catalog only", "index_sizes": "catalog only",
    "server_settings": "catalog only", "table_pages": "catalog only",
    "prefer_index_plans": "session settings", "set_call_settings": "session settings",
    "savepoint": "transaction control", "release_savepoint": "transaction control",
    "rollback_to_savepoint": "transaction control",
}


def test_every_statement_is_classified() -> None:
    assert set(ROUTED) | set(STEPWISE) | set(NOT_ROUTED) == set(QUERIES)
    assert len(ROUTED) + len(STEPWISE) + len(NOT_ROUTED) == len(QUERIES)


@pytest.fixture
async def citus_conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    await chatstore.init_connection(conn)
    await conn.execute("INSERT INTO users (id) VALUES ($1)", USER)
    await conn.execute("INSERT INTO conversations (user_id, id) VALUES ($1, $2)", USER, CID)
    try:
        yield conn
    finally:
        await conn.close()


def task_counts(plan: str) -> list[int]:
    return [int(n) for n in re.findall(r"Task Count: (\d+)", plan)]


def inlined(statement: str, args: tuple[Any, ...]) -> str:
    """``statement`` with its parameters written as literals (highest number first, so $1
    never eats the start of $12)."""
    for number in range(len(args), 0, -1):
        statement = statement.replace(f"${number}", sql_literal(args[number - 1]))
    return statement


async def plan_of(conn: asyncpg.Connection, name: str, args: tuple[Any, ...]) -> str:
    """EXPLAIN of the statement with its arguments as literals (Citus plans a statement with
    bound parameters inside a CTE only when it runs it)."""
    rows = await conn.fetch("EXPLAIN " + inlined(QUERIES[name], args))
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("name", sorted(ROUTED))
async def test_statement_is_a_router_plan(citus_conn: asyncpg.Connection, name: str) -> None:
    plan = await plan_of(citus_conn, name, ROUTED[name]())
    assert "Custom Scan (Citus Adaptive)" in plan, plan
    assert task_counts(plan) == [1], plan
    assert "Distributed Subplan" not in plan and "coordinator" not in plan, plan


@pytest.mark.parametrize("name", sorted(STEPWISE))
async def test_append_runs_each_step_on_one_shard(citus_conn: asyncpg.Connection,
                                                  name: str) -> None:
    plan = await plan_of(citus_conn, name, STEPWISE[name]())
    tasks = task_counts(plan)
    assert len(tasks) >= 2 and tasks == [1] * len(tasks), plan


@pytest.mark.parametrize("name", sorted({**ROUTED, **STEPWISE}))
async def test_prepared_statement_keeps_working_past_the_plan_cache_switch(
        citus_conn: asyncpg.Connection, name: str) -> None:
    """asyncpg runs every statement prepared, and PostgreSQL may switch a prepared statement
    to a generic plan after five executions; Citus cannot plan these statements generically
    (under plan_cache_mode = force_generic_plan they fail), so it must keep custom plans.
    Eight executions with bound parameters, in a transaction rolled back after."""
    args = {**ROUTED, **STEPWISE}[name]()
    statement = await citus_conn.prepare(QUERIES[name])
    transaction = citus_conn.transaction()
    await transaction.start()
    try:
        for _ in range(8):
            await statement.fetch(*args)
    finally:
        await transaction.rollback()


async def test_the_usage_check_compares_each_user_in_one_task(
        citus_conn: asyncpg.Connection) -> None:
    """`chatstore check` trusts that a user's ledger and rollups are compared in one
    snapshot: the statement must go down whole to the shards (no subplan run at another
    moment, nothing pulled to the coordinator but the per-user counts)."""
    plan = await plan_of(citus_conn, "check_usage_rollups", (["alice", "bob", "carol"],))
    assert "Custom Scan (Citus Adaptive)" in plan, plan
    assert "Distributed Subplan" not in plan and "intermediate_result" not in plan, plan
    assert "usage_entries_" in plan and "usage_conversation_daily_" in plan, plan
