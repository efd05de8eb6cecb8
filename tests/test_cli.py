"""The chatstore command, run for real in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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
    assert "pending migrations: 0001.create-chat-tables" in before.stdout
    migrated = run("--database", url, "migrate")
    assert migrated.stdout.strip() == "applied 0001.create-chat-tables"
    again = run("--database", url, "migrate")
    assert "nothing to apply" in again.stdout
    status = run("--database", url, "status")
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
