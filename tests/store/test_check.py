"""`chatstore check [--repair]`: drift written behind chatstore's back is found and fixed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore.doctor import check_database
from chatstore.schema import EXPECTED_COLUMNS
from chatstore.sql import SQL

from ..cli import run

DRIFT = """
INSERT INTO users (id) VALUES ('alice'), ('bob');
INSERT INTO conversations (user_id, id, message_count) VALUES
    ('alice', '00000000-0000-0000-0000-00000000000a', 3),  -- a row added behind its back
    ('alice', '00000000-0000-0000-0000-00000000000b', 4),  -- a row deleted: a gap
    ('bob',   '00000000-0000-0000-0000-00000000000c', 5),  -- a turn that never ended
    ('bob',   '00000000-0000-0000-0000-00000000000d', 2);  -- healthy
INSERT INTO messages (user_id, conversation_id, seq, role, content)
SELECT c.user_id, c.id, n, 'user', 'm' || n
FROM conversations c, generate_series(1, c.message_count) AS n;
INSERT INTO messages (user_id, conversation_id, seq, role, content)
VALUES ('alice', '00000000-0000-0000-0000-00000000000a', 4, 'user', 'sneaky');
DELETE FROM messages WHERE conversation_id = '00000000-0000-0000-0000-00000000000b' AND seq = 2;
UPDATE conversations SET turn_token = '00000000-0000-0000-0000-0000000000ff',
       turn_expires_at = now() - interval '2 hours', turn_base_count = 3
WHERE id = '00000000-0000-0000-0000-00000000000c';
"""
A, B, C, D = (uuid.UUID(f"00000000-0000-0000-0000-00000000000{x}") for x in "abcd")


async def state(url: str) -> dict[uuid.UUID, tuple[int, int, list[int], bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT c.id, c.message_count, c.revision, c.turn_token IS NULL AS free,
                      array(SELECT seq FROM messages m
                            WHERE m.user_id = c.user_id AND m.conversation_id = c.id
                            ORDER BY seq) AS seqs
               FROM conversations c""")
    finally:
        await conn.close()
    return {r["id"]: (r["message_count"], r["revision"], list(r["seqs"]), r["free"])
            for r in rows}


