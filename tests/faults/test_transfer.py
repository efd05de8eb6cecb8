"""Export reads one snapshot; import takes the limits of the store it writes to and names the
line of a duplicate."""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore, InvalidInput
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
