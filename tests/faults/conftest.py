"""Fixtures of the faults layer: a real pgbouncer in transaction mode, a non-owner role for
row-level security, and helpers that kill backends.

pgbouncer is Debian's ``pgbouncer`` package (``.ci/run`` installs it). It is started here on
loopback, in front of the test server; as root it runs as the embedded server's system user
(pgbouncer refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pglast
import pytest

import chatstore
from chatstore import ChatStore

from ..conftest import Server

REPO = Path(__file__).resolve().parents[2]
RLS_SQL = REPO / "chatstore" / "sql" / "rls.sql"
APP_ROLE = "chatstore_faults_app"  # a non-owner role without BYPASSRLS


async def apply_rls(conn: asyncpg.Connection, *roles: str) -> None:
    """Apply chatstore/sql/rls.sql to the connection's database, and make each role (LOGIN,
    no BYPASSRLS, owning nothing; made once per cluster) able to use the chat tables.

    One statement at a time, as psql runs the file (Citus refuses to propagate DDL sent as
    one multi-statement string)."""
    for statement in pglast.split(RLS_SQL.read_text()):
        await conn.execute(statement)
    for role in roles:
        await conn.execute(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN NOBYPASSRLS;
              END IF;
            END $$""")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, messages, usage_entries, "
            f"usage_daily, usage_conversation_daily TO {role}")
        await conn.execute(f"GRANT SELECT ON users TO {role}")
POOL_SIZE = 12  # pgbouncer's server connections per database and role


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The user pgbouncer runs as: ourselves, or (as root) the owner of the server's socket
    folder, who can reach the socket (pgbouncer refuses root)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("CHATSTORE_TEST_PGBOUNCER_USER") or "nobody"


class Bouncer:
    """A running pgbouncer: ``url(db_url)`` is the same database through it."""

    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, db_url: str, user: str | None = None) -> str:
        dbname = urlsplit(db_url).path.lstrip("/")
        who = quote(user or "postgres", safe="")
        return f"postgresql://{who}@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="module")
def pgbouncer(pg_server: Server) -> Iterator[Bouncer]:
    """pgbouncer 1.x in ``pool_mode = transaction`` on loopback, in front of the test server."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
    if pg_server.password:
        pytest.skip("pgbouncer fixture: the test server needs a password; use the embedded one")
    folder = Path(tempfile.mkdtemp(prefix="chatstore-pgbouncer-"))
    port = _free_port()
    run_as = _run_as()
    if run_as is not None and pg_server.host.startswith("/"):
        # The embedded server's socket folder belongs to its system user: run as that one.
        run_as = pwd.getpwuid(Path(pg_server.host).stat().st_uid).pw_name
    (folder / "users.txt").write_text(
        f'"{pg_server.user}" ""\n"{APP_ROLE}" ""\n"{APP_ROLE}_other" ""\n')
    (folder / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={pg_server.host} port={pg_server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
max_client_conn = 400
query_wait_timeout = 20
# Every test has a database of its own: let server connections to finished ones go soon,
# or they pile up to the server's max_connections.
server_idle_timeout = 1
default_pool_size = {POOL_SIZE}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
""")
    command = [binary, str(folder / "pgbouncer.ini")]
    if run_as is not None:
        shutil.chown(folder, user=run_as)
        for path in folder.iterdir():
            shutil.chown(path, user=run_as)
        command[1:1] = ["-u", run_as]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    out = process.stdout.read().decode() if process.stdout else ""
                    log = (folder / "pgbouncer.log")
                    raise RuntimeError("pgbouncer did not start: " + out
                                       + (log.read_text() if log.exists() else "")) from None
                time.sleep(0.05)
        yield Bouncer(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def alice_store(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[ChatStore]:
    """A store on this test's database, with users alice and bob."""
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    store = await chatstore.connect(db_url, min_size=1, max_size=4)
    try:
        yield store
    finally:
        await store.close()


async def backends(conn: asyncpg.Connection, *, but: int | None = None) -> list[int]:
    """Pids of the other client backends on this test's database."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    return [r["pid"] for r in rows if r["pid"] != but]


async def kill_backends(conn: asyncpg.Connection) -> int:
    """pg_terminate_backend every other client backend on this database; how many."""
    pids = await backends(conn)
    for pid in pids:
        await conn.fetchval("SELECT pg_terminate_backend($1::integer)", pid)
    return len(pids)


def message(text: str, **extra: object) -> dict[str, object]:
    return {"role": "user", "content": text, **extra}

