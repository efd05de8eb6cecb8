"""The Citus layer: chatstore's tests again, on a live Citus cluster.

Set ``CHATSTORE_TEST_CITUS`` to the coordinator's URL (``../shared/citus/cluster.sh start``
prints one; any database of a cluster with its workers added will do). Every test here is
skipped, saying so, without it: Citus is in neither Debian's packages nor PyPI, so CI cannot
run this layer.

The test databases are made the way an operator of an existing Citus application meets
chatstore: in a fresh database on every node (with the citus extension and the workers
added), the backend's ``users`` is a reference table first, then chatstore's migrations run
on the coordinator, then ``chatstore/sql/citus.sql`` (the documented recipe) distributes the
chat tables by ``user_id``. ``db_url`` is one such database per session, emptied before each
test; ``module_db_url`` and ``new_database`` make databases of their own.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chatstore.migrate import apply_migrations

from ..conftest import Server

CITUS_URL = os.environ.get("CHATSTORE_TEST_CITUS")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DISTRIBUTE_SQL = REPO / "chatstore" / "sql" / "citus.sql"
SKIP_REASON = ("Citus layer skipped: CHATSTORE_TEST_CITUS is not set (no live Citus cluster; "
               "Citus is in neither Debian's packages nor PyPI: see docs/scale-out.md)")
_counter = itertools.count()


_RLS = ("row-level security does not work on Citus: chatstore.user_id, set per transaction "
        "on the coordinator, never reaches the workers' sessions (test_rls_limit_on_citus.py "
        "shows it; docs/scale-out.md)")
# Tests of the other layers that do not apply on Citus, by module and name (a prefix of the
# test's name with its parameters), and why. Everything else those modules hold runs here.
NOT_ON_CITUS: dict[tuple[str, str], str] = {
    ("test_queries_on_citus.py", "test_read_statement_plan_uses_its_index"):
        "a single server's plan (index names); each statement's routing on Citus is "
        "test_routing.py's",
    ("test_queries_on_citus.py", "test_token_window_probes_one_message_per_step"):
        "a single server's plan; on Citus the walk runs on the worker (test_routing.py)",
    ("test_queries_on_citus.py", "test_search_plan_follows_the_callers_matches"):
        "a single server's plan; on Citus search runs on the worker (test_routing.py)",
    ("test_usage_on_citus.py", "test_whole_day_totals_read_the_rollups_not_the_ledger"):
        "a single server's plan (EXPLAIN ANALYZE row counts); on Citus the totals run on "
        "the user's worker (test_routing.py)",
    ("test_compaction_on_citus.py",
     "test_the_window_of_a_compacted_long_conversation_reads_what_a_short_one_does"):
        "a single server's plan and buffer counts; on Citus the view's statements run whole "
        "on the user's worker (test_routing.py)",
    ("test_store_on_citus.py", "test_killed_connection_is_connection_lost_then_recovers"):
        "finds the append waiting for a row lock in the coordinator's pg_stat_activity; on "
        "Citus the wait is the worker backend's (test_connection_loss_on_citus.py kills "
        "calls in flight instead)",
    ("test_connection_loss_on_citus.py",
     "test_calls_in_flight_when_killed_report_unknown_then_all_succeed"):
        "terminates the coordinator's backends while their calls wait for a row lock; on "
        "Citus those waits are the workers' backends, and the run hung: this fault is not "
        "reproduced there (killing idle pooled backends is)",
    ("test_cli_on_citus.py", "test_seed_counts_and_reproducibility"):
        "a second seed of the same rows: Citus reports the duplicate key a COPY meets on a "
        "worker as SQLSTATE XX000, not 23505, so chatstore cannot tell it from any other "
        "internal error (it says the database's message, names only)",
    ("test_cli_on_citus.py", "test_status_sizes_versions_and_settings"):
        "sets up TOAST with ALTER TABLE ... SET STORAGE, which Citus does not support",
    ("test_rls_on_citus.py", ""): _RLS,
    ("test_through_pgbouncer_on_citus.py", "[pgbouncer+rls]"): _RLS,
    ("test_trees_through_pgbouncer_on_citus.py", "[pgbouncer+rls]"): _RLS,
    ("test_compaction_through_pgbouncer_on_citus.py", "[pgbouncer+rls]"): _RLS,
    ("test_usage_through_pgbouncer_on_citus.py", "[pgbouncer+rls]"): _RLS,
    ("test_turns_on_citus.py",
     "test_concurrent_appends_under_a_stricter_default_isolation[connect-"):
        "a database whose default isolation is stricter than READ COMMITTED: connect() pins "
        "READ COMMITTED for its sessions on the coordinator, but Citus runs a one-statement "
        "write on the worker's session, which keeps the database's default (docs/scale-out.md)",
}


def _not_on_citus(item: pytest.Item) -> str | None:
    for (module, name), reason in NOT_ON_CITUS.items():
        if item.path.name == module and (name in item.name if name.startswith("[")
                                         else item.name.startswith(name)):
            return reason
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        reason = SKIP_REASON if not CITUS_URL else _not_on_citus(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Node:
    host: str
    port: int


@dataclass
class Cluster:
    """A live Citus cluster: its coordinator as the workers reach it, and its workers."""

    user: str
    local: Node  # the coordinator as the tests reach it (CHATSTORE_TEST_CITUS)
    coordinator: Node  # the coordinator as the workers reach it (pg_dist_node)
    workers: list[Node] = field(default_factory=list)

    def url(self, dbname: str, node: Node | None = None) -> str:
        node = node or self.local
        if node.host.startswith("/"):
            return f"postgresql://{self.user}@/{dbname}?host={node.host}&port={node.port}"
        return f"postgresql://{self.user}@{node.host}:{node.port}/{dbname}"

    def _nodes(self) -> list[Node]:
        return [self.local, *self.workers]

    def create(self, dbname: str) -> str:
        """A new database on every node, with citus in each and the workers added."""
        for node in self._nodes():
            with psycopg.connect(self.url("postgres", node), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"'.encode())
            with psycopg.connect(self.url(dbname, node), autocommit=True) as conn:
                conn.execute(b"SET client_min_messages = warning")
                conn.execute(b"CREATE EXTENSION citus")
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)",
                         (self.coordinator.host, self.coordinator.port))
            for worker in self.workers:
                conn.execute("SELECT citus_add_node(%s, %s)", (worker.host, worker.port))
        return self.url(dbname)

    def drop(self, dbname: str) -> None:
        for node in self._nodes():
            with psycopg.connect(self.url("postgres", node), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'.encode())


def distributed_database(cluster: Cluster, dbname: str) -> str:
    """A database made as an existing Citus application meets chatstore: ``users`` a
    reference table, then the migrations, then chatstore/sql/citus.sql."""
    url = cluster.create(dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE users (id text PRIMARY KEY)")
        conn.execute(b"SELECT create_reference_table('users')")
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"SET client_min_messages = warning")
        conn.execute(DISTRIBUTE_SQL.read_bytes())
    return url


def distribution(url: str) -> dict[str, tuple[str, str]]:
    """Each Citus table's (partmethod, repmodel): ``("h", "s")`` distributed by hash,
    ``("n", "t")`` a reference table, ``("n", "s")`` a local table Citus manages."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(b"SELECT logicalrelid::regclass::text, partmethod::text, "
                            b"repmodel::text FROM pg_dist_partition").fetchall()
    return {name: (method, model) for name, method, model in rows}


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not CITUS_URL:
        pytest.skip(SKIP_REASON)
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(CITUS_URL)
    host = str(info.get("host") or "localhost")
    port = int(info.get("port") or 5432)
    with psycopg.connect(CITUS_URL) as conn:
        rows = conn.execute(b"SELECT nodename, nodeport, groupid FROM pg_dist_node "
                            b"WHERE noderole = 'primary' ORDER BY groupid").fetchall()
    coordinator = next((Node(h, p) for h, p, g in rows if g == 0), Node(host, port))
    workers = [Node(h, p) for h, p, g in rows if g != 0]
    if not workers:
        pytest.skip("the Citus cluster at CHATSTORE_TEST_CITUS has no worker nodes")
    return Cluster(user=str(info.get("user") or "postgres"), local=Node(host, port),
                   coordinator=coordinator, workers=workers)


