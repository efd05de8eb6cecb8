"""The usage ledger, its totals and quotas on a real PostgreSQL: recording (validation,
ownership, idempotency under concurrent retries), totals equal to the ledger (hypothesis,
deleted conversations and partial days included), usage that outlives an aborted turn and a
deleted conversation, delete_user_data, and QuotaExceeded exactly at the limit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatstore
from chatstore import (
    ChatStore,
    Conflict,
    ConversationBusy,
    InvalidInput,
    NotFound,
    Quota,
    QuotaExceeded,
    Usage,
    UsageTotal,
)
from chatstore.transfer import USAGE_LINE_START, export_user, import_file

MAX = 2**63 - 1
SUMMED = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
          "requests")


def spent(model: str = "gpt-test", input_tokens: int = 10, output_tokens: int = 5,
          **more: Any) -> dict[str, Any]:
    return {"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
            **more}


async def ledger(conn: asyncpg.Connection, user: str = "alice") -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM usage_entries WHERE user_id = $1 "
                            "ORDER BY created_at, id", user)


async def rollups(conn: Any) -> tuple[list[Any], list[Any]]:
    daily = await conn.fetch("SELECT * FROM usage_daily ORDER BY user_id, day, model")
    per = await conn.fetch("SELECT * FROM usage_conversation_daily "
                           "ORDER BY user_id, conversation_id, day, model")
    return [tuple(r) for r in daily], [tuple(r) for r in per]


# What the rollups must hold: the ledger grouped (what `chatstore check` would recompute).
REBUILD = """
DELETE FROM usage_daily;
DELETE FROM usage_conversation_daily;
INSERT INTO usage_daily (user_id, day, model, input_tokens, output_tokens,
                         cached_input_tokens, reasoning_tokens, requests, cost_micros, entries)
SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, model, sum(input_tokens),
       sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens), sum(requests),
       COALESCE(sum(cost_micros), 0), count(*)
FROM usage_entries GROUP BY 1, 2, 3;
INSERT INTO usage_conversation_daily (user_id, conversation_id, day, model, input_tokens,
                                      output_tokens, cached_input_tokens, reasoning_tokens,
                                      requests, cost_micros, entries)
SELECT user_id, conversation_id, (created_at AT TIME ZONE 'UTC')::date, model,
       sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),
       sum(reasoning_tokens), sum(requests), COALESCE(sum(cost_micros), 0), count(*)
