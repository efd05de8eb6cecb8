"""`chatstore check [--repair]`: drift written behind chatstore's back is found and fixed."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest

import chatstore
from chatstore.doctor import check_database
from chatstore.schema import EXPECTED_COLUMNS

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
