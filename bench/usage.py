"""Usage, retention and compaction (schema 0005): the rows of the report's "Usage,
retention and compaction" section.

- A chat turn in ``store.turn`` (context window, the user's message, the reply) without
  usage, with the reply's usage recorded by its append (``turn.append([reply], usage=...)``,
  one statement, as a backend records what the model call cost), and with it recorded by a
  call of its own after the reply (``turn.record_usage``: ``store.record_usage``, a statement
  and commit of its own), each on a conversation of its own of the same messages, in the same
  shuffled rounds.
- ``usage_totals`` of one user for a calendar month (one total, and by day) with few and
  with many entries of that user, among the entries of many other users, in a database of
  its own seeded with SQL (the ledger and both rollups, as chatstore keeps them).
- ``purge`` of idle conversations (their activity set in the past) while clients do chat
  turns on other conversations: in slices, each slice purging one part of them, alternated
  with slices of the same length without purge in an order shuffled every round; messages
  deleted per second, and the clients' p99 with and without it.
- The context window of a long conversation after ``compact``, beside that of a short one
  whose history is what the summary leaves in the model's view.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

import chatstore
from chatstore import ChatStore
from chatstore._usage import usage_range
from chatstore.seed import seed_database
from chatstore.sql import SQL

from .fixture import Fixture
from .log import log
from .own import ChatstorePeer, RawAsyncpgPeer
from .plan import (
    COMPACT_LENGTH,
    COMPACT_OP,
    COMPACT_WINDOW,
    LOAD_POOL,
    NO_USAGE,
    ONE,
    REPLY,
    TOKEN_BUDGET,
    TOTALS_DAY_OP,
    TOTALS_OP,
    USAGE_OWN_CALL,
    USAGE_TURN_LENGTH,
    USAGE_TURN_OP,
    USAGE_WITH_REPLY,
    USER,
)
from .results import PurgeResult, Results
from .rows import LoadResult, drop_database, fresh_database
from .runner import Call, Cell, measure_rows

DATABASE = "bench_usage"
# What one model call of a chat turn cost, as a backend records it.
USAGE = {"model": "gpt-4.1-mini", "input_tokens": 2_465, "output_tokens": 9,
         "cached_input_tokens": 2_048, "requests": 1, "cost_micros": 1_130}
MODELS = ("gpt-4.1", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small")
SPREAD_DAYS = 90  # the seeded entries' created_at: evenly over the days before now
CHUNK_ENTRIES = 1_000_000  # entries per seeding statement
SUMMARY = {"role": "assistant", "token_count": 120,
           "content": "Summary of the conversation so far: the user keeps a todo list of "
                      "errands, work tasks and appointments; open items are the plumber, "
                      "the invoice and the dentist on Friday."}
# purge: group g of the idle conversations was last active IDLE_DAYS - g * STEP_DAYS days
# ago, so purge(idle_for=IDLE_DAYS - g * STEP_DAYS - STEP_DAYS / 2 days) deletes group g
# (the older ones are gone by then).
IDLE_DAYS = 400
STEP_DAYS = 10
MONTH = "the last whole calendar month (UTC)"
TOTALS_USER = "usage-user-{:d}"


async def measure_usage(fx: Fixture, results: Results) -> None:
    """Every row of this module: the chat turn and the compacted context window on the
    fixture's database, usage_totals and purge on a database of their own."""
    await measure_turn_usage(fx, results)
    await measure_compacted(fx, results)
    url = await fresh_database(fx.dsn, DATABASE)
    try:
        await measure_totals(fx, results, url)
        await measure_purge(fx, results, url)
    finally:
        await drop_database(fx.dsn, DATABASE)


# -- a chat turn with usage ------------------------------------------------------------------


async def leased_turn(store: ChatStore, cid: uuid.UUID, variant: str) -> None:
    """A chat turn as a backend runs it: the window, the user's message, (the model call,)
    the reply; with ``variant`` its usage recorded with the reply, or by a call of its own."""
    async with store.turn(USER, cid) as turn:
        await turn.context(max_tokens=TOKEN_BUDGET)
        await turn.append([ONE])
        if variant == USAGE_WITH_REPLY:
            await turn.append([REPLY], usage=USAGE)
        else:
            await turn.append([REPLY])
        if variant == USAGE_OWN_CALL:
            await turn.record_usage(USAGE)


