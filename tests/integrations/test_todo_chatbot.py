"""The todo chatbot example over HTTP (httpx against the ASGI app) on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
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
async def client_for(url: str, model: Any = None,
                     **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(url, model=model, min_size=1, max_size=6, **options)
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


async def test_rename_a_chat(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "add milk"))["conversation_id"]
        renamed = await client.patch(f"/api/alice/conversations/{cid}",
                                     json={"title": "Groceries"})
        assert renamed.status_code == 200, renamed.text
        assert (renamed.json()["id"], renamed.json()["title"]) == (cid, "Groceries")
        listed = (await client.get("/api/alice/conversations")).json()["items"]
        assert [(c["id"], c["title"]) for c in listed] == [(cid, "Groceries")]

        # Another user's chat is a 404; a title that is empty or holds a NUL is a 422.
        other = await client.patch(f"/api/bob/conversations/{cid}", json={"title": "mine"})
        assert other.status_code == 404
        for title in ("", "a\x00b"):
            refused = await client.patch(f"/api/alice/conversations/{cid}",
                                         json={"title": title})
            assert (refused.status_code, refused.json()["field"]) == (422, "title")
        listed = (await client.get("/api/alice/conversations")).json()["items"]
        assert [c["title"] for c in listed] == ["Groceries"]


async def test_search_names_each_matchs_chat_and_its_current_version(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "add milk"))["conversation_id"]
        other = (await chat(client, "alice", "where is the milk aisle"))["conversation_id"]
        fork = (await post(client, f"/api/alice/conversations/{cid}/messages/1/edit",
                           {"message": "add oat milk"}))["conversation_id"]

        response = await client.get("/api/alice/search", params={"query": "milk"})
        assert response.status_code == 200, response.text
        hits = response.json()["items"]
        where = {(h["message"]["role"], h["message"]["content"]):
                 (h["conversation_id"], h["chat_id"], h["current_id"]) for h in hits}
        # Each match: the conversation that stores it, its chat (the root) and the chat's
        # current version (the edit's fork for the first chat).
        assert where[("user", "add milk")] == (cid, cid, fork)
        assert where[("user", "add oat milk")] == (fork, cid, fork)
        assert where[("user", "where is the milk aisle")] == (other, other, other)
        assert all(h["message"]["seq"] >= 1 for h in hits)

        # Only the caller's own messages; an empty query is a 422 naming it.
        assert (await client.get("/api/bob/search", params={"query": "milk"})).json() == {
            "items": []}
        for params in ({"query": " "}, {}):
            refused = await client.get("/api/alice/search", params=params)
            assert (refused.status_code, refused.json()["field"]) == (422, "query")


async def test_the_page_and_its_script_are_served(todo_db: str) -> None:
    """GET / is the web page (tests/integrations/test_todo_page.py drives it in a browser);
    it loads nothing from elsewhere."""
    async with client_for(todo_db) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script src="/page.js" defer></script>' in page.text
        script = await client.get("/page.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "/chat/stream" in script.text
        for body in (page.text, script.text):
            assert "http://" not in body and "https://" not in body


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


# -- edit, regenerate, versions: turns on new forks -------------------------------------------

async def post(client: httpx.AsyncClient, url: str, body: dict[str, Any] | None = None,
               status: int = 200) -> dict[str, Any]:
    response = await client.post(url, json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


async def chats_of(client: httpx.AsyncClient, user: str) -> list[tuple[str, str]]:
    """The user's chats as the sidebar lists them: (root id, current version's id)."""
    response = await client.get(f"/api/{user}/conversations")
    assert response.status_code == 200, response.text
    return [(c["id"], c["current_id"]) for c in response.json()["items"]]


async def versions(client: httpx.AsyncClient, user: str, cid: str,
                   seq: int) -> list[tuple[str | None, str, bool]]:
    """(content, conversation to open, current) of each version of message seq."""
    response = await client.get(f"/api/{user}/conversations/{cid}/messages/{seq}/alternatives")
    assert response.status_code == 200, response.text
    return [(v["message"]["content"], v["conversation_id"], v["current"])
            for v in response.json()["items"]]


async def stored_conversations(url: str, user: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = $1",
                                       user))
    finally:
        await conn.close()


async def test_an_edit_runs_on_a_fork_and_keeps_the_old_version(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        await chat(client, "alice", "add milk", cid)
        before = await all_messages(client, "alice", cid)
        assert [m["role"] for m in before] == ["user", "assistant", "user", "assistant",
                                               "tool", "assistant"]

        edited = await post(client, f"/api/alice/conversations/{cid}/messages/3/edit",
                            {"message": "add bread"})
        fork = edited["conversation_id"]
        assert fork != cid
        assert edited["tool_calls"][0]["output"]["added"]["title"] == "bread"
        assert edited["response"].startswith("Done.")
        on_fork = await all_messages(client, "alice", fork)
        assert on_fork[:2] == before[:2]  # the shared prefix, as stored
        assert [m["content"] for m in on_fork][2] == "add bread"
        assert [m["role"] for m in on_fork] == [m["role"] for m in before]
        assert await all_messages(client, "alice", cid) == before  # the old version stays
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["milk", "bread"]

        # One chat in the list, its current version the fork; the versions of message 3.
        assert await chats_of(client, "alice") == [(cid, fork)]
        assert await versions(client, "alice", fork, 3) == [("add milk", cid, False),
                                                            ("add bread", fork, True)]
        assert await versions(client, "alice", cid, 3) == [("add milk", cid, True),
                                                           ("add bread", fork, False)]
        assert await versions(client, "alice", fork, 1) == [("hello", fork, True)]

        # The next message goes to the fork, whose history the model sees.
        later = await chat(client, "alice", "thanks", fork)
        assert "the last one 'add bread'" in later["response"]
        assert await all_messages(client, "alice", cid) == before

        # Switch back to the first version ("< 1/2 >"), then a stale switch is refused.
        switched = await post(client, f"/api/alice/conversations/{fork}/current",
                              {"conversation_id": cid, "expected_current": fork})
        assert (switched["id"], switched["current_id"]) == (cid, cid)
        assert await chats_of(client, "alice") == [(cid, cid)]
        stale = await post(client, f"/api/alice/conversations/{cid}/current",
                           {"conversation_id": fork, "expected_current": fork}, status=409)
        assert "current version" in stale["detail"]
        assert await chats_of(client, "alice") == [(cid, cid)]
        done = await post(client, f"/api/alice/conversations/{cid}/current",
                          {"conversation_id": fork, "expected_current": cid})
        assert done["current_id"] == fork
        # without expected_current the switch is unconditional
        assert (await post(client, f"/api/alice/conversations/{cid}/current",
                           {"conversation_id": cid}))["current_id"] == cid


async def test_edit_and_regenerate_check_the_message(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        await chat(client, "alice", "add milk", cid)  # 3 user, 4 call, 5 output, 6 reply
        other = (await chat(client, "alice", "another chat"))["conversation_id"]
        base = f"/api/alice/conversations/{cid}/messages"
        for seq in (2, 4, 5, 6, 7, 0):
            bad = await post(client, f"{base}/{seq}/edit", {"message": "x"}, status=422)
            assert bad["field"] == "seq", (seq, bad)
        for seq in (1, 3, 5, 7, 0):
            bad = await post(client, f"{base}/{seq}/regenerate", status=422)
            assert bad["field"] == "seq", (seq, bad)
        bad = await post(client, f"{base}/3/edit", {"message": "add \x00 jam"}, status=422)
        assert bad["field"] == "message"
        bad = await post(client, f"{base}/3/edit", {"message": ""}, status=422)
        assert bad["field"] == "message"
        bad = await post(client, f"/api/alice/conversations/{cid}/current",
                         {"conversation_id": other}, status=422)
        assert bad["field"] == "conversation_id"
        alternatives = await client.get(f"{base}/7/alternatives")
        assert alternatives.status_code == 422 and alternatives.json()["field"] == "seq"
        assert await stored_conversations(todo_db, "alice") == 2  # no fork was made
        assert sorted(await chats_of(client, "alice")) == sorted([(cid, cid), (other, other)])


class CountingModel(ScriptedTodoModel):
    """The scripted model, counting its calls: a regeneration must call it again."""

    calls = 0

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await super().get_response(*args, **kwargs)


async def test_regenerate_runs_the_model_again_on_a_fork(todo_db: str) -> None:
    model = CountingModel()
    async with client_for(todo_db, model) as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        await chat(client, "alice", "add milk", cid)
        before = await all_messages(client, "alice", cid)
        calls = model.calls

        # Reply 6 follows the tool's result: the model answers again from there; the tool
        # is not run again.
        again = await post(client, f"/api/alice/conversations/{cid}/messages/6/regenerate")
        fork = again["conversation_id"]
        assert fork != cid and model.calls == calls + 1
        assert again["tool_calls"] == [] and again["response"] == before[5]["content"]
        on_fork = await all_messages(client, "alice", fork)
        assert on_fork[:5] == before[:5] and len(on_fork) == 6
        assert on_fork[5]["role"] == "assistant" and on_fork[5]["seq"] == 6
        assert await all_messages(client, "alice", cid) == before
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["milk"]
        assert await versions(client, "alice", cid, 6) == [
            (before[5]["content"], cid, True), (before[5]["content"], fork, False)]
        assert await chats_of(client, "alice") == [(cid, fork)]

        # Reply 2, to the first message, regenerated on the fork: a fork of the fork.
        second = await post(client, f"/api/alice/conversations/{fork}/messages/2/regenerate")
        assert [(v[1], v[2]) for v in await versions(client, "alice", second[
            "conversation_id"], 2)] == [(fork, False), (second["conversation_id"], True)]
        assert await chats_of(client, "alice") == [(cid, second["conversation_id"])]
        assert len(await all_messages(client, "alice", second["conversation_id"])) == 2
        assert await stored_conversations(todo_db, "alice") == 3

        # Deleting the current version moves the chat back to its parent.
        deleted = await client.delete(f"/api/alice/conversations/{second['conversation_id']}")
        assert deleted.status_code == 204
        assert await chats_of(client, "alice") == [(cid, fork)]
        assert await all_messages(client, "alice", fork) == on_fork


class FailingModel(ScriptedTodoModel):
    """A model service that is down."""

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the model service failed")


async def test_an_aborted_regeneration_or_edit_leaves_no_fork(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "hello"))["conversation_id"]
        await chat(client, "alice", "how are you", cid)
        before = await all_messages(client, "alice", cid)
    async with client_for(todo_db, FailingModel()) as client:
        failed = await client.post(f"/api/alice/conversations/{cid}/messages/4/regenerate")
        assert failed.status_code == 500 and "failed" not in failed.text
        failed = await client.post(f"/api/alice/conversations/{cid}/messages/3/edit",
                                   json={"message": "how old are you"})
        assert failed.status_code == 500
        assert await stored_conversations(todo_db, "alice") == 1  # the forks were deleted
        assert await chats_of(client, "alice") == [(cid, cid)]
        assert await versions(client, "alice", cid, 4) == [(before[3]["content"], cid, True)]
        assert await versions(client, "alice", cid, 3) == [("how are you", cid, True)]
        assert await all_messages(client, "alice", cid) == before
    async with client_for(todo_db) as client:  # and the conversation is free for a turn
        again = await post(client, f"/api/alice/conversations/{cid}/messages/4/regenerate")
        assert await chats_of(client, "alice") == [(cid, again["conversation_id"])]


async def test_another_users_conversation_is_404_for_every_version_endpoint(
        todo_db: str) -> None:
    async with client_for(todo_db) as client:
        cid = (await chat(client, "alice", "add secret plan"))["conversation_id"]
        fork = (await post(client, f"/api/alice/conversations/{cid}/messages/1/edit",
                           {"message": "add secret plan b"}))["conversation_id"]
        bobs = (await chat(client, "bob", "hello"))["conversation_id"]
        before = await all_messages(client, "alice", fork)
        base = f"/api/bob/conversations/{cid}"
        for response in [
            await client.post(f"{base}/messages/1/edit", json={"message": "add steal it"}),
            await client.post(f"/api/bob/conversations/{fork}/messages/2/regenerate"),
            await client.get(f"{base}/messages/1/alternatives"),
            await client.post(f"{base}/current", json={"conversation_id": cid}),
            await client.post(f"/api/bob/conversations/{bobs}/current",
                              json={"conversation_id": fork}),
            await client.post(f"/api/alice/conversations/{cid}/current",
                              json={"conversation_id": bobs}),
            await client.post(f"/api/ghost/conversations/{cid}/messages/1/regenerate"),
        ]:
            assert response.status_code == 404, response.text
            assert "secret" not in response.text
        assert await chats_of(client, "alice") == [(cid, fork)]
        assert await all_messages(client, "alice", fork) == before
        assert await chats_of(client, "bob") == [(bobs, bobs)]
        assert await stored_conversations(todo_db, "bob") == 1
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["secret plan",
                                                                    "secret plan b"]
        assert await tasks_of(todo_db, "bob") == []


class GatedAfterTools(ScriptedTodoModel):
    """Waits, once this turn's tool outputs are back, until released: a turn in flight
    whose user's message, tool call and tool output are stored."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                           **kwargs: Any) -> Any:
        items = [dict(i) for i in input] if isinstance(input, list) else []
        last_user = max((n for n, i in enumerate(items) if i.get("role") == "user"), default=0)
        if any(i.get("type") == "function_call_output" for i in items[last_user:]):
            self.entered.set()
            await self.release.wait()
        return await super().get_response(system_instructions, input, *args, **kwargs)


