"""The chatstore command, run for real in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..cli import CHATSTORE, run
from ..conftest import REPO


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
    # The conversation list: the index plan it promises, or why a tiny table is read whole
    # followed by the plan at scale.
    conversations = first.stdout.split("Newest 20 conversations of the user", 1)[1]
    assert "Index Scan Backward using conversations_user_id_active_at_idx" in conversations
    if "Bitmap Heap Scan" in conversations or "Seq Scan" in conversations:
        assert "Not the index: conversations fills only 1 page(s)" in conversations
        assert "the plan at scale" in conversations

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
    assert re.search(r"rows  conversations that are forks +0\n", status.stdout), status.stdout


def test_psql_passes_its_arguments(new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    result = run("--database", url, "psql", "-c", "SELECT 1 AS one")
    assert result.returncode == 0 and "one" in result.stdout
    after = run("psql", "--database", url, "-c", "SELECT current_database() AS here")
    assert after.returncode == 0 and url.split("/")[3].split("?")[0] in after.stdout


def test_psql_dbname_opens_another_database_of_the_server(
        new_database: Callable[..., str]) -> None:
    url = new_database(template=False)
    other = new_database(template=False).split("/")[3].split("?")[0]
    result = run("--database", url, "psql", "-At", "-c", "SELECT current_database()",
                 "--dbname", other)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == other


def test_psql_gets_the_password_through_the_environment(
        new_database: Callable[..., str]) -> None:
    """psql's own command line (what `ps` shows) has no password; PGPASSWORD has it. psql
    runs a shell (\\!) that reads its parent's /proc entries."""
    url = new_database(template=False).replace("postgres@", "postgres:sekrit@", 1)
    assert ":sekrit@" in url  # the test server trusts local users: any password connects
    result = run("--database", url, "psql", "-c",
                 "\\! tr '\\0' '\\n' < /proc/$PPID/cmdline; echo ENV; "
                 "tr '\\0' '\\n' < /proc/$PPID/environ | grep '^PGPASSWORD='")
    assert result.returncode == 0, result.stderr
    argv, _, environ = result.stdout.rpartition("\nENV\n")
    assert "psql" in argv and "postgresql://postgres@/" in argv
    assert "sekrit" not in argv
    assert environ.split() == ["PGPASSWORD=sekrit"]


def test_embedded_server_in_a_fresh_home(tmp_path: Path) -> None:
    env = {"CHATSTORE_HOME": str(tmp_path / "home"), "CHATSTORE_DSN": "", "DATABASE_URL": ""}
    result = run("demo", env=env)
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL" in result.stderr
    assert "Transcript of 'Todo assistant #1'" in result.stdout
    status = run("server", "status", env=env)
    assert "stopped" in status.stdout  # the demo stops the server it started

    not_running = run("server", "url", env=env)
    assert not_running.returncode == 1 and "is not running" in not_running.stderr
    assert "stopped" in run("server", "status", env=env).stdout  # `url` started nothing

    started = run("server", "start", env=env)
    assert started.returncode == 0, started.stderr
    url = run("server", "url", env=env).stdout.strip()
    assert url.startswith("postgresql://postgres@/postgres?host=")
    assert url in started.stdout  # the same URL `start` printed
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
    # Asked to, `url` starts it, and says so.
    asked = run("server", "url", "--start", env=env)
    assert asked.returncode == 0 and asked.stdout.strip() == url, asked.stderr
    assert "started the embedded PostgreSQL" in asked.stderr
    assert "running" in run("server", "status", env=env).stdout
    assert run("server", "stop", env=env).returncode == 0


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


# -- rollback, migrations-dir, status ----------------------------------------------------

