"""The chatstore command's usage and errors, run for real in a subprocess, against a server
that is not there: no database needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..cli import run

UNREACHABLE = "postgresql://u:sekrit@127.0.0.1:1/db"


@pytest.mark.parametrize("url", [
    UNREACHABLE,
    "postgresql+asyncpg://u:sekrit@127.0.0.1:1/db",
    "postgresql://u@127.0.0.1:1/db?password=sekrit",
    "host=127.0.0.1 port=1 dbname=db user=u password=sekrit",
])
@pytest.mark.parametrize("command", ["migrate", "rollback", "status", "check"])
def test_password_is_never_printed(url: str, command: str) -> None:
    result = run("--database", url, command)
    assert result.returncode == 1
    assert "sekrit" not in result.stderr + result.stdout
    assert "chatstore: database postgresql://u:***@127.0.0.1:1/db" in result.stderr


def test_password_is_hidden_in_usage_errors() -> None:
    """A URL typed where no argument goes is quoted back without its password."""
    result = run("migrate", UNREACHABLE)
    assert result.returncode == 2
    assert "unrecognized arguments: postgresql://u:***@127.0.0.1:1/db" in result.stderr
    assert "sekrit" not in result.stderr


SUBCOMMANDS = [["migrate"], ["rollback", "--yes"], ["status"], ["check"], ["demo"],
               ["psql", "-c", "SELECT 1"], ["export", "--user", "x"], ["import", "f.jsonl"],
               ["seed", "--users", "1"]]


@pytest.mark.parametrize("where", ["before", "after", "after, with ="])
@pytest.mark.parametrize("command", SUBCOMMANDS, ids=[c[0] for c in SUBCOMMANDS])
def test_global_options_before_or_after_every_subcommand(command: list[str],
                                                         where: str) -> None:
    if where == "before":
        args = ["--database", UNREACHABLE, *command]
    elif where == "after":
        args = [command[0], "--database", UNREACHABLE, *command[1:]]
    else:
        args = [*command, f"--database={UNREACHABLE}"]
    result = run(*args, env={"CHATSTORE_DSN": "", "DATABASE_URL": ""})
    # Every one of them went to the URL given (and failed there), not the embedded server.
    assert "chatstore: database postgresql://u:***@127.0.0.1:1/db" in result.stderr
    assert "embedded" not in result.stderr
    assert result.returncode != 0 and "sekrit" not in result.stdout + result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--database", "postgresql://nobody@127.0.0.1:1/none", "migrate"], "cannot migrate"),
    (["--database", "mysql://x/y", "demo"], "dsn: the scheme 'mysql://' is not PostgreSQL"),
    (["--database", "postgresql://h:5x/db", "status"], "dsn: the port '5x' is not a number"),
])
def test_errors_are_one_line_and_non_zero(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatstore: error")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["nosuchcommand"], "invalid choice"),
    (["migrate", "--bogus"], "unrecognized arguments: --bogus"),
    (["check", "--lease-grace", "-5"], "must be 0 or more"),
    (["rollback", "--count", "0"], "must be at least 1"),
    (["export"], "the following arguments are required: --user"),
    (["migrate", "--database"], "expected one argument"),
    (["server", "start", "--database", UNREACHABLE], "--database does not apply to server"),
    (["--database", UNREACHABLE, "migrations-dir"], "does not apply to migrations-dir"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_seed_refuses_non_positive_sizes() -> None:
    result = run("--database", "postgresql://nobody@127.0.0.1:1/none", "seed", "--users", "0")
    assert result.returncode == 2
    assert "--users: must be at least 1, got 0" in result.stderr


def test_migrations_dir_prints_the_folder_of_the_migrations() -> None:
    result = run("migrations-dir")
    assert result.returncode == 0
    folder = Path(result.stdout.strip())
    assert (folder / "0001.create-chat-tables.sql").is_file()
    assert (folder / "0001.create-chat-tables.rollback.sql").is_file()


def fake_psql(folder: Path) -> dict[str, str]:
    """A `psql` first on PATH that prints the arguments it was given, one a line."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "psql"
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"ARG $a\"; done\n")
    script.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.parametrize("where", ["before psql's arguments", "after them", "with ="])
def test_psql_dbname_connects_to_another_database_on_the_same_server(
        tmp_path: Path, where: str) -> None:
    url = "postgresql://u:sekrit@127.0.0.1:1/db?sslmode=disable"
    if where == "before psql's arguments":
        args = ["--database", url, "psql", "--dbname", "todo_chatbot", "-c", "SELECT 1"]
    elif where == "after them":
        args = ["psql", "-c", "SELECT 1", "--database", url, "--dbname", "todo_chatbot"]
    else:
        args = ["psql", "--dbname=todo_chatbot", "-c", "SELECT 1", f"--database={url}"]
    result = run(*args, env=fake_psql(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ARG postgresql://u@127.0.0.1:1/todo_chatbot?sslmode=disable", "ARG -c", "ARG SELECT 1"]
    assert "chatstore: database postgresql://u:***@127.0.0.1:1/todo_chatbot" in result.stderr
    assert "sekrit" not in result.stdout + result.stderr
    # Past a `--`, psql's own --dbname is psql's.
    passed = run("--database", url, "psql", "--", "--dbname", "x", env=fake_psql(tmp_path))
    assert passed.stdout.splitlines()[1:] == ["ARG --dbname", "ARG x"]
    assert "--dbname" in run("psql", "--help").stdout


def test_server_url_does_not_start_a_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"CHATSTORE_HOME": str(home), "CHATSTORE_DSN": "", "DATABASE_URL": ""}
    result = run("server", "url", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "is not running" in result.stderr and "--start" in result.stderr
    assert not (home / "pg16").exists()  # nothing was made, let alone started
    refused = run("server", "status", "--start", env=env)
    assert refused.returncode == 2 and "--start applies to `server url` only" in refused.stderr
