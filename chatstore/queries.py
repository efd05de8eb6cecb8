"""chatstore's named SQL statements, loaded once from ``queries.sql``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = ["QUERIES", "parse_queries"]

_HEADER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$", re.MULTILINE)


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


QUERIES: Mapping[str, str] = parse_queries(
    (Path(__file__).with_name("queries.sql")).read_text(encoding="utf-8")
)
