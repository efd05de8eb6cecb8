"""chatstore itself, and raw asyncpg running chatstore's own SQL with no models (the floor).

Both follow the :class:`bench.peers.base.Peer` interface, plus what the other libraries lack:
``context`` (a token-budgeted context window) and conversation trees (``create``, ``fork``,
``alternatives``; ``delete_fork`` puts a tree back between timed calls). The floor runs on a
pool made by ``chatstore.connect`` itself: the same pool type, ``init`` (chatstore's JSON codec) and
``reset`` hook, so the two differ only in chatstore's layer.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

import chatstore
from chatstore import ChatStore
from chatstore.sql import SQL

POOL_SIZE = 2
CHUNK = 10_000
TABLES = ("conversations", "messages")


class ChatstorePeer:
    name = "chatstore"
    loads_whole_history = False
    tables = TABLES

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self._store: ChatStore | None = None
        self.pool_size = pool_size
        self.ids: dict[str, uuid.UUID] = {}

    @property
    def store(self) -> ChatStore:
        assert self._store is not None, "setup() first"
        return self._store

    async def setup(self, dsn: str) -> None:
        self._store = await chatstore.connect(dsn, min_size=self.pool_size,
                                              max_size=self.pool_size)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        conversation = await self.store.create_conversation(user_id)
        self.ids[conversation_key] = conversation.id
        for start in range(0, len(messages), CHUNK):
            await self.store.append_messages(user_id, conversation.id,
                                             messages[start:start + CHUNK])

    async def append_one(self, user_id: str, key: str, message: dict[str, Any]) -> None:
        await self.store.append_message(user_id, self.ids[key], message)

    async def append_turn(self, user_id: str, key: str, user_msg: dict[str, Any],
                          assistant_msg: dict[str, Any]) -> None:
        await self.store.append_messages(user_id, self.ids[key], [user_msg, assistant_msg])

    async def newest(self, user_id: str, key: str, n: int) -> list[Any]:
        return (await self.store.list_messages(user_id, self.ids[key], limit=n)).items

    async def page_before(self, user_id: str, key: str, before_index: int,
                          n: int) -> list[Any]:
        page = await self.store.list_messages(user_id, self.ids[key], limit=n,
                                              before=before_index)
        return page.items

    async def whole(self, user_id: str, key: str) -> list[Any]:
        # One statement (list_messages_all), as exports, UIs and agent sessions read it.
        return (await self.store.list_messages(user_id, self.ids[key], limit=None)).items

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        return (await self.store.list_conversations(user_id, limit=n)).items

    async def delete_conversation(self, user_id: str, key: str) -> None:
        await self.store.delete_conversation(user_id, self.ids.pop(key))

    async def context(self, user_id: str, key: str, max_tokens: int) -> list[Any]:
        return await self.store.context_messages(user_id, self.ids[key], max_tokens=max_tokens)

    async def create(self, user_id: str) -> None:
        await self.store.create_conversation(user_id)

    async def fork(self, user_id: str, key: str, at_seq: int) -> str:
        """A fork of ``key`` at ``at_seq`` (it becomes the tree's current version, as when a
        user edits a message); the fork's key."""
        fork = await self.store.fork(user_id, self.ids[key], at_seq=at_seq)
        self.ids[str(fork.id)] = fork.id
        return str(fork.id)

    async def alternatives(self, user_id: str, key: str, seq: int) -> list[Any]:
        return await self.store.alternatives(user_id, self.ids[key], seq)

    async def delete_fork(self, user_id: str, key: str) -> None:
        await self.store.delete_conversation(user_id, self.ids.pop(key))


