"""Typed errors of connect() that need no server: a malformed URL, an unreachable one."""

from __future__ import annotations

import asyncpg
import pytest

import chatstore
from chatstore import ConnectionLost, InvalidInput
from chatstore._translate import CallState, constraint_of, translate


@pytest.mark.parametrize("url", [
    "postgresql+mysql://app:s3cr3t-pw@localhost/app",
    "mysql://app:s3cr3t-pw@localhost/app",
    "postgresql://app:s3cr3t-pw@localhost/app?sslmode=sometimes",
    "postgresql://app:s3cr3t-pw@[::1/app",
])
async def test_malformed_url_is_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await chatstore.connect(url)
    assert caught.value.field == "dsn" and not caught.value.retryable
    assert "s3cr3t-pw" not in str(caught.value)


async def test_unreachable_server_nothing_sent_is_retryable() -> None:
    with pytest.raises(ConnectionLost) as caught:
        await chatstore.connect("postgresql://nobody:s3cr3t-pw@127.0.0.1:1/none", timeout=2)
    assert caught.value.outcome == "not_applied" and caught.value.retryable
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize(("constraint", "table", "named", "described"), [
    ("messages_pkey", "messages", "messages_pkey", "constraint messages_pkey, table messages"),
    # A Citus shard's copy: its errors name the shard; chatstore names the schema's.
    ("messages_pkey_102085", "messages_102085", "messages_pkey",
     "constraint messages_pkey, table messages"),
    # Another application's table that happens to end in digits is left as it is.
    ("orders_2024_pkey_7", "orders_2024", "orders_2024_pkey_7",
     "constraint orders_2024_pkey_7, table orders_2024"),
])
def test_constraint_names_are_the_schemas_on_citus_shards(
        constraint: str, table: str, named: str, described: str) -> None:
    exc = asyncpg.UniqueViolationError("duplicate key")
    exc.constraint_name, exc.table_name = constraint, table
    assert constraint_of(exc) == named
    error = translate(exc, CallState(sent=True))
    assert error is not None and f"(SQLSTATE 23505, {described})" in str(error)


def test_an_integrity_error_from_a_citus_worker_is_named_from_its_message() -> None:
    """Citus re-raises a worker's error on the coordinator without its constraint and table
    fields; the names come from the message, which quotes them (its DETAIL, with the row,
    is never used)."""
    exc = asyncpg.CheckViolationError(
        'new row for relation "messages_102085" violates check constraint '
        '"no_card_numbers_102085"')
    exc.detail = "Failing row contains (alice, 4111 1111 1111 1111)."
    assert constraint_of(exc) == "no_card_numbers"
    error = translate(exc, CallState(sent=True))
    assert error is not None and "constraint no_card_numbers, table messages" in str(error)
    assert "4111" not in str(error)
    duplicate = asyncpg.UniqueViolationError(
        'duplicate key value violates unique constraint "messages_pkey_102064"')
    assert constraint_of(duplicate) == "messages_pkey"