async def drifted(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(DRIFT)
    finally:
        await conn.close()
    return url


async def test_check_reports_each_violation_by_conversation(db_url: str) -> None:
    url = await drifted(db_url)
    before = await state(url)
    report = await check_database(url)
    assert report.schema_problems == []
    assert report.conversations_checked == 4 and report.messages_checked == 4 + 3 + 5 + 2
    found = {v.conversation_id: " ".join(v.problems) for v in report.violations}
    assert set(found) == {A, B, C}
    assert "message_count is 3 but the highest seq is 4" in found[A]
    assert "gaps: 3 message(s) but the highest seq is 4" in found[B]
    assert "stuck" in found[C]
    assert await state(url) == before  # checking writes nothing


async def test_repair_fixes_counters_gaps_and_stuck_leases(db_url: str) -> None:
    url = await drifted(db_url)
    before = await state(url)
    report = await check_database(url, repair=True)
    assert report.violation_count == 3
    after = await state(url)
    assert after[A] == (4, before[A][1] + 1, [1, 2, 3, 4], True)
    assert after[B] == (3, before[B][1] + 1, [1, 2, 3], True)
    # The stuck turn is aborted: its messages above turn_base_count (3) are gone.
    assert after[C] == (3, before[C][1] + 1, [1, 2, 3], True)
    assert after[D] == before[D]
    assert (await check_database(url)).ok


async def test_append_works_again_after_repair(db_url: str) -> None:
    """The issue's case: a row inserted behind chatstore's back made every later append to
    that conversation fail with a primary-key conflict; after --repair it appends."""
    url = await drifted(db_url)
    async with await chatstore.connect(url, min_size=1, max_size=1) as store:
        with pytest.raises(chatstore.ChatStoreError):
            await store.append_message("alice", A, {"role": "user", "content": "hello"})
        await check_database(url, repair=True)
        stored = await store.append_message("alice", A, {"role": "user", "content": "hello"})
        assert stored.seq == 5


async def test_keyset_batches_visit_every_conversation_once(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO users (id) SELECT 'u' || n FROM generate_series(1, 7) AS n;
               INSERT INTO conversations (user_id, message_count)
               SELECT 'u' || (1 + n % 7), 0 FROM generate_series(1, 53) AS n;
               UPDATE conversations SET message_count = 1
               WHERE id = (SELECT id FROM conversations ORDER BY user_id DESC, id DESC
                           LIMIT 1)""")
    finally:
        await conn.close()
    report = await check_database(db_url, batch_size=5)
    assert report.conversations_checked == 53
    assert report.violation_count == 1  # the very last one, in the last batch


async def test_schema_problems_stop_the_check(new_database: Callable[..., str]) -> None:
    empty = new_database(template=False)
    report = await check_database(empty)
    assert not report.ok
    assert any("pending migrations: 0001" in p for p in report.schema_problems)

    migrated = new_database()
    conn = await asyncpg.connect(migrated)
    try:
        await conn.execute("ALTER TABLE messages DROP COLUMN token_count")
    finally:
        await conn.close()
    report = await check_database(migrated)
    assert report.schema_problems == ["table messages lacks column(s) token_count"]


async def test_expected_columns_are_what_the_migrations_create(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            """SELECT table_name::text, column_name::text FROM information_schema.columns
               WHERE table_schema = current_schema()
                 AND table_name = ANY($1::text[])""",
            [t for t in EXPECTED_COLUMNS if t != "users"])
    finally:
        await conn.close()
    created: dict[str, set[str]] = {}
    for table, column in rows:
        created.setdefault(table, set()).add(column)
    assert created == {t: set(c) for t, c in EXPECTED_COLUMNS.items() if t != "users"}


async def test_check_command_exit_status_and_output(db_url: str) -> None:
    url = await drifted(db_url)
    found = run("check", "--database", url)
    assert found.returncode == 1, found.stderr
    assert f"conversation {A} of user 'alice': message_count is 3" in found.stdout
    assert "3 with problems (run with --repair to fix)" in found.stdout
    repaired = run("--database", url, "check", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired: ended the stuck turn as an abort: removed 2 message(s)" in repaired.stdout
    assert "repaired: closed seq gaps" in repaired.stdout
    clean = run("check", "--database", url)
    assert clean.returncode == 0 and "no problems" in clean.stdout, clean.stdout


async def test_check_knows_trees(db_url: str) -> None:
    """A healthy tree (forks, a hand-over after a pop) is clean; a shared row deleted behind
    chatstore's back (a fork point beyond its parent's rows) and a current_id outside the
    tree are found, and --repair leaves a tree's paths alone."""
    conn = await asyncpg.connect(db_url)
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    async with await chatstore.connect(db_url, min_size=1, max_size=2) as store:
        chat = await store.create_conversation("alice", messages=[
            {"role": "user", "content": c} for c in "abcd"])
        fork = await store.fork("alice", chat.id, at_seq=3, messages=[
            {"role": "user", "content": "x"}])
        deeper = await store.fork("alice", fork.id, at_seq=4)
        await store.pop_message("alice", fork.id)  # x goes to deeper
        other = await store.create_conversation("alice")
    assert (await check_database(db_url)).ok
    await conn.execute("DELETE FROM messages WHERE conversation_id = $1 AND seq = 2", chat.id)
    await conn.execute("UPDATE conversations SET current_id = $1 WHERE id = $2", other.id,
                       chat.id)
    report = await check_database(db_url, repair=True)
    problems = {v.conversation_id: v.problems for v in report.violations}
    assert any("part(s) of its path name rows that are missing" in p
               for p in problems[fork.id]), problems
    assert any("part(s) of its path name rows that are missing" in p
               for p in problems[deeper.id]), problems
    assert any("current_id is not a conversation of its tree" in p
               for p in problems[chat.id]), problems
    for violation in report.violations:
        assert violation.repaired == [
            "a tree's paths are not repaired automatically: see docs/api.md, Conversation "
            "trees"], violation
    # "x" was handed to deeper by the pop; nothing was renumbered or moved by the repair
    paths = {r["id"]: (r["path_owners"], r["path_ends"], r["stored"]) for r in await conn.fetch(
        """SELECT c.id, c.path_owners, c.path_ends,
                  array(SELECT seq FROM messages m
                        WHERE m.user_id = c.user_id AND m.conversation_id = c.id
                        ORDER BY seq) AS stored
           FROM conversations c WHERE c.root_id IS NOT NULL""")}
    assert paths == {fork.id: ([chat.id], [3], []), deeper.id: ([chat.id], [3], [4])}
    await conn.close()


# -- the usage rollups ----------------------------------------------------------------------

BY = (None, "model", "day", "conversation")


async def _record_usage(store: chatstore.ChatStore) -> dict[str, list[chatstore.Usage]]:
    """alice: two models in two conversations, one deleted since; bob: one entry."""
    entries: dict[str, list[chatstore.Usage]] = {"alice": [], "bob": []}
    kept = await store.create_conversation("alice")
    gone = await store.create_conversation("alice")
    for n, (cid, model) in enumerate([(kept.id, "m1"), (kept.id, "m2"), (gone.id, "m1"),
                                      (kept.id, "m1")]):
        entries["alice"].append(await store.record_usage("alice", cid, {
            "model": model, "input_tokens": 10 + n, "output_tokens": n, "requests": 1,
            "cost_micros": None if n == 1 else 100 * n}))
    await store.delete_conversation("alice", gone.id)
    theirs = await store.create_conversation("bob")
    entries["bob"].append(await store.record_usage("bob", theirs.id, {"model": "m1",
                                                                      "input_tokens": 7}))
    return entries


def _summed(entries: list[chatstore.Usage], by: str | None) -> list[chatstore.UsageTotal]:
    """What usage_totals must say, summed here from the entries recorded."""
    groups: dict[Any, list[chatstore.Usage]] = {}
    for e in entries:
        key = {None: None, "model": e.model, "day": e.created_at.astimezone(UTC).date(),
               "conversation": e.conversation_id}[by]
        groups.setdefault(key, []).append(e)
    return [chatstore.UsageTotal(
        key=key, input_tokens=sum(e.input_tokens for e in group),
        output_tokens=sum(e.output_tokens for e in group),
        cached_input_tokens=sum(e.cached_input_tokens for e in group),
        reasoning_tokens=sum(e.reasoning_tokens for e in group),
        requests=sum(e.requests for e in group),
        cost_micros=sum(e.cost_micros or 0 for e in group), entries=len(group))
        for key, group in sorted(groups.items(), key=lambda item: str(item[0]))]


async def _totals(store: chatstore.ChatStore, user: str) -> dict[str | None, Any]:
    return {by: sorted(await store.usage_totals(user, by=by), key=lambda t: str(t.key))
            for by in BY}


async def _corrupt_rollups(url: str) -> None:
    """One rollup row changed, one deleted (alice), one added that no entry backs (bob)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""
            UPDATE usage_daily SET input_tokens = input_tokens + 1000
            WHERE user_id = 'alice' AND model = 'm2';
            DELETE FROM usage_conversation_daily
            WHERE user_id = 'alice' AND model = 'm1'
              AND conversation_id = (SELECT conversation_id FROM usage_entries
                                     WHERE user_id = 'alice' ORDER BY created_at, id
                                     LIMIT 1);
            INSERT INTO usage_daily (user_id, day, model, input_tokens, entries)
            VALUES ('bob', '2020-02-02', 'stray', 5, 1);
        """)
    finally:
        await conn.close()


