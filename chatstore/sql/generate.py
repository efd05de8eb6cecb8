"""``python chatstore/sql/generate.py [--check]``: write ``_statements.py`` from
``queries.sql`` (``--check``: exit 1, writing nothing, when the file is not what it would
write). A script that imports nothing of chatstore, which cannot load without the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_HEADER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$", re.MULTILINE)
_HERE = Path(__file__).parent
TARGET = _HERE / "_statements.py"


def render(queries_sql: str) -> str:
    """The source of ``_statements.py`` for the statements named in ``queries_sql``."""
    names = _HEADER.findall(queries_sql)
    fields = "".join(f"    {name}: str\n" for name in names)
    return (
        '"""The names of chatstore\'s SQL statements, one attribute each (text: the '
        "statement).\n\nGenerated from queries.sql by chatstore/sql/generate.py; do not "
        'edit."""\n\nfrom __future__ import annotations\n\nfrom dataclasses import '
        "dataclass\n\n\n@dataclass(frozen=True, slots=True)\nclass Statements:\n"
        f"{fields}"
    )


def main(argv: list[str]) -> int:
    wanted = render((_HERE / "queries.sql").read_text(encoding="utf-8"))
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if "--check" in argv:
        if current != wanted:
            print(f"{TARGET} is out of date with queries.sql: run "
                  "`python chatstore/sql/generate.py`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        TARGET.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
