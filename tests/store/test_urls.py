"""One URL form: every accepted spelling reaches the same database; bad ones name the part."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

import chatstore
from chatstore.migrate import migration_status


def spellings(url: str) -> list[str]:
    """The test database's URL in every form chatstore accepts."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    rest = url.split("://", 1)[1]
    forms = [f"{scheme}://{rest}" for scheme in
             ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")]
    host = query.get("host", [parts.hostname])[0]
    port = query.get("port", [parts.port or 5432])[0]
    key_value = f"host={host} port={port} dbname={parts.path[1:]} user={parts.username}"
    if parts.password:
        key_value += f" password={parts.password}"
    return [*forms, key_value]


@pytest.mark.parametrize("form", range(5), ids=["postgresql", "postgres", "psycopg",
                                                 "asyncpg", "key=value"])
async def test_connect_and_migrations_accept_every_form(db_url: str, form: int) -> None:
    url = spellings(db_url)[form]
    store = await chatstore.connect(url, min_size=1, max_size=1)
    async with store, store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_database()") == urlsplit(
            db_url).path[1:]
    applied, pending = migration_status(url)
    assert pending == [] and len(applied) >= 2
