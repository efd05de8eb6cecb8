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
