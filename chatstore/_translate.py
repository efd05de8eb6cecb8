"""The one place where driver (asyncpg) and transport exceptions become chatstore errors,
by class and SQLSTATE: :func:`translate_errors` around a block, :func:`chatstore_error` for
one exception. :class:`CallState` carries what the mapping needs to know about the call."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg

from .errors import (
    ChatStoreError,
    Conflict,
    ConnectionLost,
    Deadlock,
    InvalidInput,
    Outcome,
    SchemaChanged,
    SchemaNotMigrated,
    SerializationFailure,
    StoreClosed,
    Timeout,
)


@dataclass
class CallState:
    """What the error mapping needs to know about the call a driver error came from.

    :attr sent: a connection was had, so a statement may have reached the server.
    :attr idempotent: retrying the call is safe whatever happened (a read, or a write whose
        every message carries an idempotency key).
    """

    sent: bool = False
    idempotent: bool = False
    stale: bool = False  # a pooled connection broke before this call executed anything


def retry_safe(exc: BaseException) -> bool:
    """Whether ``exc`` came from a pooled connection the outage had already broken, before
    the call executed anything: the store retries such a call itself, on a fresh connection."""
    return isinstance(exc, ConnectionLost) and exc.outcome == "not_applied" and exc.stale


# Errors that mean "this connection is gone": asyncpg does not always say so with
# ConnectionDoesNotExistError after a backend is killed under it.
_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.AdminShutdownError,  # 57P01: pg_terminate_backend, server shutdown
    asyncpg.CannotConnectNowError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
)

# A value the driver or the server cannot take (checked before any SQL, so rarely seen).
# asyncpg's client-side DataError subclasses InterfaceError: it must be caught before _LOST.
_BAD_VALUE = (
    asyncpg.exceptions._base.DataError,
    asyncpg.DataError,  # SQLSTATE class 22
    UnicodeError,
)

_UNDEFINED = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
)

# SQLSTATE classes whose server message names objects, never row data; any other class
# (22 data exception, 23 integrity, P0 raised by a trigger...) is reported by code only.
_SAFE_MESSAGE_CLASSES = frozenset(
    {"08", "0A", "25", "28", "3D", "3F", "40", "42", "53", "54", "55", "57", "58", "XX"}
)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection it came from is no longer usable."""
    return isinstance(exc, _LOST) and not isinstance(exc, (*_BAD_VALUE, TimeoutError))


def is_pool_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is asyncpg's refusal to work on a closed (or closing) pool."""
    return isinstance(exc, asyncpg.InterfaceError) and "pool is clos" in str(exc)


_SHARD = re.compile(r"^(users|conversations|messages)_\d+$")
# chatstore names each constraint and index after its table (messages_pkey); a shard's copy
# adds the shard id.
_SHARD_CONSTRAINT = re.compile(r"^((?:users|conversations|messages)_\w+?)_\d+$")
_SHARD_SUFFIX = re.compile(r"_\d+$")
# An integrity error's message names its objects in quotes (never row data: that is DETAIL).
_QUOTED = {"constraint_name": re.compile(r'constraint "([^"]+)"'),
           "table_name": re.compile(r'(?:relation|table) "([^"]+)"')}


def _name_field(exc: asyncpg.PostgresError, field: str) -> str | None:
    """The error's ``constraint_name`` or ``table_name``; for an integrity error a Citus
    worker raised, which reaches the client without those fields, the name its message
    quotes."""
    value = getattr(exc, field, None)
    if value:
        return str(value)
    if str(getattr(exc, "sqlstate", "") or "").startswith("23"):
        found = _QUOTED[field].search(str(getattr(exc, "message", None) or exc))
        return found.group(1) if found else None
    return None


def _table_of(exc: asyncpg.PostgresError) -> tuple[str | None, bool]:
    """The table ``exc`` names, and whether the name was a Citus shard's
    (``messages_102085``) of one of chatstore's tables."""
    table = _name_field(exc, "table_name")
    if table and (shard := _SHARD.match(table)):
        return shard.group(1), True
    return table, False


def constraint_of(exc: asyncpg.PostgresError) -> str | None:
    """The constraint ``exc`` names, as the schema names it: on Citus, a shard's copy of
    ``messages_pkey`` is ``messages_pkey_102085``, and the shard's errors name that."""
    name = _name_field(exc, "constraint_name")
    if not name:
        return None
    table, shard = _table_of(exc)
    if shard:
        return _SHARD_SUFFIX.sub("", name)
    copy = _SHARD_CONSTRAINT.match(name) if table is None else None
    return copy.group(1) if copy else name


