"""Plain SQLModel, the way a tutorial would write it: two ORM classes, an async engine
(asyncpg), ``sqlmodel.ext.asyncio.session.AsyncSession``, ORM queries, no raw SQL, no tuning.

Tables ``sqlmodel_conversation(id uuid pk, user_id text [index], title, created_at,
updated_at)`` and ``sqlmodel_message(id serial pk, conversation_id uuid fk [index] ON DELETE
CASCADE, role, content, tool_calls json, tool_call_id, created_at)``. Single-column indexes
only, as ``Field(index=True)`` makes them. Every call opens a session and first loads the
conversation to check it belongs to the user (``session.get``), so reads are two queries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .base import driver_url

CHUNK = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


class Conversation(SQLModel, table=True):
    __tablename__ = "sqlmodel_conversation"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(index=True)
    title: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Message(SQLModel, table=True):
    __tablename__ = "sqlmodel_message"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: uuid.UUID = Field(foreign_key="sqlmodel_conversation.id", index=True,
                                       ondelete="CASCADE")
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    tool_call_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


def to_row(conversation_id: uuid.UUID, message: dict[str, Any]) -> Message:
    return Message(conversation_id=conversation_id, role=message["role"],
                   content=message.get("content") or "", tool_calls=message.get("tool_calls"),
                   tool_call_id=message.get("tool_call_id"))


class SQLModelPeer:
    name = "sqlmodel-plain"
    loads_whole_history = False
    tables = ("sqlmodel_conversation", "sqlmodel_message")

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def setup(self, dsn: str) -> None:
        self._engine = create_async_engine(driver_url(dsn, "asyncpg"))
        self._sessions = async_sessionmaker(self._engine, class_=AsyncSession,
                                            expire_on_commit=False)
        tables = [SQLModel.metadata.tables[t] for t in ("sqlmodel_conversation",
                                                        "sqlmodel_message")]
        async with self._engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=tables)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._sessions = None

    def _session(self) -> AsyncSession:
        assert self._sessions is not None, "setup() first"
        return self._sessions()

    @staticmethod
    async def _conversation(session: AsyncSession, user_id: str, key: str, *,
                            create: bool = False) -> Conversation:
        conversation = await session.get(Conversation, uuid.UUID(key))
        if conversation is None and create:
            conversation = Conversation(id=uuid.UUID(key), user_id=user_id)
            session.add(conversation)
            await session.flush()
        if conversation is None or conversation.user_id != user_id:
            raise LookupError(f"conversation {key} not found")
        return conversation

    async def _append(self, user_id: str, key: str, messages: list[dict[str, Any]]) -> None:
        async with self._session() as session:
            conversation = await self._conversation(session, user_id, key, create=True)
            for start in range(0, len(messages), CHUNK):
                session.add_all([to_row(conversation.id, m)
                                 for m in messages[start:start + CHUNK]])
                await session.flush()
            conversation.updated_at = utcnow()
            session.add(conversation)
            await session.commit()

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        await self._append(user_id, conversation_key, messages)

    async def append_one(self, user_id: str, conversation_key: str,
                         message: dict[str, Any]) -> None:
        await self._append(user_id, conversation_key, [message])

    async def append_turn(self, user_id: str, conversation_key: str,
                          user_msg: dict[str, Any], assistant_msg: dict[str, Any]) -> None:
        await self._append(user_id, conversation_key, [user_msg, assistant_msg])

    async def newest(self, user_id: str, conversation_key: str, n: int) -> list[Any]:
        async with self._session() as session:
            conversation = await self._conversation(session, user_id, conversation_key)
            rows = await session.exec(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(col(Message.created_at).desc(), col(Message.id).desc()).limit(n))
            return list(rows)[::-1]

    async def page_before(self, user_id: str, conversation_key: str,
                          before_index: int, n: int) -> list[Any]:
        # Positional paging the tutorial way: OFFSET/LIMIT in ascending order.
        end = max(0, before_index - 1)
        start = max(0, end - n)
        async with self._session() as session:
            conversation = await self._conversation(session, user_id, conversation_key)
            rows = await session.exec(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(col(Message.created_at), col(Message.id))
                .offset(start).limit(end - start))
            return list(rows)

    async def whole(self, user_id: str, conversation_key: str) -> list[Any]:
        async with self._session() as session:
            conversation = await self._conversation(session, user_id, conversation_key)
            rows = await session.exec(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(col(Message.created_at), col(Message.id)))
            return list(rows)

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        async with self._session() as session:
            rows = await session.exec(
                select(Conversation).where(Conversation.user_id == user_id)
                .order_by(col(Conversation.updated_at).desc()).limit(n))
            return list(rows)

    async def delete_conversation(self, user_id: str, conversation_key: str) -> None:
        # The foreign key's ON DELETE CASCADE removes the messages.
        async with self._session() as session:
            conversation = await self._conversation(session, user_id, conversation_key)
            await session.delete(conversation)
            await session.commit()
