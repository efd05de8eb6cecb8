"""FastAPI glue: the store's life, a dependency, errors as HTTP, and a request-body limit.

    from fastapi import FastAPI
    from chatstore.integrations.fastapi import (
        BodySizeLimit, Store, install_error_handlers, lifespan)

    app = FastAPI(lifespan=lifespan("postgresql://app@db/app", max_size=10))
    install_error_handlers(app)                           # chatstore errors -> 404/409/422/503
    app.add_middleware(BodySizeLimit, max_bytes=256 * 1024)   # 413 over 256 KiB

    @app.get("/api/{user_id}/conversations")
    async def conversations(user_id: str, store: Store) -> list[str]:
        page = await store.list_conversations(user_id)    # NotFound -> 404, by the handler
        return [str(c.id) for c in page.items]

    # A lifespan of your own instead: `async with open_store(app, dsn): yield` inside it.

Needs FastAPI (``pip install 'chatstore[fastapi]'``). What each part does:

* :func:`lifespan` / :func:`open_store` open one store (``chatstore.connect``) for the app's
  life, put it on ``app.state.chatstore`` and close it at shutdown, bounded: connections
  still in use after ``close_timeout`` seconds are terminated (asyncpg's own close waits for
  ever, and a process that must exit on SIGTERM cannot).
* :func:`get_store` (and ``Store``, its ``Annotated`` form) gives that store to a route.
* :func:`install_error_handlers` maps every chatstore error to HTTP (see
  :func:`error_response`) and replaces FastAPI's ``RequestValidationError`` handler with one
  that names the failing locations and never echoes the input (FastAPI's default puts the
  input in the response and answers 500 when it holds a lone surrogate).
* :class:`BodySizeLimit`, a pure ASGI middleware, answers 413 to a body over ``max_bytes``
  before reading it all: at once by ``Content-Length``, else while counting streamed chunks.

Error bodies are JSON ``{"detail": "..."}`` (plus ``field`` for 422); they carry a field's
name, an id or a revision, never a submitted value, a row or a password.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import (
    ChatStore,
    ChatStoreError,
    Conflict,
    ConnectionLost,
    ConversationBusy,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    SchemaNotMigrated,
    StaleRevision,
    StoreClosed,
    Timeout,
    connect,
)
from ..errors import is_connection_lost

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "STATE_ATTRIBUTE",
    "BodySizeLimit",
    "BodyTooLarge",
    "Store",
    "error_response",
    "get_store",
    "install_error_handlers",
    "lifespan",
    "open_store",
    "validation_error_response",
]

log = logging.getLogger("chatstore.fastapi")

#: Where :func:`open_store` keeps the store: ``app.state.chatstore``.
STATE_ATTRIBUTE = "chatstore"
#: :class:`BodySizeLimit`'s default: the store's default ``max_content_bytes``.
DEFAULT_MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_SECONDS = 1
CLOSE_TIMEOUT = 3.0
# A location's part shown as it is (a field's name); anything else the client sent is "?".
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class _SafeJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate that slipped into a
    message (an id, a key) cannot make rendering the error itself fail."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


# -- the store's life ---------------------------------------------------------------------

@asynccontextmanager
async def open_store(app: FastAPI, dsn: str | None = None, *,
                     close_timeout: float = CLOSE_TIMEOUT,
                     **connect_options: Any) -> AsyncIterator[ChatStore]:
    """Open a store for ``app``'s life (inside a lifespan of your own): ``chatstore.connect(
    dsn, **connect_options)``, kept on ``app.state.chatstore`` for :func:`get_store`, closed
    on the way out; connections still in use after ``close_timeout`` seconds are terminated.

    :raises ChatStoreError: what ``chatstore.connect`` raises (``InvalidInput("dsn", ...)``,
        ``ConnectionLost``...): the app does not start.
    """
    store = await connect(dsn, **connect_options)
    setattr(app.state, STATE_ATTRIBUTE, store)
    try:
        yield store
    finally:
        try:
            await asyncio.wait_for(store.close(), close_timeout)
        except TimeoutError:  # wait_for cancelled the close, which terminated the pool
            log.warning("connections still in use after %s s at shutdown: terminated",
                        close_timeout)


def lifespan(dsn: str | None = None, *, close_timeout: float = CLOSE_TIMEOUT,
             **connect_options: Any
             ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A ``FastAPI(lifespan=...)`` that only runs :func:`open_store` (same parameters)."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with open_store(app, dsn, close_timeout=close_timeout, **connect_options):
            yield

    return run


def get_store(request: Request) -> ChatStore:
    """The app's store (a dependency: ``store: Store`` in a route's parameters).

    :raises RuntimeError: the app has no store (neither :func:`lifespan` nor
        :func:`open_store` ran): a bug of the app's setup, answered 500.
    """
    store = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(store, ChatStore):
        raise RuntimeError("this app has no chatstore store: pass lifespan=chatstore.integrations"
                           ".fastapi.lifespan(...) to FastAPI, or use open_store in yours")
    return store


Store = Annotated[ChatStore, Depends(get_store)]


# -- errors -------------------------------------------------------------------------------

def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (frameworks wrap what a tool or callback raised)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _retry_later(detail: str, exc: ChatStoreError | None, retry_after: int) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if exc is not None:
        # Whether the write may have happened, and whether repeating the call is safe.
        body["outcome"] = exc.outcome
        body["retryable"] = exc.retryable
    return _SafeJSON(body, status_code=503, headers={"Retry-After": str(retry_after)})


def _chatstore_response(exc: ChatStoreError, retry_after: int) -> JSONResponse:
    if isinstance(exc, NotFound):
        return _SafeJSON({"detail": str(exc)}, status_code=404)
    if isinstance(exc, InvalidInput):
        # "field: problem"; chatstore's problems never quote the value.
        return _SafeJSON({"detail": str(exc), "field": exc.field}, status_code=422)
    if isinstance(exc, ConversationBusy):
        return _SafeJSON({"detail": str(exc)}, status_code=409,
                         headers={"Retry-After": str(retry_after)})
    if isinstance(exc, StaleRevision):
        # 409, not 412: 412 answers an HTTP precondition (If-Match) the server evaluated;
        # expected_revision is an argument of the call. A backend that maps If-Match onto
        # expected_revision can answer 412 itself.
        return _SafeJSON({"detail": str(exc), "current_revision": exc.current},
                         status_code=409)
    if isinstance(exc, QuotaExceeded):  # a Conflict: before that catch-all
        wait = math.ceil((exc.resets_at - datetime.now(UTC)).total_seconds())
        return _SafeJSON({"detail": str(exc), "limit": exc.limit, "used": exc.used,
                          "resets_at": exc.resets_at.isoformat()}, status_code=429,
                         headers={"Retry-After": str(max(wait, 1))})
    if isinstance(exc, Conflict):
        return _SafeJSON({"detail": str(exc)}, status_code=409)
    if isinstance(exc, ConnectionLost):
        return _retry_later("the database is unreachable; retry shortly", exc, retry_after)
    if isinstance(exc, Timeout):
        return _retry_later("the server is busy; retry shortly", exc, retry_after)
    if isinstance(exc, StoreClosed | SchemaNotMigrated):
        # The service cannot work until an operator acts (or the process restarts); the
        # reason is logged, not sent.
        log.error("chatstore unavailable: %s: %s", type(exc).__name__, exc)
        return _SafeJSON({"detail": "the service is unavailable"}, status_code=503)
    if exc.retryable and exc.outcome == "not_applied":
        # Deadlock, SerializationFailure, SchemaChanged: rolled back, retrying works.
        return _retry_later("the request collided with another; retry", exc, retry_after)
    log.error("request failed", exc_info=exc)
    return _SafeJSON({"detail": "internal error"}, status_code=500)


def error_response(exc: BaseException, *, retry_after: int = RETRY_AFTER_SECONDS
                   ) -> JSONResponse:
    """The HTTP response for ``exc``: the first chatstore error in its cause chain decides
    (an agent framework wraps what a tool raised), else a lost connection of the app's own
    asyncpg statements is 503, else 500.

    ========================================  ===========================================
    ``NotFound``                              404 (another user's conversation too)
    ``InvalidInput``                          422 with ``field``, never the value
    ``ConversationBusy``                      409 with ``Retry-After``
    ``StaleRevision``                         409 with ``current_revision``
    ``QuotaExceeded``                         429 with ``Retry-After`` (until ``resets_at``),
                                              ``limit``, ``used``, ``resets_at``
    ``Conflict`` (others)                     409
    ``ConnectionLost``, ``Timeout``           503 with ``Retry-After``, ``outcome``, ``retryable``
    ``StoreClosed``, ``SchemaNotMigrated``    503 (logged; the body says no more)
    other retryable, not applied              503 with ``Retry-After`` (deadlock, serialization)
    anything else                             500 ``internal error`` (logged)
    ========================================  ===========================================
    """
    for cause in _causes(exc):
        if isinstance(cause, ChatStoreError):
            return _chatstore_response(cause, retry_after)
        if is_connection_lost(cause):
            return _retry_later("the database is unreachable; retry shortly", None,
                                retry_after)
    log.error("request failed", exc_info=exc)
    return _SafeJSON({"detail": "internal error"}, status_code=500)


def _location(parts: Iterable[Any]) -> str:
    """``("body", "items", 2, "content")`` as ``items[2].content`` (chatstore's field form);
    a location that is only its source (``("body",)``) stays ``body``."""
    items = [p if isinstance(p, int) else str(p) for p in parts]
    if len(items) > 1 and items[0] in ("body", "query", "path", "header", "cookie"):
        items = items[1:]
    text = ""
    for part in items:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text[:200]


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """422 for a request FastAPI could not validate: ``{"detail", "field", "errors": [{"loc",
    "type"}]}``. Pydantic's ``input``, ``ctx`` and ``msg`` are left out (the first two hold
    the submitted value, the message sometimes a part of it). A location's part that is not
    a name (a mapping's key the client sent: text, a lone surrogate) shows as ``?``; the body
    is ASCII-escaped JSON, so nothing in it can turn the answer into a 500."""
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = [p if isinstance(p, int) or _NAME.fullmatch(str(p)) else "?"
               for p in error.get("loc", ())]
        errors.append({"loc": loc, "type": str(error.get("type", "invalid"))})
    if not errors:
        return _SafeJSON({"detail": "invalid request", "field": "", "errors": []},
                         status_code=422)
    first = errors[0]
    field = "body" if first["type"] == "json_invalid" else _location(first["loc"])
    return _SafeJSON({"detail": f"{field}: is not valid ({first['type']})", "field": field,
                      "errors": errors}, status_code=422)


def install_error_handlers(app: FastAPI, *, also: Iterable[type[Exception]] = (),
                           retry_after: int = RETRY_AFTER_SECONDS) -> None:
    """Answer chatstore's errors (and asyncpg's, for the app's own statements) with
    :func:`error_response`, and request validation errors with
    :func:`validation_error_response`.

    :param also: more exception types to answer with :func:`error_response`: wrappers whose
        cause may be a chatstore error (the Agents SDK's ``AgentsException``, say).
    :param retry_after: the ``Retry-After`` seconds of 503s and of a busy conversation's 409.
    """

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, retry_after=retry_after)

    async def handle_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc)

    for kind in (ChatStoreError, asyncpg.PostgresError, asyncpg.InterfaceError, *also):
        app.add_exception_handler(kind, handle)
    app.add_exception_handler(RequestValidationError, handle_validation)


# -- request-body limit -------------------------------------------------------------------

class BodyTooLarge(HTTPException):
    """The request body went over :class:`BodySizeLimit`'s ``max_bytes`` while the app read it.

    An ``HTTPException`` (413): FastAPI passes it through its body parsing (any other error
    there becomes a 400) and its exception middleware answers it.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is over the limit of {max_bytes} bytes",
                         headers={"Connection": "close"})


class BodySizeLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413.

    A ``Content-Length`` over the limit is answered at once, nothing read. A body without
    one (chunked) or longer than it claims is counted as the app reads it: the chunk that
    goes over raises :class:`BodyTooLarge` inside the app's ``receive``, so the app never
    holds more than ``max_bytes`` plus one chunk, and the client gets 413 (from FastAPI's
    exception middleware, or from this one when the app let it through). Bodies the app
    does not read cost nothing. ``app.add_middleware(BodySizeLimit, max_bytes=...)``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError("max_bytes must be a whole number, 0 or more")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope.get("headers", ()))
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Callable[[Message], Awaitable[None]]) -> None:
        body = json.dumps({"detail": f"the request body is over the limit of "
                                     f"{self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length`` as a number (``None`` when absent or malformed: the
    server refuses malformed ones itself, and counting still applies)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