def test_rollback_lists_what_it_drops_and_refuses_without_a_terminal(
        new_database: Callable[..., str]) -> None:
    url = migrated(new_database)
    assert run("--database", url, "seed", "--users", "1", "--conversations", "3",
               "--messages", "7", "--seed", "1").returncode == 0
    refused = run("--database", url, "rollback")
    assert refused.returncode == 1
    assert ("will roll back: 0006.smaller-item-rows, 0005.add-usage-retention-compaction, "
            "0004.add-conversation-trees, 0003.add-search-vector, "
            "0002.add-revisions-turns-items, 0001.create-chat-tables") in refused.stdout
    assert ("0005.add-usage-retention-compaction: drops tables usage_entries, usage_daily "
            "and usage_conversation_daily") in refused.stdout
    assert "drops columns conversations.expires_at and held" in refused.stdout
    assert "drops column messages.summary_through" in refused.stdout
    assert "0004.add-conversation-trees: drops columns conversations.root_id" in refused.stdout
    assert "0003.add-search-vector: drops column messages.search_vector" in refused.stdout
    assert ("0006.smaller-item-rows: drops function chatstore_item_text and index "
            "messages_search_idx") in refused.stdout
    assert "drops table messages (21 rows) and table conversations (3 rows)" in refused.stdout
    assert "confirm on a terminal, or pass --yes" in refused.stderr
    assert count(url, "SELECT count(*) FROM messages") == 21  # nothing dropped

    smaller = run("rollback", "--count", "1", "--yes", "--database", url)
    assert smaller.returncode == 0, smaller.stderr
    assert "rolled back 0006.smaller-item-rows" in smaller.stdout
    usage = run("rollback", "--count", "1", "--yes", "--database", url)
    assert usage.returncode == 0, usage.stderr
    assert "rolled back 0005.add-usage-retention-compaction" in usage.stdout
    trees = run("rollback", "--count", "1", "--yes", "--database", url)
    assert trees.returncode == 0, trees.stderr
    assert "rolled back 0004.add-conversation-trees" in trees.stdout
    search = run("rollback", "--count", "1", "--yes", "--database", url)
    assert search.returncode == 0, search.stderr
    assert "rolled back 0003.add-search-vector" in search.stdout
    assert count(url, "SELECT count(*) FROM messages") == 21

    newest = run("rollback", "--count", "1", "--yes", "--database", url)
    assert newest.returncode == 0, newest.stderr
    assert "0002.add-revisions-turns-items: deletes 0 message(s) with no chat form" in (
        newest.stdout)
    assert "rolled back 0002.add-revisions-turns-items" in newest.stdout
    assert "0001" not in newest.stdout.split("will roll back:")[1].splitlines()[0]
    assert count(url, "SELECT count(*) FROM messages") == 21

    everything = run("rollback", "--yes", "--database", url)
    assert everything.returncode == 0
    assert "rolled back 0001.create-chat-tables" in everything.stdout
    assert count(url, "SELECT count(*) FROM pg_class WHERE relname = 'messages'") == 0
    assert "nothing to roll back" in run("rollback", "--database", url).stdout


