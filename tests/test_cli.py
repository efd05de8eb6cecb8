"""The chatstore command, run for real in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

CHATSTORE = str(Path(sys.executable).parent / "chatstore")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHATSTORE, *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_demo_twice_on_a_database(new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    first = run("--database", url, "demo")
    assert first.returncode == 0, first.stderr
    assert "database postgresql://" in first.stderr
    assert "applied 0001.create-chat-tables" in first.stdout
    assert "tool: {\"ok\": true, \"task_id\": 1}" in first.stdout
    assert "[calls add_task(" in first.stdout
    assert "Index Scan Backward using messages_pkey" in first.stdout
    assert "Execution Time" in first.stdout

    second = run("--database", url, "demo")
    assert second.returncode == 0, second.stderr
    assert "Migrations: up to date" in second.stdout
    assert "The demo ran here before (1 demo conversation(s))" in second.stdout
    assert "Todo assistant #2" in second.stdout


def test_migrate_and_status(new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    before = run("--database", url, "status")
    assert before.returncode == 0, before.stderr
    assert "applied migrations: none" in before.stdout
    names = sorted(p.name.removesuffix(".sql") for p in (REPO / "migrations").glob("*.sql")
                   if not p.name.endswith(".rollback.sql"))
    assert names[:2] == ["0001.create-chat-tables", "0002.add-revisions-turns-items"]
    assert f"pending migrations: {', '.join(names)} (run `chatstore migrate`)" in before.stdout
    migrated = run("--database", url, "migrate")
    assert migrated.stdout.split() == [word for name in names for word in ("applied", name)]
    again = run("--database", url, "migrate")
    assert "nothing to apply" in again.stdout
    status = run("--database", url, "status")
    assert f"applied migrations: {', '.join(names)}" in status.stdout
    assert "pending migrations: none" in status.stdout
    assert "index messages_pkey" in status.stdout and "rows  messages" in status.stdout


def test_password_is_hidden() -> None:
    result = run("--database", "postgresql://u:sekrit@127.0.0.1:1/db", "migrate")
    assert "sekrit" not in result.stderr + result.stdout
    assert ":***@" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--database", "postgresql://nobody@127.0.0.1:1/none", "migrate"], "cannot migrate"),
    (["--database", "mysql://x/y", "demo"], "not a PostgreSQL URL"),
])
def test_errors_are_one_line_and_non_zero(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatstore: error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_psql_passes_its_arguments(new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    result = run("--database", url, "psql", "-c", "SELECT 1 AS one")
    assert result.returncode == 0 and "one" in result.stdout


def test_embedded_server_in_a_fresh_home(tmp_path: Path) -> None:
    env = {"CHATSTORE_HOME": str(tmp_path / "home"), "CHATSTORE_DSN": "", "DATABASE_URL": ""}
    result = run("demo", env=env)
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL" in result.stderr
    assert "Transcript of 'Todo assistant #1'" in result.stdout
    status = run("server", "status", env=env)
    assert "stopped" in status.stdout  # the demo stops the server it started

    started = run("server", "start", env=env)
    assert started.returncode == 0, started.stderr
    url = run("server", "url", env=env).stdout.strip()
    assert url.startswith("postgresql://postgres@/postgres?host=")
    assert "running" in run("server", "status", env=env).stdout
    # A command on the running server leaves it running.
    assert run("status", env=env).returncode == 0
    assert "running" in run("server", "status", env=env).stdout
    stopped = run("server", "stop", env=env)
    assert "stopped the embedded PostgreSQL" in stopped.stdout, stopped.stderr
    assert "stopped" in run("server", "status", env=env).stdout
    pid_file = Path(env["CHATSTORE_HOME"]) / "pg16" / "postmaster.pid"
    assert not pid_file.exists()
    assert "is not running" in run("server", "stop", env=env).stdout


def migrated(new_database: Callable[..., str]) -> str:
    return new_database(template=True)


def count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url) as c:
        row = c.execute(sql.encode()).fetchone()
        assert row is not None
        return int(row[0])


def test_seed_counts_and_reproducibility(new_database: Callable[..., str]) -> None:
    url = migrated(new_database)
    result = run("--database", url, "seed", "--users", "2", "--conversations", "3",
                 "--messages", "40", "--seed", "9", "--user-prefix", "a-")
    assert result.returncode == 0, result.stderr
    assert "seeded 2 user(s), 6 conversation(s), 240 message(s)" in result.stdout
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert count(url, "SELECT count(*) FROM users WHERE id LIKE 'a-%'") == 2
    assert count(url, "SELECT count(*) FROM conversations WHERE message_count = 40") == 6
    assert count(url, "SELECT count(*) FROM messages") == 240
    # Gap-free seqs, tool results answer a call, some tool calls exist.
    assert count(url, "SELECT count(*) FROM (SELECT conversation_id FROM messages "
                      "GROUP BY conversation_id HAVING max(seq) = 40 AND count(*) = 40) x") == 6
    assert count(url, "SELECT count(*) FROM messages WHERE tool_calls IS NOT NULL") > 0
    assert count(url, "SELECT count(*) FROM messages WHERE token_count IS NULL") == 0

    again = run("--database", url, "seed", "--users", "2", "--conversations", "3",
                "--messages", "40", "--seed", "9", "--user-prefix", "b-")
    assert again.returncode == 0, again.stderr
    same = ("SELECT md5(string_agg(role || coalesce(content, '') || seq, ',' "
            "ORDER BY user_id, created_at, seq)) FROM messages WHERE user_id LIKE '{}-%'")
    import psycopg

    with psycopg.connect(url) as c:
        a = c.execute(same.format("a").encode()).fetchone()
        b = c.execute(same.format("b").encode()).fetchone()
    assert a == b

    clash = run("--database", url, "seed", "--users", "2", "--conversations", "3",
                "--messages", "40", "--seed", "9", "--user-prefix", "a-")
    assert clash.returncode == 1 and "exist already" in clash.stderr


def test_export_import_round_trip_is_identical_and_idempotent(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    source = migrated(new_database)
    assert run("--database", source, "seed", "--users", "1", "--conversations", "4",
               "--messages", "30", "--seed", "5", "--user-prefix", "u-").returncode == 0
    first = tmp_path / "first.jsonl"
    exported = run("--database", source, "export", "--user", "u-000001", "--out", str(first))
    assert exported.returncode == 0, exported.stderr
    assert "exported 4 conversation(s), 120 message(s)" in exported.stderr
    lines = first.read_text().splitlines()
    assert len(lines) == 4 and '"tool_call_id"' in first.read_text()

    target = migrated(new_database)
    refused = run("--database", target, "import", str(first))
    assert refused.returncode == 1 and "--create-users" in refused.stderr
    imported = run("--database", target, "import", str(first), "--create-users")
    assert imported.returncode == 0, imported.stderr
    assert "imported 4 of 4 conversation(s) and 120 of 120 message(s)" in imported.stdout
    assert "created 1 user(s)" in imported.stdout
    twice = run("--database", target, "import", str(first))
    assert "imported 0 of 4 conversation(s) and 0 of 120" in twice.stdout
    assert count(target, "SELECT count(*) FROM messages") == 120

    second = tmp_path / "second.jsonl"
    assert run("--database", target, "export", "--user", "u-000001",
               "--out", str(second)).returncode == 0
    assert second.read_bytes() == first.read_bytes()
    to_stdout = run("--database", target, "export", "--user", "u-000001")
    assert to_stdout.stdout.encode() == first.read_bytes()


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda line: line[:-5], "line 3: is not JSON"),
    (lambda line: line.replace('"role":"user"', '"role":"wizard"', 1), "line 3"),
    (lambda line: line.replace('"seq":2,', '"seq":7,', 1), "line 3"),
    (lambda line: line.replace('"message_count":30', '"message_count":31', 1), "line 3"),
])
def test_malformed_import_names_the_line_and_imports_nothing(
        new_database: Callable[..., str], tmp_path: Path, corrupt: Any, message: str) -> None:
    source = migrated(new_database)
    run("--database", source, "seed", "--users", "1", "--conversations", "4", "--messages",
        "30", "--seed", "5", "--user-prefix", "u-")
    good = tmp_path / "good.jsonl"
    run("--database", source, "export", "--user", "u-000001", "--out", str(good))
    lines = good.read_text().splitlines()
    lines[2] = corrupt(lines[2])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")

    target = migrated(new_database)
    result = run("--database", target, "import", str(bad), "--create-users")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert count(target, "SELECT count(*) FROM conversations") == 0
    assert count(target, "SELECT count(*) FROM users") == 0


def test_seed_refuses_non_positive_sizes() -> None:
    result = run("--database", "postgresql://nobody@127.0.0.1:1/none", "seed", "--users", "0")
    assert result.returncode == 2
    assert "--users: must be at least 1, got 0" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["export", "--user", "ghost"], "user 'ghost' not found"),
    (["import", "/nonexistent/file.jsonl"], "cannot read /nonexistent/file.jsonl"),
])
def test_operational_errors(new_database: Callable[..., str], args: list[str],
                            message: str) -> None:
    result = run("--database", migrated(new_database), *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_unmigrated_database_says_which_command_fixes_it(
        new_database: Callable[..., str]) -> None:
    result = run("--database", new_database(template=False), "export", "--user", "x")
    assert result.returncode == 1
    assert "chatstore migrate" in result.stderr and "Traceback" not in result.stderr
