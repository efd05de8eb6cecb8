"""langchain-postgres ``PostgresChatMessageHistory`` through its async API (psycopg 3).

Table ``langchain_chat_history(id serial pk, session_id uuid, message jsonb, created_at)``
with an index on ``session_id`` only. The session id is the conversation key; there is no
notion of a user. Reads are ``SELECT message ... WHERE session_id = $1 ORDER BY id``: the whole
history every time, so "newest N" and paging slice it in Python.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_postgres import PostgresChatMessageHistory

from .base import NotSupported, page_slice

TABLE = "langchain_chat_history"
CHUNK = 1000


def to_langchain(message: dict[str, Any]) -> BaseMessage:
    """An OpenAI-style chat message as a langchain_core message."""
    role, content = message["role"], message.get("content") or ""
    if role == "user":
        return HumanMessage(content=content)
    if role == "assistant":
        calls = [{"id": c["id"], "name": c["function"]["name"],
                  "args": json.loads(c["function"]["arguments"] or "{}")}
                 for c in message.get("tool_calls") or []]
        return AIMessage(content=content, tool_calls=calls)
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=message["tool_call_id"])
    raise ValueError(f"unsupported role {role!r}")


class LangchainPostgresPeer:
    name = "langchain-postgres"
    loads_whole_history = True
    tables = (TABLE,)

    def __init__(self) -> None:
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def setup(self, dsn: str) -> None:
        # The libpq URL works as it is, Unix-socket form included.
        self._conn = await psycopg.AsyncConnection.connect(dsn)
        await PostgresChatMessageHistory.acreate_tables(self._conn, TABLE)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _history(self, conversation_key: str) -> PostgresChatMessageHistory:
        # Instantiation is cheap (no I/O); the library is meant to be built per request.
        assert self._conn is not None, "setup() first"
        return PostgresChatMessageHistory(TABLE, conversation_key, async_connection=self._conn)

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        history = self._history(conversation_key)
        for start in range(0, len(messages), CHUNK):
            await history.aadd_messages([to_langchain(m) for m in messages[start:start + CHUNK]])

    async def append_one(self, user_id: str, conversation_key: str,
                         message: dict[str, Any]) -> None:
        await self._history(conversation_key).aadd_messages([to_langchain(message)])

    async def append_turn(self, user_id: str, conversation_key: str,
                          user_msg: dict[str, Any], assistant_msg: dict[str, Any]) -> None:
        await self._history(conversation_key).aadd_messages(
            [to_langchain(user_msg), to_langchain(assistant_msg)])

    async def newest(self, user_id: str, conversation_key: str, n: int) -> list[Any]:
        messages = await self._history(conversation_key).aget_messages()
        return messages[-n:] if n > 0 else []

    async def page_before(self, user_id: str, conversation_key: str,
                          before_index: int, n: int) -> list[Any]:
        return page_slice(await self._history(conversation_key).aget_messages(), before_index, n)

    async def whole(self, user_id: str, conversation_key: str) -> list[Any]:
        return await self._history(conversation_key).aget_messages()

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        raise NotSupported("no users or conversation list: one table keyed by session_id")

    async def delete_conversation(self, user_id: str, conversation_key: str) -> None:
        await self._history(conversation_key).aclear()