FROM usage_entries GROUP BY 1, 2, 3, 4;
"""


async def rollups_equal_the_ledger(conn: Any) -> None:
    """The rollups the recording statements kept equal the ledger grouped (compared in a
    transaction rolled back after)."""
    kept = await rollups(conn)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(REBUILD)
        rebuilt = await rollups(conn)
    finally:
        await transaction.rollback()
    assert kept == rebuilt


def total(**fields: int) -> UsageTotal:
    return UsageTotal(key=None, **fields)


# -- recording -----------------------------------------------------------------------------

async def test_record_usage_returns_the_stored_entry(store: ChatStore,
                                                     conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    before = await store.get_conversation("alice", chat.id)
    entry = await store.record_usage(
        "alice", chat.id, spent(cached_input_tokens=4, reasoning_tokens=2, requests=1,
                                cost_micros=1234, metadata={"request": "r1"}))
    assert isinstance(entry, Usage)
    assert (entry.user_id, entry.conversation_id, entry.key, entry.model) == (
        "alice", chat.id, None, "gpt-test")
    assert (entry.input_tokens, entry.output_tokens, entry.cached_input_tokens,
            entry.reasoning_tokens, entry.requests, entry.cost_micros) == (10, 5, 4, 2, 1, 1234)
    assert entry.metadata == {"request": "r1"}
    assert entry.created_at.tzinfo is not None
    assert entry == Usage.model_validate(entry.model_dump())
    # absent counts are 0, cost None, metadata {}
    bare = await store.record_usage("alice", str(chat.id), {"model": "m"})
    assert (bare.input_tokens, bare.requests, bare.cost_micros, bare.metadata) == (0, 0, None, {})
    # recording is not a change to the conversation
    after = await store.get_conversation("alice", chat.id)
    assert (after.revision, after.updated_at) == (before.revision, before.updated_at)
    assert len(await ledger(conn)) == 2
    await rollups_equal_the_ledger(conn)


async def test_usage_given_as_an_object_with_attributes(store: ChatStore) -> None:
    @dataclass
    class Spent:
        model: str
        input_tokens: int
        output_tokens: int = 0

    chat = await store.create_conversation("alice")
    entry = await store.record_usage("alice", chat.id, Spent("o3", 7, 3))
    assert (entry.model, entry.input_tokens, entry.output_tokens, entry.requests) == (
        "o3", 7, 3, 0)
    # a stored entry records as itself again
    again = await store.record_usage("alice", chat.id, entry)
    assert again.input_tokens == 7 and again.model == "o3"


@pytest.mark.parametrize(("usage", "field"), [
    ({"input_tokens": 1}, "usage.model"),
    ({"model": ""}, "usage.model"),
    ({"model": "   "}, "usage.model"),
    ({"model": 5}, "usage.model"),
    ({"model": "m\x00"}, "usage.model"),
    ({"model": "m" * 513}, "usage.model"),
    (spent(input_tokens=-1), "usage.input_tokens"),
    (spent(output_tokens=MAX + 1), "usage.output_tokens"),
    (spent(cached_input_tokens=1.0), "usage.cached_input_tokens"),
    (spent(reasoning_tokens=True), "usage.reasoning_tokens"),
    (spent(requests=None), "usage.requests"),
    (spent(requests="1"), "usage.requests"),
    (spent(cost_micros=-5), "usage.cost_micros"),
    (spent(cost_micros=0.5), "usage.cost_micros"),
    (spent(metadata=[1]), "usage.metadata"),
    (spent(metadata={"x": "\x00"}), "usage.metadata.x"),
    (spent(input_token=3), "usage.input_token"),
    ("gpt", "usage"),
    (None, "usage"),
    (42, "usage"),
])
async def test_invalid_usage_names_the_field_and_writes_nothing(
        store: ChatStore, conn: asyncpg.Connection, usage: Any, field: str) -> None:
    chat = await store.create_conversation("alice")
    with pytest.raises(InvalidInput) as raised:
        await store.record_usage("alice", chat.id, usage)
    assert raised.value.field == field
    assert raised.value.outcome == "not_applied"
    assert await ledger(conn) == []


async def test_largest_counts_are_accepted_and_their_sums_do_not_overflow(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice")
    for _ in range(3):
        await store.record_usage("alice", chat.id, spent(input_tokens=MAX, cost_micros=MAX))
    (summed,) = await store.usage_totals("alice")
    assert summed.input_tokens == 3 * MAX and summed.cost_micros == 3 * MAX


@pytest.mark.parametrize("key", ["", 5, "k" * 513, "nul\x00"])
async def test_invalid_key(store: ChatStore, key: Any) -> None:
    chat = await store.create_conversation("alice")
    with pytest.raises(InvalidInput, match="key"):
        await store.record_usage("alice", chat.id, spent(), key=key)


async def test_another_users_conversation_is_not_found(store: ChatStore,
                                                       conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as theirs:
        await store.record_usage("bob", chat.id, spent())
    with pytest.raises(NotFound) as nowhere:
        await store.record_usage("bob", missing, spent())
    assert str(theirs.value) == str(nowhere.value).replace(str(missing), str(chat.id))
    # a key alice used is no help either, and bob's key does not touch alice's
    await store.record_usage("alice", chat.id, spent(), key="k")
    with pytest.raises(NotFound):
        await store.record_usage("bob", chat.id, spent(), key="k")
    with pytest.raises(NotFound, match="user 'ghost'"):
        await store.record_usage("ghost", chat.id, spent())
    assert len(await ledger(conn, "alice")) == 1
    assert await ledger(conn, "bob") == []
    assert (await store.usage_totals("bob"))[0].entries == 0


# -- idempotency ---------------------------------------------------------------------------

async def test_a_key_stores_once_and_a_different_entry_conflicts(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    other = await store.create_conversation("alice")
    first = await store.record_usage("alice", chat.id, spent(metadata={"a": 1}), key="run-1")
    again = await store.record_usage("alice", chat.id, spent(metadata={"a": 1}), key="run-1")
    assert again == first and again.key == "run-1"
    for changed, where in [(spent(input_tokens=11), chat.id),
                           (spent(model="other"), chat.id),
                           (spent(cost_micros=1), chat.id),
                           (spent(metadata={"a": 2}), chat.id),
                           (spent(metadata={"a": 1}), other.id)]:
        with pytest.raises(Conflict) as raised:
            await store.record_usage("alice", where, changed, key="run-1")
        message = str(raised.value)
        assert "run-1" in message and "nothing was written" in message
        assert "gpt-test" not in message and "other" not in message  # no row data
    # the same key is another entry for another user
    await conn.execute("INSERT INTO conversations (user_id, id) VALUES ('bob', $1)", other.id)
    bobs = await store.record_usage("bob", other.id, spent(), key="run-1")
    assert bobs.user_id == "bob"
    assert len(await ledger(conn, "alice")) == 1
    assert (await store.usage_totals("alice"))[0].entries == 1
    await rollups_equal_the_ledger(conn)


async def test_twenty_concurrent_retries_of_one_key_store_one_entry(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    results = await asyncio.gather(*(
        store.record_usage("alice", chat.id, spent(input_tokens=100, output_tokens=1),
                           key="retry") for _ in range(20)))
    assert len({(r.created_at, r.key) for r in results}) == 1
    rows = await ledger(conn)
    assert len(rows) == 1
    (summed,) = await store.usage_totals("alice")
    assert (summed.input_tokens, summed.output_tokens, summed.entries) == (100, 1, 1)
    await rollups_equal_the_ledger(conn)


async def test_a_replay_after_the_conversation_was_deleted_returns_the_entry(
        store: ChatStore) -> None:
    chat = await store.create_conversation("alice")
    first = await store.record_usage("alice", chat.id, spent(), key="late-retry")
    await store.delete_conversation("alice", chat.id)
    assert await store.record_usage("alice", chat.id, spent(), key="late-retry") == first
    with pytest.raises(NotFound):  # a new entry needs the conversation
        await store.record_usage("alice", chat.id, spent(), key="new")


# -- entries outlive conversations and aborted turns; go with the user ---------------------

async def test_totals_of_a_deleted_conversation_stay(store: ChatStore) -> None:
    chat = await store.create_conversation("alice", messages=[{"role": "user", "content": "x"}])
    fork = await store.fork("alice", chat.id, at_seq=1)
    await store.record_usage("alice", chat.id, spent(input_tokens=3))
    await store.record_usage("alice", fork.id, spent(input_tokens=4))
    before = await store.usage_totals("alice", by="conversation")
    await store.delete_conversation("alice", chat.id)  # the whole tree
    assert await store.usage_totals("alice", by="conversation") == before
    assert [t.key for t in before] == sorted([chat.id, fork.id])
    (of_fork,) = await store.usage_totals("alice", conversation_id=fork.id)
    assert of_fork.input_tokens == 4
    assert (await store.usage_totals("alice"))[0].input_tokens == 7


async def test_usage_recorded_in_a_turn_survives_its_abort(store: ChatStore,
                                                           conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    with pytest.raises(RuntimeError):
        async with store.turn("alice", chat.id) as turn:
            await turn.append([{"role": "user", "content": "hi"}])
            recorded = await turn.record_usage(spent(input_tokens=50), key="turn-1")
            raise RuntimeError("the model failed after spending")
    assert (await store.get_conversation("alice", chat.id)).message_count == 0
    assert [r["idempotency_key"] for r in await ledger(conn)] == ["turn-1"]
    assert recorded.conversation_id == chat.id
    # a turn made with fork_at records on its fork, which the abort deletes; usage stays
    with pytest.raises(RuntimeError):
        async with store.turn("alice", chat.id, fork_at=0) as turn:
            fork_id = turn.conversation_id
            await turn.record_usage(spent(input_tokens=20))
            raise RuntimeError
    with pytest.raises(NotFound):
        await store.get_conversation("alice", fork_id)
    (of_fork,) = await store.usage_totals("alice", conversation_id=fork_id)
    assert of_fork.input_tokens == 20
    assert (await store.usage_totals("alice"))[0].input_tokens == 70
    # after the turn ended, the turn's conversation still takes usage
    async with store.turn("alice", chat.id) as turn:
        pass
    assert (await turn.record_usage(spent())).conversation_id == chat.id


async def test_delete_user_data_removes_the_users_usage_only(store: ChatStore,
                                                             conn: asyncpg.Connection) -> None:
    mine = await store.create_conversation("alice")
    theirs = await store.create_conversation("bob")
    await store.record_usage("alice", mine.id, spent(), key="a")
    await store.record_usage("bob", theirs.id, spent(), key="a")
    assert await store.delete_user_data("alice") == 1
    assert await ledger(conn, "alice") == []
    assert await conn.fetchval("SELECT count(*) FROM usage_daily WHERE user_id = 'alice'") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM usage_conversation_daily WHERE user_id = 'alice'") == 0
    assert (await store.usage_totals("alice"))[0] == total()
    assert (await store.usage_totals("bob"))[0].entries == 1
    # deleting the user row cascades too
    await store.record_usage("bob", theirs.id, spent())
    await conn.execute("DELETE FROM users WHERE id = 'bob'")
    assert await conn.fetchval("SELECT count(*) FROM usage_entries") == 0
    assert await conn.fetchval("SELECT count(*) FROM usage_daily") == 0


# -- totals --------------------------------------------------------------------------------

async def test_totals_grouped(store: ChatStore) -> None:
    one = await store.create_conversation("alice")
    two = await store.create_conversation("alice")
    await store.record_usage("alice", one.id, spent("b-model", 1, 2, requests=1, cost_micros=5))
    await store.record_usage("alice", one.id, spent("a-model", 10, 20, requests=2))
    await store.record_usage("alice", two.id, spent("a-model", 100, 200, requests=1,
                                                    cached_input_tokens=50,
                                                    reasoning_tokens=7, cost_micros=9))
    (everything,) = await store.usage_totals("alice")
    assert everything == UsageTotal(key=None, input_tokens=111, output_tokens=222,
                                    cached_input_tokens=50, reasoning_tokens=7, requests=4,
                                    cost_micros=14, entries=3)
    by_model = await store.usage_totals("alice", by="model")
    assert [(t.key, t.input_tokens, t.entries) for t in by_model] == [
        ("a-model", 110, 2), ("b-model", 1, 1)]
    today = datetime.now(UTC).date()
    (by_day,) = await store.usage_totals("alice", by="day")
    assert isinstance(by_day.key, date) and by_day.key in (today, today - timedelta(1))
    by_conversation = await store.usage_totals("alice", by="conversation")
    assert {t.key: t.input_tokens for t in by_conversation} == {one.id: 11, two.id: 100}
    assert [t.key for t in by_conversation] == sorted([one.id, two.id])
    of_one = await store.usage_totals("alice", conversation_id=one.id, by="model")
    assert [(t.key, t.output_tokens) for t in of_one] == [("a-model", 20), ("b-model", 2)]
    (of_two,) = await store.usage_totals("alice", conversation_id=two.id, by="conversation")
    assert of_two.key == two.id and of_two.cost_micros == 9
    # nothing in range: one zero total, or no groups
    tomorrow = datetime.combine(today + timedelta(2), time(), UTC)
    assert await store.usage_totals("alice", since=tomorrow) == [total()]
    assert await store.usage_totals("alice", since=tomorrow, by="model") == []
    assert await store.usage_totals("alice", conversation_id=uuid.uuid4()) == [total()]


async def test_totals_arguments(store: ChatStore) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidInput, match="since"):
        await store.usage_totals("alice", since=datetime(2026, 1, 1))  # naive
    with pytest.raises(InvalidInput, match="until"):
        await store.usage_totals("alice", until=date(2026, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="until"):
        await store.usage_totals("alice", since=now, until=now - timedelta(1))
    with pytest.raises(InvalidInput, match="by"):
        await store.usage_totals("alice", by="week")
    with pytest.raises(InvalidInput, match="conversation_id"):
        await store.usage_totals("alice", conversation_id="nope")
    with pytest.raises(NotFound, match="ghost"):
        await store.usage_totals("ghost")
    assert await store.usage_totals("alice", since=now, until=now) == [total()]


async def test_bounds_in_any_timezone_mean_the_same_instants(store: ChatStore,
                                                             conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    await store.record_usage("alice", chat.id, spent(input_tokens=1))
    await conn.execute("UPDATE usage_entries SET created_at = '2026-03-10 23:30+00'")
    await conn.execute(REBUILD)
    tokyo = timezone(timedelta(hours=9))
    # 2026-03-11 08:00 in Tokyo is 23:00 UTC the day before: the entry is after it
    since = datetime(2026, 3, 11, 8, 0, tzinfo=tokyo)
    (after,) = await store.usage_totals("alice", since=since)
    assert after.input_tokens == 1
    (before,) = await store.usage_totals("alice", until=since)
    assert before.input_tokens == 0
    (by_day,) = await store.usage_totals("alice", by="day", since=since)
    assert by_day.key == date(2026, 3, 10)  # days are UTC days


async def test_whole_day_totals_read_the_rollups_not_the_ledger(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    """A month of 3,000 entries: the month's totals read at most days x models rollup rows
    and no ledger row; a bound inside a day reads that day's entries only."""
    chat = await store.create_conversation("alice")
    await conn.execute(
        """INSERT INTO usage_entries (user_id, conversation_id, model, input_tokens,
                                      output_tokens, created_at)
           SELECT 'alice', $1, 'm' || (n % 2), 1, 2,
                  timestamptz '2026-04-01 00:00+00' + (n % 30) * interval '1 day'
                      + (n % 1440) * interval '1 minute'
           FROM generate_series(1, 3000) AS n""", chat.id)
    await conn.execute(REBUILD)
    await conn.execute("ANALYZE usage_entries; ANALYZE usage_daily")
    month = (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
    (summed,) = await store.usage_totals("alice", since=month[0], until=month[1])
    assert (summed.input_tokens, summed.output_tokens, summed.entries) == (3000, 6000, 3000)

    from chatstore._usage import usage_range
    from chatstore.sql import SQL

    async def rows_read(since: datetime, until: datetime) -> dict[str, int]:
        span = usage_range(since, until)
        plan = json.loads(await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + SQL.usage_totals, "alice", *span.args(), None))
        read: Counter[str] = Counter()
        pending = [plan[0]["Plan"]]
        while pending:
            node = pending.pop()
            pending.extend(node.get("Plans", []))
            if "Relation Name" in node:
                read[node["Relation Name"]] += node["Actual Rows"] * node["Actual Loops"]
        return dict(read)

    read = await rows_read(*month)
    assert read.get("usage_entries", 0) == 0 and read["usage_daily"] <= 31 * 2, read
    partial = await rows_read(datetime(2026, 4, 1, 12, tzinfo=UTC), month[1])
    assert 0 < partial["usage_entries"] <= 100 and partial["usage_daily"] <= 29 * 2, partial


