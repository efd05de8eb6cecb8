"""Export reads one snapshot; import takes the limits of the store it writes to, names the
line of a duplicate, and streams the file in chunks (chunk_rows) in one transaction."""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, InvalidInput, NotFound
from chatstore.transfer import export_user, import_file

from .conftest import message


async def test_writes_during_an_export_never_break_the_file(
        alice_store: ChatStore, conn: asyncpg.Connection,
        new_database: Callable[..., str]) -> None:
    # 450 conversations (three pages of the export), 3 messages each.
    await conn.execute("""
        INSERT INTO conversations (user_id, message_count, updated_at)
        SELECT 'alice', 3, now() - c * interval '1 minute' FROM generate_series(1, 450) AS c;
        INSERT INTO messages (user_id, conversation_id, seq, role, content)
        SELECT user_id, id, n, 'user', 'm' || n FROM conversations, generate_series(1, 3) AS n;
    """)
    before = {r["id"] for r in await conn.fetch("SELECT id FROM conversations")}
    oldest = [r["id"] for r in await conn.fetch(
        "SELECT id FROM conversations ORDER BY updated_at LIMIT 40")]
    lines: list[str] = []
    writes = 0
    async for line in export_user(alice_store, "alice"):
        lines.append(line)
        if len(lines) % 10 == 0 and len(oldest) > 1:
            # Move a conversation not yet exported to the front (it would vanish from a
            # paged export), and append to one not yet exported and to one already written.
            target = oldest.pop()
            await alice_store.update_conversation("alice", target, title="moved")
            await alice_store.append_message("alice", oldest[0], message("during"))
            done = json.loads(lines[-1])["id"]
            await alice_store.append_message("alice", done, message("after its line"))
            writes += 3
    assert writes >= 90
    exported = [json.loads(line) for line in lines]
    assert {e["id"] for e in exported} == {str(c) for c in before}
    assert len(exported) == len(before)
    assert all(len(e["messages"]) == e["message_count"] == 3 for e in exported)
    assert all(e["title"] is None for e in exported)  # as of the snapshot

    target = new_database()
    async with await chatstore.connect(target) as fresh:
        report = await import_file(fresh, lines, create_users=True)
    assert report.conversations_imported == 450 and report.messages_imported == 1350


async def test_import_takes_the_limits_of_its_store(
        db_url: str, conn: asyncpg.Connection, new_database: Callable[..., str]) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    big = "x" * (2 << 20)
    async with await chatstore.connect(db_url, max_content_bytes=4 << 20) as roomy:
        conv = await roomy.create_conversation("alice")
        await roomy.append_message("alice", conv.id, message(big))
        lines = [line async for line in export_user(roomy, "alice")]
    target = new_database()
    async with await chatstore.connect(target) as strict:
        with pytest.raises(InvalidInput) as caught:
            await import_file(strict, lines, create_users=True)
        assert caught.value.field == "line 1: messages[0].content"
    async with await chatstore.connect(target, max_content_bytes=4 << 20) as same:
        report = await import_file(same, lines, create_users=True)
        assert report.messages_imported == 1
        (stored,) = (await same.list_messages("alice", conv.id)).items
        assert stored.content == big


async def test_import_names_the_line_of_a_duplicate(alice_store: ChatStore) -> None:
    conv = await alice_store.create_conversation("alice")
    await alice_store.append_messages("alice", conv.id, [
        message("a", idempotency_key="k1"), message("b", idempotency_key="k2")])
    (line,) = [line async for line in export_user(alice_store, "alice")]
    other = await alice_store.create_conversation("alice")
    (first, _) = [x async for x in export_user(alice_store, "alice")]
    assert json.loads(first)["id"] == str(other.id)

    with pytest.raises(InvalidInput) as caught:
        await import_file(alice_store, [first, line, line])
    assert caught.value.field == "line 3: id" and "line 2" in str(caught.value)

    data = json.loads(line)
    data["messages"][1]["idempotency_key"] = "k1"
    with pytest.raises(InvalidInput) as caught:
        await import_file(alice_store, [first, json.dumps(data)])
    assert caught.value.field == "line 2: messages[1].idempotency_key"
    assert "messages[0]" in str(caught.value)


# Text that COPY's text format must escape (tab, newline, carriage return, backslash, and
# backslash sequences that mean something to COPY), and text that must pass through as is.
AWKWARD = ["tab\there", "line\nbreak\r\nwindows", "back\\slash \\N \\t", "\\.", "\\",
           "", "naïve ✓ 🎉"]


