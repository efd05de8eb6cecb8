"""The interface every benchmark peer implements, and small helpers they share."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["NotSupported", "Peer", "driver_url", "page_slice"]


class NotSupported(Exception):
    """The peer library has no way to do this operation."""


@runtime_checkable
class Peer(Protocol):
    name: str
    # True if reading the newest N messages loads the whole history.
    loads_whole_history: bool
    # The tables the library keeps its data in (the storage row sums their sizes).
    tables: tuple[str, ...]

    async def setup(self, dsn: str) -> None: ...
    async def close(self) -> None: ...
    async def bulk_load(self, user_id: str, conversation_key: str,
                        messages: list[dict[str, Any]]) -> None: ...
    async def append_one(self, user_id: str, conversation_key: str,
                         message: dict[str, Any]) -> None: ...
    async def append_turn(self, user_id: str, conversation_key: str,
                          user_msg: dict[str, Any], assistant_msg: dict[str, Any]) -> None: ...
    async def newest(self, user_id: str, conversation_key: str, n: int) -> list[Any]: ...
    async def page_before(self, user_id: str, conversation_key: str,
                          before_index: int, n: int) -> list[Any]: ...
    async def whole(self, user_id: str, conversation_key: str) -> list[Any]: ...
    async def recent_conversations(self, user_id: str, n: int) -> list[Any]: ...
    async def delete_conversation(self, user_id: str, conversation_key: str) -> None: ...


def driver_url(dsn: str, driver: str) -> str:
    """``postgresql://...`` (or ``postgres://``) -> ``postgresql+DRIVER://...`` for SQLAlchemy.

    The rest of the URL is kept, so a Unix-socket URL (``?host=/socket/dir``) stays one:
    SQLAlchemy hands query parameters to asyncpg and psycopg as connect arguments.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {dsn!r}")
    return f"postgresql+{driver}://{rest}"


def page_slice(items: list[Any], before_index: int, n: int) -> list[Any]:
    """The n items just older than the item at 1-based position before_index, oldest-first."""
    end = max(0, min(before_index - 1, len(items)))
    return items[max(0, end - n):end]
