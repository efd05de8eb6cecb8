"""Message size and shape: the whole-history and append rows again with messages of about
2 KB (the main rows' messages average about 200 B), and the whole history of an OpenAI
Agents SDK run's items (user messages, output messages, reasoning items, function calls and
their outputs) in the libraries that store such items as they are."""

from __future__ import annotations

import uuid
from typing import Any

from .fixture import Fixture
from .log import log
from .peers import Peer
from .plan import ITEMS_WHOLE_OP, LONG_APPEND_OP, LONG_BYTES, LONG_WHOLE_OP, USER
from .results import Results
from .rows import agent_items
from .runner import for_all, measure

# The Agents SDK session, the one peer that stores these items as they are.
SDK_PEER = "openai-agents-sqlalchemy"


def lengthen(messages: list[dict[str, Any]], fx: Fixture) -> list[dict[str, Any]]:
    """``messages`` with every text content grown to about ``LONG_BYTES`` (more of the
    seeded generator's sentences; token counts grown alike)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            tokens = message.get("token_count") or 0
            parts = [content]
            while sum(len(p) + 1 for p in parts) < LONG_BYTES:
                text, more = fx.texts.text(fx.rng, 3)
                parts.append(text)
                tokens += more
            message = {**message, "content": " ".join(parts), "token_count": tokens}
        out.append(message)
    return out


async def measure_shapes(fx: Fixture, results: Results) -> None:
    plan = fx.plan
    log(f"message size and shape: ~{LONG_BYTES:,} B messages, Agents SDK items:")
    long_keys: dict[int, str] = {}
    for length in plan.long_lengths:
        log(f"  loading {length:,} messages of ~{LONG_BYTES:,} B into every library ...")
        long_keys[length] = str(uuid.uuid4())
        await fx.load(long_keys[length], lengthen(fx.history(length), fx))
    sdk = next((p for p in fx.peers if p.name == SDK_PEER), None)
    item_peers: list[Peer] = [fx.own, fx.raw, *([sdk] if sdk is not None else [])]
    item_keys: dict[int, str] = {}
    for length in plan.item_lengths:
        log(f"  loading {length:,} Agents SDK items into chatstore and {SDK_PEER} ...")
        key = item_keys[length] = str(uuid.uuid4())
        items = agent_items(fx.rng, fx.texts, length)
        await fx.own.bulk_load(USER, key, [{"item": item} for item in items])
        fx.raw.ids[key] = fx.own.ids[key]  # the floor reads chatstore's rows of them
        if sdk is not None:
            await sdk.bulk_load(USER, key, items)
    await fx.settle()
    await measure(fx, results, LONG_WHOLE_OP, {f"{n:,}": for_all(
        fx.peers, lambda p, k=long_keys[n]: lambda: p.whole(USER, k))
        for n in plan.long_lengths})
    one = lengthen([{"role": "user", "content": "Please add 'call the plumber' to my list.",
                     "token_count": 12}], fx)[0]
    append_key = long_keys[min(plan.long_lengths, key=lambda n: abs(n - 1_000))]
    await measure(fx, results, LONG_APPEND_OP, {"1,000": for_all(
        fx.peers, lambda p: lambda: p.append_one(USER, append_key, one))})
    await measure(fx, results, ITEMS_WHOLE_OP, {f"{n:,}": for_all(
        item_peers, lambda p, k=item_keys[n]: lambda: p.whole(USER, k))
        for n in plan.item_lengths})
