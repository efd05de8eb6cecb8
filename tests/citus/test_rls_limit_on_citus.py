"""Row-level security on Citus: what holds and what does not (docs/scale-out.md).

Citus propagates chatstore/sql/rls.sql's policies to every shard, so they bind there too.
But the user they compare with, ``chatstore.user_id``, is set by chatstore per transaction
with ``set_config(..., true)`` on the coordinator's session, and Citus does not carry a
setting made that way to the workers' sessions that run the shard queries: there it is
unset, so every row is refused. chatstore's own ``user_id`` filter on every statement still
scopes each call; the database-side second line of defence is what does not work on Citus.
"""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

import chatstore

from ..faults.conftest import APP_ROLE, apply_rls
from ..faults.test_rls import as_role
from .conftest import Cluster


async def test_policies_reach_the_shards_but_the_call_user_does_not(
        db_url: str, cluster: Cluster) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await apply_rls(conn, APP_ROLE)
        await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    finally:
        await conn.close()
    dbname = db_url.split("/")[3].split("?")[0]
    worker = cluster.workers[0]
    with psycopg.connect(cluster.url(dbname, worker)) as shards:
        shards.execute(b"SET citus.override_table_visibility TO off")  # show the shards
        row = shards.execute(b"SELECT count(*) FROM pg_policy p JOIN pg_class c "
                             b"ON c.oid = p.polrelid WHERE c.relname ~ "
                             b"'^(conversations|messages)_[0-9]+$'").fetchone()
    assert row is not None and row[0] > 0  # the policies are on the worker's shards
    async with await chatstore.connect(as_role(db_url, APP_ROLE), row_level_security=True,
                                       min_size=1, max_size=1) as store:
        with pytest.raises(chatstore.ChatStoreError, match="row-level security policy"):
            await store.create_conversation("alice")
