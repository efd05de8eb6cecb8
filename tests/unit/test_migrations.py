"""The migration files and the wheel that carries them; yoyo's URL: no database needed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chatstore.migrate import migrations_dir, yoyo_url

from ..conftest import REPO


def test_every_migration_has_a_rollback() -> None:
    folder = migrations_dir()
    forward = sorted(p for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    assert forward, "no migrations found"
    for path in forward:
        assert path.with_suffix(".rollback.sql").exists(), f"{path.name} has no rollback"


def test_yoyo_url_rejects_other_schemes() -> None:
    assert yoyo_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert yoyo_url("postgresql+asyncpg://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match="mysql"):
        yoyo_url("mysql://u@h/db")


def test_wheel_carries_the_migrations(tmp_path: Path) -> None:
    """A non-editable install must be able to migrate: the wheel holds the migration files."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("chatstore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in sorted(migrations_dir().glob("*.sql")):
        assert f"chatstore/_migrations/{path.name}" in names
    assert "chatstore/py.typed" in names


def test_every_rollback_says_what_it_destroys() -> None:
    """`chatstore rollback` lists what it drops from each rollback file's `-- destroys:`
    comment line, its placeholders filled from count_chat_rows' columns; a migration
    without the line points at its file."""
    from string import Formatter

    from chatstore.cli.commands import destroys_line, rollback_effects

    from ..query_columns import COLUMNS

    for ident in sorted(p.name.removesuffix(".rollback.sql")
                        for p in migrations_dir().glob("*.rollback.sql")):
        line = destroys_line(migrations_dir() / f"{ident}.rollback.sql")
        assert line, f"{ident}.rollback.sql has no '-- destroys:' line"
        placeholders = {name for _, name, _, _ in Formatter().parse(line) if name is not None}
        assert placeholders <= COLUMNS["count_chat_rows"], (ident, placeholders)
    counts = {"conversations": 3, "messages": 21, "messages_without_role": 2}
    assert rollback_effects(["0001.create-chat-tables", "9999.not-here"], counts) == [
        "0001.create-chat-tables: drops table messages (21 rows) and table conversations "
        "(3 rows); keeps users",
        f"9999.not-here: see {migrations_dir() / '9999.not-here.rollback.sql'}",
    ]
