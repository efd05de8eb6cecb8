"""Opening a pool: :func:`connect` (a :class:`~chatstore.ChatStore` that owns it),
:func:`open_call_path` (the same pool for chatstore's admin commands, which report a missing
schema rather than refuse it) and the pool's hooks."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from . import validation
from ._call import CallPath
from ._translate import CallState, translate_errors
from .errors import InvalidInput
from .limits import DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONTENT_BYTES
from .urls import parse_url, redact
from .validation import TextPolicy, Validator

if TYPE_CHECKING:
    from .store import ChatStore

__all__ = ["Pooler", "connect", "init_connection", "open_call_path"]

Pooler = Literal["transaction"]


def _decode_json(text: str) -> Any:
    # Most metadata is the empty object: skip the parser for it.
    return {} if text == "{}" else json.loads(text)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init`` hook: decode json and jsonb into Python values.

    Pass it as ``asyncpg.create_pool(..., init=chatstore.init_connection)`` when a backend
    builds the pool itself (chatstore also works without it, a little slower).
    """
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=json.dumps,
                                  decoder=_decode_json, format="text")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset`` hook: nothing to undo. chatstore's statements change no session state
    (no SET, LISTEN or advisory lock), and asyncpg rolls back an open transaction itself
    before calling this; the default reset would cost a round trip on every release."""


def _resolve_dsn(dsn: str | None) -> str:
    resolved = dsn or os.environ.get("CHATSTORE_DSN") or os.environ.get("DATABASE_URL")
    if not resolved:
        raise InvalidInput("dsn", "no database URL: pass dsn, or set CHATSTORE_DSN or "
                                  "DATABASE_URL")
    return parse_url(resolved).asyncpg()


async def open_call_path(dsn: str | None = None, *, pooler: Pooler | None = None,
                         statement_timeout: float | None = None,
                         acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
                         row_level_security: bool = False,
                         database_defaults: bool = False,
                         **pool_options: Any) -> CallPath:
    """Open a pool and return the :class:`CallPath` (`_call.py`) that owns it, without
    checking the schema; :func:`connect` documents the parameters.

    :param database_defaults: no startup settings: the sessions keep the isolation level and
        statement timeout the database and role give them (``chatstore status`` reports
        those); a call's own statement timeout is then set per transaction.
    """
    url = _resolve_dsn(dsn)
    if pooler not in (None, "transaction"):
        raise InvalidInput("pooler", "must be None or 'transaction'")
    statement_timeout = validation.timeout(statement_timeout, "statement_timeout")
    pool_options.setdefault("init", init_connection)
    pool_options.setdefault("reset", _keep_session)
    pinned = False
    session_timeout = None
    if pooler == "transaction":
        # A pooler hands each transaction to any server session: no named statements, and
        # no startup settings (pgbouncer refuses them); chatstore sets what it needs per
        # transaction instead.
        pool_options["statement_cache_size"] = 0
    elif not database_defaults:
        # Pin READ COMMITTED for every session of this pool (a startup parameter: no round
        # trip), so one-statement writes need no BEGIN whatever the database's default; the
        # default statement_timeout rides along the same way.
        settings = dict(pool_options.pop("server_settings", None) or {})
        pinned = settings.setdefault("default_transaction_isolation",
                                     "read committed") == "read committed"
        if statement_timeout is not None:
            settings.setdefault("statement_timeout", str(round(statement_timeout * 1000)))
            session_timeout = statement_timeout
        pool_options["server_settings"] = settings
    with translate_errors(CallState(sent=False)):
        try:
            pool = await asyncpg.create_pool(url, **pool_options)
        except (asyncpg.ClientConfigurationError, ValueError, TypeError) as exc:
            raise InvalidInput("dsn", "cannot use this database URL: "
                               + redact(str(exc), url)) from None
    return CallPath(pool, statement_timeout=statement_timeout,
                    acquire_timeout=acquire_timeout, row_level_security=row_level_security,
                    owns_pool=True, read_committed_sessions=pinned,
                    session_timeout=session_timeout)


async def connect(dsn: str | None = None, *,
                  max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
                  text_policy: TextPolicy = "reject", pooler: Pooler | None = None,
                  statement_timeout: float | None = None,
                  acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
                  row_level_security: bool = False, **pool_options: Any) -> ChatStore:
    """Open a pool and return a :class:`~chatstore.ChatStore` that owns it (``close()``
    closes it).

    :param dsn: a ``postgresql://`` URL (or any form :func:`chatstore.urls.parse_url`
        reads); ``None`` reads ``$CHATSTORE_DSN``, then ``$DATABASE_URL``.
    :param max_content_bytes: the largest message content accepted, in UTF-8 bytes.
    :param text_policy: ``"reject"`` text with NUL characters or lone surrogates
        (:class:`~chatstore.InvalidInput`), or ``"replace"`` them with U+FFFD.
    :param pooler: ``"transaction"`` when the URL points at a transaction-mode pooler
        (pgbouncer ``pool_mode = transaction``, Neon's, Supabase's): no named prepared
        statements (``statement_cache_size=0``) and no session state (no startup
        settings; timeouts and the row-level-security user are set per transaction).
    :param statement_timeout: default seconds a call's statements may run, lock waits
        included, before the server cancels them (rolled back: :class:`~chatstore.Timeout`);
        ``None``: no limit. Override per call with :meth:`ChatStore.with_options`.
    :param acquire_timeout: default seconds a call waits for a pooled connection before it
        raises :class:`~chatstore.Timeout` (``kind="acquire"``, nothing sent, retryable):
        10 s unless given (``chatstore.limits.DEFAULT_ACQUIRE_TIMEOUT``), far longer than a
        healthy pool ever makes a call wait, short enough that an HTTP request answers
        rather than hangs when the pool is exhausted. ``None``: wait for ever.
    :param row_level_security: set ``chatstore.user_id`` to the caller's user in the
        transaction of every call, for the policies of ``chatstore/sql/rls.sql``.
    :param pool_options: passed to :func:`asyncpg.create_pool` (``min_size``,
        ``max_size``...). The pool skips asyncpg's session reset on release (a round trip;
        chatstore leaves no session state behind); pass ``reset=None`` to restore it if you
        run statements of your own on ``store.pool`` that change session settings.
    :raises InvalidInput: no URL, or a URL asyncpg cannot read (never retryable).
    :raises ConnectionLost: the server cannot be reached.
    :raises SchemaNotMigrated: the database lacks chatstore's tables (see ``check_schema``).
    """
    from .store import ChatStore

    # Checked before a pool is opened, so a bad argument leaves nothing to close.
    validator = Validator(max_content_bytes=max_content_bytes, text_policy=text_policy)
    calls = await open_call_path(dsn, pooler=pooler, statement_timeout=statement_timeout,
                                 acquire_timeout=acquire_timeout,
                                 row_level_security=row_level_security, **pool_options)
    store = ChatStore.from_call_path(calls, validator)
    try:
        await store.check_schema()
    except BaseException:
        await calls.close()
        raise
    return store
