"""The example's database: the backend's own tables first, then chatstore's migrations.

    python -m examples.todo_chatbot.database postgresql://...   # prepare a database

This is the order a real backend adopting chatstore goes through: its ``users`` (and
``tasks``) exist already, and chatstore's migrations add ``conversations`` and ``messages``
next to them, referencing ``users(id)``, without altering either table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from chatstore.migrate import apply_migrations

__all__ = ["SCHEMA", "add_user", "prepare_database"]

SCHEMA = Path(__file__).with_name("schema.sql")


def prepare_database(url: str) -> list[str]:
    """Create the backend's tables (if absent), then apply chatstore's pending migrations.

    :returns: the chatstore migrations applied.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA.read_text())  # the example's own DDL, no parameters
    return apply_migrations(url)


def add_user(url: str, user_id: str, name: str = "") -> None:
    """Create a user of the backend (nothing if it exists): the app's signup, in short."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                      (user_id, name))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m examples.todo_chatbot.database postgresql://...")
    for ident in prepare_database(sys.argv[1]):
        print(f"applied {ident}")
