"""The rows measured in messages or turns per second: import, and chat turns under load."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from chatstore.sql import SQL
from chatstore.transfer import export_user, import_file

from .fixture import Fixture
from .log import log
from .own import ChatstorePeer, RawAsyncpgPeer
from .plan import COPY, LOAD_POOL, TOKEN_BUDGET, USER, WIDE_POOL
from .report.format import fmt_ms
from .results import Results
from .rows import LoadResult, run_load
from .turns import chat_turn


async def measure_imports(fx: Fixture, results: Results) -> None:
    """Messages per second loading whole conversations: chatstore's import (checked,
    batched) and each library's own bulk path."""
    plan = fx.plan
    rates = results.import_rates
    log(f"import throughput ({plan.import_conversations} x {plan.import_length:,} "
        "messages):")
    histories = [fx.history(plan.import_length) for _ in range(plan.import_conversations)]
    total = plan.import_conversations * plan.import_length
    # chatstore: export the histories once (as `chatstore export` writes them) ...
    staging = f"bench-staging-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(fx.dsn)
    await conn.execute(SQL.create_users, [staging])
    await conn.close()
    for history in histories:
        await fx.own.bulk_load(staging, str(uuid.uuid4()), history)
    lines = [line async for line in export_user(fx.own.store, staging)]
    await fx.own.store.delete_user_data(staging)
    # ... and import them (ids are kept, so the staging copy had to go first).
    started = time.perf_counter()
    report = await import_file(fx.own.store, lines)
    rates["chatstore"] = report.messages_imported / (time.perf_counter() - started)
    rates[COPY] = await bare_copy(fx.dsn, histories)
    for peer in fx.peers[1:]:
        started = time.perf_counter()
        for history in histories:
            await peer.bulk_load("bench-import", str(uuid.uuid4()), history)
        rates[peer.name] = total / (time.perf_counter() - started)
    log("  " + "  ".join(f"{n}={r:,.0f}/s" for n, r in rates.items()))


async def bare_copy(dsn: str, histories: list[list[dict[str, Any]]]) -> float:
    """Messages per second of a bare COPY of the same conversations into chatstore's
    schema (every constraint, index and the search vector kept), in one transaction:
    the ceiling an import can approach."""
    user = f"bench-copy-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    conversations: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    for history in histories:
        cid = uuid.uuid4()
        conversations.append((user, cid, len(history), now, now))
        messages.extend(
            (user, cid, seq, m["role"], m.get("content"),
             json.dumps(m["tool_calls"]) if m.get("tool_calls") else None,
             m.get("tool_call_id"), "{}", m.get("token_count"), now)
            for seq, m in enumerate(history, start=1))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL.create_users, [user])
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "conversations", records=conversations,
                columns=["user_id", "id", "message_count", "created_at", "updated_at"])
            await conn.copy_records_to_table(
                "messages", records=messages,
                columns=["user_id", "conversation_id", "seq", "role", "content",
                         "tool_calls", "tool_call_id", "metadata", "token_count",
                         "created_at"])
        return len(messages) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def measure_load(fx: Fixture, results: Results, user_msg: dict[str, Any],
                       reply: dict[str, Any]) -> None:
    """``load_clients`` clients on pools of ``LOAD_POOL``, then ``wide_clients`` on pools of
    ``WIDE_POOL``, each client on a conversation of its own, doing stateless chat turns
    back to back for ``load_seconds`` in all; each library alone on the server, in
    ``load_slices`` slices run in an order shuffled every round."""
    plan = fx.plan
    keys = [str(uuid.uuid4()) for _ in range(max(plan.load_clients, plan.wide_clients))]
    history = fx.history(plan.load_length)
    log(f"load: loading {len(keys)} conversations of {plan.load_length:,} messages ...")
    for key in keys:
        await fx.load(key, history)
    results.load_results = await _load_run(fx, keys[:plan.load_clients], LOAD_POOL,
                                           user_msg, reply)
    results.wide_load = await _load_run(fx, keys[:plan.wide_clients], WIDE_POOL,
                                        user_msg, reply)


async def _load_run(fx: Fixture, keys: list[str], pool: int, user_msg: dict[str, Any],
                    reply: dict[str, Any]) -> dict[str, LoadResult]:
    """One client per conversation of ``keys``; chatstore and raw asyncpg on pools of
    ``pool`` (the other libraries keep their own pools)."""
    plan, clients = fx.plan, len(keys)
    log(f"load: {clients} clients, pools of {pool}, {plan.load_seconds:g} s per library:")
    own, raw = ChatstorePeer(pool), RawAsyncpgPeer(pool)
    await own.setup(fx.dsn)
    await raw.setup(fx.dsn)
    own.ids, raw.ids = fx.own.ids, fx.raw.ids
    await fx.settle()

    async def turn_with_lease(i: int) -> None:
        store = own.store
        async with store.turn(USER, own.ids[keys[i]], messages=[user_msg]) as turn:
            await turn.context(max_tokens=TOKEN_BUDGET)
            await turn.append([reply], end=True)

    runs: dict[str, Callable[[int], Awaitable[Any]]] = {
        p.name: (lambda i, p=p: chat_turn(p, keys[i], user_msg, reply))
        for p in fx.peers if p is not fx.own and p is not fx.raw}
    runs["chatstore"] = lambda i: chat_turn(own, keys[i], user_msg, reply)
    runs["raw asyncpg"] = lambda i: chat_turn(raw, keys[i], user_msg, reply)
    runs["chatstore (store.turn)"] = turn_with_lease
    order = list(runs)
    load: dict[str, LoadResult] = {}
    for name in order:
        await runs[name](0)  # warm-up: statement caches, ORM compilation
        load[name] = LoadResult(clients=clients, seconds=0.0)
    # Each library runs in slices, the order shuffled every round, so that drift
    # (autovacuum, checkpoints, the other agents on the machine) hits all alike.
    try:
        for _ in range(plan.load_slices):
            fx.order.shuffle(order)
            for name in order:
                total = load[name]
                if total.error:
                    continue
                part = await run_load(runs[name], clients,
                                      plan.load_seconds / plan.load_slices)
                total.turns += part.turns
                total.seconds += part.seconds
                total.latencies += part.latencies
                total.error = part.error
        for name, result in load.items():
            log(f"  {name:28} {result.rate:8,.0f} turns/s  p50 "
                f"{fmt_ms(result.percentile(0.5))} ms  p99 "
                f"{fmt_ms(result.percentile(0.99))} ms" + (
                    f"  ERROR {result.error}" if result.error else ""))
    finally:
        await own.close()
        await raw.close()
    return {name: load[name] for name in
            ["chatstore", "chatstore (store.turn)", *(p.name for p in fx.peers[1:])]
            if name in load}
