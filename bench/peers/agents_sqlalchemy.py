"""OpenAI Agents SDK ``SQLAlchemySession`` on an async SQLAlchemy engine (asyncpg driver).

Tables ``agent_sessions(session_id varchar pk, created_at, updated_at)`` and
``agent_messages(id serial pk, session_id fk -> agent_sessions ON DELETE CASCADE,
message_data text, created_at)`` with an index on ``(session_id, created_at)``.
The session id is the conversation key; there is no notion of a user.

Items are stored as JSON text, one row per item. The OpenAI-style chat dicts are stored as
they are, one item per message, so positions match the other peers; user and assistant dicts
are valid Responses "easy input" items, while tool calls and tool results would be
``function_call`` / ``function_call_output`` items in a real agent run.
"""

from __future__ import annotations

from typing import Any, cast

from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.items import TResponseInputItem
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .base import NotSupported, driver_url, page_slice

SESSIONS_TABLE = "agent_sessions"
MESSAGES_TABLE = "agent_messages"
CHUNK = 1000


def to_item(message: dict[str, Any]) -> TResponseInputItem:
    return cast(TResponseInputItem, dict(message))


class AgentsSQLAlchemyPeer:
    name = "openai-agents-sqlalchemy"
    loads_whole_history = False
    tables = (SESSIONS_TABLE, MESSAGES_TABLE)

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._sessions: dict[str, SQLAlchemySession] = {}

    async def setup(self, dsn: str) -> None:
        self._engine = create_async_engine(driver_url(dsn, "asyncpg"))
        # create_tables=True creates both tables (and the index) on the first call, once.
        probe = SQLAlchemySession("setup-probe", engine=self._engine, create_tables=True,
                                  sessions_table=SESSIONS_TABLE, messages_table=MESSAGES_TABLE)
        await probe.get_items(limit=1)

    async def close(self) -> None:
        self._sessions.clear()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _session(self, conversation_key: str) -> SQLAlchemySession:
        # One session object per conversation, as an app holding it for a chat would; building
        # one defines two SQLAlchemy Tables, which is not free.
        session = self._sessions.get(conversation_key)
        if session is None:
            assert self._engine is not None, "setup() first"
            session = SQLAlchemySession(conversation_key, engine=self._engine,
                                        sessions_table=SESSIONS_TABLE,
                                        messages_table=MESSAGES_TABLE)
            self._sessions[conversation_key] = session
        return session

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        session = self._session(conversation_key)
        for start in range(0, len(messages), CHUNK):
            await session.add_items([to_item(m) for m in messages[start:start + CHUNK]])

    async def append_one(self, user_id: str, conversation_key: str,
                         message: dict[str, Any]) -> None:
        await self._session(conversation_key).add_items([to_item(message)])

    async def append_turn(self, user_id: str, conversation_key: str,
                          user_msg: dict[str, Any], assistant_msg: dict[str, Any]) -> None:
        await self._session(conversation_key).add_items([to_item(user_msg),
                                                         to_item(assistant_msg)])

    async def newest(self, user_id: str, conversation_key: str, n: int) -> list[Any]:
        # Native: ORDER BY created_at DESC, id DESC LIMIT n, reversed in Python.
        return await self._session(conversation_key).get_items(limit=n)

    async def page_before(self, user_id: str, conversation_key: str,
                          before_index: int, n: int) -> list[Any]:
        # get_items only offers "the newest N" or everything; paging by position needs the
        # total count, which the API does not give, so load it all and slice.
        return page_slice(await self._session(conversation_key).get_items(), before_index, n)

    async def whole(self, user_id: str, conversation_key: str) -> list[Any]:
        return await self._session(conversation_key).get_items()

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        raise NotSupported("no users and no API to list sessions")

    async def delete_conversation(self, user_id: str, conversation_key: str) -> None:
        await self._session(conversation_key).clear_session()
        self._sessions.pop(conversation_key, None)
