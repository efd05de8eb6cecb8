"""chatstore through a Citus coordinator beside the same server as a single node.

``python -m bench.citus COORDINATOR_URL`` (``make bench-citus``, with
``CHATSTORE_BENCH_CITUS`` set; ``../shared/citus/cluster.sh start`` prints a URL). Two
databases on the coordinator's own server, with the same data: one plain (no citus
extension: PostgreSQL alone, same binaries and settings), one with the chat tables
distributed by ``user_id`` through ``chatstore/sql/citus.sql``. Newest 50, append and a
stateless chat turn are timed in one run, both targets interleaved in an order shuffled every
round (medians, and the ratio distributed / single node); then 32 clients do chat turns for a
fixed time on each. Writes ``docs/benchmarks-citus.md``.

On one machine the workers share its cores with the coordinator: the figures show the
coordinator's overhead per call, not what spreading users over more machines buys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

import chatstore
from chatstore.migrate import apply_migrations
from chatstore.sql import SQL

from .plan import ONE, REPLY
from .rows import LoadResult, run_load, with_database

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTE = REPO / "chatstore" / "sql" / "citus.sql"
USER = "bench-user"
LENGTHS = (1_000, 10_000)
SENTENCE = ("Remember to buy oat milk, call the plumber about the kitchen tap, and book the "
            "dentist for next Tuesday morning before the school run starts again.")
Call = Callable[[], Awaitable[Any]]


def _nodes(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(b"SELECT nodename, nodeport FROM pg_dist_node "
                            b"WHERE noderole = 'primary' AND groupid <> 0").fetchall()
    return [(str(host), int(port)) for host, port in rows]


def _node_url(url: str, host: str, port: int, dbname: str) -> str:
    user = psycopg.conninfo.conninfo_to_dict(url).get("user") or "postgres"
    return f"postgresql://{user}@{host}:{port}/{dbname}"


def make_databases(url: str, tag: str) -> tuple[str, str]:
    """(single node, distributed) databases on the coordinator's server, migrated."""
    single_name, citus_name = f"bench_single_{tag}", f"bench_citus_{tag}"
    workers = _nodes(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for name in (single_name, citus_name):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        coordinator = conn.execute(b"SELECT nodename, nodeport FROM pg_dist_node "
                                   b"WHERE groupid = 0").fetchone()
    for host, port in workers:
        with psycopg.connect(_node_url(url, host, port, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{citus_name}" WITH (FORCE)'.encode())
            conn.execute(f'CREATE DATABASE "{citus_name}"'.encode())
        with psycopg.connect(_node_url(url, host, port, citus_name), autocommit=True) as conn:
            conn.execute(b"CREATE EXTENSION citus")
    single, distributed = with_database(url, single_name), with_database(url, citus_name)
    with psycopg.connect(distributed, autocommit=True) as conn:
        conn.execute(b"SET client_min_messages = warning")
        conn.execute(b"CREATE EXTENSION citus")
        if coordinator:
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", coordinator)
        for host, port in workers:
            conn.execute("SELECT citus_add_node(%s, %s)", (host, port))
        conn.execute(b"CREATE TABLE users (id text PRIMARY KEY)")
        conn.execute(b"SELECT create_reference_table('users')")
    apply_migrations(single)
    apply_migrations(distributed)
    with psycopg.connect(distributed, autocommit=True) as conn:
        conn.execute(b"SET client_min_messages = warning")
        conn.execute(DISTRIBUTE.read_bytes())
    return single, distributed


def drop_databases(url: str, tag: str) -> None:
    names = (f"bench_single_{tag}", f"bench_citus_{tag}")
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    for host, port in _nodes(url):
        with psycopg.connect(_node_url(url, host, port, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{names[1]}" WITH (FORCE)'.encode())


def history(length: int) -> list[dict[str, Any]]:
    return [{"role": "user" if j % 2 == 0 else "assistant", "content": f"{j} {SENTENCE}",
             "token_count": 40} for j in range(length)]


async def load_data(store: chatstore.ChatStore, clients: int) -> dict[str, uuid.UUID]:
    """The measured conversations, and one conversation of 100 messages per load client
    (each its own user, so the load spreads over the shards)."""
    users = [USER, *(f"load-{i:03d}" for i in range(clients))]
    async with store.call_path.connection() as conn:
        await conn.execute(SQL.create_users, users)
    ids: dict[str, uuid.UUID] = {}
    for length in LENGTHS:
        conversation = await store.create_conversation(USER, title=f"{length}")
        for start in range(0, length, 500):
            await store.append_messages(USER, conversation.id, history(length)[start:start + 500])
        ids[f"{length}"] = conversation.id
    ids["append"] = (await store.create_conversation(USER)).id
    for i in range(clients):
        conversation = await store.create_conversation(f"load-{i:03d}",
                                                       messages=history(100))
        ids[f"load-{i:03d}"] = conversation.id
    async with store.call_path.connection() as conn:
        await conn.execute(SQL.analyze_chat_tables)
    return ids


async def chat_turn(store: chatstore.ChatStore, user: str, cid: uuid.UUID) -> None:
    async with store.turn(user, cid) as turn:
        await turn.context(max_tokens=4000)
        await turn.append([ONE])
        await turn.append([REPLY])


def _calls(store: chatstore.ChatStore, ids: dict[str, uuid.UUID]) -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for length in LENGTHS:
        cid = ids[f"{length}"]
        calls[f"newest 50 of {length:,}"] = (
            lambda cid=cid: store.list_messages(USER, cid, limit=50))
        calls[f"chat turn on {length:,}"] = (lambda cid=cid: chat_turn(store, USER, cid))
    calls["append one message"] = lambda: store.append_message(USER, ids["append"], ONE)
    return calls


async def interleaved(stores: dict[str, chatstore.ChatStore],
                      ids: dict[str, dict[str, uuid.UUID]], rounds: int,
                      order: random.Random) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], Call] = {}
    for target, store in stores.items():
        for op, call in _calls(store, ids[target]).items():
            cells[(op, target)] = call
    for call in cells.values():  # warm-up
        await call()
        await call()
    samples: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    keys = list(cells)
    for _ in range(rounds):
        order.shuffle(keys)
        for key in keys:
            started = time.perf_counter()
            await cells[key]()
            samples[key].append(time.perf_counter() - started)
    return samples


async def main(url: str, rounds: int, seconds: float, clients: int, pool: int,
               out: Path) -> None:
    seed = random.randrange(2**31)
    tag = str(os.getpid())
    single, distributed = await asyncio.to_thread(make_databases, url, tag)
    try:
        stores = {"single node": await chatstore.connect(single, min_size=1, max_size=pool),
                  "Citus, 2 workers": await chatstore.connect(distributed, min_size=1,
                                                              max_size=pool)}
        try:
            ids = {target: await load_data(store, clients) for target, store in stores.items()}
            samples = await interleaved(stores, ids, rounds, random.Random(seed))
            users = [f"load-{i:03d}" for i in range(clients)]
            load: dict[str, LoadResult] = {}
            for target, store in stores.items():

                async def turn(i: int, store: chatstore.ChatStore = store,
                               conversations: dict[str, uuid.UUID] = ids[target]) -> None:
                    await chat_turn(store, users[i], conversations[users[i]])

                load[target] = await run_load(turn, clients, seconds)
        finally:
            for store in stores.values():
                await store.close()
    finally:
        await asyncio.to_thread(drop_databases, url, tag)
    write_report(out, samples, load, rounds, seed, clients, pool, seconds)


def write_report(out: Path, samples: dict[tuple[str, str], list[float]],
                 load: dict[str, LoadResult], rounds: int, seed: int, clients: int,
                 pool: int, seconds: float) -> None:
    targets = ["single node", "Citus, 2 workers"]
    ops = list(dict.fromkeys(op for op, _ in samples))
    lines = [
        "# chatstore on Citus: the coordinator beside a single node",
        "",
        "Written by `make bench-citus` (`bench/citus.py`); do not edit. Two databases on the "
        "Citus coordinator's own server (PostgreSQL 15, same binaries and settings): one "
        "plain, one with the chat tables distributed by `user_id` over two workers on the "
        "same machine (`chatstore/sql/citus.sql`), holding the same data. "
        f"{rounds} rounds, both targets interleaved in an order shuffled every round "
        f"(seed {seed}); medians. A pool of {pool} connections each.",
        "",
        "| call | single node | Citus | Citus / single |",
        "|---|---|---|---|",
    ]
    for op in ops:
        a, b = (statistics.median(samples[(op, t)]) for t in targets)
        lines.append(f"| {op} | {a * 1e3:.2f} ms | {b * 1e3:.2f} ms | {b / a:.2f}x |")
    lines += [
        "",
        f"{clients} clients, each on its own user's conversation of 100 messages, doing "
        f"stateless chat turns back to back for {seconds:g} s on each target:",
        "",
        "| target | turns/s | p50 | p99 | error |",
        "|---|---|---|---|---|",
    ]
    for target in targets:
        r = load[target]
        p50, p99 = r.percentile(0.5) or 0.0, r.percentile(0.99) or 0.0
        lines.append(f"| {target} | {r.rate:,.0f} | {p50 * 1e3:.1f} ms | {p99 * 1e3:.1f} ms "
                     f"| {r.error or ''} |")
    lines += [
        "",
        "This machine has 2 cores shared by the coordinator, both workers and this client, "
        "so the rows show what routing through the coordinator costs per call, not "
        "scaling. See docs/scale-out.md for what more workers change.",
        "",
    ]
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.citus", description=__doc__)
    parser.add_argument("url", nargs="?", default=os.environ.get("CHATSTORE_BENCH_CITUS"),
                        help="the coordinator's URL (default: $CHATSTORE_BENCH_CITUS)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-citus.md")
    args = parser.parse_args()
    if not args.url:
        parser.error("give the coordinator's URL or set CHATSTORE_BENCH_CITUS")
    asyncio.run(main(args.url, args.rounds, args.seconds, args.clients, args.pool, args.out))
