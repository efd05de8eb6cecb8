"""Citus-safe SQL: no statement in queries.sql carries or casts to a table's row type.

Citus rewrites a distributed table's name to its shard's (``messages_102052``) on one side of
a statement only, so a row-type value (``NULL::messages``, ``m AS message``, ``(message).*``)
fails with ``42846: could not convert type messages_102052 to messages``. Columns by name work
everywhere. Pure text check, no database.
"""

from __future__ import annotations

import re

import pytest

from chatstore.sql import QUERIES

TABLES = ("users", "conversations", "messages")
_COMMENT = re.compile(r"--[^\n]*")
_STRING = re.compile(r"'(?:[^']|'')*'")
_ALIAS = re.compile(
    r"\b(?:FROM|JOIN|UPDATE|INTO)\s+(?:ONLY\s+)?(" + "|".join(TABLES) + r")\b"
    r"(?:\s+(?:AS\s+)?(?!(?:WHERE|ON|SET|USING|JOIN|LEFT|RIGHT|INNER|CROSS|FULL|NATURAL|"
    r"GROUP|ORDER|LIMIT|RETURNING|VALUES|SELECT|FOR|WINDOW|UNION|HAVING|OFFSET)\b)(\w+))?",
    re.IGNORECASE)
# Where a table's name is a table (or a new output name: `count(*) AS messages`), not a value.
_KEYWORDS_BEFORE_TABLE = ("FROM", "JOIN", "UPDATE", "INTO", "TABLE", "ONLY", "REFERENCES",
                          "AS")


def row_type_uses(sql: str) -> list[str]:
    """What in ``sql`` carries or casts to a table's row type (empty: Citus-safe)."""
    text = _STRING.sub("''", _COMMENT.sub("", sql))
    if text.lstrip().upper().startswith("ANALYZE"):
        return []  # a utility statement: it names tables, it carries no values
    found: list[str] = []
    for table in TABLES:
        # A cast to the row type or its array: ::messages, ::public.messages, ::messages[]
        found += [m.group(0) for m in re.finditer(
            rf"::\s*(?:\w+\.)?{table}\b(?!\s*\.)", text, re.IGNORECASE)]
        # The table's name as a value (SELECT messages FROM messages, row_to_json(messages))
        for m in re.finditer(rf"(?<![\w.\"]){table}(?![\w\"])", text, re.IGNORECASE):
            before = text[:m.start()].rstrip().split()
            after = text[m.end():].lstrip()
            if before and before[-1].upper() in _KEYWORDS_BEFORE_TABLE:
                continue
            if after.startswith(".") or (before and before[-1].startswith("::")):
                continue
            found.append(f"{table} used as a value")
    # A composite expanded by (x).* or (x).column
    found += [m.group(0) for m in re.finditer(r"\(\s*\w+\s*\)\s*\.\s*(?:\*|\w+)", text)]
    # A table alias used as a value (m AS message, row_to_json(m), ... m, ...)
    for m in _ALIAS.finditer(text):
        alias = m.group(2)
        if not alias:
            continue
        uses = [u for u in re.finditer(rf"(?<![\w.]){re.escape(alias)}(?![\w])", text)
                if not text[u.end():].lstrip().startswith(".")]
        if len(uses) > 1:  # more than its own declaration
            found.append(f"alias {alias} of {m.group(1)} used as a value")
    return found


@pytest.mark.parametrize("sql", [
    "SELECT NULL::messages AS message FROM conversations c WHERE c.user_id = $1",
    "SELECT m AS message FROM messages m WHERE m.user_id = $1",
    "SELECT (message).* FROM walk",
    "SELECT row_to_json(c) FROM conversations c WHERE c.user_id = $1",
    "SELECT x::public.conversations FROM t",
    "SELECT ARRAY[]::messages[]",
    "SELECT messages FROM messages WHERE user_id = $1",
])
def test_the_check_catches_row_types(sql: str) -> None:
    assert row_type_uses(sql), sql


@pytest.mark.parametrize("sql", [
    "SELECT m.seq, m.content AS message FROM messages m WHERE m.user_id = $1",
    "INSERT INTO messages (user_id, seq) SELECT $1, s FROM unnest($2::integer[]) AS s",
    "UPDATE conversations SET message_count = 0 WHERE user_id = $1 -- NULL::messages",
    "SELECT 'x::messages' AS note, message_count FROM conversations WHERE user_id = $1",
    "DELETE FROM conversations c WHERE c.user_id = $1 RETURNING c.id",
    "SELECT (SELECT count(*) FROM messages) AS messages",
])
def test_the_check_passes_columns_by_name(sql: str) -> None:
    assert row_type_uses(sql) == [], sql


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_no_statement_carries_a_row_type(name: str) -> None:
    assert row_type_uses(QUERIES[name]) == [], name
