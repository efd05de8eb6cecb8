"""chatstore.integrations.fastapi without a database: every chatstore error's HTTP answer,
the validation handler, the body-size middleware, and a route with no store."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from chatstore import (
    ChatStoreError,
    Conflict,
    ConnectionLost,
    ConversationBusy,
    Deadlock,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    SchemaChanged,
    SchemaNotMigrated,
    SerializationFailure,
    StaleRevision,
    StoreClosed,
    Timeout,
    WrongEventLoop,
)
from chatstore.integrations.fastapi import (
    BodySizeLimit,
    Store,
    error_response,
    install_error_handlers,
)


def answer(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = error_response(exc)
    return response.status_code, json.loads(bytes(response.body)), dict(response.headers)


@pytest.mark.parametrize(("exc", "status", "retry_after"), [
    (NotFound("conversation 1 not found"), 404, False),
    (InvalidInput("messages[0].content", "contains a NUL character"), 422, False),
    (ConversationBusy("conversation 1 is in a turn"), 409, True),
    (StaleRevision("c1", 3, 4), 409, False),
    (Conflict("idempotency key reused"), 409, False),
    (Timeout("no connection came free", kind="acquire"), 503, True),
    (Timeout("gave up waiting", kind="client", outcome="unknown", retryable=False), 503, True),
    (ConnectionLost("gone"), 503, True),
    (StoreClosed("the store is closed"), 503, False),
    (SchemaNotMigrated("messages.item is missing"), 503, False),
    (Deadlock("deadlock"), 503, True),
    (SerializationFailure("serialization"), 503, True),
    (SchemaChanged("cached plan"), 503, True),
    (WrongEventLoop("another loop"), 500, False),
    (ChatStoreError("create_conversation returned no row"), 500, False),
])
def test_every_chatstore_error_has_its_status(exc: ChatStoreError, status: int,
                                              retry_after: bool) -> None:
    code, body, headers = answer(exc)
    assert code == status
    assert ("retry-after" in headers) is retry_after
    if retry_after:
        assert headers["retry-after"] == "1"
    if status == 422:
        assert body["field"] == "messages[0].content"
    if status == 503 and isinstance(exc, Timeout | ConnectionLost):
        assert (body["outcome"], body["retryable"]) == (exc.outcome, exc.retryable)
    if isinstance(exc, StaleRevision):
        assert body["current_revision"] == 4
    if status >= 500 and not retry_after:  # internals stay in the log
        assert str(exc) not in body["detail"]


def test_quota_exceeded_is_429_until_the_window_resets() -> None:
    resets_at = datetime.now(UTC) + timedelta(hours=2)
    code, body, headers = answer(QuotaExceeded("alice", limit=100, used=120,
                                               resets_at=resets_at, window="day"))
    assert code == 429
    assert (body["limit"], body["used"]) == (100, 120)
    assert datetime.fromisoformat(body["resets_at"]) == resets_at
    assert 7000 < int(headers["retry-after"]) <= 7200
    # a window that has just reset: retry at once (never 0 or negative)
    _, _, soon = answer(QuotaExceeded("alice", limit=1, used=1, window="day",
                                      resets_at=datetime.now(UTC) - timedelta(seconds=5)))
    assert soon["retry-after"] == "1"


def test_the_cause_chain_decides_and_nothing_internal_leaks(
        caplog: pytest.LogCaptureFixture) -> None:
    wrapped = RuntimeError("tool failed")
    wrapped.__cause__ = NotFound("conversation 1 not found")
    assert answer(wrapped)[0] == 404
    with caplog.at_level(logging.ERROR, "chatstore.fastapi"):
        code, body, _ = answer(ValueError("password=hunter2 row=(alice, secret)"))
    assert code == 500 and body == {"detail": "internal error"}
    assert "hunter2" in caplog.text  # logged for the operator, not sent


class Body(BaseModel):
    conversation_id: UUID | None = None
    message: str = Field(min_length=1, max_length=20)
    tags: dict[str, int] = {}


def small_app(limit: int = 1000) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limit)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, int]:
        return {"length": len(body.message)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.get("/store")
    async def store(store: Store) -> dict[str, str]:
        return {"store": repr(store)}

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://t")


@pytest.mark.parametrize(("raw", "field", "kind"), [
    (b'{"message": "hi \\ud800 there"}', "message", None),
    (b'{"message": "hi", "conversation_id": "there \\udc00"}', "conversation_id", None),
    (b'{"message": "hi there, far too long for it"}', "message", "string_too_long"),
    (b'{"message": "hi", "tags": {"there \\ud800": "x"}}', "tags.?", "int_parsing"),
    (b'{"message": "hi", "tags": {"k": "there"}}', "tags.k", "int_parsing"),
    (b'{"message": "there', "body", "json_invalid"),
    (b'[1, "there"]', "body", None),
])
async def test_validation_errors_name_the_location_and_never_echo(
        raw: bytes, field: str | None, kind: str | None) -> None:
    async with client(small_app()) as c:
        response = await c.post("/echo", content=raw,
                                headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert "there" not in response.text and "input" not in response.text
    assert response.content.isascii()
    if field is not None:
        assert body["field"] == field
    if kind is not None:
        assert body["errors"][0]["type"] == kind
    assert all(set(e) == {"loc", "type"} for e in body["errors"])


async def test_a_body_over_the_limit_is_413_by_length_or_by_counting() -> None:
    async with client(small_app(limit=1000)) as c:
        fits = await c.post("/raw", content=b"x" * 1000)
        assert fits.status_code == 200 and fits.json() == {"length": 1000}
        declared = await c.post("/echo", json={"message": "s3cr3t" * 400})
        assert declared.status_code == 413 and "s3cr3t" not in declared.text
        assert declared.json()["detail"] == "the request body is over the limit of 1000 bytes"
        sent = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent
            for _ in range(100):
                sent += 1
                yield b"s3cr3t" * 50

        for path in ("/raw", "/echo"):
            sent = 0
            streamed = await c.post(path, content=chunks(),
                                    headers={"content-type": "application/json"})
            assert streamed.status_code == 413, streamed.text
            assert streamed.headers["connection"] == "close"
            assert sent < 10  # refused at the fourth chunk, the rest never read


async def test_the_limit_works_around_a_bare_asgi_app() -> None:
    """An app that is not FastAPI (no exception middleware): the limit answers itself."""
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 100

    async with client(BodySizeLimit(bare, max_bytes=250)) as c:
        assert (await c.post("/", content=b"y" * 250)).text == "read"
        refused = await c.post("/", content=chunks())
        assert refused.status_code == 413
    with pytest.raises(ValueError, match="max_bytes"):
        BodySizeLimit(bare, max_bytes=-1)


async def test_a_route_on_an_app_without_the_lifespan_is_a_500_that_says_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    async with client(small_app()) as c:
        response = await c.get("/store")
    assert response.status_code == 500
    assert "lifespan" not in response.text