class RawAsyncpgPeer:
    """chatstore's statements on a plain asyncpg pool: no checks, no models, no error mapping."""

    name = "raw asyncpg"
    loads_whole_history = False
    tables = TABLES

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        self._store: ChatStore | None = None
        self.pool_size = pool_size
        self.ids: dict[str, uuid.UUID] = {}

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._store is not None, "setup() first"
        return self._store.pool

    @property
    def store(self) -> ChatStore:
        """The ChatStore that made the pool: builds trees and tidies up, never timed."""
        assert self._store is not None, "setup() first"
        return self._store

    async def setup(self, dsn: str) -> None:
        # A pool of its own, made by chatstore.connect(): same pool type, codec and reset.
        self._store = await chatstore.connect(dsn, min_size=self.pool_size,
                                              max_size=self.pool_size)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()

    async def _append(self, user_id: str, cid: uuid.UUID,
                      messages: list[dict[str, Any]]) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            SQL.append_messages, user_id, cid,
            [m["role"] for m in messages], [m.get("content") for m in messages],
            [json.dumps(m["tool_calls"]) if m.get("tool_calls") else None for m in messages],
            [m.get("tool_call_id") for m in messages], ["{}" for _ in messages],
            [m.get("token_count") for m in messages], [None for _ in messages],
            [None for _ in messages], None, None, None, None, False)

    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None:
        row = await self.pool.fetchrow(SQL.create_conversation, user_id, None, None,
                                       None)
        self.ids[conversation_key] = row["id"]
        for start in range(0, len(messages), CHUNK):
            await self._append(user_id, row["id"], messages[start:start + CHUNK])

    async def append_one(self, user_id: str, key: str, message: dict[str, Any]) -> None:
        # The one-message statement chatstore runs for a single message (no unnest).
        await self.pool.fetch(
            SQL.append_message, user_id, self.ids[key], message["role"],
            message.get("content"),
            json.dumps(message["tool_calls"]) if message.get("tool_calls") else None,
            message.get("tool_call_id"), "{}", message.get("token_count"), None, None,
            None, None, None, None, False)

    async def append_turn(self, user_id: str, key: str, user_msg: dict[str, Any],
                          assistant_msg: dict[str, Any]) -> None:
        await self._append(user_id, self.ids[key], [user_msg, assistant_msg])

    async def newest(self, user_id: str, key: str, n: int) -> list[Any]:
        rows = await self.pool.fetch(SQL.list_messages_newest, user_id, self.ids[key],
                                     n + 1)
        return rows[:n][::-1]

    async def page_before(self, user_id: str, key: str, before_index: int,
                          n: int) -> list[Any]:
        rows = await self.pool.fetch(SQL.list_messages_before, user_id, self.ids[key],
                                     before_index, n + 1)
        return rows[:n][::-1]

    async def whole(self, user_id: str, key: str) -> list[Any]:
        return await self.pool.fetch(SQL.list_messages_all, user_id, self.ids[key])

    async def recent_conversations(self, user_id: str, n: int) -> list[Any]:
        return (await self.pool.fetch(SQL.list_conversations, user_id, n + 1))[:n]

    async def delete_conversation(self, user_id: str, key: str) -> None:
        # What chatstore runs to delete a root (a plain conversation is the root of a tree
        # of one): find its root, lock the tree, delete it, in one transaction.
        cid = self.ids.pop(key)
        async with self.pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            row = await conn.fetchrow(SQL.get_conversation, user_id, cid)
            assert row is not None, f"conversation {cid} is gone"
            await conn.fetchval(SQL.lock_tree, user_id, row["root_id"])
            await conn.fetch(SQL.delete_tree, user_id, row["root_id"])

    async def context(self, user_id: str, key: str, max_tokens: int) -> list[Any]:
        # The statement only: chatstore also reverses the rows and applies the window rule.
        return await self.pool.fetch(SQL.context_messages_by_tokens, user_id,
                                     self.ids[key], 10_000, max_tokens)

    async def create(self, user_id: str) -> None:
        await self.pool.fetchrow(SQL.create_conversation, user_id, None, None, None)

    async def fork(self, user_id: str, key: str, at_seq: int) -> str:
        # What ChatStore.fork runs: one statement (it locks the root and the source, inserts
        # the fork, and moves the root's current version and activity).
        source = self.ids[key]
        row = await self.pool.fetchrow(SQL.fork_conversation, user_id, source, at_seq, None,
                                       None, True, None, None)
        assert row is not None, f"conversation {source} is gone"
        self.ids[str(row["id"])] = row["id"]
        return str(row["id"])

    async def alternatives(self, user_id: str, key: str, seq: int) -> list[Any]:
        return await self.pool.fetch(SQL.alternatives, user_id, self.ids[key], seq)

    async def delete_fork(self, user_id: str, key: str) -> None:
        # Untimed tidying: deleting a fork hands over rows that others read (chatstore's
        # plan), which raw SQL alone cannot decide; delete_conversation above is for roots.
        await self.store.delete_conversation(user_id, self.ids.pop(key))
