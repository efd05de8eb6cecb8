"""EXPLAIN (ANALYZE, BUFFERS) of every chatstore statement at the largest size, for the
report's query plans."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chatstore.sql import QUERIES

from .fixture import Fixture
from .log import log
from .plan import TOKEN_BUDGET, USER
from .results import Results

# Transaction control: nothing to plan.
SKIPPED = ("savepoint", "release_savepoint", "rollback_to_savepoint")


def arguments(cid: uuid.UUID, count: int, list_user: str, updated_at: Any,
              after_id: Any) -> dict[str, tuple[Any, ...]]:
    """Each statement's parameters: the largest conversation ``cid`` of ``count`` messages,
    and ``list_user``'s conversations (``updated_at``, ``after_id``: a page's cursor)."""
    now = datetime.now(UTC)
    new = uuid.uuid4()
    return {
        "check_schema": (),
        "user_exists": (USER,),
        "create_conversation": (USER, "t", "{}"),
        "get_conversation": (USER, cid),
        "list_conversations": (list_user, 21),
        "list_conversations_before": (list_user, updated_at, after_id, 21),
        "update_conversation": (USER, cid, True, "t", False, None, None),
        "delete_tree": (USER, cid),
        "delete_user_data": (USER,),
        "lock_conversation": (USER, cid),
        "get_write_state": (USER, cid),
        "take_turn": (USER, cid, uuid.uuid4(), 120.0),
        "renew_turn": (USER, cid, uuid.uuid4(), 120.0),
        "end_turn": (USER, cid, uuid.uuid4()),
        "abort_turn": (USER, cid, uuid.uuid4()),
        "append_messages": (USER, cid, ["user"], ["hi"], [None], [None], ["{}"], [3],
                            [None], [None], None, None, None),
        "append_message": (USER, cid, "user", "hi", None, None, "{}", 3, None, None,
                           None, None, None),
        "find_messages_by_key": (USER, cid, ["k1"]),
        "list_messages_newest": (USER, cid, 51),
        "list_messages_before": (USER, cid, count // 2, 51),
        "list_messages_after": (USER, cid, count // 2, 51),
        "list_messages_all": (USER, cid),
        "context_messages_by_tokens": (USER, cid, 10_000, TOKEN_BUDGET),
        "pop_message": (USER, cid),
        "clear_messages": (USER, cid),
        "search_messages": (USER, "plumber list", None, 20),
        "find_unknown_users": ([USER, "nobody"],),
        "create_users": (["nobody"],),
        "import_conversations": ([USER], [new], ["t"], ["{}"], [0], [now], [now], [0],
                                 [new], [None], [None], [new], [None], [None]),
    }


async def explain(fx: Fixture, results: Results, key: str, list_user: str) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every chatstore statement at the largest size;
    statements that write run in a transaction that is rolled back. Also records the
    server's version."""
    cid = fx.own.ids[key]
    conn = await asyncpg.connect(fx.dsn)
    updated_at, after_id = await conn.fetchrow(
        "SELECT updated_at, id FROM conversations WHERE user_id = $1 "
        "ORDER BY updated_at DESC OFFSET 100 LIMIT 1", list_user) or (None, None)
    count = await conn.fetchval("SELECT message_count FROM conversations WHERE "
                                "user_id = $1 AND id = $2", USER, cid)
    args = arguments(cid, count, list_user, updated_at, after_id)
    for name, statement in QUERIES.items():
        if name in SKIPPED:
            continue
        if name not in args:
            log(f"  no EXPLAIN arguments for {name}: left out of the report")
            continue
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *args[name])
            results.plans[name] = "\n".join(r[0] for r in rows)
        except asyncpg.PostgresError as exc:  # a statement that changed its parameters
            log(f"  EXPLAIN {name} failed: {type(exc).__name__}: {exc}")
        finally:
            await tx.rollback()
    results.server_version = await conn.fetchval("SHOW server_version")
    await conn.close()
