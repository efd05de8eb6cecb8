"""chatstore.connect() refusing before it reaches any server: no database needed."""

from __future__ import annotations

import pytest

import chatstore
from chatstore import ConnectionLost, InvalidInput


async def test_connect_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATSTORE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(InvalidInput, match="dsn"):
        await chatstore.connect()


async def test_unreachable_server_is_connection_lost() -> None:
    with pytest.raises(ConnectionLost):
        await chatstore.connect("postgresql://nobody@127.0.0.1:1/none", timeout=2)
