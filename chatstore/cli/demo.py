"""``chatstore demo``: migrate, play a scripted two-turn chat as a backend would (a turn
under its lease, a tool call and its result), print the transcript, and EXPLAIN ANALYZE the
two hot reads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from .. import Message, connect
from .._call import CallPath, Conn
from ..sql import QUERIES, SQL
from .commands import migrate_or_fail, run_async
from .target import database

__all__ = ["DEMO_USER", "cmd_demo", "explain"]

DEMO_USER = "demo-user"

TURNS: list[tuple[str, Callable[[list[Message]], list[dict[str, Any]]]]] = [
    ("Hi! Can you add 'buy oat milk' to my todo list?", lambda ctx: [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_add_1", "type": "function",
            "function": {"name": "add_task", "arguments": json.dumps({"title": "buy oat milk"})},
        }]},
        {"role": "tool", "tool_call_id": "call_add_1",
         "content": json.dumps({"ok": True, "task_id": 1})},
        {"role": "assistant", "content": "Done: 'buy oat milk' is on your list."},
    ]),
    ("What is on my list now?", lambda ctx: [
        {"role": "assistant", "content": "You have one task: buy oat milk. "
                                         f"(I read {len(ctx)} earlier messages for context.)"},
    ]),
]


def _print_plan(title: str, rows: Sequence[asyncpg.Record]) -> None:
    print(f"\n{title}")
    for row in rows:
        print("  " + row[0])


async def _demo(url: str) -> None:
    async with await connect(url, min_size=1, max_size=2) as store:
        async with store.call_path.connection() as conn:
            await conn.execute(SQL.create_users, [DEMO_USER])
        earlier = await store.list_conversations(DEMO_USER, limit=200)
        if earlier.items:
            print(f"The demo ran here before ({len(earlier.items)} demo conversation(s)); "
                  "adding one more.")
        conversation = await store.create_conversation(
            DEMO_USER, title=f"Todo assistant #{len(earlier.items) + 1}",
            metadata={"agent": "scripted demo"})
        for text, assistant in TURNS:
            # One stateless chat turn, under the turn's lease: load the context, store the
            # user's message, call the model (scripted here), store its reply.
            async with store.turn(DEMO_USER, conversation.id) as turn:
                context = await turn.context(max_tokens=4000)
                await turn.append([{"role": "user", "content": text}])
                await turn.append(assistant(context))

        print(f"\nTranscript of {conversation.title!r} ({conversation.id}):")
        for message in (await store.list_messages(DEMO_USER, conversation.id)).items:
            if message.tool_calls:
                calls = ", ".join(f"{c['function']['name']}({c['function']['arguments']})"
                                  for c in message.tool_calls)
                body = f"[calls {calls}]"
            else:
                body = message.content or ""
            role = message.role.value if message.role else (message.item or {}).get("type")
            print(f"  {message.seq:>3} {role!s:>9}: {body}")

        print(f"\nConversations of {DEMO_USER!r}, latest activity first:")
        for conv in (await store.list_conversations(DEMO_USER)).items:
            print(f"  {conv.updated_at:%Y-%m-%d %H:%M:%S}  {conv.message_count:>3} messages  "
                  f"{conv.title}")

        async with store.call_path.connection() as conn:
            await _show_plan(store.call_path, conn, "Newest 50 messages of the conversation "
                             "(list_messages_newest):", "list_messages_newest",
                             [DEMO_USER, conversation.id, 51], "messages", "messages_pkey")
            await _show_plan(store.call_path, conn, "Newest 20 conversations of the user "
                             "(list_conversations):", "list_conversations", [DEMO_USER, 21],
                             "conversations", "conversations_user_id_active_at_idx")


def explain(statement: str) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the named statement ``statement``, as text: EXPLAIN
    wraps a statement, so it cannot be a named statement of its own."""
    return "EXPLAIN (ANALYZE, BUFFERS) " + QUERIES[statement]


async def _show_plan(calls: CallPath, conn: Conn, title: str, statement: str, args: list[Any],
                     table: str, index: str) -> None:
    """EXPLAIN ANALYZE a hot read. On a table of a few pages the planner rightly reads the
    table instead of the index; say so, then show the plan it uses at scale (the same
    statement with sequential and bitmap scans switched off for that one EXPLAIN)."""
    plan = explain(statement)
    rows = await conn.fetch(plan, *args)
    _print_plan(title, rows)
    if any(f"using {index}" in row[0] and "Bitmap" not in row[0] for row in rows):
        return
    pages = await conn.fetchval(SQL.table_pages, table)
    print(f"  -> Not the index: {table} fills only {pages} page(s) of 8 KiB here, so reading "
          "those and sorting costs the planner less than walking the index. With more rows it "
          "switches to the index, as below (the same EXPLAIN with sequential and bitmap scans "
          "switched off).")
    async with calls.atomic(conn):  # prefer_index_plans lasts to the end of this transaction
        await conn.fetchrow(SQL.prefer_index_plans)
        _print_plan(title.rstrip(":") + ", the plan at scale:", await conn.fetch(plan, *args))


def cmd_demo(args: argparse.Namespace) -> int:
    url = database(args)
    applied = migrate_or_fail(url)
    print("Migrations: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    run_async(_demo(url))
    return 0
