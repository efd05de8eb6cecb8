"""The one call path: how every statement of chatstore reaches the database.

A call (one public operation) gets its connection from :meth:`CallPath.connection` (or,
for an export, :meth:`CallPath.snapshot`), which applies the whole policy in one place:

* a pooled connection within the acquire timeout, or the caller's own (:meth:`using`);
* the per-call settings: the row-level-security user and a statement timeout other than
  the session's, set for the call's transaction only;
* driver errors become chatstore errors (`_translate.py`), with the call's
  outcome (sent or not, idempotent or not);
* a connection that broke is dropped and the pool's other connections expired, and a call
  that failed on a connection an outage had broken before it executed anything is marked
  stale, so :func:`retried` runs it again on a fresh one.

Writes use :meth:`CallPath.atomic` (a READ COMMITTED transaction, or a savepoint inside the
caller's transaction) or :meth:`CallPath.one_statement` (nothing at all where the session
already defaults to READ COMMITTED).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeAlias, TypeVar, cast

import asyncpg

from . import validation
from ._translate import CallState, chatstore_error, is_connection_lost, retry_safe, translate_errors
from .errors import ConnectionLost, WrongEventLoop
from .limits import DEFAULT_ACQUIRE_TIMEOUT
from .sql import SQL

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

__all__ = ["UNSET", "CallPath", "Conn", "Unset", "retried"]

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_NOTHING: Final = contextlib.nullcontext()  # stateless: one for every call


class Unset:
    """The type of :data:`UNSET`: "leave this as it is", where ``None`` means something."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


class _PooledCall:
    """``async with``: a pooled connection for one call, and what a failure means.

    Driver exceptions become chatstore errors; a connection that broke is dropped
    (:meth:`CallPath.drop`), and when it broke before this call put anything on the wire
    the error is marked stale, for :func:`retried`. A class rather than an
    ``@asynccontextmanager`` generator: every call goes through it, and the generator
    machinery cost about 17 us a call when the interpreter's caches are cold (as between
    other libraries' calls in the benchmark).
    """

    __slots__ = ("_calls", "_conn", "_executed", "_protocol", "_state")

    def __init__(self, calls: CallPath, state: CallState) -> None:
        self._calls = calls
        self._state = state

    async def __aenter__(self) -> Conn:
        calls = self._calls
        try:
            calls.check_loop()
            pool = calls.pool
            # A connected idle connection is handed over without waiting (nothing awaits
            # between this check and the pool's queue), so the timer is only armed when the
            # call may have to wait: arming and cancelling it costs about 6 us a call.
            if calls.acquire_timeout is None or pool.get_idle_size():
                conn = await pool.acquire()
            else:
                # asyncio.timeout, not acquire(timeout=): on Python 3.11 asyncpg bounds the
                # wait with asyncio.wait_for, which starts a task per call (~20 us).
                async with asyncio.timeout(calls.acquire_timeout):
                    conn = await pool.acquire()
        except Exception as exc:
            error = chatstore_error(exc, self._state)
            if error is None:
                raise
            raise error from exc
        self._conn = conn
        self._state.sent = True
        # asyncpg counts the queries a connection has put on the wire: unchanged at a
        # failure means this call executed nothing (the connection was already broken).
        self._protocol = getattr(conn, "_protocol", None)
        self._executed = getattr(self._protocol, "queries_count", None)
        return conn

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        state = self._state
        try:
            if exc is not None and is_connection_lost(exc):
                if self._executed is not None and getattr(
                        self._protocol, "queries_count", None) == self._executed:
                    state.sent, state.stale = False, True
                await self._calls.drop(self._conn)
            await self._calls.pool.release(self._conn)
        except Exception as failure:  # dropping or releasing failed: say that instead
            error = chatstore_error(failure, state)
            if error is None:
                raise
            raise error from failure
        if isinstance(exc, Exception):
            error = chatstore_error(exc, state)
            if error is not None:
                raise error from exc


