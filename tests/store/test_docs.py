"""The docs are true: docs/migrating.md's code runs on a real PostgreSQL, the suite runs on the
version it was asked for. What needs no database (the README against the code and the
repository, the Makefile's versions) is in tests/unit/test_docs.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from chatstore.urls import parse_url

from ..conftest import REPO

MIGRATING = REPO / "docs" / "migrating.md"


def doc_files() -> dict[str, str]:
    """docs/migrating.md's code blocks that start with ``# file: NAME``."""
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", MIGRATING.read_text(), re.S)
    return dict(blocks)


def write_files(folder: Path, names: list[str]) -> None:
    files = doc_files()
    for name in names:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[name])


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute(
            b"SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_sqlmodel_init_db_creates_the_apps_tables_then_chatstores(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    url = new_database(template=False)
    write_files(tmp_path, ["init_db.py"])
    env = {**os.environ, "DATABASE_URL": url}
    for expected in ("['0001", "none pending"):
        done = subprocess.run([sys.executable, "init_db.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
    assert {"users", "tasks", "conversations", "messages"} <= tables(url)
    with psycopg.connect(url) as c:  # the app's users table, not chatstore's minimal one
        c.execute(b"INSERT INTO users (id, email) VALUES ('u1', 'u1@example.test')")
        c.execute(b"INSERT INTO conversations (user_id) VALUES ('u1')")


def test_alembic_revision_applies_and_undoes_chatstores_migrations(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    url = new_database(template=False)
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n"
                                          "prepend_sys_path = .\n")
    write_files(tmp_path, ["alembic/env.py", "models.py", "alembic/versions/0001_users.py",
                           "alembic/versions/0002_chatstore.py"])
    # The app's URL as SQLAlchemy apps write it; chatstore reads the same variable.
    env = {**os.environ, "DATABASE_URL": parse_url(url).sqlalchemy()}

    def alembic(*args: str) -> str:
        done = subprocess.run([bin_path("alembic"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    alembic("upgrade", "head")
    both = {"alembic_version", "_yoyo_migration", "users", "tasks", "conversations",
            "messages"}
    assert both <= tables(url)
    # Autogenerate sees no difference: chatstore's and yoyo's tables are left out.
    assert "No new upgrade operations detected" in alembic("check")

    alembic("downgrade", "-1")
    assert {"conversations", "messages"}.isdisjoint(tables(url))
    assert {"users", "tasks", "alembic_version"} <= tables(url)
    alembic("upgrade", "head")
    assert {"conversations", "messages"} <= tables(url)


def test_migrations_need_no_superuser_and_no_extension(
        new_database: Callable[..., str], pg_server: object) -> None:
    """A managed PostgreSQL: the app's role owns its database but is no superuser."""
    for path in (REPO / "migrations").glob("*.sql"):
        assert "EXTENSION" not in path.read_text().upper(), path.name
    admin = new_database(template=False)
    name = admin.split("/")[3].split("?")[0]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(b"DROP ROLE IF EXISTS chat_app")
        c.execute(b"CREATE ROLE chat_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        c.execute(f"ALTER DATABASE {name} OWNER TO chat_app".encode())
        c.execute(b"ALTER SCHEMA public OWNER TO chat_app")
    app = admin.replace("postgresql://postgres@", "postgresql://chat_app@", 1)
    try:
        chatstore = bin_path("chatstore")
        for command in ("migrate", "check"):
            done = subprocess.run([chatstore, command, "--database", app], capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert done.returncode == 0, done.stderr
        with psycopg.connect(app) as c:
            row = c.execute(b"SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone()
            assert row == (False,)
            owner = c.execute(b"SELECT tableowner FROM pg_tables WHERE tablename = 'messages'"
                              ).fetchone()
            assert owner == ("chat_app",)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(b"DROP OWNED BY chat_app CASCADE")
            c.execute(f"ALTER DATABASE {name} OWNER TO postgres".encode())
        with psycopg.connect(admin.replace(f"/{name}?", "/postgres?"),
                             autocommit=True) as c:
            c.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
            c.execute(b"DROP ROLE chat_app")


# -- the versions the suite runs on ---------------------------------------------------


async def test_suite_runs_on_the_requested_major(conn: object) -> None:
    import asyncpg

    assert isinstance(conn, asyncpg.Connection)
    number = int(await conn.fetchval("SHOW server_version_num"))
    assert number >= 150000
    wanted = os.environ.get("CHATSTORE_TEST_PG")
    if wanted and not os.environ.get("CHATSTORE_TEST_DSN"):
        assert number // 10000 == int(wanted)


async def test_the_tree_query_in_docs_api_shows_a_tree(store: Any, conn: Any) -> None:
    """docs/api.md's psql query for a tree lists it parents first, indented by depth."""
    text = (REPO / "docs" / "api.md").read_text()
    query = re.search(r"```sql\n(-- a user's tree.*?)```", text, re.S)
    assert query is not None
    chat = await store.create_conversation("alice", messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    fork = await store.fork("alice", chat.id, at_seq=1)
    deeper = await store.fork("alice", fork.id, at_seq=1)
    other = await store.fork("alice", chat.id, at_seq=0)
    rows = await conn.fetch(query.group(1).replace(":'root'", f"'{chat.id}'"))
    assert [(r["conversation"], r["forked_at"]) for r in rows] == [
        (str(chat.id), None), (f"  {fork.id}", 1), (f"    {deeper.id}", 1),
        (f"  {other.id}", 0)]


async def test_the_usage_queries_in_docs_api_read_the_month_and_check_the_rollups(
        store: Any, conn: Any) -> None:
    """docs/api.md's psql queries for usage: the month by model equals usage_totals, and the
    check lists exactly the rollup rows that disagree with the ledger."""
    text = (REPO / "docs" / "api.md").read_text()
    block = re.search(r"```sql\n(-- a user's month by model.*?)```", text, re.S)
    assert block is not None
    month, check = [part.strip() for part in block.group(1).split(";\n") if part.strip()]
    chat = await store.create_conversation("alice")
    for model, tokens in [("a", 5), ("b", 7), ("a", 1)]:
        await store.record_usage("alice", chat.id, {"model": model, "input_tokens": tokens,
                                                    "cost_micros": 2_000_000})
    rows = await conn.fetch(month)
    assert [(r["model"], r["input"], r["entries"]) for r in rows] == [("a", 6, 2), ("b", 7, 1)]
    assert [float(r["cost"]) for r in rows] == [4.0, 2.0]
    assert await conn.fetch(check) == []
    await conn.execute("UPDATE usage_daily SET input_tokens = input_tokens + 1 "
                       "WHERE model = 'b'")
    assert [r["model"] for r in await conn.fetch(check)] == ["b"]
    await conn.execute("DELETE FROM usage_daily WHERE model = 'a'")  # a missing rollup row
    assert sorted(r["model"] for r in await conn.fetch(check)) == ["a", "b"]


async def test_the_summary_query_in_docs_api_finds_where_the_view_starts(
        store: Any, conn: Any) -> None:
    """docs/api.md's psql query for where a conversation's view starts reads the newest
    summary's text, also when it is an item whose text is stored once (0006)."""
    text = (REPO / "docs" / "api.md").read_text()
    query = re.search(r"```sql\n(SELECT seq, summary_through.*?)```", text, re.S)
    assert query is not None
    chat = await store.create_conversation("alice", messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    await store.compact("alice", chat.id, summary={"role": "system", "content": "first"})
    await store.compact("alice", chat.id, summary={"item": {
        "type": "message", "role": "user", "content": "the newest summary"}})
    row = await conn.fetchrow(query.group(1).replace(":'cid'", f"'{chat.id}'"))
    assert (row["seq"], row["summary_through"], row["summary"]) == (
        4, 3, "the newest summary")