@pytest.mark.parametrize(("answer", "dropped"), [("no\n", False), ("yes\n", True)])
def test_rollback_asks_on_a_terminal(new_database: Callable[..., str], answer: str,
                                     dropped: bool) -> None:
    import pty

    url = migrated(new_database)
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([CHATSTORE, "rollback", "--database", url], stdin=follower,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(leader, answer.encode())
        out, err = process.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert "Type 'yes' to roll back" in out, err
    assert process.returncode == (0 if dropped else 1)
    assert ("rolled back 0001.create-chat-tables" in out) is dropped
    assert count(url, "SELECT count(*) FROM pg_class WHERE relname = 'messages'") == (
        0 if dropped else 1)


def test_status_sizes_versions_and_settings(new_database: Callable[..., str]) -> None:
    url = migrated(new_database)
    assert run("--database", url, "seed", "--users", "2", "--conversations", "5",
               "--messages", "60", "--seed", "3").returncode == 0
    big = "x" * 30_000  # compressible, but over the TOAST threshold: lands in TOAST
    with __import__("psycopg").connect(url) as c:
        c.execute(b"ALTER TABLE messages ALTER COLUMN content SET STORAGE EXTERNAL")
        c.execute(b"UPDATE messages SET content = %s WHERE seq = 1", [big])
        c.execute(b"ALTER TABLE users ADD COLUMN padding text")
        c.execute(b"INSERT INTO users (id, padding) SELECT 'pad-' || i, repeat('p', 400) "
                  b"FROM generate_series(1, 8000) AS i")
        version = c.execute(b"SHOW server_version").fetchone()
        assert version is not None
    status = run("status", "--database", url)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert f"PostgreSQL {version[0]}" in lines
    assert "pending migrations: none" in lines
    assert "settings: nothing needs attention" in lines
    header = next(line for line in lines if "toast" in line)
    assert header.split() == ["table", "toast", "indexes", "total"]
    row = next(line for line in lines if line.startswith("size  messages"))
    scale = {"bytes": 1 / 1024, "KiB": 1, "MiB": 1024, "GiB": 1024 ** 2}
    cells = row.split()[2:]
    table, toast, indexes, total = (float(v) * scale[u] for v, u in zip(cells[::2],
                                                                       cells[1::2],
                                                                       strict=True))
    assert toast > 100 and indexes > 100
    # Rounded to 0.1 of each one's unit: the parts add up.
    assert abs(table + toast + indexes - total) < (0.2 if total < 1024 else 0.1 * 1024)
    # The total is chatstore's tables only: the backend's `users` (grown here to ~4 MiB)
    # is neither listed nor counted.
    def kib(cells: list[str]) -> float:
        return float(cells[0]) * scale[cells[1]]

    totals = {line.split()[1]: kib(line.split()[-2:]) for line in lines
              if line.startswith("size  ") and "all chatstore tables" not in line}
    assert set(totals) == {"conversations", "messages", "usage_entries", "usage_daily",
                           "usage_conversation_daily"}
    everything = next(line for line in lines if line.startswith("size  all chatstore tables"))
    assert abs(kib(everything.split()[-2:]) - sum(totals.values())) < 0.2 * 1024
    assert kib(everything.split()[-2:]) < 3 * 1024

    name = url.split("/")[3].split("?")[0]
    with __import__("psycopg").connect(url, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = "
                  "'serializable'".encode())
    warned = run("status", "--database", url)
    assert "settings: 1 need(s) attention" in warned.stdout
    assert "! default_transaction_isolation is 'serializable'" in warned.stdout


# -- purge -------------------------------------------------------------------------------

def _retention_rows(url: str) -> None:
    """Two users' conversations: an idle tree (root and fork), an expired one, a held idle
    one, and an active one."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(b"""
            INSERT INTO users (id) VALUES ('alice'), ('bob');
            INSERT INTO conversations (user_id, id, message_count, updated_at, expires_at,
                                       held)
            VALUES ('alice', '00000000-0000-0000-0000-000000000001', 2,
                    now() - interval '100 days', NULL, false),
                   ('alice', '00000000-0000-0000-0000-000000000003', 1, now(),
                    now() - interval '1 hour', false),
                   ('bob', '00000000-0000-0000-0000-000000000004', 1,
                    now() - interval '100 days', NULL, true),
                   ('bob', '00000000-0000-0000-0000-000000000005', 1, now(), NULL, false);
            INSERT INTO conversations (user_id, id, message_count, updated_at, root_id,
                                       parent_id, forked_at, path_owners, path_ends)
            VALUES ('alice', '00000000-0000-0000-0000-000000000002', 2,
                    now() - interval '95 days', '00000000-0000-0000-0000-000000000001',
                    '00000000-0000-0000-0000-000000000001', 1,
                    '{00000000-0000-0000-0000-000000000001}', '{1}');
            INSERT INTO messages (user_id, conversation_id, seq, role, content)
            SELECT c.user_id, c.id, n, 'user', 'm' FROM conversations c,
                   generate_series(1, c.message_count) AS n WHERE c.root_id IS NULL;
            INSERT INTO messages (user_id, conversation_id, seq, role, content)
            VALUES ('alice', '00000000-0000-0000-0000-000000000002', 2, 'user', 'f');""")


def test_purge_previews_refuses_without_a_terminal_and_deletes_with_yes(
        new_database: Callable[..., str]) -> None:
    url = migrated(new_database)
    _retention_rows(url)
    assert run("--database", url, "purge").returncode == 2  # nothing asked for
    assert run("--database", url, "purge", "--idle-for", "soon").returncode == 2
    dry = run("purge", "--idle-for", "90d", "--expired", "--dry-run", "--database", url)
    assert dry.returncode == 0, dry.stderr
    assert "idle for more than 90 days and expired" in dry.stdout
    assert ("would delete 2 tree(s): 3 conversation(s), 4 message(s); skipped 1 held"
            in dry.stdout)
    refused = run("purge", "--idle-for", "90d", "--expired", "--database", url)
    assert refused.returncode == 1
    assert "confirm on a terminal, or pass --yes" in refused.stderr
    assert count(url, "SELECT count(*) FROM conversations") == 5
    idle_only = run("purge", "--idle-for", "2160h", "--yes", "--database", url)
    assert idle_only.returncode == 0, idle_only.stderr
    assert "deleted 1 tree(s): 2 conversation(s), 3 message(s); skipped 1 held" in (
        idle_only.stdout)
    assert "messages/s" in idle_only.stdout
    everything = run("purge", "--expired", "--yes", "--database", url)
    assert "deleted 1 tree(s): 1 conversation(s), 1 message(s); skipped none" in (
        everything.stdout)
    assert count(url, "SELECT count(*) FROM conversations") == 2
    assert "nothing to delete" in run("purge", "--expired", "--idle-for", "1d",
                                      "--database", url).stdout


@pytest.mark.parametrize(("answer", "deleted"), [("no\n", False), ("yes\n", True)])
def test_purge_asks_on_a_terminal(new_database: Callable[..., str], answer: str,
                                  deleted: bool) -> None:
    import pty

    url = migrated(new_database)
    _retention_rows(url)
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([CHATSTORE, "purge", "--idle-for", "90d", "--database",
                                    url], stdin=follower, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        os.write(leader, answer.encode())
        out, err = process.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert "would delete 1 tree(s): 2 conversation(s)" in out, err
    assert "Type 'yes' to delete" in out
    assert process.returncode == (0 if deleted else 1)
    assert ("deleted 1 tree(s)" in out) is deleted
    assert count(url, "SELECT count(*) FROM conversations") == (3 if deleted else 5)


def test_status_shows_the_conversation_idle_longest(new_database: Callable[..., str]) -> None:
    url = migrated(new_database)
    empty = run("status", "--database", url)
    assert re.search(r"idle  oldest activity of a conversation +none \(no conversations\)",
                     empty.stdout), empty.stdout
    _retention_rows(url)
    # the tree idle longest is bob's held one (100 days): alice's root is as old, but her
    # fork was active 95 days ago
    status = run("status", "--database", url)
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if line.startswith("idle"))
    assert "(100.0 days ago): conversation 00000000-0000-0000-0000-000000000004 of user " \
           "'bob'" in line, line
