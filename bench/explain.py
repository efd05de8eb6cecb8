"""EXPLAIN (ANALYZE, BUFFERS) of every chatstore statement at the largest size (the tree
statements, and the reads once more, on the fork 10 levels deep), for the report's query
plans."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from chatstore.sql import QUERIES, SQL

from .fixture import Fixture
from .log import log
from .plan import DEEP, TOKEN_BUDGET, USER
from .results import Results

# purge's keyset scans start here.
PURGE_START = (datetime.min.replace(tzinfo=UTC), "", uuid.UUID(int=0))
# Transaction control: nothing to plan.
SKIPPED = ("savepoint", "release_savepoint", "rollback_to_savepoint")
# The reads planned once more on the deep fork (its path has a part per level).
DEEP_READS = ("list_messages_newest", "list_messages_before", "list_messages_after",
              "context_messages_by_tokens", "view_messages")


def arguments(cid: uuid.UUID, count: int, list_user: str, updated_at: Any,
              after_id: Any) -> dict[str, tuple[Any, ...]]:
    """Each statement's parameters: the largest conversation ``cid`` of ``count`` messages,
    and ``list_user``'s conversations (``updated_at``, ``after_id``: a page's cursor)."""
    now = datetime.now(UTC)
    new = uuid.uuid4()
    return {
        "check_schema": (),
        "user_exists": (USER,),
        "create_conversation": (USER, "t", "{}", None),
        "get_conversation": (USER, cid),
        "list_conversations": (list_user, 21),
        "list_conversations_before": (list_user, updated_at, after_id, 21),
        "update_conversation": (USER, cid, True, "t", False, None, None),
        "delete_tree": (USER, cid),
        "delete_user_data": (USER,),
        "lock_conversation": (USER, cid),
        "get_write_state": (USER, cid),
        "take_turn": (USER, cid, uuid.uuid4(), 120.0),
        "take_turn_with_message": (USER, cid, "user", "hi", None, None, "{}", 3, None, None,
                                   uuid.uuid4(), 120.0),
        "renew_turn": (USER, cid, uuid.uuid4(), 120.0),
        "end_turn": (USER, cid, uuid.uuid4()),
        "abort_turn": (USER, cid, uuid.uuid4()),
        "append_messages": (USER, cid, ["user"], ["hi"], [None], [None], ["{}"], [3],
                            [None], [None], None, None, None, None, False),
        "append_message": (USER, cid, "user", "hi", None, None, "{}", 3, None, None,
                           None, None, None, None, False),
        "find_messages_by_key": (USER, cid, ["k1"]),
        "list_messages_newest": (USER, cid, 51),
        "list_messages_before": (USER, cid, count // 2, 51),
        "list_messages_after": (USER, cid, count // 2, 51),
        "list_messages_all": (USER, cid),
        "context_messages_by_tokens": (USER, cid, 10_000, TOKEN_BUDGET),
        "view_messages": (USER, cid, 51),
        "newest_summary": (USER, cid),
        "tool_links": (USER, cid, count - 50, count),
        "pop_message": (USER, cid),
        "clear_messages": (USER, cid),
        "search_messages": (USER, "plumber list", None, 20),
        "find_unknown_users": ([USER, "nobody"],),
        "create_users": (["nobody"],),
        "import_conversations": ([USER], [new], ["t"], ["{}"], [0], [now], [now], [0],
                                 [new], [None], [None], [new], [None], [None], [None],
                                 [False]),
        "lock_user_trees": (USER,),
        "set_tree_expiry": (USER, cid, None),
        "set_hold": (USER, cid, False),
        "lock_purge_root": (USER, cid),
        "lock_purge_tree": (USER, cid),
        # purge's scans across users, from the start (a day's idleness; everything expired)
        "purge_clock": (),
        "purge_expired": (now, *PURGE_START, 100),
        "purge_idle": (now - timedelta(days=1), *PURGE_START, 100, now),
        "oldest_idle_trees": (*PURGE_START, 100),
    }


def tree_arguments(fork: uuid.UUID, count: int, root: uuid.UUID, first_end: int,
                   list_user: str, updated_at: Any,
                   after_id: Any) -> dict[str, tuple[Any, ...]]:
    """The tree statements' parameters, on the deep fork ``fork`` of ``count`` messages
    whose tree is ``root`` (the root's own rows end at ``first_end``); ``list_user``'s
    conversations for the listings. ``copy_history`` is planned separately (it needs a
    conversation made in its transaction)."""
    return {
        "list_all_conversations": (list_user, 21),
        "list_all_conversations_before": (list_user, updated_at, after_id, 21),
        "export_messages": (USER, root, 0, 1000),
        "restore_tree_activity": ([USER], [root]),
        "lock_tree": (USER, root),
        "tree_members": (USER, root),
        "fork_conversation": (USER, fork, count // 2, None, None, True, None, None),
        "lock_fork_source": (USER, fork),
        "copy_conversation": (USER, "t", None, count // 2, None),
        "set_current": (USER, root, fork),
        "touch_tree": (USER, root),
        "check_tree_member": (USER, fork),
        "move_messages": (USER, root, fork, 0, first_end),
        "set_path": (USER, fork, [root], [first_end]),
        "truncate_history": (USER, fork, count - 1),
        "delete_conversations": (USER, [fork]),
        "alternatives": (USER, fork, count // 2),
        "count_forks": (),
    }


async def explain(fx: Fixture, results: Results, key: str, list_user: str,
                  deep: str) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every chatstore statement at the largest size (``key``),
    the tree statements on the deep fork (``deep``), and the reads once more on the deep
    fork; statements that write run in a transaction that is rolled back. Also records the
    server's version."""
    cid, fork = fx.own.ids[key], fx.own.ids[deep]
    conn = await asyncpg.connect(fx.dsn)
    updated_at, after_id = await conn.fetchrow(
        "SELECT updated_at, id FROM conversations WHERE user_id = $1 "
        "ORDER BY updated_at DESC OFFSET 100 LIMIT 1", list_user) or (None, None)
    count = await conn.fetchval("SELECT message_count FROM conversations WHERE "
                                "user_id = $1 AND id = $2", USER, cid)
    tree = await conn.fetchrow("SELECT message_count, root_id, path_ends[1] AS first_end "
                               "FROM conversations WHERE user_id = $1 AND id = $2", USER, fork)
    assert tree is not None, "the deep fork is gone"
    args = arguments(cid, count, list_user, updated_at, after_id)
    args |= tree_arguments(fork, tree["message_count"], tree["root_id"], tree["first_end"],
                           list_user, updated_at, after_id)
    deep_args = arguments(fork, tree["message_count"], list_user, updated_at, after_id)
    planned = [(name, statement, args.get(name)) for name, statement in QUERIES.items()
               if name not in SKIPPED]
    planned += [(f"{name} ({DEEP})", QUERIES[name], deep_args[name]) for name in DEEP_READS]
    for name, statement, given in planned:
        if given is None and name != "copy_history":
            log(f"  no EXPLAIN arguments for {name}: left out of the report")
            continue
        tx = conn.transaction()
        await tx.start()
        try:
            if given is None:  # copy_history: into a conversation made in this transaction
                made = await conn.fetchval(SQL.copy_conversation, USER, "t", None, 100, None)
                given = (USER, fork, made, 100)
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *given)
            results.plans[name] = "\n".join(r[0] for r in rows)
        except asyncpg.PostgresError as exc:  # a statement that changed its parameters
            log(f"  EXPLAIN {name} failed: {type(exc).__name__}: {exc}")
        finally:
            await tx.rollback()
    results.server_version = await conn.fetchval("SHOW server_version")
    await conn.close()