async def _export_conversations(store: ChatStore, count: int) -> list[str]:
    """``count`` conversations of alice (awkward text, tool calls, an agent item), exported:
    each line holds 1 + 10 rows."""
    for i in range(count):
        conv = await store.create_conversation("alice", title=f"t\t{i}\\",
                                               metadata={"k": "v\n\\"})
        await store.append_messages("alice", conv.id, [
            message(text, metadata={"x": text}, idempotency_key=f"k{j}\t")
            for j, text in enumerate(AWKWARD)])
        await store.append_messages("alice", conv.id, [
            {"role": "assistant", "content": None, "token_count": 7, "tool_calls": [
                {"id": "c\\1", "type": "function",
                 "function": {"name": "f", "arguments": '{"a": "q\\"\\t"}'}}]},
            {"role": "tool", "tool_call_id": "c\\1", "content": "ok\n"},
            {"item": {"type": "reasoning", "id": "rs", "summary": [{"text": "a\tb\\"}]}},
        ])
    return [line async for line in export_user(store, "alice")]


async def _count(url: str, table: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_import_crosses_chunks_and_gives_the_same_export(
        alice_store: ChatStore, new_database: Callable[..., str]) -> None:
    lines = await _export_conversations(alice_store, 5)
    assert all('"seq":10' in line for line in lines)
    blank_inside = [*lines[:2], "", *lines[2:]]
    target = new_database()
    calls: list[int] = []
    async with await chatstore.connect(target) as fresh:
        # 11 rows a line, chunks of about 15 rows: two lines a chunk, three chunks.
        report = await import_file(fresh, blank_inside, create_users=True,
                                   progress=calls.append, chunk_rows=15)
        assert calls == [20, 20, 10]
        assert (report.conversations_read, report.messages_read) == (5, 50)
        assert (report.conversations_imported, report.messages_imported) == (5, 50)
        assert report.users_created == 1
        again = [line async for line in export_user(fresh, "alice")]
    assert again == lines


async def test_a_malformed_line_after_the_first_chunk_imports_nothing(
        alice_store: ChatStore, new_database: Callable[..., str]) -> None:
    lines = await _export_conversations(alice_store, 4)
    broken = json.loads(lines[3])
    broken["messages"][5]["role"] = "wizard"
    target = new_database()
    calls: list[int] = []
    async with await chatstore.connect(target) as fresh:
        with pytest.raises(InvalidInput) as caught:
            await import_file(fresh, [*lines[:3], json.dumps(broken)], create_users=True,
                              progress=calls.append, chunk_rows=11)
    assert caught.value.field == "line 4: messages[5].role"
    assert calls == [10, 10, 10]  # line 4 was checked while line 3 was COPied
    for table in ("users", "conversations", "messages"):
        assert await _count(target, table) == 0


async def test_a_conversation_repeated_in_a_later_chunk_is_refused(
        alice_store: ChatStore, new_database: Callable[..., str]) -> None:
    lines = await _export_conversations(alice_store, 3)
    target = new_database()
    async with await chatstore.connect(target) as fresh:
        with pytest.raises(InvalidInput) as caught:
            await import_file(fresh, [*lines, lines[0]], create_users=True, chunk_rows=1)
    assert caught.value.field == "line 4: id" and "line 1" in str(caught.value)
    assert await _count(target, "messages") == 0


async def test_an_unknown_user_in_a_later_chunk_imports_nothing(
        alice_store: ChatStore, new_database: Callable[..., str]) -> None:
    lines = await _export_conversations(alice_store, 2)
    stranger = json.loads(lines[1])
    stranger["user_id"] = "carol"
    target = new_database()
    conn = await asyncpg.connect(target)
    await conn.execute("INSERT INTO users (id) VALUES ('alice')")
    await conn.close()
    async with await chatstore.connect(target) as fresh:
        with pytest.raises(NotFound, match="carol"):
            await import_file(fresh, [lines[0], json.dumps(stranger)], chunk_rows=1)
    assert await _count(target, "conversations") == 0


async def test_conversations_already_present_are_skipped_across_chunks(
        alice_store: ChatStore, new_database: Callable[..., str]) -> None:
    lines = await _export_conversations(alice_store, 5)
    target = new_database()
    async with await chatstore.connect(target) as fresh:
        first = await import_file(fresh, [lines[1], lines[3]], create_users=True)
        assert first.messages_imported == 20
        kept = json.loads(lines[3])["id"]
        await fresh.update_conversation("alice", kept, title="changed here")
        await fresh.pop_message("alice", kept)
        calls: list[int] = []
        report = await import_file(fresh, lines, progress=calls.append, chunk_rows=15)
        assert (report.conversations_read, report.messages_read) == (5, 50)
        assert (report.conversations_imported, report.messages_imported) == (3, 30)
        assert report.users_created == 0
        assert sum(calls) == 30
        conv = await fresh.get_conversation("alice", kept)
        assert (conv.title, conv.message_count) == ("changed here", 9)
        again = [line async for line in export_user(fresh, "alice")]
    by_id = {json.loads(line)["id"]: line for line in again}
    assert len(by_id) == 5
    assert [by_id[json.loads(line)["id"]] == line for line in lines] == [
        json.loads(line)["id"] != kept for line in lines]
