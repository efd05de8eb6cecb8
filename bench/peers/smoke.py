"""Run every operation of every peer once on a small history and say how each went.

    python -m bench.peers.smoke DSN [--messages 120]

DSN is a postgresql:// URL (a Unix-socket one like postgresql://postgres@/postgres?host=/dir
works). chatstore's migrations are applied first, so the peers' tables are created beside
chatstore's own. Prints, per peer and operation: ok, n/a (NotSupported) or the error.
Exits non-zero if any operation failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from . import all_peers
from .base import NotSupported, Peer

OPS = ("setup", "bulk_load", "append_one", "append_turn", "newest", "page_before", "whole",
       "recent_conversations", "delete_conversation", "close")


def history(count: int) -> list[dict[str, Any]]:
    """User/assistant turns; every fifth turn the assistant calls a tool first."""
    out: list[dict[str, Any]] = []
    turn = 0
    while len(out) < count:
        out.append({"role": "user", "content": f"question {turn}: " + "lorem ipsum " * 10})
        if turn % 5 == 4:
            call_id = f"call_{turn}"
            out.append({"role": "assistant", "content": "", "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"q": turn})}}]})
            out.append({"role": "tool", "tool_call_id": call_id, "content": f"result {turn}"})
        out.append({"role": "assistant", "content": f"answer {turn}: " + "dolor sit " * 20})
        turn += 1
    return out[:count]


def content(message: Any) -> str:
    """The text of a message of any peer (dict item, langchain, LlamaIndex or ORM row)."""
    return str(message["content"] if isinstance(message, dict) else message.content)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


async def run_peer(peer: Peer, dsn: str, count: int) -> dict[str, str]:
    user, key = f"smoke-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    msgs = history(count)
    one = {"role": "user", "content": "appended one"}
    turn = ({"role": "user", "content": "turn question"},
            {"role": "assistant", "content": "turn answer"})
    final = [*msgs, one, *turn]

    async def newest() -> None:
        got = await peer.newest(user, key, 20)
        expect([content(m) for m in got] == [m["content"] for m in final[-20:]],
               f"newest 20: got {len(got)} not matching")

    async def page_before() -> None:
        got = await peer.page_before(user, key, 60, 20)
        expect([content(m) for m in got] == [m["content"] for m in final[39:59]],
               f"page_before(60, 20): got {len(got)} not matching")

    async def whole() -> None:
        got = await peer.whole(user, key)
        expect([content(m) for m in got] == [m["content"] for m in final],
               f"whole: got {len(got)} of {len(final)}, or out of order")

    async def recent() -> None:
        got = await peer.recent_conversations(user, 10)
        expect(len(got) == 1, f"recent_conversations: got {len(got)}, want 1")

    async def delete() -> None:
        await peer.delete_conversation(user, key)
        try:
            left = await peer.whole(user, key)
        except LookupError:
            left = []
        expect(not left, f"delete_conversation: {len(left)} messages left")

    steps: dict[str, Callable[[], Awaitable[Any]]] = {
        "setup": lambda: peer.setup(dsn),
        "bulk_load": lambda: peer.bulk_load(user, key, msgs),
        "append_one": lambda: peer.append_one(user, key, one),
        "append_turn": lambda: peer.append_turn(user, key, *turn),
        "newest": newest,
        "page_before": page_before,
        "whole": whole,
        "recent_conversations": recent,
        "delete_conversation": delete,
        "close": peer.close,
    }
    results: dict[str, str] = {}
    for op in OPS:
        if not results.get("setup", "ok").startswith("ok") and op != "close":
            results[op] = "skipped"
            continue
        start = time.perf_counter()
        try:
            await steps[op]()
            results[op] = f"ok ({(time.perf_counter() - start) * 1e3:.1f} ms)"
        except NotSupported as exc:
            results[op] = f"n/a ({exc})"
        except Exception as exc:  # report every failure, go on with the next operation
            results[op] = f"ERROR {type(exc).__name__}: {exc}".splitlines()[0][:160]
    return results


async def main(dsn: str, count: int) -> int:
    failed = False
    for peer in all_peers():
        print(f"{peer.name} (loads whole history for newest N: {peer.loads_whole_history})")
        for op, result in (await run_peer(peer, dsn, count)).items():
            print(f"  {op:<22} {result}")
            failed |= result.startswith(("ERROR", "skipped"))
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--messages", type=int, default=120)
    args = parser.parse_args()
    try:
        from chatstore.migrate import apply_migrations

        apply_migrations(args.dsn)
    except Exception as exc:  # the peers do not need chatstore's tables, only sit beside them
        print(f"(chatstore migrations not applied: {type(exc).__name__}: {exc})")
    sys.exit(asyncio.run(main(args.dsn, args.messages)))