def _describe(exc: asyncpg.PostgresError) -> str:
    """A server error in words that carry no row data: SQLSTATE, names, and the message only
    for classes whose messages name objects."""
    parts = [f"SQLSTATE {exc.sqlstate}"]
    for label, name in (("constraint", constraint_of(exc)), ("table", _table_of(exc)[0]),
                        ("column", getattr(exc, "column_name", None))):
        if name:
            parts.append(f"{label} {name}")
    text = ", ".join(parts)
    sqlstate = str(exc.sqlstate or "")
    if sqlstate[:2] in _SAFE_MESSAGE_CLASSES:
        text += f": {exc.message}"
    return text


def _unknown(state: CallState) -> tuple[Outcome, bool]:
    """Outcome and retryability of a call that broke off: unknown once sent."""
    if not state.sent:
        return "not_applied", True
    return "unknown", state.idempotent


def translate(exc: BaseException, state: CallState) -> ChatStoreError | None:
    """The chatstore error for a driver (or transport) exception; ``None`` to let it through
    (cancellation and anything that is not the database's)."""
    if isinstance(exc, ChatStoreError):
        return exc
    if isinstance(exc, asyncpg.InvalidCachedStatementError):
        return SchemaChanged(f"a column type changed under a prepared statement "
                             f"({_describe(exc)}); retry the call")
    if isinstance(exc, _UNDEFINED):
        return SchemaNotMigrated(f"chatstore's schema is missing or out of date "
                                 f"({_describe(exc)}); run `chatstore migrate` or `yoyo apply`")
    if isinstance(exc, asyncpg.QueryCanceledError):  # 57014: statement_timeout or a cancel
        return Timeout(f"the server cancelled the statement ({_describe(exc)}); "
                       "it was rolled back", kind="statement")
    if isinstance(exc, asyncpg.LockNotAvailableError):  # 55P03: lock_timeout
        return Timeout(f"a lock wait timed out ({_describe(exc)}); it was rolled back",
                       kind="lock")
    if isinstance(exc, asyncpg.DeadlockDetectedError):
        return Deadlock(f"deadlock, rolled back ({_describe(exc)})")
    if isinstance(exc, asyncpg.SerializationError):
        return SerializationFailure(f"serialization failure, rolled back ({_describe(exc)})")
    if isinstance(exc, _BAD_VALUE):
        what = (_describe(exc) if isinstance(exc, asyncpg.PostgresError)
                else type(exc).__name__)
        return InvalidInput("value", f"the database refused an argument ({what})")
    if is_pool_closed(exc):
        return StoreClosed("the store is closed (its pool was closed); make a new one")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        outcome, retryable = _unknown(state)
        if not state.sent:
            return Timeout("timed out waiting for a connection (pooled or new); nothing "
                           "was sent", kind="acquire")
        return Timeout("the client stopped waiting for the server; the outcome is unknown",
                       kind="client", outcome=outcome, retryable=retryable)
    if is_connection_lost(exc):
        outcome, retryable = _unknown(state)
        name = type(exc).__name__
        detail = _describe(exc) if isinstance(exc, asyncpg.PostgresError) else name
        if outcome == "unknown":
            return ConnectionLost(f"database connection lost during the call ({detail}); "
                                  "it may have committed", outcome=outcome, retryable=retryable)
        return ConnectionLost(f"cannot reach the database ({detail}); nothing was sent")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict(f"the change violates a constraint ({_describe(exc)})")
    if isinstance(exc, asyncpg.PostgresError):
        return ChatStoreError(f"database error ({_describe(exc)})")
    return None


@contextmanager
def translate_errors(state: CallState | None = None) -> Iterator[None]:
    """Turn any driver exception raised inside into a chatstore error (by class and SQLSTATE).

    Constraint-specific meanings (a missing user behind a foreign key, a duplicate key) are
    decided by the store, which knows the ids involved; what reaches this point is unexpected.
    ``state`` tells whether a statement may have been sent, for the outcome.
    """
    try:
        yield
    except ChatStoreError:
        raise
    except Exception as exc:
        error = chatstore_error(exc, state or CallState(sent=True))
        if error is None:
            raise
        raise error from exc


def chatstore_error(exc: Exception, state: CallState) -> ChatStoreError | None:
    """The chatstore error that stands for driver exception ``exc`` (``None``: let ``exc``
    through as it is), as :func:`translate_errors` raises it."""
    if isinstance(exc, ChatStoreError):
        return None
    error = translate(exc, state)
    if error is not None and state.stale and isinstance(error, ConnectionLost):
        error.stale = True
    return error
