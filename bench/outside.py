"""The outside check of issue 22: a side-by-side run the way someone outside the project would
try it, with the garbage collector left as a real backend process has it (no ``gc.freeze``).

    python -m bench.outside                       # embedded PostgreSQL, bare then heavy process
    python -m bench.outside --database URL --rounds 100 --sizes 100,20000 --content 200,2000

One process, one database. chatstore (``connect(min_size=1, max_size=2)``), raw asyncpg on a
pool of its own made with ``chatstore.init_connection``, the Agents SDK's
``SQLAlchemySession`` and langchain-postgres's ``PostgresChatMessageHistory`` each hold the
same conversations of alternating user/assistant messages whose content is ``f"{j} "`` and a
sentence of about 170 characters (repeated to reach the ``--content`` size; chatstore's with
``token_count=40``), appended 500 at a time. Two rows, "whole history" and "append one
message", at every size, each library in an order shuffled every round (seeded), after
warm-up calls; medians. Then the same in a "heavy" process: one that has also imported and
used more of the Agents SDK, SQLAlchemy's ORM and LangChain, as a backend process has, so the
collector holds a few hundred thousand more tracked objects. ``--freeze`` adds a third phase
after ``gc.freeze()`` (the advice to callers, measured).

Besides times it prints the collector passes per call by generation (``gc.callbacks``) and
the objects each generation holds, so the cost of the collector is visible beside the call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

import chatstore
from chatstore.migrate import apply_migrations
from chatstore.sql import SQL

from .own import ChatstorePeer, RawAsyncpgPeer
from .peers.agents_sqlalchemy import AgentsSQLAlchemyPeer
from .peers.base import Peer
from .peers.langchain_pg import LangchainPostgresPeer

USER = "outside-user"
SENTENCE = ("The quarterly planning notes mention the kitchen renovation, two dentist "
            "appointments and a reminder to renew the car insurance before the end of May.")
WARMUP = 10
LOAD_CHUNK = 500

Call = Callable[[], Awaitable[Any]]


class OutsideChatstore(ChatstorePeer):
    async def setup(self, dsn: str) -> None:
        self._store = await chatstore.connect(dsn, min_size=1, max_size=2)


class UnpausedChatstore(OutsideChatstore):
    """chatstore as it was before whole-history reads paused the collector (issue 22): the
    same store, with the pause's threshold set out of reach for its own calls only."""

    name = "chatstore before (no pause)"

    def __init__(self, twin: OutsideChatstore) -> None:
        super().__init__()
        self.twin = twin

    async def setup(self, dsn: str) -> None:
        self._store = self.twin.store  # the same pool and conversations
        self.ids = self.twin.ids

    async def close(self) -> None:
        pass

    async def whole(self, user_id: str, key: str) -> list[Any]:
        from chatstore import models
        saved, models._PAUSE_FROM = models._PAUSE_FROM, 1 << 62
        try:
            return await super().whole(user_id, key)
        finally:
            models._PAUSE_FROM = saved


class FetchPausedChatstore(UnpausedChatstore):
    """chatstore with the collector paused over the whole call, the fetch included (what
    a pause around the await would give; chatstore pauses it around the build only)."""

    name = "chatstore + fetch paused"

    async def whole(self, user_id: str, key: str) -> list[Any]:
        was = gc.isenabled()
        gc.disable()
        try:
            return await ChatstorePeer.whole(self, user_id, key)
        finally:
            if was:
                gc.enable()


class OutsideRaw(RawAsyncpgPeer):
    """chatstore's statements on a plain asyncpg pool with chatstore's codec (init hook)."""

    _plain: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._plain is not None, "setup() first"
        return self._plain

    async def setup(self, dsn: str) -> None:
        self._plain = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                                init=chatstore.init_connection)

    async def close(self) -> None:
        if self._plain is not None:
            await self._plain.close()


def history(length: int, content_bytes: int) -> list[dict[str, Any]]:
    body = SENTENCE
    while len(body) + len(SENTENCE) < content_bytes:
        body += " " + SENTENCE
    return [{"role": "user" if j % 2 == 0 else "assistant", "content": f"{j} {body}",
             "token_count": 40} for j in range(length)]


