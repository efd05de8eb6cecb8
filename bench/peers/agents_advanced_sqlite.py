"""The OpenAI Agents SDK's ``AdvancedSQLiteSession`` (``agents.extensions.memory``), the SDK's
session with conversation branches, for the branching row only: it keeps its history in a
SQLite file, not on the benchmark's PostgreSQL, so it is not one of :func:`all_peers`.

Tables: the SDK's ``agent_sessions`` and ``agent_messages`` (one row per item, JSON text) and
``message_structure`` (one row per item *and branch*: branch_id, sequence_number,
user_turn_number, branch_turn_number, ...). ``create_branch_from_turn(n)`` copies the current
branch's structure rows of the turns before user turn ``n`` into a new branch (the items
themselves are shared, not copied) and switches the session to it; ``get_items()`` reads the
current branch's items through ``message_structure``, in sequence order, and parses each
item's JSON. Every call runs in a worker thread (``asyncio.to_thread``).

The file is in WAL mode (the SDK sets it), with SQLite's default ``synchronous`` (FULL): a
commit waits for its WAL write to reach the disk, as PostgreSQL's does in this benchmark.
Messages are stored as the OpenAI-style dicts they are, one item per message, as
``agents_sqlalchemy.py`` does.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession

from .agents_sqlalchemy import CHUNK, to_item


class AgentsAdvancedSQLitePeer:
    name = "openai-agents-advanced-sqlite"

    def __init__(self) -> None:
        self._path: Path | None = None
        self._sessions: dict[str, AdvancedSQLiteSession] = {}

    async def setup(self, folder: Path) -> None:
        """Its SQLite file goes in ``folder`` (an existing, empty one)."""
        self._path = folder / "agents-advanced.sqlite3"

    async def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def _session(self, conversation_key: str) -> AdvancedSQLiteSession:
        # One session object per conversation, held as an app would hold it for a chat.
        session = self._sessions.get(conversation_key)
        if session is None:
            assert self._path is not None, "setup() first"
            session = AdvancedSQLiteSession(session_id=conversation_key, db_path=self._path,
                                            create_tables=True)
            self._sessions[conversation_key] = session
        return session

    async def bulk_load(self, conversation_key: str, messages: list[dict[str, Any]]) -> None:
        session = self._session(conversation_key)
        for start in range(0, len(messages), CHUNK):
            await session.add_items([to_item(m) for m in messages[start:start + CHUNK]])

    async def branch(self, conversation_key: str, turn: int) -> str:
        """A branch before user turn ``turn`` (the SDK's way to edit that message), which
        becomes the session's current branch; its id. Named here (a fresh uuid), as an app
        would: the SDK's default name is the turn and the second, and a second branch in the
        same second tries names one by one."""
        session = self._session(conversation_key)
        return await session.create_branch_from_turn(turn, branch_name=uuid.uuid4().hex)

    async def branch_and_read(self, conversation_key: str, turn: int) -> str:
        """:meth:`branch`, then every item of the branch (the session's current one)."""
        branch = await self.branch(conversation_key, turn)
        await self._session(conversation_key).get_items()
        return branch

    async def items(self, conversation_key: str, branch: str) -> list[Any]:
        return await self._session(conversation_key).get_items(branch_id=branch)

    async def drop_branch(self, conversation_key: str, branch: str) -> None:
        """Back to the main branch, and the branch deleted (untimed, between samples)."""
        session = self._session(conversation_key)
        await session.switch_to_branch("main")
        await session.delete_branch(branch)
