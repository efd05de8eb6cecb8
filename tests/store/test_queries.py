"""Every named statement: it prepares, its columns feed its model, its plan uses an index."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from chatstore import Message
from chatstore.sql import QUERIES

from ..conftest import explain_at
from ..query_columns import COLUMNS, LEAN_READS

NOW = datetime.now(UTC)
PURGE_START = (datetime.min.replace(tzinfo=UTC), "", uuid.UUID(int=0))


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


# Every statement that reads rows, with arguments on the large database, and the index
# its plan must use. The hot reads are checked more strictly in test_schema.py.
READS = [
    ("user_exists", "users_pkey", lambda b: (b["user"],)),
    ("get_conversation", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("lock_conversation", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("get_write_state", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("list_messages_all", "messages_pkey", lambda b: (b["user"], b["conversation"])),
    ("list_conversations", "conversations_user_id_active_at_idx", lambda b: (b["user"], 21)),
    ("list_conversations_before", "conversations_user_id_active_at_idx",
     lambda b: (b["user"], *b["cursor"], 21)),
    ("list_all_conversations", "conversations_user_id_updated_at_idx",
     lambda b: (b["user"], 21)),
    ("list_all_conversations_before", "conversations_user_id_updated_at_idx",
     lambda b: (b["user"], *b["cursor"], 21)),
    ("tree_members", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
    ("alternatives", "messages_pkey", lambda b: (b["user"], b["conversation"], 100)),
    ("find_messages_by_key", "messages_idempotency_key_idx",
     lambda b: (b["user"], b["conversation"], ["k1", "k2"])),
    ("list_messages_newest", "messages_pkey", lambda b: (b["user"], b["conversation"], 51)),
    ("list_messages_before", "messages_pkey",
     lambda b: (b["user"], b["conversation"], 100, 51)),
    ("list_messages_after", "messages_pkey", lambda b: (b["user"], b["conversation"], 100, 51)),
    ("context_messages_by_tokens", "messages_pkey",
     lambda b: (b["user"], b["conversation"], 10_000, 4000)),
    ("context_messages_by_tokens", "messages_summary_through_idx",
     lambda b: (b["user"], b["conversation"], 10_000, 4000)),
    ("view_messages", "messages_pkey", lambda b: (b["user"], b["conversation"], 51)),
    ("view_messages", "messages_summary_through_idx",
     lambda b: (b["user"], b["conversation"], 51)),
    ("newest_summary", "messages_summary_through_idx",
     lambda b: (b["user"], b["conversation"])),
    ("tool_links", "messages_pkey", lambda b: (b["user"], b["conversation"], 100, 200)),
    ("search_messages", "messages_search_idx",
     lambda b: (b["user"], "number 12345", None, 20)),
    ("search_messages", "messages_search_idx",
     lambda b: (b["user"], "number 12345", b["conversation"], 20)),
    # retention: purge's scans across users range over their own indexes
    ("purge_expired", "conversations_expires_at_idx",
     lambda b: (NOW, *PURGE_START, 100)),
    ("purge_idle", "conversations_root_updated_at_idx",
     lambda b: (NOW - timedelta(hours=20), *PURGE_START, 100, NOW)),
    ("oldest_idle_trees", "conversations_root_updated_at_idx",
     lambda b: (*PURGE_START, 100)),
    ("lock_purge_tree", "conversations_pkey", lambda b: (b["user"], b["conversation"])),
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
    """The token-budgeted window walks back by primary-key probes (seq = the next seq, the
    previous one minus one); a plan that scanned or hashed the conversation would cost its
    length on every step."""
    nodes = await explain_at(big["url"], "context_messages_by_tokens", big["user"],
                             big["conversation"], 10_000, 4000, generic=generic)
    probes = [n for n in nodes if n.get("Index Name") == "messages_pkey"]
    assert len(probes) == 1, nodes
    assert re.search(r"seq = walk(_\d+)?\.next_seq\b", probes[0]["Index Cond"]), probes[0]
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
      bare one in ts_rank re-parsed it for every row);
    - the matches are cut to the newest ones (a Limit) before anything re-tokenises them for
      ts_rank: the newest-first sort carries no tsvector, only keys and the text;
    - only keys and rank go through the ranking sort; the best rows are read by primary key.
    """
    nodes = await explain_at(big["url"], "search_messages", big["user"], "number 12345", None, 20,
                             generic=generic, verbose=True)
    scans = [n for n in nodes if n.get("Index Name") == "messages_search_idx"]
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
    sorts = [n for n in nodes if n["Node Type"] == "Sort"
             and any(s["Node Type"] == "Bitmap Heap Scan" for s in subtree(n))]
    newest = [n for n in sorts if "ts_rank" not in n["Sort Key"][0]]
    assert len(newest) == 1 and "created_at" in newest[0]["Sort Key"][0], sorts
    assert "to_tsvector" not in str(newest[0]["Output"]), newest
    ranking = [n for n in sorts if "ts_rank" in n["Sort Key"][0]]
    assert len(ranking) == 1, sorts
    carried = [o for o in ranking[0]["Output"] if "ts_rank" not in o]
    assert not any("content" in o or "item" in o for o in carried), carried
    window = [n for n in subtree(ranking[0]) if n["Node Type"] == "Limit"]
    assert window and newest[0] in subtree(window[0]), ranking
    probes = [n for n in nodes if n.get("Index Name") == "messages_pkey"]
    assert len(probes) == 1 and probes[0]["Node Type"] == "Index Scan", probes
    assert re.search(r"\bseq = ", probes[0]["Index Cond"]), probes[0]