async def measure_turn_usage(fx: Fixture, results: Results) -> None:
    log("usage: a chat turn with and without recording its usage:")
    store = fx.own.store
    history = fx.history(USAGE_TURN_LENGTH)
    size = f"{USAGE_TURN_LENGTH:,}"
    rows: dict[Cell, dict[str, Call]] = {}
    for variant in (NO_USAGE, USAGE_WITH_REPLY, USAGE_OWN_CALL):
        cid = (await store.create_conversation(USER, messages=history)).id
        rows[(USAGE_TURN_OP, variant)] = {
            "chatstore": lambda c=cid, v=variant: leased_turn(store, c, v)}
    await fx.settle()
    await measure_rows(fx, results, rows, rounds=fx.plan.usage_rounds,
                       budget=float("inf"))
    log(f"  (each on a conversation of {size} messages to start, "
        f"{fx.plan.usage_rounds} rounds)")


# -- the context window of a compacted conversation ------------------------------------------


async def measure_compacted(fx: Fixture, results: Results) -> None:
    """A ``COMPACT_LENGTH``-message conversation compacted so that its view is the summary
    and its last ``COMPACT_WINDOW - 1`` messages, beside a conversation of its last
    ``COMPACT_WINDOW`` messages: the same window (every message fits the budget)."""
    log(f"compaction: the context window of a compacted {COMPACT_LENGTH:,}-message "
        f"conversation beside a {COMPACT_WINDOW}-message one:")
    own, raw = fx.own, fx.raw
    history = fx.history(COMPACT_LENGTH)
    long_key, short_key = str(uuid.uuid4()), str(uuid.uuid4())
    long_id = (await own.store.create_conversation(USER, messages=history)).id
    summary = await own.store.compact(USER, long_id, summary=SUMMARY,
                                      through_seq=COMPACT_LENGTH - COMPACT_WINDOW + 1)
    short_id = (await own.store.create_conversation(
        USER, messages=history[-COMPACT_WINDOW:])).id
    for peer in (own, raw):
        peer.ids[long_key], peer.ids[short_key] = long_id, short_id
    windows = {key: len(await own.context(USER, key, TOKEN_BUDGET))
               for key in (long_key, short_key)}
    log(f"  summary at seq {summary.seq} through {summary.summary_through}; windows of "
        f"{windows[long_key]} and {windows[short_key]} messages")
    await fx.settle()
    long_size = f"{COMPACT_LENGTH:,}, compacted"
    await measure_rows(fx, results, {
        (COMPACT_OP, f"{COMPACT_WINDOW}"): {
            p.name: (lambda p=p: p.context(USER, short_key, TOKEN_BUDGET)) for p in (own, raw)},
        (COMPACT_OP, long_size): {
            p.name: (lambda p=p: p.context(USER, long_key, TOKEN_BUDGET)) for p in (own, raw)},
    }, rounds=fx.plan.usage_rounds, budget=float("inf"))


# -- usage_totals ----------------------------------------------------------------------------


def last_month(now: datetime) -> tuple[datetime, datetime]:
    """The last whole calendar month (UTC) before ``now``: [its first midnight, the next)."""
    end = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    return start, end


async def seed_usage(conn: asyncpg.Connection, users: list[str], entries: int) -> None:
    """``entries`` usage entries for each of ``users`` (and a conversation each, which they
    name), spread evenly over the ``SPREAD_DAYS`` days before now and over ``MODELS``, then
    the two rollups summed from them, as chatstore's recording statement keeps them."""
    await conn.execute(SQL.create_users, users)
    await conn.execute(
        "INSERT INTO conversations (user_id) SELECT u FROM unnest($1::text[]) AS u", users)
    await conn.execute(
        """
        INSERT INTO usage_entries (user_id, created_at, conversation_id, model, input_tokens,
                                   output_tokens, cached_input_tokens, reasoning_tokens,
                                   requests, cost_micros)
        SELECT c.user_id,
               now() - $3::integer * interval '1 day' * (1 - (g - 0.5) / $2::integer),
               c.id, ($4::text[])[1 + g % cardinality($4::text[])], 500 + g % 3000,
               20 + g % 400, (g % 4) * 512, (g % 3) * 64, 1, 100 + g % 2000
        FROM conversations AS c
        CROSS JOIN generate_series(1, $2::integer) AS g
        WHERE c.user_id = ANY($1::text[])
        ORDER BY c.user_id, g
        """, users, entries, SPREAD_DAYS, list(MODELS))
    sums = """sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),
              sum(reasoning_tokens), sum(requests), sum(COALESCE(cost_micros, 0)), count(*)"""
    await conn.execute(
        f"""
        INSERT INTO usage_daily (user_id, day, model, input_tokens, output_tokens,
                                 cached_input_tokens, reasoning_tokens, requests,
                                 cost_micros, entries)
        SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, model, {sums}
        FROM usage_entries WHERE user_id = ANY($1::text[])
        GROUP BY 1, 2, 3
        """, users)
    await conn.execute(
        f"""
        INSERT INTO usage_conversation_daily (user_id, conversation_id, day, model,
                                              input_tokens, output_tokens,
                                              cached_input_tokens, reasoning_tokens,
                                              requests, cost_micros, entries)
        SELECT user_id, conversation_id, (created_at AT TIME ZONE 'UTC')::date, model, {sums}
        FROM usage_entries WHERE user_id = ANY($1::text[])
        GROUP BY 1, 2, 3, 4
        """, users)


