"""chatstore's errors (`_translate.py` is where driver errors become them).

Every error says two things besides its type:

* :attr:`ChatStoreError.outcome`: ``"not_applied"`` when the write certainly did not happen
  (the input was refused, the server rolled the transaction back, no connection was had), or
  ``"unknown"`` when the call was sent and then the connection broke or the client gave up
  waiting: it may have committed.
* :attr:`ChatStoreError.retryable`: retrying *that exact call* is safe. A read is always safe
  to retry; a write whose outcome is unknown is safe only when it carries idempotency keys
  (else a retry may store it twice: read back by revision first, see docs/reliability.md).

Messages name the field, id, constraint or SQLSTATE; they never carry the server's DETAIL
(which prints the failing row) or an argument's value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

__all__ = [
    "ChatStoreError",
    "Conflict",
    "ConnectionLost",
    "ConversationBusy",
    "ConversationHeld",
    "Deadlock",
    "InvalidInput",
    "NotFound",
    "Outcome",
    "QuotaExceeded",
    "SchemaChanged",
    "SchemaNotMigrated",
    "SerializationFailure",
    "StaleRevision",
    "StoreClosed",
    "Timeout",
    "WrongEventLoop",
]

Outcome = Literal["not_applied", "unknown"]


class ChatStoreError(Exception):
    """Base class of every error chatstore raises.

    :attr outcome: ``"not_applied"`` (the write certainly did not happen) or ``"unknown"``
        (it was sent, then the connection broke, the call timed out or was cancelled).
    :attr retryable: whether retrying this exact call is safe (and may succeed).
    """

    retryable: bool = False
    outcome: Outcome = "not_applied"

    def __init__(self, message: str = "", *, outcome: Outcome | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(message)
        if outcome is not None:
            self.outcome = outcome
        if retryable is not None:
            self.retryable = retryable


class NotFound(ChatStoreError, LookupError):
    """The user, or the user's conversation, does not exist.

    Another user's conversation raises exactly this, with the same message as a missing one.
    """


class InvalidInput(ChatStoreError, ValueError):
    """An argument is malformed; raised before any SQL runs, nothing was written.

    :attr:`field` names the argument (``"messages[2].content"``, ``"limit"``...).
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


class QuotaExceeded(Conflict):
    """The user's tokens (input + output) in the quota's current UTC window have reached
    its limit: the chat turn did not start, and nothing was written.

    :attr limit: the quota's ``max_tokens``.
    :attr used: the tokens counted in the window when the turn was refused (``>= limit``).
    :attr resets_at: when the window ends (the next UTC midnight, or the first of the next
        month), timezone-aware.
    :attr window: ``"day"`` or ``"month"``.
    """

    def __init__(self, user_id: str, *, limit: int, used: int, resets_at: datetime,
                 window: str) -> None:
        super().__init__(f"user {user_id!r} has used {used} of the {limit} tokens of "
                         f"this {window}'s quota (UTC; it resets at "
                         f"{resets_at.isoformat()}); the turn did not start, nothing was "
                         "written")
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.window = window
class ConversationHeld(Conflict):
    """The conversation, or one that deleting it would delete (a fork of its tree), is under
    a legal hold (``held``, see :meth:`ChatStore.set_hold`): nothing was deleted.
    :attr:`held_id` names the held conversation (the caller's own)."""

    def __init__(self, message: str, held_id: object) -> None:
        super().__init__(message)
        self.held_id = held_id


class Timeout(ChatStoreError, TimeoutError):
    """The call ran out of time.

    :attr kind: ``"statement"`` (the server cancelled a statement that ran past the store's
        ``statement_timeout``: rolled back, ``outcome="not_applied"``), ``"lock"`` (a lock
        wait ran past ``lock_timeout``: rolled back), ``"acquire"`` (no pooled connection
        came free within ``acquire_timeout``: nothing was sent), or ``"client"`` (the driver
        stopped waiting for the server: ``outcome="unknown"``).
    """

    retryable = True

    def __init__(self, message: str, *, kind: str, outcome: Outcome = "not_applied",
                 retryable: bool | None = None) -> None:
        super().__init__(message, outcome=outcome, retryable=retryable)
        self.kind = kind


class Deadlock(ChatStoreError):
    """The server broke a deadlock by rolling this transaction back (SQLSTATE 40P01).
    Nothing was written; retrying is safe."""

    retryable = True


class SerializationFailure(ChatStoreError):
    """The server could not serialise this transaction and rolled it back (SQLSTATE 40001).
    Nothing was written; retrying is safe."""

    retryable = True


class ConnectionLost(ChatStoreError, ConnectionError):
    """The database connection broke or could not be made.

    ``outcome="not_applied"`` (and retryable) when nothing had been sent; ``"unknown"`` when
    a write was sent before the break: it may have committed, and only a write with
    idempotency keys (or a read) is then ``retryable``.
    """

    retryable = True
    #: The pooled connection was already broken before this call executed anything (an
    #: outage broke it while idle): the store retries such a call itself, on a fresh one.
    stale = False


class StoreClosed(ChatStoreError):
    """The store (its pool) is closed; no call can work until a new store is made."""


class SchemaNotMigrated(ChatStoreError):
    """The database lacks chatstore's tables or columns: run the migrations
    (``chatstore migrate`` or ``yoyo apply``)."""


class SchemaChanged(ChatStoreError):
    """A column's type changed under a prepared statement (asyncpg's
    ``InvalidCachedStatementError``); the server rolled the call back and the statement cache
    was refreshed. Retrying is safe and will work."""

    retryable = True


class WrongEventLoop(ChatStoreError, RuntimeError):
    """The store was used from an event loop other than the one its pool was made on.
    Make one store per event loop (per thread)."""


def is_connection_lost(exc: BaseException) -> bool:
    """Whether driver exception ``exc`` means its connection is no longer usable (for a
    backend's own statements; chatstore's calls raise :class:`ConnectionLost` instead)."""
    from ._translate import is_connection_lost as lost

    return lost(exc)
