"""Latency of one chat turn of the todo chatbot with the offline scripted model.

    python -m examples.todo_chatbot.latency [--requests 200] [--conversations 10] [--http]

Each request is a whole chat turn (``POST /api/{user_id}/chat``): the turn's lease, the
history read (token-budgeted), the agent run with its tool calls on ``tasks`` (each in a
short transaction of its own), the turn's appends, the lease's release. The model
answers instantly, so what is timed is the backend: FastAPI, the Agents SDK and chatstore on
PostgreSQL. Requests go one at a time, round-robin over ``--conversations`` conversations,
cycling through add / list / complete / chat messages (three turns in four call a tool;
the report gives those and the reply-only turns apart too). By default the app is called
in-process (httpx's ASGI transport); ``--http`` serves it with uvicorn on 127.0.0.1 and
calls it over a loopback TCP connection.

Uses ``$TODO_DATABASE_URL`` if set (a database it may create tables in), else a throwaway
embedded PostgreSQL in a temporary folder. Prints the machine's load first: on a shared
machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from .app import create_app
from .database import add_user, prepare_database
from .scripted_model import ScriptedTodoModel


@asynccontextmanager
async def in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://todo") as client:
        yield client


@asynccontextmanager
async def over_http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # uvicorn says it has started by a flag; give it 10 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        raise SystemExit("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


def message_for(turn: int, task_ids: list[int]) -> str:
    kind = turn % 4
    if kind == 0:
        return f"add task number {turn}"
    if kind == 1:
        return "show my tasks"
    if kind == 2 and task_ids:
        return f"complete {task_ids[-1]}"
    return f"thanks, that was turn {turn}"


async def measure(url: str, requests: int, conversations: int, http: bool,
                  warmup: int) -> list[tuple[float, bool]]:
    """``(seconds, whether the turn called a tool)`` per measured request."""
    app = create_app(url, model=ScriptedTodoModel(), min_size=2, max_size=4)
    client_of = over_http if http else in_process
    timings: list[tuple[float, bool]] = []
    async with client_of(app) as client:
        ids: list[str | None] = [None] * conversations
        task_ids: list[int] = []
        for n in range(warmup + requests):
            slot = n % conversations
            body: dict[str, Any] = {"message": message_for(n // conversations, task_ids)}
            if ids[slot] is not None:
                body["conversation_id"] = ids[slot]
            started = time.perf_counter()
            response = await client.post("/api/bench/chat", json=body)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"request {n} failed: {response.status_code} {response.text}")
            reply = response.json()
            ids[slot] = reply["conversation_id"]
            for call in reply["tool_calls"]:
                if call["name"] == "add_task":
                    task_ids.append(call["output"]["added"]["id"])
            if n >= warmup:
                timings.append((elapsed, bool(reply["tool_calls"])))
    return timings


def _line(label: str, seconds: list[float]) -> str:
    ms = sorted(t * 1000 for t in seconds)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return (f"{label:<22} n={len(ms):<4} median {statistics.median(ms):7.2f} ms   "
            f"p99 {p99:7.2f} ms   mean {statistics.fmean(ms):7.2f} ms   "
            f"min {ms[0]:6.2f} ms   max {ms[-1]:7.2f} ms")


def report(timings: list[tuple[float, bool]], args: argparse.Namespace) -> None:
    print(f"{len(timings)} chat turns ({'HTTP over loopback' if args.http else 'in-process ASGI'}"
          f", {args.conversations} conversations, {args.warmup} warm-up turns not counted)")
    print(_line("all turns", [t for t, _ in timings]))
    tools = [t for t, called in timings if called]
    replies = [t for t, called in timings if not called]
    if tools:
        print(_line("turns calling a tool", tools))
    if replies:
        print(_line("reply-only turns", replies))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.todo_chatbot.latency",
                                     description="Latency per chat turn, scripted model.")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--http", action="store_true",
                        help="serve with uvicorn on 127.0.0.1 and call over TCP")
    args = parser.parse_args()
    print("load:", Path("/proc/loadavg").read_text().strip()
          if Path("/proc/loadavg").exists() else "unknown", f"({os.cpu_count()} cores)")

    url = os.environ.get("TODO_DATABASE_URL")
    server = None
    folder = None
    if not url:
        from chatstore.embedded import start_embedded

        folder = Path(tempfile.mkdtemp(prefix="todo-latency-"))
        server = start_embedded(folder / "pgdata", cleanup="delete")
        url = server.dsn
    try:
        prepare_database(url)
        add_user(url, "bench", "Latency")
        timings = asyncio.run(measure(url, args.requests, args.conversations, args.http,
                                      args.warmup))
        report(timings, args)
    finally:
        if server is not None:
            server.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
