"""LlamaIndex ``PostgresChatStore`` (llama-index-storage-chat-store-postgres), async methods.

Table ``llamaindex_chatstore(id serial pk, key varchar unique, value json[])``: ONE row per
conversation holding the whole history as an array of JSON messages (unique index on ``key``
plus a second plain index on it). Reads fetch and decode that whole array; an append is
``INSERT ... ON CONFLICT (key) DO UPDATE SET value = array_cat(value, $new)``, which rewrites
the whole (TOASTed) array, so its cost grows with the history. The key is the conversation
key; there is no notion of a user.

The store is built with its constructor from two engines we own (so ``close`` can dispose of
them). ``from_uri`` cannot be used with a Unix-socket or password-less URL: it parses the URL
into host/port/user/password and rebuilds ``postgresql+psycopg://user:None@None:5432/db``.
The constructor itself does blocking I/O on a sync engine (psycopg) to create the table.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.storage.chat_store.postgres import (  # type: ignore[import-untyped]
    PostgresChatStore,
)
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker

from .base import NotSupported, driver_url, page_slice

TABLE = "llamaindex_chatstore"


def to_llama(message: dict[str, Any]) -> ChatMessage:
    """An OpenAI-style chat message as a LlamaIndex ChatMessage (as its OpenAI LLM keeps them:
    tool calls and the tool call id in ``additional_kwargs``)."""
    extra = {k: message[k] for k in ("tool_calls", "tool_call_id") if message.get(k)}
    return ChatMessage(role=MessageRole(message["role"]), content=message.get("content") or "",
                       additional_kwargs=extra)


class LlamaIndexPostgresPeer:
    name = "llamaindex-postgres"
    loads_whole_history = True
    tables = (TABLE,)

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._store: PostgresChatStore | None = None

    async def setup(self, dsn: str) -> None:
        self._engine = create_engine(driver_url(dsn, "psycopg"))
        self._async_engine = create_async_engine(driver_url(dsn, "asyncpg"))
        engine, async_engine = self._engine, self._async_engine
        self._store = await asyncio.to_thread(
            lambda: PostgresChatStore(
                session=sessionmaker(engine),
                async_session=sessionmaker(async_engine, class_=AsyncSession),  # type: ignore[call-overload]
                table_name=TABLE,
            ))

    async def close(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
        if self._engine is not None:
            self._engine.dispose()
        self._store = self._engine = self._async_engine = None

    @property
    def store(self) -> PostgresChatStore:
        assert self._store is not None, "setup() first"
        return self._store

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        # One upsert of the whole array (the history is one row; chunking has no batch API).
        await self.store.aset_messages(conversation_key, [to_llama(m) for m in messages])

    async def append_one(self, user_id: str, conversation_key: str,
                         message: dict[str, Any]) -> None:
        await self.store.async_add_message(conversation_key, to_llama(message))

    async def append_turn(self, user_id: str, conversation_key: str,
                          user_msg: dict[str, Any], assistant_msg: dict[str, Any]) -> None:
        # No async batch append: two upserts, two transactions.
        await self.store.async_add_message(conversation_key, to_llama(user_msg))
        await self.store.async_add_message(conversation_key, to_llama(assistant_msg))

    async def newest(self, user_id: str, conversation_key: str, n: int) -> list[Any]:
        messages = await self.store.aget_messages(conversation_key)
        return messages[-n:] if n > 0 else []

    async def page_before(self, user_id: str, conversation_key: str,
                          before_index: int, n: int) -> list[Any]:
        return page_slice(await self.store.aget_messages(conversation_key), before_index, n)

    async def whole(self, user_id: str, conversation_key: str) -> list[Any]:
        messages: list[ChatMessage] = await self.store.aget_messages(conversation_key)
        return list(messages)

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        # aget_keys() lists every key in the table, with no user and no ordering.
        raise NotSupported("no users; aget_keys() is every key, unordered")

    async def delete_conversation(self, user_id: str, conversation_key: str) -> None:
        await self.store.adelete_messages(conversation_key)
