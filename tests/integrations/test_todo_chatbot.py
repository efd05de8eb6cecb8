"""The todo chatbot example over HTTP (httpx against the ASGI app) on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from examples.todo_chatbot.app import create_app
from examples.todo_chatbot.database import add_user, prepare_database
from examples.todo_chatbot.scripted_model import ScriptedTodoModel


@pytest.fixture
def todo_db(new_database: Callable[..., str]) -> str:
    """An empty database prepared as the example does: its tables, then chatstore's."""
    url = new_database(template=False)
    prepare_database(url)
    add_user(url, "alice", "Alice")
    add_user(url, "bob", "Bob")
    return url


@asynccontextmanager
async def client_for(url: str, model: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(url, model=model, min_size=1, max_size=6)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://todo.test") as client:
        yield client


async def chat(client: httpx.AsyncClient, user: str, message: str,
               conversation_id: str | None = None, status: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = await client.post(f"/api/{user}/chat", json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


async def tasks_of(url: str, user: str) -> list[tuple[int, str, bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, title, completed FROM tasks WHERE user_id = $1 "
                                "ORDER BY id", user)
    finally:
        await conn.close()
    return [(r["id"], r["title"], r["completed"]) for r in rows]


async def all_messages(client: httpx.AsyncClient, user: str,
                       conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/{user}/conversations/{conversation_id}/messages",
                                params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_two_turns_where_the_second_sees_the_first(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        first = await chat(client, "alice", "add milk and eggs")
        cid = first["conversation_id"]
        assert [c["name"] for c in first["tool_calls"]] == ["add_task", "add_task"]
        added = [c["output"]["added"] for c in first["tool_calls"]]
        assert [t["title"] for t in added] == ["milk", "eggs"]
        assert first["response"].startswith("Done.")
        milk = added[0]["id"]
        # The two add_task calls run in parallel, each on a connection of its own: which
        # insert gets the lower id is a race, so tasks are compared in id order.
        assert await tasks_of(todo_db, "alice") == sorted([(milk, "milk", False),
                                                           (added[1]["id"], "eggs", False)])

        second = await chat(client, "alice", f"complete {milk}", cid)
        assert second["conversation_id"] == cid
        assert second["tool_calls"][0]["name"] == "complete_task"
        assert (milk, "milk", True) in await tasks_of(todo_db, "alice")

        third = await chat(client, "alice", "hello again", cid)
        assert third["tool_calls"] == []
        assert "Before that you said 2 thing(s)" in third["response"]
        assert f"'complete {milk}'" in third["response"]

        fourth = await chat(client, "alice", "show my tasks", cid)
        listed = fourth["tool_calls"][0]["output"]["tasks"]
        assert sorted((t["title"], t["completed"]) for t in listed) == [("eggs", False),
                                                                        ("milk", True)]

        messages = await all_messages(client, "alice", cid)
        assert [m["role"] for m in messages[:6]] == ["user", "assistant", "assistant", "tool",
                                                     "tool", "assistant"]
        assert messages[0]["content"] == "add milk and eggs"
        assert messages[1]["item"]["type"] == "function_call"
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert await tasks_of(todo_db, "bob") == []


async def test_paging_conversations_and_messages(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        ids = [(await chat(client, "alice", f"hello {i}"))["conversation_id"] for i in range(3)]
        for i in range(3):
            await chat(client, "alice", f"add thing {i}", ids[0])

        page = (await client.get("/api/alice/conversations", params={"limit": 2})).json()
        assert [c["id"] for c in page["items"]] == [ids[0], ids[2]]  # latest activity first
        rest = (await client.get("/api/alice/conversations",
                                 params={"limit": 2, "cursor": page["next_cursor"]})).json()
        assert [c["id"] for c in rest["items"]] == [ids[1]] and rest["next_cursor"] is None

        whole = await all_messages(client, "alice", ids[0])
        assert len(whole) == 2 + 3 * 4
        url = f"/api/alice/conversations/{ids[0]}/messages"
        newest = (await client.get(url, params={"limit": 5})).json()
        assert [m["seq"] for m in newest["items"]] == [10, 11, 12, 13, 14]
        pages = [newest["items"]]
        cursor = newest["next_cursor"]
        while cursor is not None:
            older = (await client.get(url, params={"limit": 5, "before": cursor})).json()
            pages.insert(0, older["items"])
            cursor = older["next_cursor"]
        assert [m for p in pages for m in p] == whole
        forward = (await client.get(url, params={"limit": 6, "after": 8})).json()
        assert [m["seq"] for m in forward["items"]] == [9, 10, 11, 12, 13, 14]
        assert forward["next_cursor"] is None


async def test_another_users_conversation_is_404(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        mine = await chat(client, "alice", "add secret plan")
        cid = mine["conversation_id"]
        before = await all_messages(client, "alice", cid)

        for response in [
            await client.get(f"/api/bob/conversations/{cid}/messages"),
            await client.post("/api/bob/chat", json={"conversation_id": cid,
                                                     "message": "add steal it"}),
            await client.delete(f"/api/bob/conversations/{cid}"),
            await client.post("/api/ghost/chat", json={"message": "hi"}),
            await client.get("/api/ghost/conversations"),
        ]:
            assert response.status_code == 404, response.text
            assert "secret" not in response.text
        assert (await client.get("/api/bob/conversations")).json()["items"] == []
        assert await all_messages(client, "alice", cid) == before
        assert await tasks_of(todo_db, "bob") == []


async def test_invalid_input_is_422_naming_the_field(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "hi"))["conversation_id"]
        bad = await client.get("/api/alice/conversations", params={"limit": 0})
        assert bad.status_code == 422 and bad.json()["field"] == "limit"
        bad = await client.get(f"/api/alice/conversations/{cid}/messages",
                               params={"limit": 5000})
        assert bad.status_code == 422 and bad.json()["field"] == "limit"
        bad = await client.get("/api/alice/conversations", params={"cursor": "garbage"})
        assert bad.status_code == 422 and bad.json()["field"] == "cursor"
        empty = await client.post("/api/alice/chat", json={"message": ""})
        assert empty.status_code == 422 and "message" in empty.text


class GatedModel(ScriptedTodoModel):
    """Waits in its first call until released: a turn that stays in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await super().get_response(*args, **kwargs)


async def test_a_concurrent_turn_gets_409_at_once(todo_db: str) -> None:
    model = GatedModel()
    model.release.set()
    async with client_for(todo_db, model) as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        model.release.clear()
        model.entered.clear()
        first = asyncio.create_task(chat(client, "alice", "add bread", cid))
        await asyncio.wait_for(model.entered.wait(), 10)
        second = await asyncio.wait_for(
            client.post("/api/alice/chat", json={"conversation_id": cid, "message": "add jam"}),
            5)
        assert second.status_code == 409, second.text
        model.release.set()
        done = await first
        assert done["tool_calls"][0]["output"]["added"]["title"] == "bread"
        messages = await all_messages(client, "alice", cid)
        assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "add bread"]
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["bread"]
        # Other conversations are not held up by it.
        assert (await chat(client, "alice", "add jam"))["tool_calls"][0]["name"] == "add_task"


class CrashingModel(ScriptedTodoModel):
    """Crashes once this turn's tool outputs are back: after the tools changed `tasks`."""

    crashed = 0

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> Any:
        items = [dict(i) for i in input] if isinstance(input, list) else []
        last_user = max((n for n, i in enumerate(items) if i.get("role") == "user"), default=0)
        if any(i.get("type") == "function_call_output" for i in items[last_user:]):
            self.crashed += 1
            raise RuntimeError("the model service failed")
        return await super().get_response(system_instructions, input, *args, **kwargs)


async def test_a_failed_run_removes_its_messages_and_keeps_committed_task_changes(
        todo_db: str) -> None:
    """The tools commit their task changes as they return (no transaction is held while
    the model thinks): a later failure of the turn removes the turn's messages and a
    conversation the request started, but the task row the tool wrote stays."""
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "add milk"))["conversation_id"]
        before = await all_messages(client, "alice", cid)
        tasks_before = await tasks_of(todo_db, "alice")
    model = CrashingModel()
    async with client_for(todo_db, model) as client:
        failed = await client.post("/api/alice/chat",
                                   json={"conversation_id": cid, "message": "add eggs"})
        assert failed.status_code == 500
        assert await all_messages(client, "alice", cid) == before  # the turn aborted
        after = await tasks_of(todo_db, "alice")
        assert after[:-1] == tasks_before and after[-1][1:] == ("eggs", False)  # committed
        # A failed first turn leaves no empty conversation behind either.
        failed = await client.post("/api/alice/chat", json={"message": "add jam"})
        assert failed.status_code == 500
        listed = (await client.get("/api/alice/conversations")).json()["items"]
        assert [c["id"] for c in listed] == [cid]
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["milk", "eggs", "jam"]
    assert model.crashed == 2  # both runs failed after their tool ran
    async with client_for(todo_db) as client:  # the lease is free again
        again = await chat(client, "alice", "add bread", cid)
        assert again["tool_calls"][0]["output"]["added"]["title"] == "bread"


async def test_delete_a_conversation(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "add milk"))["conversation_id"]
        deleted = await client.delete(f"/api/alice/conversations/{cid}")
        assert deleted.status_code == 204
        assert (await client.get(f"/api/alice/conversations/{cid}/messages")).status_code == 404
        assert (await client.delete(f"/api/alice/conversations/{cid}")).status_code == 404
        assert (await client.get("/api/alice/conversations")).json()["items"] == []
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["milk"]  # tasks stay


async def test_an_exhausted_pool_is_503_with_retry_after(todo_db: str) -> None:
    app = create_app(todo_db, min_size=1, max_size=1, acquire_timeout=0.2)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://todo.test") as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        async with app.state.chatstore.pool.acquire():  # the pool's only connection is busy
            for body in ({"message": "hi"}, {"conversation_id": cid, "message": "add jam"}):
                busy = await asyncio.wait_for(client.post("/api/alice/chat", json=body), 5)
                assert busy.status_code == 503, busy.text
                assert busy.headers["retry-after"] == "1"
            listed = await client.get("/api/alice/conversations")
            assert listed.status_code == 503 and "retry-after" in listed.headers
        # The connection is back: the same request works and the failed ones left nothing.
        assert (await chat(client, "alice", "add jam", cid))["tool_calls"][0]["name"] == \
            "add_task"
        assert [c["id"] for c in (await client.get("/api/alice/conversations")).json()[
            "items"]] == [cid]


# -- hostile bodies: every one answered 4xx with a small body that quotes nothing sent -----

async def _conversations(client: httpx.AsyncClient, user: str) -> list[str]:
    response = await client.get(f"/api/{user}/conversations")
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["items"]]


@pytest.mark.parametrize(("raw", "field"), [
    # JSON escapes: what json.loads turns into a lone surrogate (FastAPI's own handler
    # answered these with a 500: UnicodeEncodeError while rendering the echoed input).
    (b'{"message": "hi \\ud800 there"}', "message"),
    (b'{"message": "hi \\udfff there' + b" padding" * 3000 + b'"}', "message"),
    (b'{"message": "hi", "conversation_id": "hi \\ud800 there"}', "conversation_id"),
    # Raw bytes that are not UTF-8, and JSON that is not JSON.
    (b'{"message": "hi \xff\xfe there"}', None),
    (b'{"message": "hi there", ', "body"),
])
async def test_a_hostile_body_is_422_naming_the_field_never_echoing_it(
        todo_db: str, raw: bytes, field: str | None) -> None:
    async with client_for(todo_db) as client:
        response = await client.post("/api/alice/chat", content=raw,
                                     headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        if field is not None:
            assert response.status_code == 422
            assert response.json()["field"] == field
        assert "there" not in response.text and "padding" not in response.text
        assert len(response.content) < 1000
        assert await _conversations(client, "alice") == []


async def test_a_nul_in_a_message_names_the_message_field(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        first = await client.post("/api/alice/chat", json={"message": "add milk\x00 please"})
        assert first.status_code == 422, first.text
        assert first.json()["field"] == "message"  # the client sent no title
        assert "milk" not in first.text
        assert await _conversations(client, "alice") == []  # nothing was created
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        later = await client.post("/api/alice/chat",
                                  json={"conversation_id": cid, "message": "add \x00 jam"})
        assert later.status_code == 422 and later.json()["field"] == "message", later.text
        assert [m["content"] for m in await all_messages(client, "alice", cid)
                if m["role"] == "user"] == ["hello"]


TWO_MB = 2 * 1024 * 1024


async def test_a_2_mb_message_is_413_before_it_is_read(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        secret = "s3cr3t" + "x" * TWO_MB
        declared = await client.post("/api/alice/chat", json={"message": secret})
        assert declared.status_code == 413, declared.text[:200]
        assert len(declared.content) < 200 and "s3cr3t" not in declared.text

        # No Content-Length (chunked): counted as it streams, refused past the limit, and
        # the rest is never read.
        chunks_read = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal chunks_read
            yield b'{"message": "s3cr3t'
            for _ in range(TWO_MB // 65536):
                chunks_read += 1
                yield b"x" * 65536
            yield b'"}'

        streamed = await client.post("/api/alice/chat", content=body(),
                                     headers={"content-type": "application/json"})
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413, streamed.text[:200]
        assert len(streamed.content) < 200 and "s3cr3t" not in streamed.text
        assert chunks_read < TWO_MB // 65536
        assert await _conversations(client, "alice") == []
        # Under the limit, the app's own 20,000-character rule answers, naming the field.
        long = await client.post("/api/alice/chat", json={"message": "s3cr3t" * 4000})
        assert long.status_code == 422 and long.json()["field"] == "message"
        assert "s3cr3t" not in long.text
        assert (await chat(client, "alice", "hello"))["response"]  # the app still serves
