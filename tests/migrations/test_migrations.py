"""Migrations: schema.sql equals the migrations, rollbacks are clean, backend tables untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from chatstore.migrate import (
    apply_migrations,
    pending_migrations,
    rollback_migrations,
    yoyo_url,
)

from ..conftest import REPO

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
    """`yoyo apply --database URL` run from the root needs no other flag (yoyo.ini), says
    what it applied and rolled back, and, with no terminal to ask on, rolls back only the
    newest migration unless told --all."""
    url = new_database(template=False)
    run_sql(url, BACKEND_DDL)
    before = backend_snapshot(url, schema_dump)
    yoyo = str(Path(sys.executable).parent / "yoyo")
    env = {**os.environ, "HOME": str(REPO)}  # no user-level yoyo settings

    def run_yoyo(*args: str) -> str:
        done = subprocess.run([yoyo, *args, "--database", yoyo_url(url)], cwd=REPO, env=env,
                              check=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        return done.stdout + done.stderr

    applied = run_yoyo("apply")
    for ident in MIGRATIONS:
        assert f"Applying {ident}" in applied, applied
    one = run_yoyo("rollback")
    assert f"Rolling back {MIGRATIONS[-1]}" in one and "Only rolling back a single" in one
    assert rows(url, "SELECT count(*) FROM _yoyo_migration") == [(len(MIGRATIONS) - 1,)]
    everything = run_yoyo("rollback", "--all")
    assert f"Rolling back {MIGRATIONS[0]}" in everything
    assert rows(url, "SELECT to_regclass('messages')") == [(None,)]
    assert backend_snapshot(url, schema_dump) == before
    run_yoyo("apply")

    assert rows(url, "SELECT count(*) FROM _yoyo_migration") == [(len(MIGRATIONS),)]
    assert backend_snapshot(url, schema_dump) == before


def test_yoyo_rollback_on_a_terminal_asks_first(new_database: Callable[..., str]) -> None:
    """yoyo.ini leaves batch mode to yoyo: on a terminal `yoyo rollback` asks before each
    migration, and answering q (cancel) drops nothing."""
    import pty
    import select

    url = new_database()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "yoyo"), "rollback", "--database", yoyo_url(url)],
        cwd=REPO, env={**os.environ, "HOME": str(REPO)}, stdin=follower, stdout=follower,
        stderr=follower)
    os.close(follower)
    seen = b""
    try:
        while b"Shall I rollback this migration?" not in seen:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, f"no prompt from yoyo: {seen!r}"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: yoyo ended
                chunk = b""
            assert chunk, f"yoyo ended without asking: {seen!r}"
            seen += chunk
        os.write(leader, b"q")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert f"[{MIGRATIONS[-1]}]".encode() in seen
    assert rows(url, "SELECT count(*) FROM _yoyo_migration") == [(len(MIGRATIONS),)]
    assert rows(url, "SELECT to_regclass('messages') IS NOT NULL") == [(True,)]


def test_schema_dump_ignores_what_is_not_chatstores(
    new_database: Callable[..., str], schema_dump: Dump
) -> None:
    """What a distribution or managed service adds to every database (here: a schema and a
    helper function) does not make two chatstore schemas differ."""
    plain = new_database()
    extended = new_database()
    run_sql(extended, """CREATE SCHEMA vendor_tools;
        CREATE FUNCTION public.vendor_helper() RETURNS int LANGUAGE sql AS 'SELECT 1';""")
    assert schema_dump(plain) == schema_dump(extended)
    assert "vendor_helper" in schema_dump(extended, "--schema=public")


def test_installed_wheel_migrates_and_rolls_back_outside_the_repository(
    tmp_path: Path, new_database: Callable[..., str]
) -> None:
    """From a wheel install (no checkout): `chatstore migrate`, `rollback --yes`,
    `migrations-dir` and apply_migrations() work in a folder that is not the repository."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("chatstore-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True,
                   text=True)
    elsewhere = tmp_path / "app"
    elsewhere.mkdir()
    # The wheel's copy comes first on the path; the dependencies come from this venv.
    env = {**os.environ, "PYTHONPATH": str(site), "CHATSTORE_DSN": "", "DATABASE_URL": ""}

    def chatstore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chatstore.cli", *args], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    folder = chatstore("migrations-dir")
    assert folder.returncode == 0, folder.stderr
    assert Path(folder.stdout.strip()) == site / "chatstore" / "_migrations"

    url = new_database(template=False)
    migrated = chatstore("migrate", "--database", url)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.split()[1::2] == MIGRATIONS
    rolled = chatstore("rollback", "--yes", "--database", url)
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolled back {MIGRATIONS[0]}" in rolled.stdout
    assert rows(url, "SELECT to_regclass('messages')") == [(None,)]

    from_code = subprocess.run(
        [sys.executable, "-c", "import sys, chatstore.migrate as m; "
         "print(m.__file__); print(m.apply_migrations(sys.argv[1]))", url],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert from_code.stdout.startswith(str(site))
    assert str(MIGRATIONS) in from_code.stdout


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
    assert apply_migrations(url, target="0003.add-search-vector") == [
        "0003.add-search-vector"]
    assert rows(url, SEARCH) == [(1,)]  # bob's milk does not carry alice's lexeme
    assert rollback_migrations(url, count=1) == ["0003.add-search-vector"]
    assert rows(url, "SELECT count(*) FROM messages") == [(3,)]
    assert rows(url, "SELECT to_regclass('messages_content_fts_idx') IS NOT NULL") == [(True,)]


TREES = "0004.add-conversation-trees"
USAGE = "0005.add-usage-retention-compaction"


def test_0004_makes_every_conversation_a_root_and_rolls_back_only_without_forks(
    new_database: Callable[..., str]
) -> None:
    """Conversations written before 0004 become roots of one-conversation trees (nothing in
    them changes); rolling back works with no forks and refuses, saying why, with one."""
    url = new_database(template=False)
    apply_migrations(url, target="0003.add-search-vector")
    run_sql(url, """INSERT INTO users (id) VALUES ('alice');
        INSERT INTO conversations (user_id, id, message_count, revision)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 3);
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'hi');""")
    before = rows(url, "SELECT id, message_count, revision, updated_at FROM conversations")
    assert apply_migrations(url, target=TREES) == [TREES]
    assert rows(url, "SELECT id, message_count, revision, updated_at FROM conversations") == (
        before)
    assert rows(url, "SELECT root_id, parent_id, current_id, path_owners FROM conversations"
                ) == [(None, None, None, None)]
    assert rollback_migrations(url, count=1) == [TREES]
    assert rows(url, "SELECT count(*) FROM messages") == [(1,)]
    assert apply_migrations(url, target=TREES) == [TREES]
    run_sql(url, """INSERT INTO conversations (user_id, id, message_count, root_id, parent_id,
                                               forked_at, path_owners, path_ends)
        VALUES ('alice', '00000000-0000-0000-0000-000000000002', 1,
                '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000001',
                1, '{00000000-0000-0000-0000-000000000001}', '{1}')""")
    with pytest.raises(Exception, match="cannot roll back 0004: 1 conversation"):
        rollback_migrations(url, count=1)
    assert rows(url, "SELECT count(*) FROM conversations") == [(2,)]


def test_0005_usage_tables_upgrade_a_0004_database_and_roll_back(
    new_database: Callable[..., str]
) -> None:
    """0005 adds the usage ledger and its rollups beside existing chats (which it leaves as
    they are); rolling it back drops the three tables and nothing else."""
    url = new_database(template=False)
    apply_migrations(url, target=TREES)
    run_sql(url, """INSERT INTO users (id) VALUES ('alice');
        INSERT INTO conversations (user_id, id, message_count)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 0);""")
    before = rows(url, "SELECT id, message_count, revision, updated_at FROM conversations")
    assert apply_migrations(url, target=USAGE) == [USAGE]
    run_sql(url, """INSERT INTO usage_entries (user_id, conversation_id, model, input_tokens)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 'm', 5)""")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        run_sql(url, """INSERT INTO usage_daily (user_id, day, model)
            VALUES ('nobody', '2026-01-01', 'm')""")
    assert rollback_migrations(url, count=1) == ["0005.add-usage-retention-compaction"]
    assert rows(url, "SELECT to_regclass('usage_entries'), to_regclass('usage_daily'), "
                     "to_regclass('usage_conversation_daily')") == [(None, None, None)]
    assert rows(url, "SELECT id, message_count, revision, updated_at FROM conversations") == (
        before)


def test_0005_retention_gives_no_expiry_and_no_hold_and_rolls_back(
    new_database: Callable[..., str]
) -> None:
    """Retention's part of 0005: conversations written before it have no expiry and no
    hold, and are otherwise unchanged; an expiry lives on roots only; rolling back drops
    both columns and keeps every row."""
    url = new_database(template=False)
    apply_migrations(url, target="0004.add-conversation-trees")
    run_sql(url, """INSERT INTO users (id) VALUES ('alice');
        INSERT INTO conversations (user_id, id, message_count, revision)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 3);
        INSERT INTO conversations (user_id, id, message_count, root_id, parent_id, forked_at,
                                   path_owners, path_ends)
        VALUES ('alice', '00000000-0000-0000-0000-000000000002', 1,
                '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000001',
                1, '{00000000-0000-0000-0000-000000000001}', '{1}');
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'hi');""")
    before = rows(url, "SELECT id, message_count, revision, updated_at FROM conversations "
                       "ORDER BY id")
    assert apply_migrations(url, target=USAGE) == [USAGE]
    assert rows(url, "SELECT id, message_count, revision, updated_at FROM conversations "
                     "ORDER BY id") == before
    assert rows(url, "SELECT expires_at, held FROM conversations ORDER BY id") == [
        (None, False), (None, False)]
    with pytest.raises(psycopg.errors.CheckViolation):
        run_sql(url, "UPDATE conversations SET expires_at = now() "
                     "WHERE id = '00000000-0000-0000-0000-000000000002'")
    run_sql(url, "UPDATE conversations SET expires_at = now(), held = true "
                 "WHERE id = '00000000-0000-0000-0000-000000000001'")
    assert rollback_migrations(url, count=1) == ["0005.add-usage-retention-compaction"]
    assert rows(url, "SELECT count(*) FROM information_schema.columns WHERE table_name = "
                     "'conversations' AND column_name IN ('expires_at', 'held')") == [(0,)]
    assert rows(url, "SELECT count(*) FROM conversations") == [(2,)]
    assert rows(url, "SELECT count(*) FROM messages") == [(1,)]


def test_0005_compaction_keeps_every_message_and_rolls_back_to_ordinary_messages(
    new_database: Callable[..., str]
) -> None:
    """Messages written before 0005 are ordinary (no summary); a summary's seq must come
    after what it summarizes; rolling back keeps every message (a summary stays, as an
    ordinary message)."""
    url = new_database(template=False)
    apply_migrations(url, target="0004.add-conversation-trees")
    run_sql(url, """INSERT INTO users (id) VALUES ('alice');
        INSERT INTO conversations (user_id, id, message_count)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1);
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'hi');""")
    assert apply_migrations(url, target=USAGE) == [USAGE]
    assert rows(url, "SELECT summary_through FROM messages") == [(None,)]
    with pytest.raises(Exception, match="messages_summary_through_check"):
        run_sql(url, """INSERT INTO messages (user_id, conversation_id, seq, role, content,
                                              summary_through)
            VALUES ('alice', '00000000-0000-0000-0000-000000000001', 2, 'user', 's', 2)""")
    run_sql(url, """UPDATE conversations SET message_count = 2;
        INSERT INTO messages (user_id, conversation_id, seq, role, content, summary_through)
        VALUES ('alice', '00000000-0000-0000-0000-000000000001', 2, 'system', 'sum', 1)""")
    assert rollback_migrations(url, count=1) == ["0005.add-usage-retention-compaction"]
    assert rows(url, "SELECT seq, content FROM messages ORDER BY seq") == [
        (1, "hi"), (2, "sum")]
    assert rows(url, "SELECT count(*) FROM information_schema.columns "
                     "WHERE table_name = 'messages' AND column_name = 'summary_through'"
                ) == [(0,)]


SMALLER = "0006.smaller-item-rows"
ITEM_ROWS = """INSERT INTO users (id) VALUES ('alice'), ('bob');
    INSERT INTO conversations (user_id, id, message_count)
    VALUES ('alice', '00000000-0000-0000-0000-000000000001', 6),
           ('bob', '00000000-0000-0000-0000-000000000002', 1);
    INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                          tool_call_id, item)
    VALUES ('alice', '00000000-0000-0000-0000-000000000001', 1, 'user', 'buy milk', NULL,
            NULL, '{"role": "user", "content": "buy milk"}'),
           ('alice', '00000000-0000-0000-0000-000000000001', 2, 'assistant', 'milk added',
            NULL, NULL, '{"type": "message", "role": "assistant", "content":
                          [{"type": "output_text", "text": "milk added"}]}'),
           ('alice', '00000000-0000-0000-0000-000000000001', 3, 'assistant', E'a\\nmilk',
            NULL, NULL, '{"type": "message", "role": "assistant", "content":
                          [{"type": "output_text", "text": "a"},
                           {"type": "output_text", "text": "milk"}]}'),
           ('alice', '00000000-0000-0000-0000-000000000001', 4, 'assistant', NULL,
            '[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]',
            NULL, '{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}'),
           ('alice', '00000000-0000-0000-0000-000000000001', 5, 'tool', 'milk ok', NULL, 'c1',
            '{"type": "function_call_output", "call_id": "c1", "output": "milk ok"}'),
           ('alice', '00000000-0000-0000-0000-000000000001', 6, 'user', 'plain milk', NULL,
            NULL, NULL),
           ('bob', '00000000-0000-0000-0000-000000000002', 1, 'user', 'milk', NULL, NULL,
            '{"role": "user", "content": "milk"}');"""
TEXTS = """SELECT user_id, seq, COALESCE(content, chatstore_item_text(item)) FROM messages
    ORDER BY user_id, seq"""
ITEM_SEARCH = """SELECT seq FROM messages WHERE user_id = 'alice'
    AND (to_tsvector('simple'::regconfig, COALESCE(content, chatstore_item_text(item), ''))
         || array_to_tsvector(ARRAY[' ' || md5(user_id)]))
        @@ (websearch_to_tsquery('simple', 'milk') && quote_literal(' ' || md5('alice'))::tsquery)
    ORDER BY seq"""


def test_0006_stores_item_text_once_and_rolls_back_with_every_text(
    new_database: Callable[..., str]
) -> None:
    """0006 empties content where it repeats a message item's text (a string, or one text
    part), leaving every other row as it was; reads through chatstore_item_text give every
    text back, search finds them without the stored vector; rolling back writes the texts
    back into content and restores the vector."""
    url = new_database(template=False)
    apply_migrations(url, target=USAGE)
    run_sql(url, ITEM_ROWS)
    before = rows(url, "SELECT user_id, seq, content FROM messages ORDER BY user_id, seq")
    assert apply_migrations(url, target=SMALLER) == [SMALLER]
    stored = rows(url, "SELECT user_id, seq, content FROM messages ORDER BY user_id, seq")
    assert [r[2] for r in stored] == [None, None, "a\nmilk", None, "milk ok", "plain milk",
                                      None]
    assert rows(url, TEXTS) == before
    assert rows(url, ITEM_SEARCH) == [(1,), (2,), (3,), (5,), (6,)]  # not bob's milk
    assert rows(url, "SELECT to_regclass('messages_search_vector_idx')") == [(None,)]
    assert rollback_migrations(url, count=1) == [SMALLER]
    assert rows(url, "SELECT user_id, seq, content FROM messages ORDER BY user_id, seq") == (
        before)
    assert sorted(rows(url, SEARCH)) == [(1,), (2,), (3,), (5,), (6,)]
    assert rows(url, "SELECT to_regprocedure('chatstore_item_text(jsonb)')") == [(None,)]
