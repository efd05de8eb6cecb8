"""The schema chatstore needs, as one manifest: the tables and columns the migrations
create (newest migration included). ``ChatStore.check_schema`` and ``chatstore check``
(:mod:`chatstore.doctor`) both diff the database against it with :func:`schema_gaps`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import asyncpg

__all__ = ["EXPECTED_COLUMNS", "schema_gaps"]

EXPECTED_COLUMNS: Final[Mapping[str, frozenset[str]]] = {
    "users": frozenset({"id"}),
    "conversations": frozenset({
        "user_id", "id", "title", "metadata", "message_count", "created_at", "updated_at",
        "revision", "turn_token", "turn_expires_at", "turn_base_count", "root_id", "parent_id",
        "forked_at", "current_id", "path_owners", "path_ends", "forks_updated_at",
        "expires_at", "held"}),
    "messages": frozenset({
        "user_id", "conversation_id", "seq", "role", "content", "tool_calls", "tool_call_id",
        "metadata", "token_count", "idempotency_key", "created_at", "item", "summary_through"}),
    "usage_entries": frozenset({
        "user_id", "created_at", "id", "conversation_id", "idempotency_key", "model",
        "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
        "requests", "cost_micros", "metadata"}),
    "usage_daily": frozenset({
        "user_id", "day", "model", "input_tokens", "output_tokens", "cached_input_tokens",
        "reasoning_tokens", "requests", "cost_micros", "entries"}),
    "usage_conversation_daily": frozenset({
        "user_id", "conversation_id", "day", "model", "input_tokens", "output_tokens",
        "cached_input_tokens", "reasoning_tokens", "requests", "cost_micros", "entries"}),
}


def schema_gaps(rows: Iterable[asyncpg.Record]) -> dict[str, list[str] | None]:
    """What the database lacks, from ``SQL.check_schema``'s rows (table_name, column_name):
    for each table with a gap, ``None`` when the table is missing, else its missing
    columns, sorted."""
    present: dict[str, set[str]] = {}
    for row in rows:
        present.setdefault(row["table_name"], set()).add(row["column_name"])
    gaps: dict[str, list[str] | None] = {}
    for table, columns in EXPECTED_COLUMNS.items():
        if table not in present:
            gaps[table] = None
        elif columns - present[table]:
            gaps[table] = sorted(columns - present[table])
    return gaps