async def test_clean_usage_rollups_report_nothing(store: chatstore.ChatStore,
                                                  db_url: str) -> None:
    await _record_usage(store)
    report = await check_database(db_url)
    assert report.ok, report
    assert (report.usage_users_checked, report.usage_entries_checked) == (2, 5)
    assert report.usage_violations == [] and report.usage_violation_count == 0


async def test_drifted_usage_rollups_are_reported_and_rebuilt_from_the_ledger(
        store: chatstore.ChatStore, db_url: str) -> None:
    entries = await _record_usage(store)
    expected = {user: {by: _summed(recorded, by) for by in BY}
                for user, recorded in entries.items()}
    assert {user: await _totals(store, user) for user in entries} == expected
    await _corrupt_rollups(db_url)
    assert (await _totals(store, "alice"))["model"] != expected["alice"]["model"]

    report = await check_database(db_url)
    assert not report.ok and report.violation_count == 0
    found = {v.user_id: v.problems for v in report.usage_violations}
    assert found == {
        "alice": ["usage_daily: 1 key(s) (user, day, model) differ from what the ledger sums "
                  "to (wrong sums, missing or stray rows)",
                  "usage_conversation_daily: 1 key(s) (user, conversation, day, model) differ "
                  "from what the ledger sums to (wrong sums, missing or stray rows)"],
        "bob": ["usage_daily: 1 key(s) (user, day, model) differ from what the ledger sums "
                "to (wrong sums, missing or stray rows)"]}
    assert "1000" not in str(report) and "stray'" not in str(report)  # counts, never rows

    repaired = await check_database(db_url, repair=True)
    assert repaired.usage_violation_count == 2 and repaired.usage_unrepaired == 0
    fixes = {v.user_id: v.repaired for v in repaired.usage_violations}
    assert fixes["bob"] == ["rebuilt the rollups from the ledger: usage_daily 2 -> 1 row(s), "
                            "usage_conversation_daily 1 -> 1 row(s)"]
    after = await check_database(db_url)
    assert after.ok and after.usage_entries_checked == 5
    assert {user: await _totals(store, user) for user in entries} == expected


