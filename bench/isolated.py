"""The rows that need databases of their own: search (one user among many, and the same
query on that user's messages only) and storage (bytes per message, each library alone)."""

from __future__ import annotations

import uuid

import asyncpg

from chatstore.sql import SQL

from .fixture import Fixture
from .log import log
from .own import ChatstorePeer, RawAsyncpgPeer
from .peers import Peer, all_peers
from .plan import SEARCH_WORD, USER
from .results import Results
from .rows import agent_items, drop_database, fresh_database, seed_search, table_bytes
from .runner import measure


async def measure_search(fx: Fixture, results: Results) -> None:
    """A common word for one user among ``search_users``, beside the same query on a
    database holding only that user's messages."""
    plan = fx.plan
    data = await seed_search(fx.dsn, plan.search_users, plan.search_conversations,
                             plan.search_length, log)
    results.search = data
    many, solo = ChatstorePeer(), ChatstorePeer()
    raw = RawAsyncpgPeer()
    await many.setup(data.many_url)
    await solo.setup(data.solo_url)
    await raw.setup(data.many_url)
    statement = SQL.search_messages
    size = f"{data.messages:,}"
    try:
        await measure(fx, results, f"search '{SEARCH_WORD}', 1 of {data.users} users", {size: {
            "chatstore": lambda: many.store.search_messages(data.user, SEARCH_WORD),
            "raw asyncpg": lambda: raw.pool.fetch(statement, data.user, SEARCH_WORD,
                                                  None, 20),
        }})
        await measure(fx, results, f"search '{SEARCH_WORD}', only that user's messages", {
            f"{data.messages // data.users:,}": {
                "chatstore": lambda: solo.store.search_messages(data.user, SEARCH_WORD),
                "raw asyncpg": lambda: solo.store.pool.fetch(statement, data.user,
                                                             SEARCH_WORD, None, 20),
            }})
    finally:
        for peer in (many, solo, raw):
            await peer.close()
        for name in ("bench_search_many", "bench_search_solo"):
            await drop_database(fx.dsn, name)


async def measure_storage(fx: Fixture, results: Results) -> None:
    """Bytes per message, table + TOAST + indexes, of the same history in each library,
    every library in a fresh database of its own history only. Two histories: the chat
    one (every library), and an OpenAI Agents SDK run's items stored losslessly
    (chatstore's ``{"item": ...}`` messages, the Agents SDK session's own rows)."""
    length = fx.plan.storage_length
    log(f"storage: {length:,} messages in a fresh database per history:")
    histories = {
        "chat messages": fx.history(length),
        "Agents SDK items": agent_items(fx.rng, fx.texts, length),
    }
    for kind, history in histories.items():
        url = await fresh_database(fx.dsn, "bench_storage")
        conn = await asyncpg.connect(url)
        await conn.execute(SQL.create_users, [USER])
        await conn.close()
        sizes: dict[str, float] = {}
        try:
            peers: list[Peer] = [ChatstorePeer(), *all_peers()]
            for peer in peers:
                await peer.setup(url)
                try:
                    messages = history
                    if kind == "Agents SDK items" and isinstance(peer, ChatstorePeer):
                        messages = [{"item": item} for item in history]
                    elif kind == "Agents SDK items" and peer.name != \
                            "openai-agents-sqlalchemy":
                        continue  # the others cannot hold these items as they are
                    await peer.bulk_load(USER, str(uuid.uuid4()), messages)
                except Exception as exc:  # reported as n/a, the run goes on
                    log(f"  {kind}: {peer.name} cannot store it: "
                        f"{type(exc).__name__}: {exc}"[:160])
                    continue
                finally:
                    await peer.close()
                sizes[peer.name] = await table_bytes(url, peer.tables) / length
        finally:
            await drop_database(fx.dsn, "bench_storage")
        results.storage[kind] = sizes
        log(f"  {kind}: " + "  ".join(f"{n}={b:,.0f} B" for n, b in sizes.items()))