async def test_a_version_never_waits_for_a_turn_in_flight(todo_db: str) -> None:
    """A fork may start at or before the seq the conversation's turn in flight began at
    (at once, no waiting); past it, the fork would hold half a turn: 409."""
    model = GatedAfterTools()
    model.release.set()
    async with client_for(todo_db, model) as slow, client_for(todo_db) as fast:
        cid = (await chat(slow, "alice", "hello"))["conversation_id"]  # messages 1, 2
        model.release.clear()
        in_flight = asyncio.create_task(chat(slow, "alice", "add bread", cid))
        await asyncio.wait_for(model.entered.wait(), 10)
        assert [m["role"] for m in await all_messages(fast, "alice", cid)] == [
            "user", "assistant", "user", "assistant", "tool"]  # the turn began at 2
        busy = await asyncio.wait_for(
            fast.post(f"/api/alice/conversations/{cid}/messages/4/regenerate"), 5)
        assert busy.status_code == 409, busy.text
        again = await asyncio.wait_for(
            fast.post(f"/api/alice/conversations/{cid}/messages/2/regenerate"), 5)
        assert again.status_code == 200, again.text
        fork = again.json()["conversation_id"]
        model.release.set()
        assert (await in_flight)["tool_calls"][0]["output"]["added"]["title"] == "bread"
        assert len(await all_messages(fast, "alice", cid)) == 6
        assert len(await all_messages(fast, "alice", fork)) == 2
        assert await chats_of(fast, "alice") == [(cid, fork)]
        assert await stored_conversations(todo_db, "alice") == 2


