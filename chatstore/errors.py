"""chatstore's errors, and the one place where driver errors become them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

__all__ = [
    "ChatStoreError",
    "Conflict",
    "ConnectionLost",
    "ConversationBusy",
    "InvalidInput",
    "NotFound",
    "SchemaNotMigrated",
    "StaleRevision",
]


class ChatStoreError(Exception):
    """Base class of every error chatstore raises."""

    retryable: bool = False


class NotFound(ChatStoreError, LookupError):
    """The user, or the user's conversation, does not exist.

    Another user's conversation raises exactly this, with the same message as a missing one.
    """


class InvalidInput(ChatStoreError, ValueError):
    """An argument is malformed; raised before any SQL runs, nothing was written.

    :attr:`field` names the argument (``"message[2].content"``, ``"limit"``...).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Conflict(ChatStoreError):
    """The change collides with the stored state (the conversation moved on, or an
    idempotency key is already stored with different content); nothing was written."""


class StaleRevision(Conflict):
    """``expected_revision`` did not match: the conversation changed since the caller read
    it; nothing was written. :attr:`expected` and :attr:`current` are the two revisions."""

    def __init__(self, conversation_id: object, expected: int, current: int) -> None:
        super().__init__(f"conversation {conversation_id} is at revision {current}, not "
                         f"{expected}: it changed since it was read; nothing was written")
        self.expected = expected
        self.current = current


class ConversationBusy(Conflict):
    """Another chat turn holds the conversation (its lease has not run out); nothing was
    written. Retry after the turn ends, or pass ``wait_seconds`` to :meth:`ChatStore.turn`."""


class ConnectionLost(ChatStoreError, ConnectionError):
    """The database connection broke or could not be made. Retryable: nothing half-written
    remains, because every change runs in one transaction."""

    retryable = True


class SchemaNotMigrated(ChatStoreError):
    """The database lacks chatstore's tables or columns: run the migrations
    (``chatstore migrate`` or ``yoyo apply``)."""


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
    asyncio.TimeoutError,
)

_UNDEFINED = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.InvalidCachedStatementError,
)


# A value the driver or the server cannot take (checked before any SQL, so rarely seen).
# asyncpg's client-side DataError subclasses InterfaceError: it must be caught before _LOST.
_BAD_VALUE = (
    asyncpg.exceptions._base.DataError,
    asyncpg.DataError,  # SQLSTATE class 22
    UnicodeError,
)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection it came from is no longer usable."""
    return isinstance(exc, _LOST) and not isinstance(exc, _BAD_VALUE)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn any driver exception raised inside into a chatstore error (by class and SQLSTATE).

    Constraint-specific meanings (a missing user behind a foreign key, a duplicate key) are
    decided by the store, which knows the ids involved; what reaches this point is unexpected.
    """
    try:
        yield
    except ChatStoreError:
        raise
    except _UNDEFINED as exc:
        raise SchemaNotMigrated(
            f"chatstore's schema is missing or out of date ({exc}); "
            "run `chatstore migrate` or `yoyo apply`"
        ) from exc
    except _BAD_VALUE as exc:
        raise InvalidInput("value", str(exc)) from exc
    except _LOST as exc:
        raise ConnectionLost(f"database connection lost: {type(exc).__name__}: {exc}") from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(f"{exc.constraint_name or 'constraint'}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise ChatStoreError(f"database error {exc.sqlstate}: {exc}") from exc