# -- totals equal the ledger, after random sequences ---------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("record"), st.integers(0, 9), st.sampled_from(["m1", "m2"]),
              st.integers(0, 1000), st.integers(0, 1000), st.one_of(st.none(),
                                                                     st.integers(0, 99)),
              st.one_of(st.none(), st.integers(0, 3))),
    st.tuples(st.just("create")),
    st.tuples(st.just("fork"), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 9)),
    st.tuples(st.just("abort"), st.integers(0, 9), st.integers(1, 500)),
), min_size=1, max_size=16)
SPREAD = st.lists(st.integers(0, 4 * 24 * 60 - 1), min_size=40, max_size=40)
BOUNDS = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 4 * 24)),
                            st.one_of(st.none(), st.integers(0, 4 * 24))),
                  min_size=1, max_size=4)
EPOCH = datetime(2026, 2, 27, tzinfo=UTC)  # four days across a month's end


@dataclass
class Entry:
    n: int  # its metadata's "n": which ledger row it is
    conversation_id: uuid.UUID
    model: str
    input_tokens: int
    output_tokens: int
    cost_micros: int | None
    at: datetime | None = None


def sums(entries: list[Entry]) -> tuple[int, int, int, int]:
    return (sum(e.input_tokens for e in entries), sum(e.output_tokens for e in entries),
            sum(e.cost_micros or 0 for e in entries), len(entries))


