"""Benchmark chatstore side by side with the libraries people use for chat history today.

    python -m bench            # the full run: writes docs/benchmarks.md and its plot
    python -m bench --quick    # small sizes, under two minutes; writes to a temp folder

Everything runs on one PostgreSQL (an embedded one unless --database is given), with the
same conversations loaded into every library, and every operation measured interleaved:
round after round, each library in turn, so that machine noise hits all of them alike.
Prints medians, p99 and each library's ratio to chatstore; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from chatstore.embedded import EmbeddedServer, start_embedded
from chatstore.migrate import apply_migrations
from chatstore.queries import QUERIES
from chatstore.seed import TextPool, seed_database, synthetic_history
from chatstore.transfer import export_user, import_file

from .own import ChatstorePeer, RawAsyncpgPeer
from .peers import NotSupported, Peer, all_peers

REPO = Path(__file__).resolve().parent.parent
USER = "bench-user"
TOKEN_BUDGET = 4000


@dataclass
class Plan:
    lengths: list[int]
    conversation_counts: list[int]
    background_messages: int
    rounds: int
    budget_seconds: float
    delete_samples: int
    import_conversations: int
    import_length: int


QUICK = Plan(lengths=[100, 1_000, 10_000], conversation_counts=[10, 1_000],
             background_messages=20_000, rounds=30, budget_seconds=0.6, delete_samples=2,
             import_conversations=5, import_length=1_000)
FULL = Plan(lengths=[100, 1_000, 10_000, 100_000], conversation_counts=[10, 1_000, 10_000],
            background_messages=5_000_000, rounds=200, budget_seconds=6.0, delete_samples=5,
            import_conversations=50, import_length=1_000)


@dataclass
class Row:
    """One operation at one size: each library's samples, in seconds."""

    op: str
    size: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, peer: str) -> float | None:
        values = self.samples.get(peer)
        return statistics.median(values) if values else None

    def p99(self, peer: str) -> float | None:
        values = sorted(self.samples.get(peer) or [])
        return values[math.ceil(len(values) * 0.99) - 1] if values else None


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, plan: Plan, dsn: str, seed: int) -> None:
        self.plan, self.dsn = plan, dsn
        self.rng = random.Random(seed)
        self.texts = TextPool(self.rng)
        self.own = ChatstorePeer()
        self.raw = RawAsyncpgPeer()
        self.peers: list[Peer] = [self.own, self.raw, *all_peers()]
        self.rows: list[Row] = []
        self.import_rates: dict[str, float] = {}
        self.plans: dict[str, str] = {}
        self.server_version = "?"

    # -- setup ---------------------------------------------------------------------------

    async def setup(self) -> None:
        apply_migrations(self.dsn)
        conn = await asyncpg.connect(self.dsn)
        users = [USER, "bench-import",
                 *(f"bench-list-{n}" for n in self.plan.conversation_counts)]
        await conn.execute(QUERIES["create_users"], users)
        await conn.close()
        if self.plan.background_messages:
            per_user = 100
            users_needed = max(1, self.plan.background_messages // (per_user * 100))
            log(f"seeding {users_needed * per_user * 100:,} background messages ...")
            report = await seed_database(self.dsn, users=users_needed, conversations=per_user,
                                         messages=100, seed=1,
                                         user_prefix=f"bg-{uuid.uuid4().hex[:6]}-")
            log(f"  {report.messages_per_second:,.0f} messages/s")
        for peer in self.peers:
            await peer.setup(self.dsn)

    async def settle(self) -> None:
        """Before timing: vacuum and analyze what was just loaded (so autovacuum does not run
        during the measurements), and freeze the loaded Python objects out of the garbage
        collector's way."""
        conn = await asyncpg.connect(self.dsn)
        await conn.execute("VACUUM (ANALYZE)")
        await conn.close()
        gc.collect()
        gc.freeze()

    async def load(self, key: str, messages: list[dict[str, Any]], user: str = USER) -> None:
        for peer in self.peers:
            await peer.bulk_load(user, key, messages)

    # -- measuring -----------------------------------------------------------------------

    async def measure(self, op: str,
                      sizes: dict[str, dict[str, Callable[[], Awaitable[Any]]]]) -> None:
        """One operation at one or more sizes, each library at each size in turn, round
        after round, rotating who goes first: noise and drift hit every cell alike, so
        ratios across libraries and across sizes come from the same moments."""
        rows = {size: Row(op, size) for size in sizes}
        live: dict[tuple[str, str], Callable[[], Awaitable[Any]]] = {}
        for size, calls in sizes.items():
            for name, call in calls.items():
                try:
                    await call()  # warm-up: statement caches, ORM compilation, connections
                    await call()
                except NotSupported:
                    continue  # reported as n/a: the row has no samples for it
                live[(size, name)] = call
                rows[size].samples[name] = []
        spent = dict.fromkeys(live, 0.0)
        cells = list(live)
        for round_ in range(self.plan.rounds):
            shift = round_ % len(cells) if cells else 0
            for cell in cells[shift:] + cells[:shift]:
                samples = rows[cell[0]].samples[cell[1]]
                if spent[cell] > self.plan.budget_seconds and len(samples) >= 5:
                    continue
                started = time.perf_counter()
                await live[cell]()
                elapsed = time.perf_counter() - started
                samples.append(elapsed)
                spent[cell] += elapsed
        for size, row in rows.items():
            self.rows.append(row)
            log(f"  {op:28} {size:>8}  " + "  ".join(
                f"{n}={(row.median(n) or 0) * 1e3:.2f}ms" for n in row.samples))

    def for_all(self, make: Callable[[Peer], Callable[[], Awaitable[Any]]],
                ) -> dict[str, Callable[[], Awaitable[Any]]]:
        return {p.name: make(p) for p in self.peers}

    async def run(self) -> None:
        plan = self.plan
        await self.setup()
        keys: dict[int, str] = {}
        for length in plan.lengths:
            log(f"loading a {length:,}-message conversation into every library ...")
            keys[length] = str(uuid.uuid4())
            await self.load(keys[length], synthetic_history(self.rng, self.texts, length))

        await self.settle()
        log("reads by history length:")
        lengths = plan.lengths
        await self.measure("newest 50", {f"{n:,}": self.for_all(
            lambda p, k=keys[n]: lambda: p.newest(USER, k, 50)) for n in lengths})
        await self.measure("page of 50 in the middle", {f"{n:,}": self.for_all(
            lambda p, k=keys[n], mid=n // 2: lambda: p.page_before(USER, k, mid, 50))
            for n in lengths})
        await self.measure("context window (4,000 tokens)", {f"{n:,}": self.for_all(
            lambda p, k=keys[n]: lambda: self.context(p, k)) for n in lengths})
        await self.measure("whole history", {f"{n:,}": self.for_all(
            lambda p, k=keys[n]: lambda: p.whole(USER, k)) for n in lengths if n <= 10_000})

        log("writes:")
        append_key = str(uuid.uuid4())
        await self.load(append_key, synthetic_history(self.rng, self.texts, 1_000))
        await self.settle()
        one = {"role": "user", "content": "Please add 'call the plumber' to my list.",
               "token_count": 12}
        reply = {"role": "assistant", "content": "Done, it is on your list.",
                 "token_count": 9}
        await self.measure("append one message", {"1,000": self.for_all(
            lambda p: lambda: p.append_one(USER, append_key, one))})
        await self.measure("append a user+assistant turn", {"1,000": self.for_all(
            lambda p: lambda: p.append_turn(USER, append_key, one, reply))})
        await self.measure("stateless chat turn", {f"{n:,}": self.for_all(
            lambda p, k=keys[n]: lambda: self.chat_turn(p, k, one, reply))
            for n in plan.lengths[-2:]})

        log("a user's recent conversations:")
        # Libraries that know a user's conversations; raw asyncpg reads chatstore's tables.
        listers = []
        for peer in self.peers:
            try:
                await peer.recent_conversations(USER, 1)
            except NotSupported:
                continue
            if peer is not self.raw:
                listers.append(peer)
        for count in plan.conversation_counts:
            user = f"bench-list-{count}"
            log(f"  creating {count:,} conversations for {user} ...")
            for _ in range(count):
                small = synthetic_history(self.rng, self.texts, 2)
                key = str(uuid.uuid4())
                for peer in listers:
                    await peer.bulk_load(user, key, small)
        await self.settle()
        await self.measure("20 most recent conversations", {f"{count:,}": self.for_all(
            lambda p, u=f"bench-list-{count}": lambda: p.recent_conversations(u, 20))
            for count in plan.conversation_counts})

        await self.measure_deletes()
        await self.measure_imports()
        await self.explain(keys[plan.lengths[-1]], f"bench-list-{plan.conversation_counts[-1]}")

    async def context(self, peer: Peer, key: str) -> Any:
        if isinstance(peer, ChatstorePeer | RawAsyncpgPeer):
            return await peer.context(USER, key, TOKEN_BUDGET)
        raise NotSupported("no token-budgeted context window")

    async def chat_turn(self, peer: Peer, key: str, user_msg: dict[str, Any],
                        reply: dict[str, Any]) -> None:
        """Read the context, store the user's message, (call the model,) store the reply."""
        if isinstance(peer, ChatstorePeer | RawAsyncpgPeer):
            await peer.context(USER, key, TOKEN_BUDGET)
        else:
            await peer.newest(USER, key, 50)
        await peer.append_one(USER, key, user_msg)
        await peer.append_one(USER, key, reply)

    async def measure_deletes(self) -> None:
        log("deleting 10,000-message conversations:")
        row = Row("delete a conversation", "10,000")
        history = synthetic_history(self.rng, self.texts, 10_000)
        for sample in range(self.plan.delete_samples):
            for peer in self.peers[sample % len(self.peers):] + self.peers[
                    :sample % len(self.peers)]:
                key = str(uuid.uuid4())
                await peer.bulk_load(USER, key, history)
                started = time.perf_counter()
                await peer.delete_conversation(USER, key)
                row.samples.setdefault(peer.name, []).append(time.perf_counter() - started)
        self.rows.append(row)
        log("  " + "  ".join(f"{n}={row.median(n) * 1e3:.1f}ms" for n in row.samples))

    async def measure_imports(self) -> None:
        """Messages per second loading whole conversations: chatstore's import (checked,
        batched) and each library's own bulk path."""
        plan = self.plan
        log(f"import throughput ({plan.import_conversations} x {plan.import_length:,} "
            "messages):")
        histories = [synthetic_history(self.rng, self.texts, plan.import_length)
                     for _ in range(plan.import_conversations)]
        total = plan.import_conversations * plan.import_length
        # chatstore: export the histories once (as `chatstore export` writes them) ...
        staging = f"bench-staging-{uuid.uuid4().hex[:6]}"
        conn = await asyncpg.connect(self.dsn)
        await conn.execute(QUERIES["create_users"], [staging])
        await conn.close()
        for history in histories:
            await self.own.bulk_load(staging, str(uuid.uuid4()), history)
        lines = [line async for line in export_user(self.own.store, staging)]
        await self.own.store.delete_user_data(staging)
        # ... and import them (ids are kept, so the staging copy had to go first).
        started = time.perf_counter()
        report = await import_file(self.own.store, lines)
        self.import_rates["chatstore"] = report.messages_imported / (
            time.perf_counter() - started)
        for peer in self.peers[1:]:
            started = time.perf_counter()
            for history in histories:
                await peer.bulk_load("bench-import", str(uuid.uuid4()), history)
            self.import_rates[peer.name] = total / (time.perf_counter() - started)
        log("  " + "  ".join(f"{n}={r:,.0f}/s" for n, r in self.import_rates.items()))

    async def explain(self, key: str, list_user: str) -> None:
        """EXPLAIN (ANALYZE, BUFFERS) of every chatstore statement at the largest size;
        statements that write run in a transaction that is rolled back."""
        cid = self.own.ids[key]
        conn = await asyncpg.connect(self.dsn)
        updated_at, after_id = await conn.fetchrow(
            "SELECT updated_at, id FROM conversations WHERE user_id = $1 "
            "ORDER BY updated_at DESC OFFSET 100 LIMIT 1", list_user) or (None, None)
        count = await conn.fetchval("SELECT message_count FROM conversations WHERE "
                                    "user_id = $1 AND id = $2", USER, cid)
        now = datetime.now(UTC)
        args: dict[str, tuple[Any, ...]] = {
            "check_schema": (),
            "user_exists": (USER,),
            "create_conversation": (USER, "t", "{}"),
            "get_conversation": (USER, cid),
            "list_conversations": (list_user, 21),
            "list_conversations_before": (list_user, updated_at, after_id, 21),
            "update_conversation": (USER, cid, True, "t", False, None),
            "delete_conversation": (USER, cid),
            "delete_user_data": (USER,),
            "lock_conversation": (USER, cid),
            "append_messages": (USER, cid, ["user"], ["hi"], [None], [None], ["{}"], [3],
                                [None], None),
            "find_messages_by_key": (USER, cid, ["k1"]),
            "list_messages_newest": (USER, cid, 51),
            "list_messages_before": (USER, cid, count // 2, 51),
            "list_messages_after": (USER, cid, count // 2, 51),
            "context_messages_by_count": (USER, cid, 100),
            "context_messages_by_tokens": (USER, cid, 10_000, TOKEN_BUDGET),
            "pop_message": (USER, cid),
            "clear_messages": (USER, cid),
            "search_messages": (USER, "plumber list", None, 20),
            "find_unknown_users": ([USER, "nobody"],),
            "create_users": (["nobody"],),
            "import_conversations": ([USER], [uuid.uuid4()], ["t"], ["{}"], [0],
                                     [now], [now]),
            "import_messages": ([USER], [cid], [count + 1], ["user"], ["x"], [None], [None],
                                ["{}"], [1], [None], [now]),
        }
        for name, statement in QUERIES.items():
            tx = conn.transaction()
            await tx.start()
            try:
                rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *args[name])
                self.plans[name] = "\n".join(r[0] for r in rows)
            finally:
                await tx.rollback()
        self.server_version = await conn.fetchval("SHOW server_version")
        await conn.close()

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()


# -- reporting ---------------------------------------------------------------------------


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def table(bench: Bench) -> list[str]:
    names = [p.name for p in bench.peers]
    head = "| operation | size | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for row in bench.rows:
        base = row.median("chatstore")
        cells = []
        for name in names:
            med = row.median(name)
            if med is None:
                cells.append("n/a")
            elif name == "chatstore" or base is None:
                cells.append(f"**{fmt_ms(med)}** (p99 {fmt_ms(row.p99(name))})")
            else:
                cells.append(f"{fmt_ms(med)} ({med / base:.2f}×)")
        lines.append(f"| {row.op} | {row.size} | " + " | ".join(cells) + " |")
    return lines


def targets(bench: Bench) -> list[tuple[str, str, bool]]:
    """Each target of the benchmark issue: what it asks, what was measured, met or not."""
    found = {(r.op, r.size): r for r in bench.rows}
    out: list[tuple[str, str, bool]] = []

    def ratio(op: str, size: str, a: str, b: str) -> float | None:
        row = found.get((op, size))
        if row is None or row.median(a) is None or row.median(b) is None:
            return None
        return row.median(a) / row.median(b)  # type: ignore[operator]

    for op in ("newest 50", "page of 50 in the middle"):
        worst = max((ratio(op, f"{n:,}", "chatstore", "raw asyncpg") or 0.0)
                    for n in bench.plan.lengths)
        out.append((f"{op}: chatstore within 1.25× of raw asyncpg (worst size)",
                    f"{worst:.2f}×", worst <= 1.25))
    for op in ("append one message", "append a user+assistant turn"):
        value = ratio(op, "1,000", "chatstore", "raw asyncpg") or 0.0
        out.append((f"{op}: chatstore within 1.5× of raw asyncpg", f"{value:.2f}×",
                    value <= 1.5))
    others = [p for p in bench.peers if p.name not in ("chatstore", "raw asyncpg")]
    if "10,000" in {r.size for r in bench.rows}:
        speedups = {p.name: ratio("newest 50", "10,000", p.name, "chatstore") for p in others}
        fastest = min((v, n) for n, v in speedups.items() if v is not None)
        out.append(("newest 50 of 10,000: ≥ 2.5× faster than the fastest peer",
                    f"{fastest[0]:.1f}× ({fastest[1]})", fastest[0] >= 2.5))
        whole = [(v, p.name) for p in others if p.loads_whole_history
                 and (v := speedups[p.name]) is not None]
        if whole:
            slowest_gap = min(whole)
            out.append(("newest 50 of 10,000: ≥ 50× faster than peers loading the whole "
                        "history", f"{slowest_gap[0]:.0f}× (least: {slowest_gap[1]})",
                        slowest_gap[0] >= 50))
    appends = {p.name: ratio("append one message", "1,000", p.name, "chatstore")
               for p in others}
    fastest_append = min((v, n) for n, v in appends.items() if v is not None)
    out.append(("single append ≥ 2× faster than the fastest peer",
                f"{fastest_append[0]:.1f}× ({fastest_append[1]})", fastest_append[0] >= 2))
    lengths = bench.plan.lengths
    big, small = found[("newest 50", f"{lengths[-1]:,}")], found[("newest 50",
                                                                 f"{lengths[0]:,}")]
    flat = (big.median("chatstore") or 0) / (small.median("chatstore") or 1)
    out.append((f"flat: newest 50 at {lengths[-1]:,} within 1.2× of at {lengths[0]:,}",
                f"{flat:.2f}×", flat <= 1.2))
    counts = bench.plan.conversation_counts
    big, small = (found[("20 most recent conversations", f"{counts[-1]:,}")],
                  found[("20 most recent conversations", f"{counts[0]:,}")])
    flat = (big.median("chatstore") or 0) / (small.median("chatstore") or 1)
    out.append((f"flat: recent conversations at {counts[-1]:,} within 1.2× of at "
                f"{counts[0]:,}", f"{flat:.2f}×", flat <= 1.2))
    rate = bench.import_rates.get("chatstore", 0.0)
    out.append(("import ≥ 100,000 messages/s", f"{rate:,.0f}/s", rate >= 100_000))
    return out


def versions(bench: Bench) -> list[str]:
    out = [f"Python {platform.python_version()}", f"PostgreSQL {bench.server_version}"]
    for package in ("chatstore", "asyncpg", "pydantic", "langchain-postgres", "openai-agents",
                    "llama-index-storage-chat-store-postgres", "sqlmodel", "sqlalchemy",
                    "psycopg"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{package} {importlib.metadata.version(package)}")
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        gib = int(mem.split()[1]) / 1024 / 1024
    except (OSError, StopIteration):
        gib = 0
    return f"{os.cpu_count()} cores ({cpu}), {gib:.0f} GiB, {platform.system()} " \
           f"{platform.release()}"


def plot(bench: Bench, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for peer in bench.peers:
        points = [(int(r.size.replace(",", "")), r.median(peer.name)) for r in bench.rows
                  if r.op == "newest 50" and r.median(peer.name) is not None]
        if points:
            ax.plot([x for x, _ in points], [y * 1e3 for _, y in points], marker="o",
                    label=peer.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the conversation")
    ax.set_ylabel("median latency of 'newest 50 messages' (ms)")
    ax.set_title("Reading the newest 50 messages vs history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Why the targets that miss, miss: found with profiles and EXPLAIN while building chatstore
# (see the commit history); structural, so it is not recomputed by each run.
FINDINGS = """\
### Why the missed targets miss

- **Page reads within 1.25× of raw asyncpg.** raw asyncpg hands back asyncpg Records;
  chatstore hands back Pydantic models. Building 50 `Message` models costs about 65 µs even
  without re-validating them (validated, about 150 µs), and the input checks and the
  error-mapping context add 20-40 µs, against a read of about 0.4 ms. Removed on the way
  there: asyncpg's session-reset query on every pool release (a round trip), `json.loads`
  of empty metadata, re-validation of database rows, and a Pydantic generic class that was
  rebuilt after garbage collections (about 1 ms a call). What is left is the cost of
  returning models.
- **A single append 2× faster than the fastest peer.** langchain-postgres appends with one
  INSERT into a table with one index. chatstore's append also moves the conversation's
  counter and `updated_at` under its row lock (the ordering guarantee), checks the composite
  foreign key and maintains the primary key and the full-text GIN index; every commit
  waits for its WAL flush. Even raw asyncpg running chatstore's statement is only about
  1.4× faster than langchain-postgres, so no layer on top of it can be 2× faster.
- **Import at 100,000 messages/s.** COPY of the same 100,000 messages in one transaction
  measured 164,000/s without the composite foreign key and the GIN index, 45,000/s with the
  foreign key, 19,000-28,000/s with both: the per-row foreign-key check (about 16 µs) and
  full-text entry (about 15 µs; `to_tsvector` alone 9 µs) are server CPU that a 2-core
  machine does not have to spare, and both are in the schema contract. chatstore's import
  also checks every message in Python before writing. The other libraries' bulk paths write
  to tables with one index and no foreign key.
"""


def report(bench: Bench, out_dir: Path, command: str, seconds: float) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(bench, out_dir / "benchmarks-newest50.png")
    plan = bench.plan
    lines = [
        "# chatstore benchmarks",
        "",
        f"Generated by `{command}` in {seconds / 60:.1f} minutes. Medians in milliseconds; "
        "the ratio beside each library is its median over chatstore's (above 1: slower than "
        "chatstore). chatstore's own cell also gives its p99.",
        "",
        f"- Machine: {machine()}",
        "- Server: embedded PostgreSQL with " + ", ".join(
            f"{k} = {v}" for k, v in SERVER_SETTINGS.items()) + " (else defaults; "
        "synchronous_commit on, so every commit waits for its WAL flush).",
        "- " + ", ".join(versions(bench)),
        f"- Data: conversations of {', '.join(f'{n:,}' for n in plan.lengths)} messages "
        "loaded into every library (the same messages); users with "
        f"{', '.join(f'{n:,}' for n in plan.conversation_counts)} conversations; "
        f"{plan.background_messages:,} more messages of other users in chatstore's tables "
        "(made with `chatstore seed`).",
        f"- Method: all libraries on one PostgreSQL, {plan.rounds} interleaved rounds per "
        f"row (each library in turn, rotating who goes first), at most about "
        f"{plan.budget_seconds:g} s per library per row, after two warm-up calls. Pools of "
        "2 connections for chatstore and raw asyncpg; the other libraries as their docs set "
        "them up.",
        "- raw asyncpg runs chatstore's own SQL on a plain asyncpg pool, with no input "
        "checks, no models and no error mapping: the floor.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {what} | {value} | {'yes' if ok else '**no**'} |"
          for what, value, ok in targets(bench)],
        "",
        FINDINGS,
        "## Latency",
        "",
        *table(bench),
        "",
        "n/a: the library has no such operation (no user → conversations index, no "
        "token-budgeted window). Libraries marked *whole* below read the entire history to "
        "return the newest 50: " + ", ".join(
            p.name for p in bench.peers if p.loads_whole_history) + ".",
        "",
        "![newest 50 vs history length](benchmarks-newest50.png)",
        "",
        "## Import throughput",
        "",
        f"{plan.import_conversations} conversations of {plan.import_length:,} messages. "
        "chatstore: `chatstore import`'s code path (every line checked, UNNEST batches, one "
        "transaction); the others: their own bulk-add call per conversation.",
        "",
        "| library | messages/s |",
        "|---|---|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in bench.import_rates.items()],
        "",
        f"## Query plans at the largest size ({plan.lengths[-1]:,} messages, "
        f"{plan.conversation_counts[-1]:,} conversations)",
        "",
        "`EXPLAIN (ANALYZE, BUFFERS)` of every statement in `chatstore/queries.sql`; "
        "statements that write ran in a transaction that was rolled back.",
        "",
    ]
    for name, text in bench.plans.items():
        lines += [f"### {name}", "", "```", text, "```", ""]
    path = out_dir / "benchmarks.md"
    path.write_text("\n".join(lines))
    return path


# A server sized for the data rather than PostgreSQL's 128 MB default: this machine's kernel
# reclaims its page cache eagerly, so with the default the 5-million-message run measures the
# disk more than the libraries.
SERVER_SETTINGS = {"shared_buffers": "4GB", "max_wal_size": "8GB",
                   "maintenance_work_mem": "512MB"}


async def tuned_embedded(pgdata: Path, version: int) -> EmbeddedServer:
    first = start_embedded(pgdata, version=version, cleanup="stop")
    conn = await asyncpg.connect(first.dsn)
    for name, value in SERVER_SETTINGS.items():
        await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    await conn.close()
    first.stop()  # settings like shared_buffers need a restart
    return start_embedded(pgdata, version=version, cleanup="delete")


async def amain(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    server = None
    dsn = args.database
    if not dsn:
        base = Path(tempfile.mkdtemp(prefix="chatstore-bench-"))
        server = await tuned_embedded(base / "pgdata", args.pg)
        dsn = server.dsn
        log(f"embedded PostgreSQL {args.pg} in {base}")
    bench = Bench(plan, dsn, seed=args.seed)
    try:
        await bench.run()
    finally:
        await bench.close()
        if server is not None:
            server.stop()
    out_dir = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="chatstore-bench-out-")) if args.quick
        else REPO / "docs")
    command = "python -m bench" + (" --quick" if args.quick else "")
    path = report(bench, out_dir, command, time.perf_counter() - started)
    print("\n".join(table(bench)))
    print()
    for what, value, ok in targets(bench):
        print(f"{'met   ' if ok else 'MISSED'} {what}: {value}")
    print(f"\nreport: {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("--database", help="postgresql:// URL (default: embedded server)")
    parser.add_argument("--pg", type=int, default=16, help="embedded PostgreSQL version")
    parser.add_argument("--out", help="folder for benchmarks.md and the plot "
                                      "(default: docs/, or a temp folder with --quick)")
    parser.add_argument("--seed", type=int, default=7)
    return asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
