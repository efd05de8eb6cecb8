"""Helpers of the integration tests (the ``store`` fixture, with users alice and bob, is in
tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def snapshot(conn: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything the chat tables hold, to prove that a refused call changed nothing."""
    convs = await conn.fetch("SELECT user_id, id, title, message_count, revision, updated_at "
                             "FROM conversations ORDER BY user_id, id")
    msgs = await conn.fetch("SELECT user_id, conversation_id, seq, role, content, item "
                            "FROM messages ORDER BY user_id, conversation_id, seq")
    return tuple(tuple(r) for r in convs), tuple(tuple(r) for r in msgs)