# What a test may change besides rows: columns, constraints, indexes, row-level security,
# policies, chatstore's function, the database's own settings. A test that changed any gets
# the database replaced.
_FINGERPRINT = b"""
SELECT (SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ','
                          ORDER BY table_name, column_name)
        FROM information_schema.columns
        WHERE table_schema = 'public'
          AND table_name IN ('users', 'conversations', 'messages')),
       (SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint
        WHERE conrelid IN ('users'::regclass, 'conversations'::regclass, 'messages'::regclass)),
       (SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index
        WHERE indrelid IN ('conversations'::regclass, 'messages'::regclass)),
       (SELECT string_agg(relname || relrowsecurity::text || relforcerowsecurity::text, ','
                          ORDER BY relname)
        FROM pg_class WHERE relname IN ('conversations', 'messages')),
       (SELECT count(*) FROM pg_policy),
       (SELECT count(*) FROM pg_proc WHERE proname = 'chatstore_item_text'),
       (SELECT string_agg(array_to_string(setconfig, ' '), ',') FROM pg_db_role_setting
        WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""


def fingerprint(url: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(_FINGERPRINT).fetchone()
    assert row is not None
    return tuple(row)


@dataclass
class SharedDatabase:
    """The session's distributed database, made again after a test that changed more than
    rows (making one takes seconds; emptying one, milliseconds)."""

    cluster: Cluster
    name: str = ""
    url: str = ""
    baseline: tuple[Any, ...] = ()

    def fresh(self) -> str:
        if self.url:
            try:
                unchanged = fingerprint(self.url) == self.baseline
            except psycopg.Error:
                unchanged = False
            if unchanged:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(b"TRUNCATE users CASCADE")
                return self.url
            self.close()
        self.name = f"chatstore_citus_{os.getpid()}_{next(_counter)}"
        self.url = distributed_database(self.cluster, self.name)
        self.baseline = fingerprint(self.url)
        return self.url

    def close(self) -> None:
        if self.name:
            self.cluster.drop(self.name)
            self.name = self.url = ""


@pytest.fixture(scope="session")
def pg_server(cluster: Cluster) -> Server:
    """The coordinator, for fixtures that front the server (tests/faults' pgbouncer)."""
    return Server(host=cluster.local.host, port=cluster.local.port, user=cluster.user,
                  password=None)


@pytest.fixture(scope="session")
def citus_db(cluster: Cluster) -> Iterator[SharedDatabase]:
    shared = SharedDatabase(cluster)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def db_url(citus_db: SharedDatabase) -> str:
    """The session's distributed database, emptied (users cascade to the chat tables), or a
    new one when the previous test changed its schema or settings."""
    return citus_db.fresh()


@pytest.fixture(scope="module")
def module_db_url(cluster: Cluster) -> Iterator[str]:
    name = f"chatstore_citus_{os.getpid()}_{next(_counter)}"
    try:
        yield distributed_database(cluster, name)
    finally:
        cluster.drop(name)


@pytest.fixture
def new_database(cluster: Cluster) -> Iterator[Callable[..., str]]:
    """``new_database(template=True)``: a new distributed, migrated database;
    ``template=False``: a new empty one (citus created, workers added)."""
    names: list[str] = []

    def make(template: bool = True) -> str:
        name = f"chatstore_citus_{os.getpid()}_{next(_counter)}"
        names.append(name)
        return distributed_database(cluster, name) if template else cluster.create(name)

    yield make
    for name in names:
        cluster.drop(name)
