"""Which database a command works on: ``--database URL``, else ``$CHATSTORE_DSN``, else
``$DATABASE_URL``, else the embedded PostgreSQL in ``$CHATSTORE_HOME``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._call import Conn
from .._connect import open_call_path
from ..embedded import CleanupMode, EmbeddedServer, chatstore_home, is_running, start_embedded
from ..urls import DatabaseURL, parse_url
from .output import CliError

__all__ = ["connection", "database", "embedded", "embedded_version", "target"]


def embedded_version() -> int:
    """The embedded server's PostgreSQL major (``$CHATSTORE_PG``, default 16)."""
    return int(os.environ.get("CHATSTORE_PG", "16"))


def embedded(cleanup: CleanupMode) -> EmbeddedServer:
    """The embedded server; one that `chatstore server start` left running stays running."""
    version = embedded_version()
    home = chatstore_home()
    home.mkdir(parents=True, exist_ok=True)
    if is_running(home / f"pg{version}"):
        cleanup = None
    try:
        return start_embedded(home / f"pg{version}", version=version, cleanup=cleanup,
                              runtime_dir=home / "run")
    except (RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def target(args: argparse.Namespace, *, keep_running: bool = False,
           dbname: str | None = None) -> DatabaseURL:
    """The database the command works on, parsed; says on stderr which (no password).

    :param dbname: another database on that server (same host, port, user, password).
    """
    url = (getattr(args, "database", None) or os.environ.get("CHATSTORE_DSN")
           or os.environ.get("DATABASE_URL"))
    if url:
        parsed = parse_url(url)
        if dbname is not None:
            parsed = dataclasses.replace(parsed, dbname=dbname)
        print(f"chatstore: database {parsed.redacted()}", file=sys.stderr)
        return parsed
    server = embedded(None if keep_running else "stop")
    print(f"chatstore: database {dbname or 'postgres'} on the embedded PostgreSQL "
          f"{server.version} in {server.pgdata}", file=sys.stderr)
    return parse_url(server.url(dbname or "postgres"))


def database(args: argparse.Namespace, *, keep_running: bool = False) -> str:
    """:func:`target` as the URL asyncpg reads."""
    return target(args, keep_running=keep_running).asyncpg()


@asynccontextmanager
async def connection(url: str, *, database_defaults: bool = False) -> AsyncIterator[Conn]:
    """One connection to ``url`` for a command's statements, through the call path (a pool
    of one, closed on the way out): driver errors become chatstore errors.

    :param database_defaults: see `open_call_path` (`_connect.py`).
    """
    calls = await open_call_path(url, min_size=1, max_size=1,
                                 database_defaults=database_defaults)
    try:
        async with calls.connection() as conn:
            yield conn
    finally:
        await calls.close()
