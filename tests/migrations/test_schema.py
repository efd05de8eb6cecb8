"""The schema itself: constraints, cascades, the catalog's names and comments, query plans."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from ..conftest import explain_at

CHAT_TABLES = ("conversations", "messages")


async def make_user(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ($1)", user_id)


async def make_conversation(conn: asyncpg.Connection, user_id: str, messages: int = 0) -> uuid.UUID:
    conversation_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO conversations (user_id, message_count) VALUES ($1, $2) RETURNING id",
        user_id, messages,
    )
    await conn.execute(
        """INSERT INTO messages (user_id, conversation_id, seq, role, content)
           SELECT $1, $2, n, CASE WHEN n % 2 = 1 THEN 'user' ELSE 'assistant' END, 'message ' || n
           FROM generate_series(1, $3) AS n""",
        user_id, conversation_id, messages,
    )
    return conversation_id


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT user_id, count(*) AS n FROM messages GROUP BY user_id"
    )
    return {r["user_id"]: r["n"] for r in rows}


async def test_deleting_a_user_removes_exactly_their_chats(conn: asyncpg.Connection) -> None:
    for user in ("alice", "bob"):
        await make_user(conn, user)
        await make_conversation(conn, user, 3)
        await make_conversation(conn, user, 2)

    await conn.execute("DELETE FROM users WHERE id = 'alice'")

    assert await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = 'alice'") == 0
    assert await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = 'bob'") == 2
    assert await counts(conn) == {"bob": 5}


async def test_deleting_a_conversation_removes_exactly_its_messages(
    conn: asyncpg.Connection,
) -> None:
    await make_user(conn, "alice")
    doomed = await make_conversation(conn, "alice", 4)
    kept = await make_conversation(conn, "alice", 3)

    await conn.execute("DELETE FROM conversations WHERE id = $1", doomed)

    assert await conn.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1",
                               doomed) == 0
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1",
                               kept) == 3


INSERT_MESSAGE = """INSERT INTO messages (user_id, conversation_id, seq, role, content,
                                          tool_call_id)
                    VALUES ($1, $2, $3, $4, 'x', $5)"""


@pytest.mark.parametrize(
    ("role", "tool_call_id", "seq", "error", "constraint"),
    [
        ("wizard", None, 1, asyncpg.CheckViolationError, "messages_role_check"),
        ("tool", None, 1, asyncpg.CheckViolationError, "messages_tool_call_id_check"),
        ("user", "call_1", 1, asyncpg.CheckViolationError, "messages_tool_call_id_check"),
        ("user", None, 0, asyncpg.CheckViolationError, "messages_seq_check"),
    ],
)
async def test_message_checks(conn: asyncpg.Connection, role: str, tool_call_id: str | None,
                              seq: int, error: type[Exception], constraint: str) -> None:
    await make_user(conn, "alice")
    conversation_id = await make_conversation(conn, "alice")
    with pytest.raises(error) as caught:
        await conn.execute(INSERT_MESSAGE, "alice", conversation_id, seq, role, tool_call_id)
    assert caught.value.constraint_name == constraint  # type: ignore[attr-defined]
    # The valid shape of the same row goes in.
    await conn.execute(INSERT_MESSAGE, "alice", conversation_id, 1, "tool", "call_1")


async def test_message_must_belong_to_its_conversations_owner(conn: asyncpg.Connection) -> None:
    await make_user(conn, "alice")
    await make_user(conn, "mallory")
    alices = await make_conversation(conn, "alice")
    with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
        await conn.execute(INSERT_MESSAGE, "mallory", alices, 1, "user", None)
    assert caught.value.constraint_name == "messages_conversation_fkey"


async def test_duplicate_seq_in_a_conversation_is_rejected(conn: asyncpg.Connection) -> None:
    await make_user(conn, "alice")
    conversation_id = await make_conversation(conn, "alice", 2)
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await conn.execute(INSERT_MESSAGE, "alice", conversation_id, 2, "user", None)
    assert caught.value.constraint_name == "messages_pkey"


async def test_conversation_needs_an_existing_user(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
        await conn.execute("INSERT INTO conversations (user_id) VALUES ('ghost')")
    assert caught.value.constraint_name == "conversations_user_id_fkey"


# -- the catalog -------------------------------------------------------------------------

SUFFIX = {"p": "_pkey", "f": "_fkey", "u": "_key", "c": "_check"}


async def test_every_chat_table_and_column_has_a_comment(conn: asyncpg.Connection) -> None:
    missing = await conn.fetch(
        """SELECT c.relname, a.attname
           FROM pg_class c
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE c.relname = ANY($1::text[]) AND c.relnamespace = 'public'::regnamespace
             AND col_description(c.oid, a.attnum) IS NULL""",
        list(CHAT_TABLES),
    )
    assert [tuple(r) for r in missing] == []
    for table in CHAT_TABLES:
        assert await conn.fetchval("SELECT obj_description($1::regclass, 'pg_class')", table)


async def test_every_constraint_and_index_is_named_for_what_it_is(
    conn: asyncpg.Connection,
) -> None:
    constraints = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, conname, contype::text AS contype
           FROM pg_constraint WHERE conrelid = ANY($1::regclass[]) AND contype <> 'n'""",
        list(CHAT_TABLES),
    )
    assert len(constraints) >= 12
    for row in constraints:
        assert row["conname"].startswith(row["tbl"] + "_"), row
        assert row["conname"].endswith(SUFFIX[row["contype"]]), row

    indexes = await conn.fetch(
        """SELECT i.indrelid::regclass::text AS tbl, c.relname, con.contype::text AS contype
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
           WHERE i.indrelid = ANY($1::regclass[])""",
        list(CHAT_TABLES),
    )
    for row in indexes:
        assert row["relname"].startswith(row["tbl"] + "_"), row
        expected = SUFFIX[row["contype"]] if row["contype"] else "_idx"
        assert row["relname"].endswith(expected), row


