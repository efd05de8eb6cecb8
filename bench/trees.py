"""Conversation trees: the data the tree rows read.

- A fork ``TREE_DEPTH`` levels deep of ``TREE_LENGTH`` messages (``deep_fork``): its reads and
  chat turns are measured in the latency rows, beside the plain conversation of the same
  length and the same messages, in the same shuffled rounds (``beside_plain``).
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from chatstore import ChatStore

from .fixture import Fixture
from .log import log
from .plan import DEEP, TREE_DEPTH, TREE_LENGTH, USER
from .runner import Call


def beside_plain(sizes: dict[str, dict[str, Call]],
                 deep: dict[str, Call]) -> dict[str, dict[str, Call]]:
    """``sizes`` with the deep fork's cells (``deep``) right after the plain conversation of
    the same length, so that both are timed in the same rounds and read side by side."""
    out: dict[str, dict[str, Call]] = {}
    for size, calls in sizes.items():
        out[size] = calls
        if size == f"{TREE_LENGTH:,}":
            out[DEEP] = deep
    return out


async def deep_fork(store: ChatStore, history: list[dict[str, Any]], depth: int) -> UUID:
    """A root and ``depth`` forks, each made at the end of the one before and adding its
    share of ``history``: the last fork's history is ``history``, stored in ``depth + 1``
    parts under ``depth + 1`` conversations."""
    parts = depth + 1
    cut = [len(history) * i // parts for i in range(parts + 1)]
    cid = (await store.create_conversation(USER, messages=history[:cut[1]])).id
    for level in range(1, parts):
        fork = await store.fork(USER, cid, at_seq=cut[level],
                                messages=history[cut[level]:cut[level + 1]])
        cid = fork.id
    return cid


async def load_deep_forks(fx: Fixture, history: list[dict[str, Any]]) -> str:
    """The deep fork of ``history`` for chatstore and for raw asyncpg (each its own, built
    with chatstore's API on its own pool); its key."""
    key = str(uuid.uuid4())
    log(f"building a fork {TREE_DEPTH} levels deep of {len(history):,} messages ...")
    for peer in (fx.own, fx.raw):
        peer.ids[key] = await deep_fork(peer.store, history, TREE_DEPTH)
    return key