class Passes:
    """Collector passes by generation, and the objects each examined (gc.callbacks)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.collected = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.count[info["generation"]] += 1
        else:
            self.collected += info["collected"]

    def reset(self) -> list[int]:
        out, self.count = self.count, [0, 0, 0]
        return out


def make_heavy() -> list[Any]:
    """Import and use what a backend process has beside its history store: the Agents SDK
    (an agent with tools, a run's items), SQLAlchemy's ORM (mapped classes, compiled
    statements) and LangChain (prompts, messages, runnables). The objects are kept."""
    import agents
    import langchain_core.messages as lc_messages
    import langchain_core.prompts as lc_prompts
    import langchain_core.runnables as lc_runnables
    import sqlalchemy as sa
    from sqlalchemy import orm

    keep: list[Any] = []
    for n in range(40):
        @agents.function_tool
        def add_task(title: str, due: str | None = None) -> str:
            """Add a task to the user's list."""
            return title

        keep.append(agents.Agent(name=f"assistant-{n}", instructions="Help the user.",
                                 tools=[add_task], model="gpt-4o-mini"))

    class Base(orm.DeclarativeBase):
        pass

    for n in range(60):
        table = type(f"Model{n}", (Base,), {
            "__tablename__": f"t{n}",
            "id": orm.mapped_column(sa.Integer, primary_key=True),
            "name": orm.mapped_column(sa.String(80)),
            "payload": orm.mapped_column(sa.JSON),
            "created": orm.mapped_column(sa.DateTime(timezone=True)),
        })
        keep.append(table)
        keep.append(str(sa.select(table).where(table.id == n).compile()))
    orm.configure_mappers()
    for n in range(200):
        prompt = lc_prompts.ChatPromptTemplate.from_messages(
            [("system", "You are assistant {n}."), ("human", "{question}")])
        keep.append(prompt | lc_runnables.RunnableLambda(lambda value: value))
        keep.append(prompt.invoke({"n": n, "question": "what is on my list?"}))
        keep.append([lc_messages.HumanMessage(content=f"hello {k}") for k in range(20)])
    # What a warm backend also holds: a cache of parsed requests and sessions.
    keep.append([{"id": k, "tags": [str(k)], "meta": {"k": k}} for k in range(30_000)])
    return keep


async def measure(order: random.Random, rounds: int, rows: dict[str, dict[str, Call]],
                  passes: Passes) -> dict[str, dict[str, tuple[float, list[float]]]]:
    """Every (row, library) in one shuffled order per round; median seconds and the mean
    collector passes per call by generation."""
    cells = [(row, name) for row, calls in rows.items() for name in calls]
    for row, name in cells:
        for _ in range(WARMUP):
            await rows[row][name]()
    samples: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    cpu: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    gen: dict[tuple[str, str], list[int]] = {cell: [0, 0, 0] for cell in cells}
    for _ in range(rounds):
        order.shuffle(cells)
        for cell in cells:
            passes.reset()
            started, cpu_started = time.perf_counter(), time.process_time()
            await rows[cell[0]][cell[1]]()
            samples[cell].append(time.perf_counter() - started)
            cpu[cell].append(time.process_time() - cpu_started)
            for g, n in enumerate(passes.reset()):
                gen[cell][g] += n
    out: dict[str, dict[str, tuple[float, list[float]]]] = {}
    for (row, name), values in samples.items():
        out.setdefault(row, {})[name] = (statistics.median(values),
                                         [n / len(values) for n in gen[(row, name)]])
        out.setdefault(row + " (client CPU)", {})[name] = (
            statistics.median(cpu[(row, name)]), [n / len(values) for n in gen[(row, name)]])
    return dict(sorted(out.items(), key=lambda item: item[0].endswith("(client CPU)")))


def report(title: str, results: dict[str, dict[str, tuple[float, list[float]]]],
           names: list[str]) -> None:
    tracked = len(gc.get_objects())
    print(f"\n== {title}: {tracked:,} tracked objects, gc thresholds {gc.get_threshold()}, "
          f"frozen {gc.get_freeze_count():,}")
    print(f"{'row':48}" + "".join(f"{n[:24]:>26}" for n in names)
          + "   chatstore vs fastest peer / raw")
    for row, by_name in results.items():
        cells = []
        for name in names:
            if name not in by_name:
                cells.append(f"{'n/a':>26}")
                continue
            median, gens = by_name[name]
            cells.append(f"{median * 1e3:>10.2f} ms ({gens[0]:.0f}/{gens[1]:.1f}/{gens[2]:.2f})")
        own = by_name["chatstore"][0]
        peers = [by_name[n][0] for n in by_name
                 if n not in ("chatstore", "raw asyncpg", UnpausedChatstore.name,
                              FetchPausedChatstore.name)]
        fastest = min(peers)
        print(f"{row:48}" + "".join(cells)
              + f"   {fastest / own:.2f}x faster / {own / by_name['raw asyncpg'][0]:.2f}x raw")
    print("(times are medians; in brackets the mean collector passes per call: "
          "generation 0 / 1 / 2; client CPU: this process's CPU time, which the machine's "
          "other load does not inflate)")
    print("gc.get_stats():", gc.get_stats())


async def objects_per_row(peers: list[Peer], keys: dict[tuple[int, int], str]) -> None:
    """What each library's whole history leaves to the caller per row: tracked objects (the
    ones every collector pass walks) and allocations of collector-managed objects, tracked
    or not (what sets off the passes), measured with the collector paused."""
    print("\nper row of a whole-history read, held by the caller: tracked objects / "
          "collector-counted allocations")
    for (size, content), key in keys.items():
        if size < 1000:
            continue
        cells = []
        for peer in peers:
            gc.collect()
            gc.disable()
            try:
                before, counted = len(gc.get_objects()), gc.get_count()[0]
                result = await peer.whole(USER, key)
                tracked = len(gc.get_objects()) - before - 1  # the list get_objects made
                allocated = gc.get_count()[0] - counted - 1
            finally:
                gc.enable()
            del result
            cells.append(f"{peer.name} {tracked / size:.2f} / {allocated / size:.2f}")
        print(f"  {size:,} x {content} B: " + "; ".join(cells))


async def amain(args: argparse.Namespace) -> int:
    server = None
    dsn = args.database
    if not dsn:
        from chatstore.embedded import start_embedded
        base = Path(tempfile.mkdtemp(prefix="chatstore-outside-"))
        server = start_embedded(base / "pgdata", version=args.pg, cleanup="delete")
        dsn = server.dsn
    apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute(SQL.create_users, [USER])
    await conn.close()
    own = OutsideChatstore()
    peers: list[Peer] = [own, OutsideRaw(), AgentsSQLAlchemyPeer(), LangchainPostgresPeer()]
    names = [p.name for p in peers]
    sizes = [int(s) for s in args.sizes.split(",")]
    contents = [int(c) for c in args.content.split(",")]
    for peer in peers:
        await peer.setup(dsn)
    variants: list[Peer] = []
    if args.compare_unpaused:
        variants = [UnpausedChatstore(own), FetchPausedChatstore(own)]
    for variant in variants:
        await variant.setup(dsn)
        names.insert(1, variant.name)
    import uuid
    keys: dict[tuple[int, int], str] = {}
    for size in sizes:
        for content in contents:
            key = keys[(size, content)] = str(uuid.uuid4())
            messages = history(size, content)
            for peer in peers:
                for start in range(0, size, LOAD_CHUNK):
                    await peer.bulk_load(USER, key, messages[start:start + LOAD_CHUNK]) \
                        if start == 0 else await _append_more(peer, key,
                                                               messages[start:start
                                                                        + LOAD_CHUNK])
    conn = await asyncpg.connect(dsn)
    await conn.execute("VACUUM (ANALYZE)")
    await conn.close()
    one = {"role": "user", "content": "0 " + SENTENCE, "token_count": 40}

    def rows() -> dict[str, dict[str, Call]]:
        out: dict[str, dict[str, Call]] = {}
        for (size, content), key in keys.items():
            label = f"{size:,} x {content} B"
            readers = [*peers, *variants]
            out[f"whole history {label}"] = {
                p.name: (lambda p=p, key=key: p.whole(USER, key)) for p in readers
                if not (args.fast and p.name == "langchain-postgres" and size > 1000)}
        for (size, content), key in keys.items():
            label = f"{size:,} x {content} B"
            out[f"append one {label}"] = {
                p.name: (lambda p=p, key=key: p.append_one(USER, key, one)) for p in peers}
        return out

    await objects_per_row(peers, keys)
    passes = Passes()
    gc.callbacks.append(passes)
    order = random.Random(args.order_seed)
    print(f"python {sys.version.split()[0]}, chatstore {chatstore.__file__}, order seed "
          f"{args.order_seed}, {args.rounds} rounds after {WARMUP} warm-ups, no gc.freeze")
    phases = ["bare", "heavy"] if args.process == "both" else [args.process]
    kept: list[Any] = []
    for phase in phases:
        if phase == "heavy":
            kept = make_heavy()
        gc.collect()
        report(phase + " process", await measure(order, args.rounds, rows(), passes), names)
    if args.freeze:
        gc.collect()
        gc.freeze()
        report(phases[-1] + " process after gc.freeze()",
               await measure(order, args.rounds, rows(), passes), names)
        gc.unfreeze()
    del kept
    for peer in peers:
        await peer.close()
    if server is not None:
        server.stop()
    return 0


async def _append_more(peer: Peer, key: str, messages: list[dict[str, Any]]) -> None:
    # bulk_load creates the conversation; later chunks append to it (500 at a time).
    if isinstance(peer, ChatstorePeer):
        await peer.store.append_messages(USER, peer.ids[key], messages)
    elif isinstance(peer, RawAsyncpgPeer):
        await peer._append(USER, peer.ids[key], messages)
    else:
        await peer.bulk_load(USER, key, messages)  # the peers append to the session


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outside",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--database", help="postgresql:// URL (default: embedded server)")
    parser.add_argument("--pg", type=int, default=16, help="embedded PostgreSQL version")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--sizes", default="100,20000", help="conversation lengths")
    parser.add_argument("--content", default="200", help="content sizes in bytes, e.g. 200,2000")
    parser.add_argument("--process", choices=("bare", "heavy", "both"), default="both")
    parser.add_argument("--freeze", action="store_true",
                        help="also measure after gc.freeze() (the advice to callers)")
    parser.add_argument("--fast", action="store_true",
                        help="leave langchain-postgres out of the whole-history rows above "
                             "1,000 messages (it takes seconds there; the append rows keep it)")
    parser.add_argument("--compare-unpaused", action="store_true",
                        help="also read the whole history with chatstore's collector pause "
                             "turned off (before/after in the same rounds), and with the "
                             "collector paused over the fetch as well")
    parser.add_argument("--order-seed", type=int, default=22)
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
