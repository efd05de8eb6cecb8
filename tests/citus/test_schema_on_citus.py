"""chatstore's migrations on a live Citus cluster, in both orders an operator meets, and what
the documented recipe (chatstore/sql/citus.sql) leaves behind."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from chatstore.migrate import apply_migrations, migration_status

from .conftest import DISTRIBUTE_SQL, Cluster, distribution

CHAT_TABLES = {"users": ("n", "t"), "conversations": ("h", "s"), "messages": ("h", "s")}
# 0005's usage tables: distributed by the recipe, or by 0005 itself when it runs after it.
DISTRIBUTED = {**CHAT_TABLES, "usage_entries": ("h", "s"), "usage_daily": ("h", "s"),
               "usage_conversation_daily": ("h", "s")}


@pytest.fixture
def fresh(cluster: Cluster) -> Iterator[str]:
    name = f"chatstore_citus_order_{os.getpid()}"
    try:
        yield cluster.create(name)
    finally:
        cluster.drop(name)


def run_recipe(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"SET client_min_messages = warning")
        conn.execute(DISTRIBUTE_SQL.read_bytes())


def colocated(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(b"SELECT count(DISTINCT colocationid) FROM pg_dist_partition "
                           b"WHERE partmethod = 'h'").fetchone()
    return row == (1,)


def test_users_a_reference_table_before_the_migrations(fresh: str) -> None:
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE users (id text PRIMARY KEY)")
        conn.execute(b"SELECT create_reference_table('users')")
    apply_migrations(fresh)  # Citus manages the chat tables from 0001 on (their foreign key)
    assert distribution(fresh)["conversations"] == ("n", "s")
    run_recipe(fresh)
    run_recipe(fresh)  # safe to run again
    assert distribution(fresh) == DISTRIBUTED and colocated(fresh)
    assert migration_status(fresh)[1] == []


def test_chat_tables_distributed_between_migrations(fresh: str, cluster: Cluster) -> None:
    """An operator who distributed after 0001 (users a plain table until then), then applies
    the later migrations on the coordinator; 0006's function reaches every node."""
    apply_migrations(fresh, target="0001.create-chat-tables")
    assert "conversations" not in distribution(fresh)
    run_recipe(fresh)
    assert distribution(fresh) == CHAT_TABLES
    apply_migrations(fresh)
    applied, pending = migration_status(fresh)
    assert pending == [] and len(applied) >= 3
    assert distribution(fresh) == DISTRIBUTED and colocated(fresh)
    name = f"chatstore_citus_order_{os.getpid()}"  # the fixture's database
    for node in cluster.workers:
        with psycopg.connect(cluster.url(name, node)) as conn:
            row = conn.execute(b"SELECT to_regprocedure('chatstore_item_text(jsonb)') "
                               b"IS NOT NULL").fetchone()
        assert row == (True,), node


def test_users_distributed_by_id(fresh: str) -> None:
    """A users table too big to copy to every node: distributed by id, the chat tables then
    co-located with it."""
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE users (id text PRIMARY KEY)")
        conn.execute(b"SELECT create_distributed_table('users', 'id')")
    apply_migrations(fresh)
    run_recipe(fresh)
    with psycopg.connect(fresh) as conn:
        row = conn.execute(b"SELECT count(DISTINCT colocationid) FROM pg_dist_partition").fetchone()
    assert row == (1,)
    assert distribution(fresh)["users"] == ("h", "s")
