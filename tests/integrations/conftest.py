"""Fixtures of the integration tests: a store on a fresh migrated database, two users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore


@pytest.fixture
async def store(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[ChatStore]:
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    async with await chatstore.connect(db_url, min_size=1, max_size=5) as s:
        yield s


async def snapshot(conn: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything the chat tables hold, to prove that a refused call changed nothing."""
    convs = await conn.fetch("SELECT user_id, id, title, message_count, revision, updated_at "
                             "FROM conversations ORDER BY user_id, id")
    msgs = await conn.fetch("SELECT user_id, conversation_id, seq, role, content, item "
                            "FROM messages ORDER BY user_id, conversation_id, seq")
    return tuple(tuple(r) for r in convs), tuple(tuple(r) for r in msgs)