async def test_every_chat_key_leads_with_the_owner(conn: asyncpg.Connection) -> None:
    """Primary keys, unique and exclusion constraints, unique indexes (expression ones too)
    and foreign keys among chat tables lead with user_id: Citus distributes by it."""
    rows = await conn.fetch(
        """SELECT conname,
                  (SELECT array_agg(attname ORDER BY k.i) FROM unnest(conkey) WITH ORDINALITY
                     AS k(n, i) JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n)
                  AS cols
           FROM pg_constraint
           WHERE conrelid = ANY($1::regclass[]) AND contype IN ('p', 'u', 'f', 'x')""",
        list(CHAT_TABLES),
    )
    assert len(rows) == 4
    for row in rows:
        assert row["cols"][0] == "user_id", row
    unique_indexes = await conn.fetch(
        """SELECT c.relname,
                  (SELECT attname FROM pg_attribute
                   WHERE attrelid = i.indrelid AND attnum = i.indkey[0]) AS first
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = ANY($1::regclass[]) AND i.indisunique""",
        list(CHAT_TABLES),
    )
    assert len(unique_indexes) == 3  # two primary keys, the idempotency key
    for row in unique_indexes:
        assert row["first"] == "user_id", row


# -- query plans -------------------------------------------------------------------------

HOT_READS = [
    ("list_conversations", ["conversations_user_id_active_at_idx"],
     lambda b: (b["user"], 20)),
    ("list_conversations_before", ["conversations_user_id_active_at_idx"],
     lambda b: (b["user"], *b["cursor"], 20)),
    # and, for a fork, its root's current_id and expires_at: a primary-key probe each (a
    # SubPlan each)
    ("list_all_conversations", ["conversations_user_id_updated_at_idx", "conversations_pkey",
                                "conversations_pkey"],
     lambda b: (b["user"], 20)),
]
# Reads of messages walk the conversation's path (one conversations_pkey probe) and scan each
# part with messages_pkey under a LIMIT of the page: a Sort above them orders at most the
# page times the parts, never the history.
MESSAGE_READS = [
    ("list_messages_newest", lambda b: (b["user"], b["conversation"], 50)),
    ("list_messages_before", lambda b: (b["user"], b["conversation"], 15_000, 50)),
    ("list_messages_after", lambda b: (b["user"], b["conversation"], 15_000, 50)),
]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize(("statement", "index", "args"), HOT_READS,
                         ids=[r[0] for r in HOT_READS])
async def test_hot_reads_are_index_range_scans_without_sort(
    big: dict[str, Any], generic: bool, statement: str, index: list[str], args: Any,
) -> None:
    """The plan a prepared statement gets, custom or generic, is an ordered index scan."""
    nodes = await explain_at(big["url"], statement, *args(big), generic=generic)
    types = [n["Node Type"] for n in nodes]
    scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert [n["Index Name"] for n in scans] == index, types
    assert "Sort" not in types and "Seq Scan" not in types, types


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize(("statement", "args"), MESSAGE_READS,
                         ids=[r[0] for r in MESSAGE_READS])
async def test_message_reads_scan_each_part_of_the_path_under_the_page_limit(
    big: dict[str, Any], generic: bool, statement: str, args: Any,
) -> None:
    nodes = await explain_at(big["url"], statement, *args(big), generic=generic)
    types = [n["Node Type"] for n in nodes]
    scans = [n.get("Index Name") for n in nodes
             if n["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert scans == ["conversations_pkey", "messages_pkey"], types
    assert "Seq Scan" not in types and "Bitmap Heap Scan" not in types, types
    scan = next(i for i, n in enumerate(nodes) if n.get("Index Name") == "messages_pkey")
    assert nodes[scan - 1]["Node Type"] == "Limit", types  # the page, per part