def as_tuple(found: UsageTotal) -> tuple[int, int, int, int]:
    return found.input_tokens, found.output_tokens, found.cost_micros, found.entries


async def check_totals(store: ChatStore, user: str, entries: list[Entry],
                       since: datetime | None = None,
                       until: datetime | None = None) -> None:
    def inside(e: Entry) -> bool:
        return e.at is None or ((since is None or e.at >= since)
                                and (until is None or e.at < until))

    chosen = [e for e in entries if inside(e)]
    bounds: dict[str, Any] = {"since": since, "until": until}
    (everything,) = await store.usage_totals(user, **bounds)
    assert as_tuple(everything) == sums(chosen)
    models = {t.key: as_tuple(t) for t in await store.usage_totals(user, by="model", **bounds)}
    assert models == {m: sums([e for e in chosen if e.model == m])
                      for m in {e.model for e in chosen}}
    per = {t.key: as_tuple(t)
           for t in await store.usage_totals(user, by="conversation", **bounds)}
    expected = {c: sums([e for e in chosen if e.conversation_id == c])
                for c in {e.conversation_id for e in chosen}}
    assert per == expected
    for cid, value in expected.items():
        (one,) = await store.usage_totals(user, conversation_id=cid, **bounds)
        assert as_tuple(one) == value
    if all(e.at is not None for e in entries):
        days = {t.key: as_tuple(t) for t in await store.usage_totals(user, by="day", **bounds)}
        assert days == {d: sums([e for e in chosen if e.at and e.at.date() == d])
                        for d in {e.at.date() for e in chosen if e.at}}


