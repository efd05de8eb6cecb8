"""chatstore/queries.sql as a file: every statement is listed with its columns, and the parser
refuses what it must. No database needed."""

from __future__ import annotations

import pytest

from chatstore.sql import QUERIES, parse_queries

from ..query_columns import COLUMNS


def test_every_statement_is_listed_here() -> None:
    assert set(QUERIES) == set(COLUMNS)


def test_parse_queries_rejects_duplicates_and_empty_blocks() -> None:
    assert dict(parse_queries("-- a --\nSELECT 1;\n-- b --\n-- just a comment\nSELECT 2;")) == {
        "a": "SELECT 1", "b": "SELECT 2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- a --\nSELECT 1;\n-- a --\nSELECT 2;")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- a --\n-- nothing\n")
