"""Every row of the benchmark, in the order they run: reads by history length (a deep fork
beside the plain conversation of its length), writes, a user's recent conversations and
deletes here; conversation trees, usage, retention and compaction, import, load, search,
query plans and storage in their own modules."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg

from .explain import explain
from .fixture import Fixture
from .isolated import measure_search, measure_storage
from .log import log
from .peers import NotSupported, Peer
from .plan import BRANCH_LENGTHS, ONE, REPLY, TREE_LENGTH, USER
from .results import Results, Row
from .runner import for_all, measure
from .shapes import measure_shapes
from .throughput import measure_imports, measure_load
from .trees import beside_plain, load_deep_forks, measure_trees
from .turns import chat_turn, context
from .usage import measure_usage


async def run(fx: Fixture, results: Results) -> None:
    plan = fx.plan
    await fx.setup()
    keys: dict[int, str] = {}
    # The tree rows reuse these histories (the same messages as the plain conversations).
    kept: dict[int, list[dict[str, Any]]] = {}
    for length in plan.lengths:
        log(f"loading a {length:,}-message conversation into every library ...")
        keys[length] = str(uuid.uuid4())
        history = fx.history(length)
        await fx.load(keys[length], history)
        if length in (TREE_LENGTH, *BRANCH_LENGTHS):
            kept[length] = history
    deep = await load_deep_forks(fx, kept[TREE_LENGTH])

    await fx.settle()
    await measure_reads(fx, results, keys, deep)
    await measure_writes(fx, results, keys, deep)
    await measure_shapes(fx, results)
    await measure_listing(fx, results)
    await measure_deletes(fx, results)
    await measure_trees(fx, results, kept)
    del kept
    await measure_usage(fx, results)
    await measure_imports(fx, results)
    await measure_load(fx, results, ONE, REPLY)
    await measure_search(fx, results)
    await explain(fx, results, keys[plan.lengths[-1]],
                  f"bench-list-{plan.conversation_counts[-1]}", deep)
    await measure_storage(fx, results)


async def run_usage(fx: Fixture, results: Results) -> None:
    """``--only usage``: the rows of bench/usage.py alone, on chatstore and raw asyncpg,
    with no background messages (those rows make their own data)."""
    await fx.setup(background=False)
    conn = await asyncpg.connect(fx.dsn)
    results.server_version = await conn.fetchval("SHOW server_version")
    await conn.close()
    await measure_usage(fx, results)


async def measure_reads(fx: Fixture, results: Results, keys: dict[int, str],
                        deep: str) -> None:
    """Each read at every length; newest 50, a page in the middle and the context window
    also on the deep fork (``deep``, chatstore and raw asyncpg), beside the plain
    conversation of its length."""
    log("reads by history length:")
    lengths, peers = fx.plan.lengths, fx.peers
    own: list[Peer] = [fx.own, fx.raw]
    await measure(fx, results, "newest 50", beside_plain({f"{n:,}": for_all(
        peers, lambda p, k=keys[n]: lambda: p.newest(USER, k, 50)) for n in lengths},
        for_all(own, lambda p: lambda: p.newest(USER, deep, 50))))
    await measure(fx, results, "page of 50 in the middle", beside_plain({f"{n:,}": for_all(
        peers, lambda p, k=keys[n], mid=n // 2: lambda: p.page_before(USER, k, mid, 50))
        for n in lengths}, for_all(
        own, lambda p: lambda: p.page_before(USER, deep, TREE_LENGTH // 2, 50))))
    await measure(fx, results, "context window (4,000 tokens)", beside_plain({f"{n:,}": for_all(
        peers, lambda p, k=keys[n]: lambda: context(p, k)) for n in lengths},
        for_all(own, lambda p: lambda: context(p, deep))))
    await measure(fx, results, "page of 1,000 in the middle", {f"{n:,}": for_all(
        peers, lambda p, k=keys[n], mid=n // 2: lambda: p.page_before(USER, k, mid, 1000))
        for n in lengths if n >= 10_000})
    await measure(fx, results, "whole history", {f"{n:,}": for_all(
        peers, lambda p, k=keys[n]: lambda: p.whole(USER, k)) for n in lengths})


async def measure_writes(fx: Fixture, results: Results, keys: dict[int, str],
                         deep: str) -> None:
    log("writes:")
    peers = fx.peers
    append_key = str(uuid.uuid4())
    await fx.load(append_key, fx.history(1_000))
    await fx.settle()
    await measure(fx, results, "append one message", {"1,000": for_all(
        peers, lambda p: lambda: p.append_one(USER, append_key, ONE))})
    await measure(fx, results, "append a user+assistant turn", {"1,000": for_all(
        peers, lambda p: lambda: p.append_turn(USER, append_key, ONE, REPLY))})
    await measure(fx, results, "stateless chat turn", beside_plain({f"{n:,}": for_all(
        peers, lambda p, k=keys[n]: lambda: chat_turn(p, k, ONE, REPLY))
        for n in fx.plan.lengths[-2:]}, for_all(
        [fx.own, fx.raw], lambda p: lambda: chat_turn(p, deep, ONE, REPLY))))


async def measure_listing(fx: Fixture, results: Results) -> None:
    log("a user's recent conversations:")
    # Libraries that know a user's conversations; raw asyncpg reads chatstore's tables.
    listers = []
    for peer in fx.peers:
        try:
            await peer.recent_conversations(USER, 1)
        except NotSupported:
            continue
        if peer is not fx.raw:
            listers.append(peer)
    counts = fx.plan.conversation_counts
    for count in counts:
        user = f"bench-list-{count}"
        log(f"  creating {count:,} conversations for {user} ...")
        for _ in range(count):
            small = fx.history(2)
            key = str(uuid.uuid4())
            for peer in listers:
                await peer.bulk_load(user, key, small)
    await fx.settle()
    await measure(fx, results, "20 most recent conversations", {f"{count:,}": for_all(
        fx.peers, lambda p, u=f"bench-list-{count}": lambda: p.recent_conversations(u, 20))
        for count in counts})


async def measure_deletes(fx: Fixture, results: Results) -> None:
    log("deleting 10,000-message conversations:")
    row = Row("delete a conversation", "10,000")
    history = fx.history(10_000)
    peers = list(fx.peers)
    for _ in range(fx.plan.delete_samples):
        fx.order.shuffle(peers)
        for peer in peers:
            key = str(uuid.uuid4())
            await peer.bulk_load(USER, key, history)
            started = time.perf_counter()
            await peer.delete_conversation(USER, key)
            row.samples.setdefault(peer.name, []).append(time.perf_counter() - started)
    results.rows.append(row)
    log("  " + "  ".join(f"{n}={(row.median(n) or 0) * 1e3:.1f}ms" for n in row.samples))
