"""chatstore's SQL, shipped in the wheel: the named statements of ``queries.sql`` (loaded once
into :data:`SQL`, one attribute per statement, and :data:`QUERIES`, name to text) and the
row-level-security policies of ``rls.sql``.

``SQL``'s attributes are declared in ``_statements.py``, generated from ``queries.sql`` by
``chatstore/sql/generate.py`` (``--check``, run by ``make lint``, fails when it is stale), so
mypy refuses a misspelt statement name; loading fails at import if the two disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from ._statements import Statements

__all__ = ["QUERIES", "SQL", "Statements", "parse_queries"]

_HEADER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$", re.MULTILINE)
QUERIES_FILE: Final = Path(__file__).with_name("queries.sql")
RLS_FILE: Final = Path(__file__).with_name("rls.sql")


def parse_queries(text: str) -> Mapping[str, str]:
    """Split ``text`` into ``{name: statement}`` at ``-- name --`` header lines.

    Comment lines inside a block are kept out of the statement; a trailing ``;`` is dropped.
    :raises ValueError: on a duplicate name or an empty block.
    """
    found: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)]
        lines = [line for line in body.splitlines() if line.strip() and
                 not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";").strip()
        name = header.group(1)
        if name in found:
            raise ValueError(f"statement {name!r} is defined twice")
        if not statement:
            raise ValueError(f"statement {name!r} is empty")
        found[name] = statement
    return MappingProxyType(found)


QUERIES: Final[Mapping[str, str]] = parse_queries(QUERIES_FILE.read_text(encoding="utf-8"))
SQL: Final = Statements(**QUERIES)
