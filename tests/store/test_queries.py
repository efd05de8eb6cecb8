"""Every named statement: it prepares, its columns feed its model, its plan uses an index."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import asyncpg
import pytest

from chatstore import Conversation, Message
from chatstore.models import CONVERSATION_COLUMNS, USER_COLUMNS
from chatstore.queries import QUERIES, parse_queries

from ..conftest import explain_at

CONVERSATION = set(Conversation.model_fields)
MESSAGE = set(Message.model_fields)
# Lean reads (models.messages_from_rows): the caller's keys are left out, the order is fixed.
LEAN_READS: dict[str, tuple[str, ...]] = {
    "list_messages_newest": CONVERSATION_COLUMNS,
    "list_messages_before": CONVERSATION_COLUMNS,
    "list_messages_after": CONVERSATION_COLUMNS,
    "list_messages_all": CONVERSATION_COLUMNS,
    "context_messages_by_count": CONVERSATION_COLUMNS,
    "context_messages_by_tokens": CONVERSATION_COLUMNS,
    "search_messages": USER_COLUMNS,
}

COLUMNS: dict[str, set[str]] = {
    "check_schema": {"table_name", "column_name"},
    "user_exists": {"found"},
    "create_conversation": CONVERSATION,
    "get_conversation": CONVERSATION,
    "list_conversations": CONVERSATION,
    "list_conversations_before": CONVERSATION,
    "update_conversation": CONVERSATION,
    "delete_conversation": {"id"},
    "delete_user_data": {"user_found", "conversations_deleted"},
    "lock_conversation": {"message_count", "revision", "turn_token", "lease_expired"},
    "get_write_state": {"message_count", "revision", "turn_token", "lease_expired"},
    "take_turn": {"revision"},
    "renew_turn": {"revision"},
    "end_turn": {"revision"},
    "abort_turn": {"revision", "removed"},
    "list_messages_all": set(CONVERSATION_COLUMNS),
    "savepoint": set(),
    "release_savepoint": set(),
    "rollback_to_savepoint": set(),
    "append_messages": MESSAGE,
    "append_message": MESSAGE,
    "find_messages_by_key": MESSAGE,
    "list_messages_newest": set(CONVERSATION_COLUMNS),
    "list_messages_before": set(CONVERSATION_COLUMNS),
    "list_messages_after": set(CONVERSATION_COLUMNS),
    "context_messages_by_count": set(CONVERSATION_COLUMNS),
    "context_messages_by_tokens": set(CONVERSATION_COLUMNS),
    "pop_message": MESSAGE,
    "clear_messages": {"removed"},
    "search_messages": set(USER_COLUMNS),
    "find_unknown_users": {"id"},
    "create_users": set(),
    "import_conversations": {"user_id", "id"},
    "set_call_settings": {"user_id", "statement_timeout"},
    # operator checks (chatstore check / status / rollback)
    "check_conversations": {"user_id", "id", "message_count", "highest_seq", "messages",
                            "lease_stuck"},
    "lock_conversation_for_repair": {"message_count", "turn_base_count", "turn_token",
                                     "lease_stuck"},
    "conversation_message_stats": {"highest_seq", "messages"},
    "shift_message_seqs": set(),
    "renumber_message_seqs": set(),
    "recount_conversation": {"message_count"},
    "count_chat_rows": {"conversations", "messages", "messages_without_role"},
    "relation_sizes": {"table_name", "table_bytes", "toast_bytes", "index_bytes",
                       "total_bytes"},
    "index_sizes": {"table_name", "index_name", "bytes"},
    "server_settings": {"server_version", "server_version_num",
                        "default_transaction_isolation", "default_transaction_read_only",
                        "statement_timeout", "idle_in_transaction_session_timeout",
                        "server_encoding"},
    "table_pages": {"pages"},
    "prefer_index_plans": {"enable_seqscan", "enable_bitmapscan"},
}


def test_every_statement_is_listed_here() -> None:
    assert set(QUERIES) == set(COLUMNS)


@pytest.mark.parametrize("name", sorted(COLUMNS))
async def test_statement_prepares_with_the_models_columns(conn: asyncpg.Connection,
                                                          name: str) -> None:
    statement = await conn.prepare(QUERIES[name])
    columns = [attribute.name for attribute in statement.get_attributes()]
    assert len(columns) == len(set(columns)), columns
    assert set(columns) == COLUMNS[name]


@pytest.mark.parametrize("name", sorted(LEAN_READS))
async def test_lean_read_selects_the_builders_columns_in_order(conn: asyncpg.Connection,
                                                               name: str) -> None:
    """messages_from_rows zips each row with a fixed tuple of field names: the statement
    must select exactly those columns, in that order (the model's field order)."""
    statement = await conn.prepare(QUERIES[name])
    columns = tuple(attribute.name for attribute in statement.get_attributes())
    assert columns == LEAN_READS[name]
    assert [c for c in Message.model_fields if c in columns] == list(columns)


def test_parse_queries_rejects_duplicates_and_empty_blocks() -> None:
    assert dict(parse_queries("-- a --\nSELECT 1;\n-- b --\n-- just a comment\nSELECT 2;")) == {
        "a": "SELECT 1", "b": "SELECT 2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- a --\nSELECT 1;\n-- a --\nSELECT 2;")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- a --\n-- nothing\n")


# Every statement that reads rows, with arguments on the large database, and the index
# its plan must use. The hot reads are checked more strictly in test_schema.py.
READS = [
    ("user_exists", "users_pkey", lambda b: (b["user"],)),
    ("get_conversation", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("lock_conversation", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("get_write_state", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("list_messages_all", "messages_pkey", lambda b: (b["user"], b["conversation"])),
    ("list_conversations", "conversations_user_id_updated_at_idx", lambda b: (b["user"], 21)),
    ("list_conversations_before", "conversations_user_id_updated_at_idx",
     lambda b: (b["user"], *b["cursor"], 21)),
    ("find_messages_by_key", "messages_idempotency_key_idx",
     lambda b: (b["user"], b["conversation"], ["k1", "k2"])),
    ("list_messages_newest", "messages_pkey", lambda b: (b["user"], b["conversation"], 51)),
    ("list_messages_before", "messages_pkey",
     lambda b: (b["user"], b["conversation"], 100, 51)),
    ("list_messages_after", "messages_pkey", lambda b: (b["user"], b["conversation"], 100, 51)),
    ("context_messages_by_count", "messages_pkey",
     lambda b: (b["user"], b["conversation"], 100)),
    ("context_messages_by_tokens", "messages_pkey",
     lambda b: (b["user"], b["conversation"], 10_000, 4000)),
    ("search_messages", "messages_search_vector_idx",
     lambda b: (b["user"], "number 12345", None, 20)),
    ("search_messages", "messages_search_vector_idx",
     lambda b: (b["user"], "number 12345", b["conversation"], 20)),
]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize(("statement", "index", "args"), READS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(READS)])
async def test_read_statement_plan_uses_its_index(big: dict[str, Any], generic: bool,
                                                  statement: str, index: str,
                                                  args: Any) -> None:
    nodes = await explain_at(big["url"], statement, *args(big), generic=generic)
    types = [n["Node Type"] for n in nodes]
    assert "Seq Scan" not in types, types
    assert index in {n.get("Index Name") for n in nodes}, nodes


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_token_window_probes_one_message_per_step(big: dict[str, Any],
                                                        generic: bool) -> None:
    """The token-budgeted window walks back by primary-key probes (seq = previous - 1); a
    plan that scanned or hashed the conversation would cost its length on every step."""
    nodes = await explain_at(big["url"], "context_messages_by_tokens", big["user"],
                             big["conversation"], 10_000, 4000, generic=generic)
    probes = [n for n in nodes if n.get("Index Name") == "messages_pkey"]
    assert len(probes) == 1, nodes
    assert re.search(r"seq = \(walk(_\d+)?\.seq - 1\)", probes[0]["Index Cond"]), probes[0]
    assert probes[0]["Node Type"] == "Index Scan"
    types = {n["Node Type"] for n in nodes}
    assert not types & {"Hash Join", "Merge Join", "Seq Scan", "Bitmap Heap Scan"}, types


def initplan_reference(node: dict[str, Any]) -> str:
    """How the plan refers to an InitPlan's result: ``$N`` up to PostgreSQL 16,
    ``(InitPlan N).col1`` from 17."""
    found = re.fullmatch(r"InitPlan (\d+)(?: \(returns (\$\d+)\))?", node["Subplan Name"])
    assert found, node["Subplan Name"]
    return found[2] or f"(InitPlan {found[1]}).col1"


def subtree(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in subtree(child))]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_search_plan_follows_the_callers_matches(big: dict[str, Any],
                                                       generic: bool) -> None:
    """Search costs the caller's matches, whichever plan the prepared statement runs:

    - one GIN scan, whose condition is the query AND the caller's owner lexeme (so it walks
      the caller's own postings), built once by an InitPlan;
    - the owner check (user_id = $1) filters those matches: no scan of every key of the
      user in messages_pkey ANDed with it (a cost that follows the user's message count);
    - the query is parsed once: no websearch_to_tsquery per match (the generic plan of a
      bare one in ts_rank re-parsed it for every row), and ts_rank reads the stored vector;
    - only keys and rank go through the sort; the best rows are read by primary key.
    """
    nodes = await explain_at(big["url"], "search_messages", big["user"], "number 12345", None, 20,
                             generic=generic, verbose=True)
    scans = [n for n in nodes if n.get("Index Name") == "messages_search_vector_idx"]
    assert len(scans) == 1 and scans[0]["Node Type"] == "Bitmap Index Scan", nodes
    cond = scans[0]["Index Cond"]
    initplans = [n for n in nodes if n.get("Parent Relationship") == "InitPlan"]
    made_by = [n for n in initplans
               if re.search(re.escape(initplan_reference(n)) + r"(?!\d)", cond)]
    assert len(made_by) == 1, (cond, [n["Subplan Name"] for n in initplans])
    built = " ".join(made_by[0]["Output"])
    lexeme = " " + hashlib.md5(big["user"].encode()).hexdigest()
    assert lexeme in built or "md5($1)" in built, built

    types = [n["Node Type"] for n in nodes]
    assert "BitmapAnd" not in types and "Seq Scan" not in types, types
    heap = [n for n in nodes if n["Node Type"] == "Bitmap Heap Scan"]
    assert len(heap) == 1 and "user_id" in heap[0].get("Filter", ""), heap

    per_row = [n for n in nodes if n.get("Parent Relationship") != "InitPlan"]
    for node in per_row:
        for key in ("Output", "Sort Key", "Filter", "Recheck Cond", "Index Cond"):
            assert "websearch_to_tsquery" not in str(node.get(key, "")), (key, node)
    assert "to_tsvector" not in str(nodes)

    ranking = [n for n in nodes if n["Node Type"] == "Sort"
               and any(s["Node Type"] == "Bitmap Heap Scan" for s in subtree(n))]
    assert len(ranking) == 1 and "content" not in str(ranking[0]["Output"]), ranking
    probes = [n for n in nodes if n.get("Index Name") == "messages_pkey"]
    assert len(probes) == 1 and probes[0]["Node Type"] == "Index Scan", probes
    assert re.search(r"\bseq = ", probes[0]["Index Cond"]), probes[0]
