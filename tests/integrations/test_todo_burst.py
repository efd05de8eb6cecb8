"""The todo chatbot as a real server process under a burst of new chats, and its shutdown.

The example runs as ``python -m examples.todo_chatbot`` (uvicorn, chatstore's default pool of
10 connections) on a database of the test server. A burst of concurrent new chats must not
hold connections across the model's thinking: every request answers (200, or 503 with
``Retry-After`` when no pooled connection came free in time), the server answers afterwards,
no session is left ``idle in transaction``, and SIGTERM stops the process within seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BURST = 40
# Seconds the scripted model "thinks" per call: a chat turn makes two model calls.
THINK = "0.25"
# A request that answers at all answers within the acquire timeout (10 s) and a bit.
REQUEST_TIMEOUT = 30.0
SIGTERM_DEADLINE = 5.0


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    url: str
    log: IO[bytes]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(served: Served, deadline: float = 60.0) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        if served.process.poll() is not None:
            pytest.fail(f"the server exited with {served.process.returncode}:\n"
                        f"{served.output()}")
        try:
            if httpx.get(f"{served.base}/api/demo/conversations", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer within {deadline} s:\n{served.output()}")


@contextmanager
def serve(url: str, log_path: Path, think: str = THINK, *options: str,
          env: dict[str, str] | None = None) -> Iterator[Served]:
    """The example served by uvicorn in a subprocess on ``url``, an empty database it
    prepares itself (its tables, chatstore's migrations, the user ``demo``), its scripted
    model thinking ``think`` seconds per call; ``env``: more environment variables."""
    port = _free_port()
    extra = env or {}
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    env.update(TODO_DATABASE_URL=url, TODO_MODEL_DELAY=think, PYTHONUNBUFFERED="1", **extra)
    log = log_path.open("w+b")
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.todo_chatbot", "--port", str(port), *options],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Served(process, f"http://127.0.0.1:{port}", url, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture
def served(new_database: Callable[..., str], tmp_path: Path) -> Iterator[Served]:
    with serve(new_database(template=False), tmp_path / "server.log") as server:
        yield server


def _sigterm(served: Served) -> float:
    """Send SIGTERM and return the seconds until the process exited (fails past the
    deadline)."""
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(SIGTERM_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"SIGTERM did not stop the server within {SIGTERM_DEADLINE} s:\n"
                    f"{served.output()}")
    elapsed = time.monotonic() - started
    print(f"SIGTERM: the server exited with {served.process.returncode} in {elapsed:.2f} s")
    return elapsed


async def _new_chat(client: httpx.AsyncClient, message: str) -> tuple[int, str | None, float]:
    started = time.monotonic()
    try:
        response = await client.post("/api/demo/chat", json={"message": message})
    except httpx.TimeoutException:
        return 0, None, time.monotonic() - started  # 0: no answer in time
    return (response.status_code, response.headers.get("retry-after"),
            time.monotonic() - started)


async def _idle_in_transaction(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT coalesce(query, '') AS query FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%' "
            "AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    return [row["query"] for row in rows]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def test_a_burst_of_new_chats_answers_and_the_server_stays_up(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.base, timeout=REQUEST_TIMEOUT,
                                 limits=httpx.Limits(max_connections=BURST)) as client:
        results = await asyncio.gather(*(_new_chat(client, f"add burst task {n}")
                                         for n in range(BURST)))
        statuses = Counter(status for status, _, _ in results)
        latencies = [elapsed for _, _, elapsed in results]
        print(f"burst of {BURST} new chats: statuses {dict(sorted(statuses.items()))}, "
              f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
        assert set(statuses) <= {200, 503}, (statuses, served.output())
        assert all(retry is not None for status, retry, _ in results if status == 503)
        assert statuses[200] > 0

        after = await _new_chat(client, "add one more after the burst")
        assert after[0] == 200, served.output()
        listed = await client.get("/api/demo/conversations", params={"limit": 200})
        assert listed.status_code == 200
        assert len(listed.json()["items"]) == statuses[200] + 1  # failed chats left none

    assert await _idle_in_transaction(served.url) == []
    assert _sigterm(served) < SIGTERM_DEADLINE


def test_sigterm_stops_an_idle_server(served: Served) -> None:
    assert _sigterm(served) < SIGTERM_DEADLINE


async def test_sigterm_with_chats_in_flight_lets_them_finish(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.base, timeout=REQUEST_TIMEOUT) as client:
        chats = [asyncio.create_task(_new_chat(client, f"add in flight {n}")) for n in range(5)]
        await asyncio.sleep(0.15)  # the requests are in, their model is thinking
        elapsed = await asyncio.to_thread(_sigterm, served)
        results = await asyncio.gather(*chats)
    assert elapsed < SIGTERM_DEADLINE
    # uvicorn's graceful shutdown lets requests in progress finish.
    assert [status for status, _, _ in results] == [200] * 5, served.output()


async def test_sigterm_with_a_chat_that_never_ends_stops_within_the_bounds(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    """A model that thinks for minutes: uvicorn cancels the request after
    --graceful-timeout, the app's shutdown closes the pool within its own bound."""
    with serve(new_database(template=False), tmp_path / "server.log", "600",
               "--graceful-timeout", "1") as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=REQUEST_TIMEOUT) as client:
            chats = [asyncio.create_task(_new_chat(client, f"add stuck {n}")) for n in range(3)]
            await asyncio.sleep(0.5)
            elapsed = await asyncio.to_thread(_sigterm, server)
            await asyncio.gather(*chats)
        assert elapsed < SIGTERM_DEADLINE
