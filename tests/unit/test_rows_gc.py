"""Building many messages from rows pauses the garbage collector and always restores it."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from chatstore.models import Message, messages_from_rows

CID = uuid.uuid4()
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


class Row(tuple[Any, ...]):
    """A row of a lean read that notes whether the collector ran while it was read."""

    seen: ClassVar[list[bool]] = []

    def __iter__(self) -> Iterator[Any]:
        Row.seen.append(gc.isenabled())
        return super().__iter__()


def rows(count: int, kind: type[tuple[Any, ...]] = Row) -> list[Any]:
    return [kind(("user", f"{n} hello", None, None, {}, 3, None, None, n + 1, WHEN, None))
            for n in range(count)]


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    Row.seen = []
    yield
    if not was:
        gc.disable()


def test_a_long_read_is_built_with_the_collector_paused_and_restored() -> None:
    built = messages_from_rows(rows(1000), "alice", CID)
    assert len(built) == 1000 and isinstance(built[0], Message)
    assert built[999].seq == 1000 and built[0].conversation_id == CID
    assert Row.seen and not any(Row.seen)  # paused while the rows were read
    assert gc.isenabled()


def test_a_page_leaves_the_collector_alone() -> None:
    messages_from_rows(rows(50), "alice", CID)
    assert Row.seen and all(Row.seen)
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled() -> None:
    gc.disable()
    messages_from_rows(rows(1000), "alice", CID)
    assert not gc.isenabled()


class Broken(tuple[Any, ...]):
    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("row broke")


def test_the_collector_is_back_on_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="row broke"):
        messages_from_rows(rows(1000, Broken), "alice", CID)
    assert gc.isenabled()
