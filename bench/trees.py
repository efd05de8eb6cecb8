"""Conversation trees: the data the tree rows read, and the rows of the report's "Conversation
trees" table.

- A fork ``TREE_DEPTH`` levels deep of ``TREE_LENGTH`` messages (``deep_fork``): its reads and
  chat turns are measured in the latency rows, beside the plain conversation of the same
  length and the same messages, in the same shuffled rounds (``beside_plain``).
- ``measure_trees``: a fork at seq ``TREE_LENGTH`` beside creating a conversation,
  ``alternatives`` of a reply regenerated ``REGENERATIONS`` times, and branching beside the
  Agents SDK's ``AdvancedSQLiteSession`` (a branch before the newest user message; the same
  then read whole), all in one run of shuffled rounds; then the statements each chatstore
  call sends, counted on a connection of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import chatstore
from chatstore import ChatStore

from .fixture import Fixture
from .log import log
from .own import ChatstorePeer, RawAsyncpgPeer
from .peers.agents_advanced_sqlite import AgentsAdvancedSQLitePeer
from .plan import (
    ALTERNATIVES_OP,
    BRANCH_LENGTHS,
    BRANCH_OP,
    BRANCH_READ_OP,
    CREATE_OP,
    DEEP,
    FORK_OP,
    REGENERATIONS,
    TREE_DEPTH,
    TREE_LENGTH,
    USER,
)
from .results import Results
from .runner import Call, Cell, measure_rows

Own = ChatstorePeer | RawAsyncpgPeer
CREATE_SIZE = "no messages"
FORK_SIZE = f"at seq {TREE_LENGTH:,}"
ALTERNATIVES_SIZE = f"{REGENERATIONS + 1} versions"


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


async def regenerated(store: ChatStore, history: list[dict[str, Any]],
                      times: int) -> tuple[UUID, int]:
    """A conversation whose newest reply (seq ``k``) was regenerated ``times`` times: each
    time a fork at ``k - 1`` with a new reply, which becomes the current version. The last
    fork (what a UI shows), and ``k``."""
    k = max(i for i, m in enumerate(history, start=1)
            if m["role"] == "assistant" and m.get("content"))
    cid = (await store.create_conversation(USER, messages=history[:k])).id
    for take in range(times):
        reply = {"role": "assistant", "content": f"Done, it is on your list (take {take + 2}).",
                 "token_count": 10}
        cid = (await store.fork(USER, cid, at_seq=k - 1, messages=[reply])).id
    return cid, k


async def load_deep_forks(fx: Fixture, history: list[dict[str, Any]]) -> str:
    """The deep fork of ``history`` for chatstore and for raw asyncpg (each its own, built
    with chatstore's API on its own pool); its key."""
    key = str(uuid.uuid4())
    log(f"building a fork {TREE_DEPTH} levels deep of {len(history):,} messages ...")
    for peer in (fx.own, fx.raw):
        peer.ids[key] = await deep_fork(peer.store, history, TREE_DEPTH)
    return key


def last_user_turn(history: list[dict[str, Any]]) -> tuple[int, int]:
    """The newest user message: its turn number (the SDK's branch_turn_number: user messages
    counted from 1) and the seq before it (where chatstore forks to edit it)."""
    turns = [i for i, m in enumerate(history) if m["role"] == "user"]
    return len(turns), turns[-1]


async def measure_trees(fx: Fixture, results: Results,
                        histories: dict[int, list[dict[str, Any]]]) -> None:
    """Fork beside create, alternatives, and branching beside AdvancedSQLiteSession, in the
    same shuffled rounds; then the statements each chatstore call sends."""
    log("conversation trees:")
    own, raw = fx.own, fx.raw
    source, versions = str(uuid.uuid4()), str(uuid.uuid4())
    for peer in (own, raw):
        peer.ids[source] = (await peer.store.create_conversation(
            USER, messages=histories[TREE_LENGTH])).id
        peer.ids[versions], seq = await regenerated(
            peer.store, histories[BRANCH_LENGTHS[0]], REGENERATIONS)
    found = len(await own.alternatives(USER, versions, seq))
    if found != REGENERATIONS + 1:
        raise AssertionError(f"alternatives found {found} versions of a reply regenerated "
                             f"{REGENERATIONS} times")
    sqlite = AgentsAdvancedSQLitePeer()
    folder = Path(tempfile.mkdtemp(prefix="chatstore-bench-sqlite-"))
    await sqlite.setup(folder)
    branched: dict[int, tuple[str, int, int]] = {}
    for length in BRANCH_LENGTHS:
        key = str(uuid.uuid4())
        log(f"  loading {length:,} messages into chatstore, raw asyncpg and "
            f"{sqlite.name} ...")
        for peer in (own, raw):
            peer.ids[key] = (await peer.store.create_conversation(
                USER, messages=histories[length])).id
        await sqlite.bulk_load(key, histories[length])
        turn, at_seq = last_user_turn(histories[length])
        branched[length] = (key, turn, at_seq)
    await fx.settle()

    rows: dict[Cell, dict[str, Call]] = {
        (CREATE_OP, CREATE_SIZE): {p.name: (lambda p=p: p.create(USER)) for p in (own, raw)},
        (FORK_OP, FORK_SIZE): {
            p.name: (lambda p=p: p.fork(USER, source, TREE_LENGTH)) for p in (own, raw)},
        (ALTERNATIVES_OP, ALTERNATIVES_SIZE): {
            p.name: (lambda p=p: p.alternatives(USER, versions, seq)) for p in (own, raw)},
    }
    after: dict[Cell, dict[str, Call]] = {}
    made: dict[str, list[str]] = {}  # the branches the timed calls made, by library
    for length, (key, turn, at_seq) in branched.items():
        await same_branch(own, sqlite, key, turn, at_seq)
        for op, read in ((BRANCH_OP, False), (BRANCH_READ_OP, True)):
            cell = (op, f"{length:,}")
            rows[cell], after[cell] = {}, {}
            for peer in (own, raw):
                rows[cell][peer.name] = (
                    lambda p=peer, k=key, at=at_seq, r=read: fork_and_read(p, k, at, r, made))
                after[cell][peer.name] = lambda p=peer: p.delete_fork(USER, made[p.name].pop())

            async def branch(k: str = key, t: int = turn, r: bool = read) -> None:
                made.setdefault(sqlite.name, []).append(
                    await (sqlite.branch_and_read(k, t) if r else sqlite.branch(k, t)))

            rows[cell][sqlite.name] = branch
            after[cell][sqlite.name] = lambda k=key: sqlite.drop_branch(
                k, made[sqlite.name].pop())
    try:
        await measure_rows(fx, results, rows, after=after)
    finally:
        await sqlite.close()
        shutil.rmtree(folder, ignore_errors=True)
    results.statements = await statements_per_call(fx.dsn, {
        CREATE_OP: lambda store: store.create_conversation(USER),
        FORK_OP: lambda store: store.fork(USER, own.ids[source], at_seq=TREE_LENGTH),
        ALTERNATIVES_OP: lambda store: store.alternatives(USER, own.ids[versions], seq),
    })
    log("  statements per chatstore call: " + "  ".join(
        f"{op}={n}" for op, n in results.statements.items()))


async def fork_and_read(peer: Own, key: str, at_seq: int, read: bool,
                        made: dict[str, list[str]]) -> None:
    """chatstore's branch: a fork at ``at_seq``; with ``read``, then its whole history (one
    statement)."""
    fork = await peer.fork(USER, key, at_seq)
    made.setdefault(peer.name, []).append(fork)
    if read:
        await peer.whole(USER, fork)


async def same_branch(own: ChatstorePeer, sqlite: AgentsAdvancedSQLitePeer, key: str,
                      turn: int, at_seq: int) -> None:
    """Before timing: chatstore's fork and the session's branch hold the same messages."""
    fork = await own.fork(USER, key, at_seq)
    mine = [m.content for m in await own.whole(USER, fork)]
    branch = await sqlite.branch(key, turn)
    theirs = [item.get("content") for item in await sqlite.items(key, branch)]
    await own.delete_fork(USER, fork)
    await sqlite.drop_branch(key, branch)
    if mine != theirs or len(mine) != at_seq:
        raise AssertionError(f"the branches of {key} differ: chatstore's fork holds "
                             f"{len(mine)} messages, {sqlite.name}'s branch {len(theirs)}")


async def statements_per_call(
        dsn: str, calls: dict[str, Callable[[ChatStore], Awaitable[Any]]]) -> dict[str, int]:
    """How many statements (round trips: BEGIN and COMMIT included) each call sends, counted
    with asyncpg's query logger on a store of one connection, after two warm-up calls (its
    statements are prepared by then, as on any pooled connection that served a few)."""
    store = await chatstore.connect(dsn, min_size=1, max_size=1)
    sent: list[str] = []
    try:
        async with store.pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        counts: dict[str, int] = {}
        for name, call in calls.items():
            for _ in range(2):
                await call(store)
            await asyncio.sleep(0)  # the logger runs its callbacks soon after each statement
            sent.clear()
            await call(store)
            await asyncio.sleep(0)
            counts[name] = len(sent)
        return counts
    finally:
        await store.close()