async def test_usage_check_batches_visit_every_user(store: chatstore.ChatStore,
                                                    db_url: str, conn: asyncpg.Connection
                                                    ) -> None:
    await conn.execute("INSERT INTO users (id) SELECT 'u' || n FROM generate_series(1, 6) n")
    for n in range(1, 7):
        chat = await store.create_conversation(f"u{n}")
        await store.record_usage(f"u{n}", chat.id, {"model": "m", "input_tokens": n})
    await conn.execute("UPDATE usage_daily SET entries = 2 WHERE user_id = 'u6'")
    report = await check_database(db_url, batch_size=3)  # alice, bob, u1..u6: 3 batches
    assert report.usage_users_checked == 6 and report.usage_entries_checked == 6
    assert [v.user_id for v in report.usage_violations] == ["u6"]


async def test_repair_waits_for_a_recording_in_flight_and_counts_it(
        store: chatstore.ChatStore, db_url: str) -> None:
    """A recording not yet committed (here: in a caller's transaction) when the repair
    starts, of the very key whose usage_conversation_daily row was deleted: the recording
    has inserted that row anew, holding only its own entry. The repair's lock waits for its
    commit, and the rebuilt rollups include it. (Without the lock the rebuild would sum the
    ledger without it, then collide with the row it inserted: a unique violation.)"""
    entries = await _record_usage(store)
    await _corrupt_rollups(db_url)
    kept = entries["alice"][0].conversation_id
    holder = await asyncpg.connect(db_url)
    await chatstore.init_connection(holder)
    transaction = holder.transaction()
    await transaction.start()
    late = await store.using(holder).record_usage("alice", kept, {"model": "m1",
                                                                  "input_tokens": 99})
    repair = asyncio.ensure_future(check_database(db_url, repair=True))
    await asyncio.sleep(0.5)
    assert not repair.done()  # waiting for the lock
    await transaction.commit()
    await holder.close()
    report = await asyncio.wait_for(repair, 30)
    assert report.usage_unrepaired == 0 and report.usage_violation_count == 2
    assert (await check_database(db_url)).ok
    recorded = [*entries["alice"], late]
    assert await _totals(store, "alice") == {by: _summed(recorded, by) for by in BY}


async def test_recordings_wait_while_the_repair_holds_its_lock(
        store: chatstore.ChatStore, db_url: str) -> None:
    """The other side: while a repair's transaction holds the lock, a recording waits for
    its commit (so it cannot move a rollup row between the rebuild's read and its write)."""
    chat = await store.create_conversation("alice")
    repairer = await asyncpg.connect(db_url)
    transaction = repairer.transaction()
    await transaction.start()
    await repairer.execute(SQL.lock_usage_for_repair)
    recording = asyncio.ensure_future(store.record_usage("alice", chat.id, {"model": "m"}))
    await asyncio.sleep(0.5)
    assert not recording.done()
    await transaction.commit()
    await repairer.close()
    assert (await asyncio.wait_for(recording, 30)).model == "m"


async def test_a_repair_that_never_gets_its_lock_changes_nothing_and_says_so(
        store: chatstore.ChatStore, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await _record_usage(store)
    await _corrupt_rollups(db_url)
    monkeypatch.setattr("chatstore.doctor.USAGE_LOCK_TIMEOUT", "50ms")
    holder = await asyncpg.connect(db_url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("LOCK TABLE usage_entries IN ROW EXCLUSIVE MODE")  # a writer's lock
    try:
        report = await check_database(db_url, repair=True)
        result = run("check", "--repair", "--database", db_url)
    finally:
        await transaction.rollback()
        await holder.close()
    assert report.usage_unrepaired == 2
    assert all(v.repaired == ["not repaired: usage_entries stayed locked by writers (3 waits "
                              "of 50ms); nothing was changed, run again"]
               for v in report.usage_violations)
    assert result.returncode == 1 and "not repaired" in result.stdout, result.stdout
    assert len((await check_database(db_url)).usage_violations) == 2  # still there


async def test_check_command_reports_and_repairs_usage_rollups(store: chatstore.ChatStore,
                                                               db_url: str) -> None:
    await _record_usage(store)
    clean = run("check", "--database", db_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert ("checked the usage rollups of 2 user(s) against 5 ledger entries: no problems"
            in clean.stdout)
    await _corrupt_rollups(db_url)
    found = run("check", "--database", db_url)
    assert found.returncode == 1, found.stderr
    assert ("usage rollups of user 'alice': usage_daily: 1 key(s) (user, day, model) differ"
            in found.stdout)
    assert "2 user(s) with problems (run with --repair to fix)" in found.stdout
    repaired = run("check", "--repair", "--database", db_url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: rebuilt the rollups from the ledger" in repaired.stdout
    again = run("check", "--database", db_url)
    assert again.returncode == 0 and "against 5 ledger entries: no problems" in again.stdout
