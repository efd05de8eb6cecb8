"""Typed errors of connect() that need no server: a malformed URL, an unreachable one."""

from __future__ import annotations

import pytest

import chatstore
from chatstore import ConnectionLost, InvalidInput


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
