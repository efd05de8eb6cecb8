"""Synthetic but realistic chat data, loaded with COPY, for benchmarks and demos.

Users ``{prefix}{n:06d}``, each with ``conversations`` conversations of ``messages``
messages: mostly user/assistant turns of varied length, one turn in ten an assistant tool
call followed by its tool result, every message with a token count. The same ``seed``
gives the same rows (ids, texts, timestamps).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._connect import open_call_path
from .sql import SQL

__all__ = ["SeedReport", "TextPool", "seed_database", "synthetic_history"]

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

_WORDS = (
    "the a to and of in is it you that for on with this can be your as are have do not at "
    "task list todo add remove done milk bread meeting tomorrow today week project report "
    "email call mum doctor appointment groceries deadline review code deploy server fix bug "
    "write tests budget invoice travel flight hotel book read chapter plan sprint design "
    "please thanks sure here is what I found about your request let me check that for you "
    "priority high low medium remind me at noon evening morning friday monday weekend"
).split()

_MESSAGE_COLUMNS = ["user_id", "conversation_id", "seq", "role", "content", "tool_calls",
                    "tool_call_id", "metadata", "token_count", "created_at"]
_CONVERSATION_COLUMNS = ["user_id", "id", "title", "metadata", "message_count", "created_at",
                         "updated_at"]


@dataclass
class SeedReport:
    users: int
    conversations: int
    messages: int
    seconds: float

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class TextPool:
    """A pool of sentences to draw message texts from quickly (and reproducibly)."""

    def __init__(self, rng: random.Random) -> None:
        self.sentences = []
        for _ in range(2000):
            words = rng.choices(_WORDS, k=rng.randint(4, 24))
            self.sentences.append((" ".join(words).capitalize() + ".", len(words) * 4 // 3 + 1))

    def text(self, rng: random.Random, sentences: int) -> tuple[str, int]:
        picked = [self.sentences[rng.randrange(2000)] for _ in range(sentences)]
        return " ".join(s for s, _ in picked), sum(t for _, t in picked)


def synthetic_history(rng: random.Random, texts: TextPool, length: int) -> list[dict[str, Any]]:
    """``length`` OpenAI-style message dicts with token counts: user/assistant turns, one
    turn in ten an assistant tool call followed by its tool result."""
    messages: list[dict[str, Any]] = []
    while len(messages) < length:
        content, tokens = texts.text(rng, rng.choice((1, 1, 2, 3)))
        messages.append({"role": "user", "content": content, "token_count": tokens})
        if rng.random() < 0.1:
            call_id = f"call_{len(messages)}"
            arguments = json.dumps({"title": content[:40]})
            messages.append({"role": "assistant", "content": None, "token_count": 20,
                             "tool_calls": [{"id": call_id, "type": "function", "function": {
                                 "name": "add_task", "arguments": arguments}}]})
            messages.append({"role": "tool", "tool_call_id": call_id, "token_count": 12,
                             "content": json.dumps({"ok": True, "task_id": len(messages)})})
        content, tokens = texts.text(rng, rng.choice((1, 2, 3, 5, 8)))
        messages.append({"role": "assistant", "content": content, "token_count": tokens})
    return messages[:length]


def _conversation_rows(rng: random.Random, texts: TextPool, user_id: str, index: int,
                       length: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    cid = uuid.UUID(int=rng.getrandbits(128), version=4)
    start = EPOCH + timedelta(minutes=index * 7 + rng.randrange(7))
    rows = [
        (user_id, cid, seq, m["role"], m["content"],
         json.dumps(m["tool_calls"]) if "tool_calls" in m else None, m.get("tool_call_id"),
         "{}", m["token_count"], start + timedelta(seconds=seq * 20))
        for seq, m in enumerate(synthetic_history(rng, texts, length), start=1)
    ]
    updated = rows[-1][-1] if rows else start
    conversation = (user_id, cid, f"Chat {index + 1}", '{"seeded": true}', len(rows),
                    start, updated)
    return conversation, rows


def _chunks(rng: random.Random, users: list[str], conversations: int, messages: int,
            chunk_messages: int) -> Iterator[tuple[list[tuple[Any, ...]],
                                                   list[tuple[Any, ...]]]]:
    texts = TextPool(rng)
    convs: list[tuple[Any, ...]] = []
    msgs: list[tuple[Any, ...]] = []
    for user_id in users:
        for index in range(conversations):
            conversation, rows = _conversation_rows(rng, texts, user_id, index, messages)
            convs.append(conversation)
            msgs.extend(rows)
            if len(msgs) >= chunk_messages:
                yield convs, msgs
                convs, msgs = [], []
    if convs:
        yield convs, msgs


async def seed_database(url: str, *, users: int, conversations: int, messages: int,
                        seed: int | None = None, user_prefix: str = "seed-user-",
                        progress: Callable[[int], None] | None = None) -> SeedReport:
    """Create ``users`` users with ``conversations`` conversations of ``messages`` messages.

    Two connections COPY alternate chunks, so generating one chunk overlaps loading the
    other. Each chunk commits on its own: an interrupted seed leaves whole conversations.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    rng = random.Random(seed)
    user_ids = [f"{user_prefix}{n:06d}" for n in range(1, users + 1)]
    # Binary COPY: no json codec on these connections (asyncpg's binary COPY refuses jsonb
    # under the text-format codec chatstore's pools register).
    calls = await open_call_path(url, min_size=2, max_size=2, init=None)
    try:
        async with calls.connection() as conn:
            await conn.execute(SQL.create_users, user_ids)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)

        async def loader() -> None:
            async with calls.connection() as conn:
                while (item := await queue.get()) is not None:
                    convs, msgs = item
                    async with calls.atomic(conn):
                        await conn.copy_records_to_table("conversations", records=convs,
                                                         columns=_CONVERSATION_COLUMNS)
                        await conn.copy_records_to_table("messages", records=msgs,
                                                         columns=_MESSAGE_COLUMNS)
                    if progress:
                        progress(len(msgs))

        workers = [asyncio.ensure_future(loader()) for _ in range(2)]

        async def put(item: Any) -> None:
            """Queue a chunk, or raise the error of a loader that failed."""
            putting = asyncio.ensure_future(queue.put(item))
            await asyncio.wait([putting, *workers], return_when=asyncio.FIRST_COMPLETED)
            if not putting.done():
                putting.cancel()
                await asyncio.gather(*workers)  # raises the loader's error

        total = 0
        try:
            for convs, msgs in _chunks(rng, user_ids, conversations, messages, 20_000):
                total += len(msgs)
                await put((convs, msgs))
            for _ in workers:
                await put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
        async with calls.connection() as conn:
            await conn.execute(SQL.analyze_chat_tables)
    finally:
        await calls.close()
    return SeedReport(users=users, conversations=users * conversations, messages=total,
                      seconds=loop.time() - started)
