"""Apply and roll back chatstore's migrations with yoyo's Python API.

These are the same migration files ``yoyo apply`` reads through the repository's
``yoyo.ini``. An installed wheel carries them as ``chatstore/_migrations``; in a source
checkout they are read from ``migrations/`` at the repository root
(:func:`migrations_dir`, or ``chatstore migrations-dir``, says which).

From an application's start-up or its ``init_db.py``, after its own tables exist::

    from chatstore.migrate import apply_migrations
    apply_migrations(os.environ["DATABASE_URL"])   # idempotent; under yoyo's lock

Every function takes any URL form :func:`chatstore.urls.parse_url` reads.
"""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations

from .urls import parse_url

__all__ = [
    "apply_migrations",
    "migration_status",
    "migrations_dir",
    "pending_migrations",
    "rollback_migrations",
    "yoyo_url",
]

_PACKAGE = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """The folder holding the migration files (wheel copy first, then the source checkout)."""
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("chatstore's migrations are missing from this installation")


def yoyo_url(dsn: str) -> str:
    """Any URL form :func:`chatstore.urls.parse_url` reads, in yoyo's psycopg 3 form.

    yoyo has no asyncpg backend: it connects through ``postgresql+psycopg://``.

    :raises InvalidInput: (a ``ValueError``) naming the part of the URL that is wrong.
    """
    return parse_url(dsn).yoyo()


def pending_migrations(dsn: str) -> list[str]:
    """Ids of the migrations not yet applied to the database at ``dsn``."""
    return migration_status(dsn)[1]


def migration_status(dsn: str) -> tuple[list[str], list[str]]:
    """``(applied, pending)`` migration ids of the database at ``dsn``, oldest first."""
    backend = get_backend(yoyo_url(dsn))
    try:
        migrations = read_migrations(str(migrations_dir()))
        pending = [m.id for m in backend.to_apply(migrations)]
        return [m.id for m in migrations if m.id not in pending], pending
    finally:
        backend.connection.close()


def apply_migrations(dsn: str, target: str | None = None) -> list[str]:
    """Apply every pending migration under yoyo's lock; return the ids applied, in order.

    :param target: stop after this migration id (the newest when ``None``).
    """
    backend = get_backend(yoyo_url(dsn))
    try:
        with backend.lock():
            todo = backend.to_apply(read_migrations(str(migrations_dir())))
            if target is not None:
                ids = [m.id for m in todo]
                wanted = set(ids[: ids.index(target) + 1] if target in ids else [])
                todo = todo.filter(lambda m: m.id in wanted)
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def rollback_migrations(dsn: str, count: int | None = None) -> list[str]:
    """Roll back the newest ``count`` applied migrations (all when ``None``); return their ids."""
    backend = get_backend(yoyo_url(dsn))
    try:
        with backend.lock():
            todo = backend.to_rollback(read_migrations(str(migrations_dir())))
            if count is not None:
                todo = todo[:count]
            backend.rollback_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()