async def run_sequence(db_url: str, user: str, ops: list[tuple[Any, ...]],
                       spread: list[int], bounds: list[tuple[int | None, int | None]]) -> None:
    async with await chatstore.connect(db_url, min_size=1, max_size=2) as store:
        pool = store.call_path.pool
        await pool.execute("INSERT INTO users (id) VALUES ($1)", user)
        conversations = [(await store.create_conversation(user)).id]
        alive = set(conversations)
        entries: list[Entry] = []
        keyed: dict[int, Entry] = {}
        for n, op in enumerate(ops):
            if op[0] == "create":
                made = await store.create_conversation(user)
                conversations.append(made.id)
                alive.add(made.id)
                continue
            cid = conversations[op[1] % len(conversations)]
            if op[0] == "record":
                _, _, model, inputs, outputs, key, cost = op
                if key in keyed:  # a retry: the same entry returns, another conflicts
                    first = keyed[key]
                    usage = spent(model, inputs, outputs, cost_micros=cost,
                                  metadata={"n": first.n})
                    if (first.conversation_id, first.model, first.input_tokens,
                            first.output_tokens, first.cost_micros) == (
                            cid, model, inputs, outputs, cost):
                        stored = await store.record_usage(user, cid, usage, key=f"k{key}")
                        assert stored.metadata == {"n": first.n}
                    else:
                        with pytest.raises(Conflict):
                            await store.record_usage(user, cid, usage, key=f"k{key}")
                    continue
                usage = spent(model, inputs, outputs, cost_micros=cost, metadata={"n": n})
                named = None if key is None else f"k{key}"
                if cid not in alive:
                    with pytest.raises(NotFound):
                        await store.record_usage(user, cid, usage, key=named)
                    continue
                await store.record_usage(user, cid, usage, key=named)
                entries.append(Entry(n, cid, model, inputs, outputs, cost))
                if key is not None:
                    keyed[key] = entries[-1]
            elif op[0] == "fork" and cid in alive:
                made = await store.fork(user, cid, at_seq=0)
                conversations.append(made.id)
                alive.add(made.id)
            elif op[0] == "delete" and cid in alive:
                await store.delete_conversation(user, cid)
                listed = await store.list_conversations(user, forks=True, limit=200)
                alive = {c.id for c in listed.items}
            elif op[0] == "abort" and cid in alive:
                with pytest.raises(LookupError):
                    async with store.turn(user, cid) as turn:
                        await turn.record_usage(spent("m1", op[2], 0, metadata={"n": n}))
                        raise LookupError
                entries.append(Entry(n, cid, "m1", op[2], 0, None))
        await check_totals(store, user, entries)
        async with pool.acquire() as conn:
            await rollups_equal_the_ledger(conn)
            # spread the entries over four days, then read ranges with partial days
            rows = await conn.fetch("SELECT id, metadata FROM usage_entries "
                                    "WHERE user_id = $1", user)
            assert len(rows) == len(entries)
            at = {}
            for i, row in enumerate(rows):
                metadata = row["metadata"]  # the store's pool decodes jsonb
                at[metadata["n"]] = moved = (
                    EPOCH + timedelta(minutes=spread[i % len(spread)]))
                await conn.execute("UPDATE usage_entries SET created_at = $2 "
                                   "WHERE user_id = $3 AND id = $1", row["id"], moved, user)
            await conn.execute(REBUILD)
        for entry in entries:
            entry.at = at[entry.n]
        await check_totals(store, user, entries)
        for start, end in bounds:
            since = None if start is None else EPOCH + timedelta(hours=start,
                                                                 minutes=30 * (start % 2))
            until = None if end is None else EPOCH + timedelta(hours=end)
            if since is not None and until is not None and until < since:
                since, until = until, since
            await check_totals(store, user, entries, since, until)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, spread=SPREAD, bounds=BOUNDS)
def test_totals_equal_the_sum_of_entries_after_random_sequences(
        db_url: str, ops: list[tuple[Any, ...]], spread: list[int],
        bounds: list[tuple[int | None, int | None]]) -> None:
    asyncio.run(run_sequence(db_url, f"u-{uuid.uuid4()}", ops, spread, bounds))


# -- quotas --------------------------------------------------------------------------------

def next_midnight() -> datetime:
    return datetime.combine(datetime.now(UTC).date() + timedelta(1), time(), UTC)