# -- usage and the daily quota ----------------------------------------------------------------

async def usage_of(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await client.get(f"/api/{user}/usage")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_each_turn_records_its_usage_and_the_day_total_adds_them_up(
        todo_db: str) -> None:
    async with client_for(todo_db) as client:
        first = await chat(client, "alice", "add milk and eggs")
        # two model requests: the tool calls, then the answer
        assert first["usage"]["requests"] == 2
        assert first["usage"]["input_tokens"] > 0 and first["usage"]["output_tokens"] > 0
        cid = first["conversation_id"]
        second = await chat(client, "alice", "hello", cid)
        assert second["usage"]["requests"] == 1
        day = await usage_of(client, "alice")
        assert day["day"] == datetime.now(UTC).date().isoformat() or day["day"] == (
            datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        for field in ("input_tokens", "output_tokens", "requests"):
            assert day["total"][field] == first["usage"][field] + second["usage"][field]
        assert day["total"]["entries"] == 3
        assert [m["key"] for m in day["by_model"]] == ["ScriptedTodoModel"]
        assert (await usage_of(client, "bob"))["total"]["entries"] == 0
        # the tokens were spent: deleting the chat keeps them
        assert (await client.delete(f"/api/alice/conversations/{cid}")).status_code == 204
        assert (await usage_of(client, "alice"))["total"] == day["total"]
        missing = await client.get("/api/nobody/usage")
        assert missing.status_code == 404


async def test_a_spent_daily_quota_is_429_and_starts_no_turn(todo_db: str) -> None:
    async with client_for(todo_db) as client:
        first = await chat(client, "alice", "add milk")
        spent = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
        cid = first["conversation_id"]
    # one token left: the next turn starts (and spends more than that), the one after not
    async with client_for(todo_db, daily_tokens=spent + 1) as client:
        await chat(client, "alice", "hello", cid)
        before = await all_messages(client, "alice", cid)
        refused = await client.post("/api/alice/chat", json={"conversation_id": cid,
                                                             "message": "add eggs"})
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert body["limit"] == spent + 1 and body["used"] > spent
        assert 0 < int(refused.headers["retry-after"]) <= 86_400
        assert await all_messages(client, "alice", cid) == before
        assert [t[1] for t in await tasks_of(todo_db, "alice")] == ["milk"]
        # a new chat is refused too, and leaves no empty conversation behind
        new_chat = await client.post("/api/alice/chat", json={"message": "add jam"})
        assert new_chat.status_code == 429
        listed = (await client.get("/api/alice/conversations")).json()["items"]
        assert [c["id"] for c in listed] == [cid]
        # so are an edit and a regeneration (each a turn on a new fork): no fork is made
        edit = await client.post(f"/api/alice/conversations/{cid}/messages/1/edit",
                                 json={"message": "add bread"})
        assert edit.status_code == 429
        # bob has his own quota
        assert (await chat(client, "bob", "hello"))["usage"]["requests"] == 1


async def test_export_gives_the_users_data_and_no_one_elses(todo_db: str) -> None:
    """GET /export: the user's conversations as chatstore's export lines (a regenerated
    reply's fork included), then the usage entries of its turns, another user's never, an
    unknown user 404."""
    async with client_for(todo_db) as client:
        first = await chat(client, "alice", "add secret plan")
        cid = first["conversation_id"]
        regenerated = await client.post(f"/api/alice/conversations/{cid}/messages/2/regenerate")
        assert regenerated.status_code == 200, regenerated.text
        await chat(client, "bob", "add bob's own")
        response = await client.get("/api/alice/export")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-ndjson")
        every = [json.loads(line) for line in response.text.splitlines()]
        lines = [line for line in every if line.get("kind") != "usage"]
        usage = every[len(lines):]  # after the conversations
        assert all(line.get("kind") == "usage" for line in usage)
        assert {line["id"] for line in lines} == {cid, regenerated.json()["conversation_id"]}
        assert {line["user_id"] for line in every} == {"alice"}
        assert {u["conversation_id"] for u in usage} == {
            cid, regenerated.json()["conversation_id"]}
        day = (await usage_of(client, "alice"))["total"]
        assert sum(u["input_tokens"] for u in usage) == day["input_tokens"]
        assert "bob's own" not in response.text
        root = next(line for line in lines if line["id"] == cid)
        assert "add secret plan" in json.dumps(root["messages"][0])  # an agent item
        assert (await client.get("/api/ghost/export")).status_code == 404