async def check_totals(store: ChatStore, conn: asyncpg.Connection, user: str,
                       since: datetime, until: datetime) -> int:
    """Before timing: the month's total from ``usage_totals`` equals the ledger's own sum;
    the entries it counts."""
    (total,) = await store.usage_totals(user, since=since, until=until)
    row = await conn.fetchrow(
        "SELECT count(*) AS entries, COALESCE(sum(input_tokens), 0) AS input_tokens, "
        "COALESCE(sum(output_tokens), 0) AS output_tokens FROM usage_entries "
        "WHERE user_id = $1 AND created_at >= $2 AND created_at < $3", user, since, until)
    if (total.entries, total.input_tokens, total.output_tokens) != (
            row["entries"], row["input_tokens"], row["output_tokens"]):
        raise AssertionError(f"usage_totals of {user} for the month differ from its ledger: "
                             f"{total.entries} entries against {row['entries']}")
    return total.entries


async def measure_totals(fx: Fixture, results: Results, url: str) -> None:
    plan = fx.plan
    others = plan.usage_other_users
    per_other = plan.usage_other_entries // others
    log(f"usage_totals: seeding {others * per_other:,} entries of {others:,} other users "
        f"and {', '.join(f'{n:,}' for n in plan.usage_user_entries)} of the measured "
        "users ...")
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        step = max(1, CHUNK_ENTRIES // per_other)
        for first in range(0, others, step):
            await seed_usage(conn, [f"usage-other-{i:06d}" for i in
                                    range(first, min(others, first + step))], per_other)
        for entries in plan.usage_user_entries:
            await seed_usage(conn, [TOTALS_USER.format(entries)], entries)
        seeded = time.perf_counter() - started
        await conn.execute("VACUUM (ANALYZE) usage_entries, usage_daily, "
                           "usage_conversation_daily, conversations, users")
        took = time.perf_counter() - started
        total = others * per_other + sum(plan.usage_user_entries)
        results.usage_setup[f"{total:,} usage entries and their rollups (SQL), vacuumed"] = took
        log(f"  {total:,} entries in {seeded:.1f} s ({total / seeded:,.0f}/s), vacuumed "
            f"after {took:.1f} s")
        own, raw = ChatstorePeer(), RawAsyncpgPeer()
        await own.setup(url)
        await raw.setup(url)
        since, until = last_month(datetime.now(UTC))
        span = usage_range(since, until)
        counted = {n: await check_totals(own.store, conn, TOTALS_USER.format(n), since, until)
                   for n in plan.usage_user_entries}
        log(f"  {MONTH} ({since:%Y-%m}): " + ", ".join(
            f"{n:,} entries: {c:,} in the month" for n, c in counted.items()))
    finally:
        await conn.close()
    rows: dict[Cell, dict[str, Call]] = {}
    for op, by in ((TOTALS_OP, None), (TOTALS_DAY_OP, "day")):
        for n in plan.usage_user_entries:
            user = TOTALS_USER.format(n)
            rows[(op, f"{n:,} entries")] = {
                "chatstore": lambda u=user, b=by: own.store.usage_totals(
                    u, since=since, until=until, by=b),
                "raw asyncpg": lambda u=user, b=by: raw.pool.fetch(
                    SQL.usage_totals, u, *span.args(), b),
            }
    try:
        await measure_rows(fx, results, rows)
    finally:
        await own.close()
        await raw.close()


# -- purge -----------------------------------------------------------------------------------


async def seed_idle(url: str, conversations: int, length: int, groups: int) -> int:
    """``conversations`` conversations of ``length`` messages (``chatstore seed``), their
    activity then moved into the past in ``groups`` groups, oldest first; their messages."""
    users = max(1, -(-conversations // 100))
    per_user = conversations // users
    await seed_database(url, users=users, conversations=per_user, messages=length, seed=3,
                        user_prefix="idle-")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            WITH numbered AS (
                SELECT user_id, id,
                       (row_number() OVER (ORDER BY user_id, id) - 1) * $1::integer
                           / count(*) OVER () AS grp
                FROM conversations WHERE user_id LIKE 'idle-%'
            )
            UPDATE conversations AS c
            SET updated_at = now() - ($2::integer - n.grp * $3::integer) * interval '1 day',
                created_at = now() - ($2::integer - n.grp * $3::integer) * interval '1 day'
            FROM numbered AS n
            WHERE c.user_id = n.user_id AND c.id = n.id
            """, groups, IDLE_DAYS, STEP_DAYS)
        await conn.execute("VACUUM (ANALYZE)")
        return int(await conn.fetchval(
            "SELECT count(*) FROM messages WHERE user_id LIKE 'idle-%'"))
    finally:
        await conn.close()


async def clients_until(stop: asyncio.Event, turn: Callable[[int], Awaitable[Any]],
                        clients: int, into: LoadResult) -> None:
    """``clients`` tasks doing ``turn(i)`` back to back until ``stop`` is set; every
    turn's latency into ``into``."""

    async def client(i: int) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await turn(i)
            into.latencies.append(time.perf_counter() - started)
            into.turns += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    into.seconds += time.perf_counter() - started


async def measure_purge(fx: Fixture, results: Results, url: str) -> None:
    plan = fx.plan
    slices = plan.purge_slices
    log(f"purge: {plan.purge_conversations:,} idle conversations of {plan.purge_length} "
        f"messages, in {slices} slices, while {plan.purge_clients} clients do chat turns:")
    started = time.perf_counter()
    messages = await seed_idle(url, plan.purge_conversations, plan.purge_length, slices)
    results.usage_setup[f"{messages:,} idle messages (chatstore seed), made idle, "
                        "vacuumed"] = time.perf_counter() - started
    log(f"  seeded and made idle in {time.perf_counter() - started:.1f} s")
    clients = await chatstore.connect(url, min_size=LOAD_POOL, max_size=LOAD_POOL)
    purger = await chatstore.connect(url, min_size=1, max_size=1)
    conn = await asyncpg.connect(url)
    await conn.execute(SQL.create_users, [USER])
    await conn.close()
    history = fx.history(100)
    active = [(await clients.create_conversation(USER, messages=history)).id
              for _ in range(plan.purge_clients)]

    async def turn(i: int) -> None:
        async with clients.turn(USER, active[i]) as t:
            await t.context(max_tokens=TOKEN_BUDGET)
            await t.append([ONE])
            await t.append([REPLY], usage=USAGE)

    result = PurgeResult(conversations=plan.purge_conversations, messages=messages,
                         clients=plan.purge_clients, slices=slices,
                         during=LoadResult(clients=plan.purge_clients, seconds=0.0),
                         without=LoadResult(clients=plan.purge_clients, seconds=0.0))
    assert result.during is not None and result.without is not None
    try:
        for i in range(plan.purge_clients):
            await turn(i)  # warm-up: statement caches, connections
        # A slice without purge lasts as long as the last slice with it (before the first:
        # the time the purge would take at 20,000 messages a second).
        length = messages / slices / 20_000
        for group in range(slices):
            order = ["without", "during"]
            fx.order.shuffle(order)
            for kind in order:
                stop = asyncio.Event()
                if kind == "without":
                    load = asyncio.ensure_future(
                        clients_until(stop, turn, plan.purge_clients, result.without))
                    await asyncio.sleep(length)
                    stop.set()
                    await load
                    continue
                load = asyncio.ensure_future(
                    clients_until(stop, turn, plan.purge_clients, result.during))
                began = time.perf_counter()
                try:
                    report = await purger.purge(idle_for=timedelta(
                        days=IDLE_DAYS - group * STEP_DAYS - STEP_DAYS / 2), expired=False)
                finally:
                    length = time.perf_counter() - began
                    stop.set()
                    await load
                result.seconds += length
                result.conversations_deleted += report.conversations_deleted
                result.messages_deleted += report.messages_deleted
                for reason, count in report.skipped.items():
                    result.skipped[reason] = result.skipped.get(reason, 0) + count
    finally:
        await clients.close()
        await purger.close()
    results.purge = result
    during, without = result.during, result.without
    log(f"  deleted {result.messages_deleted:,} messages in "
        f"{result.conversations_deleted:,} conversations in {result.seconds:.1f} s "
        f"({result.rate:,.0f} messages/s); skipped "
        f"{ {k: v for k, v in result.skipped.items() if v} or 'none'}")
    for name, load in (("without purge", without), ("during purge", during)):
        log(f"  {name:14} {load.rate:8,.0f} turns/s  p50 "
            f"{(load.percentile(0.5) or 0) * 1e3:.2f} ms  p99 "
            f"{(load.percentile(0.99) or 0) * 1e3:.2f} ms  ({load.seconds:.1f} s)")
    if result.messages_deleted != messages:
        log(f"  WARNING: {messages:,} idle messages were seeded, "
            f"{result.messages_deleted:,} deleted")