async def test_quota_exceeded_exactly_at_the_limit(store: ChatStore,
                                                   conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice", messages=[{"role": "user", "content": "q"}])
    # cached and reasoning tokens are parts of input and output: not counted again
    await store.record_usage("alice", chat.id, spent(input_tokens=60, output_tokens=39,
                                                     cached_input_tokens=50,
                                                     reasoning_tokens=30))
    async with store.turn("alice", chat.id, quota=Quota(100)) as turn:  # 99 < 100
        await turn.record_usage(spent(input_tokens=0, output_tokens=1))
    before = await conn.fetchrow("SELECT revision, updated_at, turn_token FROM conversations")
    with pytest.raises(QuotaExceeded) as raised:  # 100 >= 100
        async with store.turn("alice", chat.id, quota=Quota(max_tokens=100, window="day")):
            pytest.fail("the turn started")
    error = raised.value
    assert isinstance(error, Conflict) and error.outcome == "not_applied"
    assert (error.limit, error.used) == (100, 100)
    assert error.resets_at.tzinfo is not None
    assert error.resets_at in (next_midnight(), next_midnight() - timedelta(1))
    assert "100" in str(error) and "nothing was written" in str(error)
    after = await conn.fetchrow("SELECT revision, updated_at, turn_token FROM conversations")
    assert after is not None and after == before and after["turn_token"] is None
    # one token more in the quota: it starts
    async with store.turn("alice", chat.id, quota=Quota(101)):
        pass
    # a fork_at turn is refused before its fork is made
    forks = await conn.fetchval("SELECT count(*) FROM conversations")
    with pytest.raises(QuotaExceeded):
        async with store.turn("alice", chat.id, fork_at=1, quota=Quota(100)):
            pytest.fail("the turn started")
    assert await conn.fetchval("SELECT count(*) FROM conversations") == forks
    async with store.turn("alice", chat.id, fork_at=1, quota=Quota(101)) as turn:
        assert turn.conversation_id != chat.id
    # bob's quota is bob's
    bobs = await store.create_conversation("bob")
    async with store.turn("bob", bobs.id, quota=Quota(1)):
        pass


async def test_quota_windows(store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    entry = await store.record_usage("alice", chat.id, spent(input_tokens=500,
                                                             output_tokens=0))
    # yesterday's usage counts for the month (unless today is the 1st), never for the day
    await conn.execute("UPDATE usage_entries SET created_at = $1 WHERE user_id = 'alice'",
                       entry.created_at - timedelta(days=1))
    await conn.execute(REBUILD)
    async with store.turn("alice", chat.id, quota=Quota(500, "day")):
        pass
    today = datetime.now(UTC).date()
    if today.day != 1:
        with pytest.raises(QuotaExceeded) as raised:
            async with store.turn("alice", chat.id, quota=Quota(500, "month")):
                pass
        first_of_next = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        assert raised.value.resets_at == datetime.combine(first_of_next, time(), UTC)
        assert raised.value.used == 500
    with pytest.raises(QuotaExceeded):
        async with store.turn("alice", chat.id, quota=Quota(0)):
            pass
    wrong: list[tuple[Any, Any]] = [(-1, "day"), (2**63, "day"), (1, "week"), (True, "day"),
                                    ("5", "day")]
    for limit, window in wrong:
        with pytest.raises(InvalidInput):
            Quota(limit, window)
    with pytest.raises(InvalidInput, match="quota"):
        store.turn("alice", chat.id, quota=100)  # type: ignore[arg-type]


async def test_quota_is_checked_before_waiting_and_keeps_a_stalled_turn(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    await store.record_usage("alice", chat.id, spent(input_tokens=10, output_tokens=0))
    async with store.turn("alice", chat.id) as holder:
        with pytest.raises(ConversationBusy):  # under the quota: busy, as without one
            async with store.turn("alice", chat.id, quota=Quota(11)):
                pass
        with pytest.raises(QuotaExceeded):  # a spent quota does not wait for the turn
            async with store.turn("alice", chat.id, quota=Quota(10), wait_seconds=30):
                pass
        await holder.append([{"role": "user", "content": "kept"}])
    # a turn whose lease ran out is not removed when the quota refuses the next one
    with pytest.raises(Conflict, match="lease lost"):
        async with store.turn("alice", chat.id, lease_seconds=0.1) as stalled:
            await stalled.append([{"role": "user", "content": "stalled"}])
            await asyncio.sleep(0.3)
            with pytest.raises(QuotaExceeded):
                async with store.turn("alice", chat.id, quota=Quota(10)):
                    pass
            page = await store.list_messages("alice", chat.id)
            assert [m.content for m in page.items] == ["kept", "stalled"]
            async with store.turn("alice", chat.id, quota=Quota(11)):  # takes it over
                pass
    assert [m.content for m in (await store.list_messages("alice", chat.id)).items] == ["kept"]


# -- usage with the reply: turn.append(..., usage=) ----------------------------------------

async def test_usage_appended_with_the_reply_is_one_commit_and_survives_an_abort(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    with pytest.raises(LookupError):
        async with store.turn("alice", chat.id) as turn:
            await turn.append([{"role": "user", "content": "q"}])
            (reply,) = await turn.append([{"role": "assistant", "content": "a"}],
                                         usage=spent(input_tokens=30, output_tokens=4))
            assert reply.seq == 2
            rows = await ledger(conn)
            assert len(rows) == 1 and rows[0]["created_at"] == reply.created_at  # one commit
            raise LookupError
    assert (await store.get_conversation("alice", chat.id)).message_count == 0
    (summed,) = await store.usage_totals("alice", conversation_id=chat.id)
    assert (summed.input_tokens, summed.output_tokens, summed.entries) == (30, 4, 1)
    await rollups_equal_the_ledger(conn)


async def test_usage_with_a_reply_is_written_with_it_or_not_at_all(
        store: ChatStore, conn: asyncpg.Connection) -> None:
    chat = await store.create_conversation("alice")
    # several messages and a key: the append's transaction records it
    async with store.turn("alice", chat.id) as turn:
        await turn.append([{"role": "assistant", "content": "a"},
                           {"role": "assistant", "content": "b"}],
                          usage=spent(input_tokens=5), usage_key="resp-1")
        with pytest.raises(Conflict, match="resp-1"):  # the key with another entry
            await turn.append([{"role": "assistant", "content": "c"}],
                              usage=spent(input_tokens=6), usage_key="resp-1")
        # the same entry again: recorded once, the message appended
        await turn.append([{"role": "assistant", "content": "d"}],
                          usage=spent(input_tokens=5), usage_key="resp-1")
        with pytest.raises(InvalidInput, match=r"usage\.input_tokens"):
            await turn.append([{"role": "assistant", "content": "e"}],
                              usage=spent(input_tokens=-1))
        with pytest.raises(InvalidInput, match="usage_key"):
            await turn.append([{"role": "assistant", "content": "f"}], usage_key="k")
    page = await store.list_messages("alice", chat.id)
    assert [m.content for m in page.items] == ["a", "b", "d"]
    assert [(r["input_tokens"], r["idempotency_key"]) for r in await ledger(conn)] == [
        (5, "resp-1")]
    # a lost lease: neither the message nor its usage
    with pytest.raises(Conflict, match="lease lost"):
        async with store.turn("alice", chat.id, lease_seconds=0.1) as stalled:
            await asyncio.sleep(0.3)
            async with store.turn("alice", chat.id):  # takes it over
                pass
            await stalled.append([{"role": "assistant", "content": "late"}],
                                 usage=spent(input_tokens=7))
    assert [r["input_tokens"] for r in await ledger(conn)] == [5]
    assert (await store.get_conversation("alice", chat.id)).message_count == 3
    await rollups_equal_the_ledger(conn)


# -- export and import ---------------------------------------------------------------------

BY = (None, "model", "day", "conversation")


async def all_totals(store: ChatStore, user: str = "alice") -> dict[str | None, Any]:
    return {by: await store.usage_totals(user, by=by) for by in BY}


async def _usage_to_export(store: ChatStore, conn: asyncpg.Connection) -> None:
    """alice's usage over three UTC days, two models, keyed and unkeyed entries, costs and
    metadata, one conversation deleted since; bob's one entry (not in alice's export)."""
    chat = await store.create_conversation("alice", messages=[{"role": "user",
                                                               "content": "hi"}])
    gone = await store.create_conversation("alice")
    for n in range(6):
        await store.record_usage("alice", gone.id if n == 2 else chat.id, spent(
            model=("m1", "m2")[n % 2], input_tokens=10 * n, output_tokens=n,
            cached_input_tokens=n // 2, reasoning_tokens=n % 3, requests=1,
            cost_micros=None if n == 3 else 1000 + n, metadata={"n": n, "text": "é\t\n"}),
            key=None if n % 3 == 0 else f"resp-{n}")
    await store.delete_conversation("alice", gone.id)
    theirs = await store.create_conversation("bob")
    await store.record_usage("bob", theirs.id, spent())
    # spread over three days (written behind chatstore's back, rollups rebuilt to match)
    # (one row at a time, values not expressions: Citus refuses now()-like functions of
    # columns in an UPDATE)
    for row in await ledger(conn):
        await conn.execute("UPDATE usage_entries SET created_at = $2 "
                           "WHERE user_id = 'alice' AND id = $1", row["id"],
                           row["created_at"] - timedelta(days=row["input_tokens"] // 20))
    await conn.execute(REBUILD)


async def test_export_and_import_carry_usage(store: ChatStore, conn: asyncpg.Connection,
                                             new_database: Any) -> None:
    await _usage_to_export(store, conn)
    lines = [line async for line in export_user(store, "alice")]
    usage = [json.loads(line) for line in lines if line.startswith(USAGE_LINE_START)]
    assert len(lines) == 1 + 6 and len(usage) == 6  # a line per conversation kept, per entry
    assert "kind" not in json.loads(lines[0])
    # oldest first: n = 4, 5 two days back, 2, 3 one day back, then 0, 1
    assert [u["key"] for u in usage] == ["resp-4", "resp-5", "resp-2", None, None, "resp-1"]
    assert {u["user_id"] for u in usage} == {"alice"}
    assert list(usage[0]) == ["kind", "user_id", "id", "created_at", "conversation_id", "key",
                              "model", "input_tokens", "output_tokens",
                              "cached_input_tokens", "reasoning_tokens", "requests",
                              "cost_micros", "metadata"]
    expected = await all_totals(store)
    assert len(expected["day"]) == 3

    target_url = new_database()
    async with await chatstore.connect(target_url, min_size=1, max_size=2) as target:
        report = await import_file(target, lines, create_users=True)
        assert (report.usage_read, report.usage_imported) == (6, 6)
        assert await all_totals(target) == expected
        target_conn = await asyncpg.connect(target_url)
        try:
            await rollups_equal_the_ledger(target_conn)
            # importing the file again stores nothing and counts nothing twice
            again = await import_file(target, lines)
            assert (again.usage_read, again.usage_imported) == (6, 0)
            assert await all_totals(target) == expected
            await rollups_equal_the_ledger(target_conn)
        finally:
            await target_conn.close()
        # the keys came along: a retry of a recorded call is recognised there
        (five,) = [u for u in usage if u["key"] == "resp-5"]
        replayed = await target.record_usage(
            "alice", five["conversation_id"], {k: five[k] for k in (
                "model", "input_tokens", "output_tokens", "cached_input_tokens",
                "reasoning_tokens", "requests", "cost_micros", "metadata")}, key="resp-5")
        assert replayed.created_at == datetime.fromisoformat(five["created_at"])
        assert await all_totals(target) == expected
        # and exporting there gives the same bytes
        assert [line async for line in export_user(target, "alice")] == lines
    # into the database it came from: everything is there already
    report = await import_file(store, lines)
    assert (report.usage_imported, report.conversations_imported) == (0, 0)
    assert await all_totals(store) == expected


async def test_imported_usage_adds_to_what_the_target_recorded(
        store: ChatStore, conn: asyncpg.Connection, new_database: Any) -> None:
    """The rollups move by the imported entries, in the import's transaction: into a
    database where the user has usage of the same days and models, the totals add up."""
    await _usage_to_export(store, conn)
    lines = [line async for line in export_user(store, "alice")]
    exported = await all_totals(store)
    target_url = new_database()
    async with await chatstore.connect(target_url, min_size=1, max_size=2) as target:
        target_conn = await asyncpg.connect(target_url)
        try:
            await target_conn.execute("INSERT INTO users (id) VALUES ('alice')")
            chat = await target.create_conversation("alice")
            own = await target.record_usage("alice", chat.id, spent(model="m1",
                                                                    input_tokens=1000))
            await import_file(target, lines, chunk_rows=2)  # several chunks, one transaction
            (together,) = await target.usage_totals("alice")
            (before,) = exported[None]
            assert together.input_tokens == before.input_tokens + own.input_tokens
            assert together.entries == before.entries + 1
            await rollups_equal_the_ledger(target_conn)
        finally:
            await target_conn.close()


async def test_a_file_without_usage_lines_imports_as_before(store: ChatStore) -> None:
    line = ('{"id": "00000000-0000-0000-0000-0000000000aa", "user_id": "alice", '
            '"title": "old", "metadata": {}, "message_count": 0, '
            '"created_at": "2025-01-01T00:00:00+00:00", '
            '"updated_at": "2025-01-01T00:00:00+00:00", "messages": []}')
    report = await import_file(store, [line])
    assert (report.conversations_imported, report.usage_read) == (1, 0)
    assert await store.usage_totals("alice") == [UsageTotal(key=None)]
    # "kind": "conversation" is the same as none
    data = json.loads(line) | {"kind": "conversation", "id": str(uuid.UUID(int=0xAB))}
    assert (await import_file(store, [json.dumps(data)])).conversations_imported == 1


def _usage_line(**changes: Any) -> str:
    line = {"kind": "usage", "user_id": "alice", "id": str(uuid.UUID(int=7)),
            "created_at": "2026-01-02T03:04:05.000006Z",
            "conversation_id": str(uuid.UUID(int=8)), "key": "k", "model": "m",
            "input_tokens": 1, "output_tokens": 2, "cached_input_tokens": 0,
            "reasoning_tokens": 0, "requests": 1, "cost_micros": None, "metadata": {}}
    line.update(changes)
    return json.dumps({k: v for k, v in line.items() if v != "<absent>"})


@pytest.mark.parametrize(("lines", "field"), [
    ([_usage_line(kind="gadget")], "line 2: kind"),
    ([_usage_line(id="<absent>")], "line 2: id"),
    ([_usage_line(id="nope")], "line 2: id"),
    ([_usage_line(created_at="2026-01-02T03:04:05")], "line 2: created_at"),
    ([_usage_line(conversation_id=5)], "line 2: conversation_id"),
    ([_usage_line(key="")], "line 2: key"),
    ([_usage_line(model="")], "line 2: usage.model"),
    ([_usage_line(input_tokens=-1)], "line 2: usage.input_tokens"),
    ([_usage_line(cost_micros=1.5)], "line 2: usage.cost_micros"),
    ([_usage_line(metadata=[])], "line 2: usage.metadata"),
    ([_usage_line(surprise=1)], "line 2: surprise"),
    ([_usage_line(), _usage_line(key="other")], "line 3: id"),
    ([_usage_line(), _usage_line(id=str(uuid.UUID(int=9)))], "line 3: key"),
])
async def test_a_malformed_usage_line_imports_nothing(
        store: ChatStore, conn: asyncpg.Connection, lines: list[str], field: str) -> None:
    """The first problem in file order, named by its line (after a good conversation on
    line 1) and field; nothing imported, that conversation neither."""
    await store.create_conversation("alice")
    good = json.dumps({"id": str(uuid.UUID(int=0xCC)), "user_id": "alice", "title": None,
                       "metadata": {}, "message_count": 0,
                       "created_at": "2025-01-01T00:00:00+00:00",
                       "updated_at": "2025-01-01T00:00:00+00:00", "messages": []})
    with pytest.raises(InvalidInput) as raised:
        await import_file(store, [good, *lines])
    assert raised.value.field == field
    assert await ledger(conn) == [] and await rollups(conn) == ([], [])
    assert len(await conn.fetch("SELECT 1 FROM conversations")) == 1
