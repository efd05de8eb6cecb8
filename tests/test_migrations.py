"""Migrations: schema.sql equals the migrations, rollbacks are clean, backend tables untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from chatstore.migrate import (
    apply_migrations,
    migrations_dir,
    pending_migrations,
    rollback_migrations,
    yoyo_url,
)

from .conftest import REPO

MIGRATIONS = sorted(p.name.removesuffix(".sql") for p in (REPO / "migrations").glob("*.sql")
                    if not p.name.endswith(".rollback.sql"))

pytestmark = pytest.mark.migration

Dump = Callable[..., str]

# A typical backend's own tables, as a FastAPI todo app would have them before chatstore.
BACKEND_DDL = """
CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tasks (
    id serial PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false
);
INSERT INTO users (id, email) VALUES ('alice', 'alice@example.test'), ('bob', 'bob@example.test');
INSERT INTO tasks (user_id, title) VALUES ('alice', 'buy milk'), ('bob', 'write tests'),
                                          ('alice', 'call mum');
"""


def run_sql(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.encode())


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as c:
        return c.execute(sql.encode()).fetchall()


def backend_snapshot(url: str, schema_dump: Dump) -> tuple[str, object, object]:
    return (
        schema_dump(url, "--table=users", "--table=tasks"),
        rows(url, "SELECT * FROM users ORDER BY id"),
        rows(url, "SELECT * FROM tasks ORDER BY id"),
    )


def test_schema_sql_equals_migrations(new_database: Callable[..., str], schema_dump: Dump) -> None:
    from_sql = new_database(template=False)
    run_sql(from_sql, (REPO / "sql" / "schema.sql").read_text())
    from_migrations = new_database(template=False)
    assert apply_migrations(from_migrations) == MIGRATIONS

    dumped = schema_dump(from_sql)
    assert "CREATE TABLE public.messages" in dumped
    assert dumped == schema_dump(from_migrations)


def test_apply_rollback_apply_is_stable_and_keeps_backend_tables(
    new_database: Callable[..., str], schema_dump: Dump
) -> None:
    url = new_database(template=False)
    run_sql(url, BACKEND_DDL)
    before = backend_snapshot(url, schema_dump)

    apply_migrations(url)
    applied = schema_dump(url)
    run_sql(url, "INSERT INTO conversations (user_id, title) VALUES ('alice', 'hi')")

    assert rollback_migrations(url) == MIGRATIONS[::-1]
    assert rows(url, "SELECT to_regclass('conversations'), to_regclass('messages')") == [
        (None, None)
    ]
    assert backend_snapshot(url, schema_dump) == before
    assert pending_migrations(url) == MIGRATIONS

    apply_migrations(url)
    assert schema_dump(url) == applied


def test_migrations_leave_existing_users_and_tasks_identical(
    new_database: Callable[..., str], schema_dump: Dump
) -> None:
    url = new_database(template=False)
    run_sql(url, BACKEND_DDL)
    before = backend_snapshot(url, schema_dump)

    apply_migrations(url)

    assert backend_snapshot(url, schema_dump) == before
    # The chat tables hang off the existing users table.
    run_sql(url, "INSERT INTO conversations (user_id) VALUES ('bob')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        run_sql(url, "INSERT INTO conversations (user_id) VALUES ('nobody')")


def test_first_migration_creates_users_when_absent(new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    apply_migrations(url)
    assert rows(url, "SELECT obj_description('users'::regclass)")[0][0]
    rollback_migrations(url)
    # users belongs to the backend from then on: a rollback never drops it.
    assert rows(url, "SELECT to_regclass('users') IS NOT NULL") == [(True,)]


def test_applying_twice_is_a_no_op(new_database: Callable[..., str], schema_dump: Dump) -> None:
    url = new_database(template=False)
    apply_migrations(url)
    first = schema_dump(url)
    assert apply_migrations(url) == []
    assert pending_migrations(url) == []
    assert schema_dump(url) == first


def test_yoyo_command_line_from_repository_root(
    new_database: Callable[..., str], schema_dump: Dump
) -> None:
    """`yoyo apply --database URL` run from the root needs no other flag (yoyo.ini)."""
    url = new_database(template=False)
    run_sql(url, BACKEND_DDL)
    before = backend_snapshot(url, schema_dump)
    yoyo = str(Path(sys.executable).parent / "yoyo")
    env = {**os.environ, "HOME": str(REPO)}  # no user-level yoyo settings

    for verb in ("apply", "rollback", "apply"):
        flags = ["--all"] if verb == "rollback" else []
        subprocess.run([yoyo, verb, *flags, "--database", yoyo_url(url)], cwd=REPO, env=env,
                       check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if verb == "rollback":
            assert rows(url, "SELECT to_regclass('messages')") == [(None,)]
            assert backend_snapshot(url, schema_dump) == before

    assert rows(url, "SELECT count(*) FROM _yoyo_migration") == [(len(MIGRATIONS),)]
    assert backend_snapshot(url, schema_dump) == before


def test_every_migration_has_a_rollback() -> None:
    folder = migrations_dir()
    forward = sorted(p for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    assert forward, "no migrations found"
    for path in forward:
        assert path.with_suffix(".rollback.sql").exists(), f"{path.name} has no rollback"


def test_yoyo_url_rejects_other_schemes() -> None:
    assert yoyo_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
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


def test_0002_upgrades_a_0001_database_and_rolls_back_with_items(
    new_database: Callable[..., str]
) -> None:
    """Data written under 0001 survives 0002; rolling 0002 back drops only the items that
    0001 cannot hold (no chat form) and recounts nothing else."""
    url = new_database(template=False)
    assert apply_migrations(url, target="0001.create-chat-tables") == [
        "0001.create-chat-tables"]
    run_sql(url, """INSERT INTO users (id) VALUES ('alice');
        INSERT INTO conversations (user_id, id, message_count)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1);
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'hi');""")
    assert apply_migrations(url, target="0002.add-revisions-turns-items") == [
        "0002.add-revisions-turns-items"]
    assert rows(url, "SELECT revision, turn_token FROM conversations") == [(0, None)]
    run_sql(url, """INSERT INTO messages (user_id, conversation_id, seq, role, item)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 2, NULL,
                '{"type": "reasoning", "summary": []}')""")
    assert rollback_migrations(url, count=1) == ["0002.add-revisions-turns-items"]
    assert rows(url, "SELECT seq, role, content FROM messages") == [(1, "user", "hi")]


SEARCH = """SELECT seq FROM messages WHERE user_id = 'alice'
    AND search_vector @@ (websearch_to_tsquery('simple', 'milk')
                          && quote_literal(' ' || md5('alice'))::tsquery)"""


def test_0003_fills_the_search_vector_of_existing_rows_and_rolls_back(
    new_database: Callable[..., str]
) -> None:
    """Rows written before 0003 get their search vector (query words plus the owner lexeme);
    rolling back restores the expression index and keeps every message."""
    url = new_database(template=False)
    apply_migrations(url, target="0002.add-revisions-turns-items")
    run_sql(url, """INSERT INTO users (id) VALUES ('alice'), ('bob');
        INSERT INTO conversations (user_id, id, message_count)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 2),
               ('bob', '00000000-0000-0000-0000-000000000002', 1);
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'buy milk'),
               ('alice', '00000000-0000-0000-0000-000000000001', 2, 'user', 'no'),
               ('bob', '00000000-0000-0000-0000-000000000002', 1, 'user', 'milk too');""")
    assert apply_migrations(url) == ["0003.add-search-vector"]
    assert rows(url, SEARCH) == [(1,)]  # bob's milk does not carry alice's lexeme
    assert rollback_migrations(url, count=1) == ["0003.add-search-vector"]
    assert rows(url, "SELECT count(*) FROM messages") == [(3,)]
    assert rows(url, "SELECT to_regclass('messages_content_fts_idx') IS NOT NULL") == [(True,)]