class CallPath:
    """A pool (or a connection the caller holds) and the policy every call applies on it.

    :param pool: the asyncpg pool; closed by :meth:`close` only when ``owns_pool``.
    :param statement_timeout: seconds a call's statements may run; ``None``: no limit.
    :param acquire_timeout: seconds to wait for a pooled connection (default 10,
        ``DEFAULT_ACQUIRE_TIMEOUT``); ``None``: no limit.
    :param row_level_security: set ``chatstore.user_id`` in every call's transaction.
    :param read_committed_sessions: every pooled session already defaults to READ
        COMMITTED (:func:`chatstore.connect` sets it at startup), so a one-statement write
        needs no BEGIN of its own.
    :param session_timeout: the statement_timeout every pooled session already has: a call
        with this timeout needs no per-transaction setting.
    """

    __slots__ = ("_bound", "acquire_timeout", "owns_pool", "pool", "read_committed_sessions",
                 "row_level_security", "session_timeout", "statement_timeout")

    def __init__(self, pool: asyncpg.Pool, *, statement_timeout: float | None = None,
                 acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
                 row_level_security: bool = False, owns_pool: bool = False,
                 read_committed_sessions: bool = False,
                 session_timeout: float | None = None) -> None:
        self.pool = pool
        self.statement_timeout = validation.timeout(statement_timeout, "statement_timeout")
        self.acquire_timeout = validation.timeout(acquire_timeout, "acquire_timeout")
        self.row_level_security = bool(row_level_security)
        self.owns_pool = owns_pool
        self.read_committed_sessions = read_committed_sessions
        self.session_timeout = session_timeout
        self._bound: Conn | asyncpg.Connection | None = None

    def using(self, conn: asyncpg.Connection | Conn) -> CallPath:
        """The same policy on ``conn``, inside the caller's transaction."""
        view = copy.copy(self)
        view._bound = conn
        view.owns_pool = False
        return view

    def with_options(self, *, statement_timeout: float | Unset | None = UNSET,
                     acquire_timeout: float | Unset | None = UNSET) -> CallPath:
        """The same pool with other timeouts (checked as :class:`CallPath` checks them)."""
        view = copy.copy(self)
        view.owns_pool = False
        if not isinstance(statement_timeout, Unset):
            view.statement_timeout = validation.timeout(statement_timeout, "statement_timeout")
        if not isinstance(acquire_timeout, Unset):
            view.acquire_timeout = validation.timeout(acquire_timeout, "acquire_timeout")
        return view

    async def close(self) -> None:
        """Close the pool if this call path owns it."""
        if self.owns_pool:
            await self.pool.close()

    def _settings(self, user_id: str | None) -> tuple[str | None, str | None] | None:
        """The per-transaction settings a call needs (row-level-security user, statement
        timeout in milliseconds), or ``None`` when it needs none."""
        timeout = None
        if self.statement_timeout != self.session_timeout:
            timeout = str(round((self.statement_timeout or 0) * 1000))
        if not self.row_level_security and timeout is None:
            return None
        return (user_id if self.row_level_security else None), timeout

    def connection(self, user_id: str | None = None, *,
                   idempotent: bool = False) -> AbstractAsyncContextManager[Conn]:
        """A pooled connection (or the bound one) for one call; driver errors become
        chatstore errors.

        :param user_id: the caller's user, for row-level security
            (``set_config('chatstore.user_id', ..., true)`` in the call's transaction).
        :param idempotent: retrying the call is safe whatever happened (a read, or a write
            whose messages all carry idempotency keys); decides ``retryable`` when the
            outcome is unknown.

        With row-level security or a per-call statement timeout the call runs in one
        transaction that starts by setting them (``is_local``: they end with it, so a pooled
        connection never carries them to its next user).
        """
        state = CallState(idempotent=idempotent)
        settings = self._settings(user_id)
        if self._bound is None and settings is None:
            return _PooledCall(self, state)  # the common case, without a generator
        return self._settings_or_bound_connection(state, settings)

    @asynccontextmanager
    async def _settings_or_bound_connection(
            self, state: CallState, settings: tuple[str | None, str | None] | None,
    ) -> AsyncIterator[Conn]:
        """:meth:`connection`'s other cases: a pooled connection whose call first sets its
        per-transaction settings, or the bound connection (:meth:`using`)."""
        if self._bound is None:
            assert settings is not None
            async with _PooledCall(self, state) as conn, \
                    conn.transaction(isolation="read_committed"):
                await conn.execute(SQL.set_call_settings, *settings)
                yield conn
            return
        state.sent = True
        with translate_errors(state):
            bound = cast(Conn, self._bound)
            if settings is None:
                yield bound
            elif bound.is_in_transaction():  # the settings last to the caller's commit
                await bound.execute(SQL.set_call_settings, *settings)
                yield bound
            else:
                async with bound.transaction(isolation="read_committed"):
                    await bound.execute(SQL.set_call_settings, *settings)
                    yield bound

    @asynccontextmanager
    async def snapshot(self, user_id: str | None = None) -> AsyncIterator[Conn]:
        """One connection in a ``REPEATABLE READ READ ONLY`` transaction (its per-call
        settings first): every statement inside reads the same snapshot. On the bound
        connection inside the caller's transaction, the caller's isolation applies."""
        state = CallState(idempotent=True)
        settings = self._settings(user_id)
        if self._bound is not None:
            state.sent = True
            with translate_errors(state):
                bound = cast(Conn, self._bound)
                if bound.is_in_transaction():
                    if settings is not None:
                        await bound.execute(SQL.set_call_settings, *settings)
                    yield bound
                    return
                async with bound.transaction(isolation="repeatable_read", readonly=True):
                    if settings is not None:
                        await bound.execute(SQL.set_call_settings, *settings)
                    yield bound
            return
        async with _PooledCall(self, state) as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            if settings is not None:
                await conn.execute(SQL.set_call_settings, *settings)
            yield conn

    async def drop(self, conn: Conn) -> None:
        """After a lost connection: close it if asyncpg has not (it may be confused rather
        than closed), and expire the pool's idle connections, so no call gets one the same
        outage broke. Never asks a proxy asyncpg already released (it raises)."""
        try:
            if not conn.is_closed():
                conn.terminate()
        except asyncpg.InterfaceError:
            pass  # asyncpg released it when it saw the connection close
        await self.pool.expire_connections()

    def check_loop(self) -> None:
        """Refuse a call from an event loop other than the pool's."""
        loop = getattr(self.pool, "_loop", None)
        if loop is not None and loop is not asyncio.get_running_loop():
            raise WrongEventLoop("this store's pool was made on another event loop; make "
                                 "one store per event loop (per thread)")

    @asynccontextmanager
    async def atomic(self, conn: Conn) -> AsyncIterator[None]:
        """A READ COMMITTED transaction, or a savepoint inside the caller's transaction."""
        if self._bound is not None and conn.is_in_transaction():
            await conn.execute(SQL.savepoint)
            try:
                yield
            except BaseException as exc:
                if not is_connection_lost(exc):
                    await conn.execute(SQL.rollback_to_savepoint)
                    await conn.execute(SQL.release_savepoint)
                raise
            await conn.execute(SQL.release_savepoint)
            return
        async with conn.transaction(isolation="read_committed"):
            yield

    def one_statement(self, conn: Conn) -> AbstractAsyncContextManager[None]:
        """Around a one-statement write: nothing when the session already defaults to READ
        COMMITTED (:func:`chatstore.connect`'s pool), else :meth:`atomic`."""
        if self.read_committed_sessions and self._bound is None:
            return _NOTHING
        return self.atomic(conn)


_P = ParamSpec("_P")
_R = TypeVar("_R")

_ATTEMPTS: Final = 3


def retried(call: Callable[_P, Coroutine[Any, Any, _R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Run ``call`` again (twice at most) when it failed on a pooled connection that an
    outage had broken before the call executed anything (:attr:`ConnectionLost.stale`):
    the pool has expired its connections by then, so the retry gets a fresh one, and the
    caller sees no failure. Every public operation of the store and of a turn is wrapped."""

    @functools.wraps(call)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt in range(_ATTEMPTS):
            try:
                return await call(*args, **kwargs)
            except ConnectionLost as exc:
                if attempt == _ATTEMPTS - 1 or not retry_safe(exc):
                    raise
        raise AssertionError("unreachable")

    return run
