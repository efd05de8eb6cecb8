"""The database every row runs on, and the libraries set up on it.

The embedded server is tuned for the data (``SERVER_SETTINGS``); ``Fixture`` migrates it,
creates the bench users, seeds the background messages, sets every library up, loads the
same conversations into each, and settles the server before timing.
"""

from __future__ import annotations

import gc
import random
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from chatstore.embedded import EmbeddedServer, start_embedded
from chatstore.migrate import apply_migrations
from chatstore.seed import TextPool, seed_database, synthetic_history
from chatstore.sql import SQL

from .log import log
from .own import ChatstorePeer, RawAsyncpgPeer
from .peers import Peer, all_peers
from .plan import USER, Plan

# A server sized for the data rather than PostgreSQL's 128 MB default: this machine's kernel
# reclaims its page cache eagerly, so with the default the 5-million-message run measures the
# disk more than the libraries.
SERVER_SETTINGS = {"shared_buffers": "4GB", "max_wal_size": "8GB",
                   "maintenance_work_mem": "512MB"}


async def tuned_embedded(pgdata: Path, version: int) -> EmbeddedServer:
    first = start_embedded(pgdata, version=version, cleanup="stop")
    conn = await asyncpg.connect(first.dsn)
    for name, value in SERVER_SETTINGS.items():
        await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    await conn.close()
    first.stop()  # settings like shared_buffers need a restart
    return start_embedded(pgdata, version=version, cleanup="delete")


class Fixture:
    """One server, every library on it, the seeded generators of data and of call order."""

    def __init__(self, plan: Plan, dsn: str, seed: int, order_seed: int, *,
                 freeze: bool = True) -> None:
        self.plan, self.dsn = plan, dsn
        self.freeze = freeze
        self.rng = random.Random(seed)
        self.order = random.Random(order_seed)  # the order of libraries in every round
        self.texts = TextPool(self.rng)
        self.own = ChatstorePeer()
        self.raw = RawAsyncpgPeer()
        self.peers: list[Peer] = [self.own, self.raw, *all_peers()]

    def history(self, length: int) -> list[dict[str, Any]]:
        """The next ``length`` messages of the seeded generator."""
        return synthetic_history(self.rng, self.texts, length)

    async def setup(self, *, background: bool = True) -> None:
        """Migrate, create the bench users, seed the background messages (unless not
        ``background``), set every library up."""
        apply_migrations(self.dsn)
        conn = await asyncpg.connect(self.dsn)
        users = [USER, "bench-import",
                 *(f"bench-list-{n}" for n in self.plan.conversation_counts)]
        await conn.execute(SQL.create_users, users)
        await conn.close()
        if background and self.plan.background_messages:
            per_user = 100
            users_needed = max(1, self.plan.background_messages // (per_user * 100))
            log(f"seeding {users_needed * per_user * 100:,} background messages ...")
            report = await seed_database(self.dsn, users=users_needed, conversations=per_user,
                                         messages=100, seed=1,
                                         user_prefix=f"bg-{uuid.uuid4().hex[:6]}-")
            log(f"  {report.messages_per_second:,.0f} messages/s")
        for peer in self.peers:
            await peer.setup(self.dsn)

    async def settle(self) -> None:
        """Before timing: vacuum and analyze what was just loaded (so autovacuum does not run
        during the measurements), and (unless ``--no-gc-freeze``) freeze the loaded Python
        objects out of the garbage collector's way. A backend process that does not freeze
        pays the collector's passes over everything it holds: bench/outside.py measures that
        case."""
        conn = await asyncpg.connect(self.dsn)
        await conn.execute("VACUUM (ANALYZE)")
        await conn.close()
        gc.collect()
        if self.freeze:
            gc.freeze()

    async def load(self, key: str, messages: list[dict[str, Any]], user: str = USER) -> None:
        for peer in self.peers:
            await peer.bulk_load(user, key, messages)

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
