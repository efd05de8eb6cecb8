"""The call path's retry rule, without a database: which failures are retried, and that
every public operation (the store's and a turn's) is wrapped by it."""

from __future__ import annotations

import inspect

import pytest

from chatstore import ChatStore, ConnectionLost, Turn, turns
from chatstore._call import retried


def lost(*, stale: bool, outcome: str = "not_applied") -> ConnectionLost:
    error = ConnectionLost("gone", outcome=outcome)  # type: ignore[arg-type]
    error.stale = stale
    return error


async def test_a_stale_failure_is_retried_twice_then_raised() -> None:
    attempts: list[int] = []

    @retried
    async def call(fail_times: int) -> str:
        attempts.append(1)
        if len(attempts) <= fail_times:
            raise lost(stale=True)
        return "done"

    assert await call(2) == "done" and len(attempts) == 3
    attempts.clear()
    with pytest.raises(ConnectionLost):
        await call(3)
    assert len(attempts) == 3


@pytest.mark.parametrize("error", [lost(stale=False), lost(stale=True, outcome="unknown")],
                         ids=["not stale", "outcome unknown"])
async def test_any_other_lost_connection_is_not_retried(error: ConnectionLost) -> None:
    attempts: list[int] = []

    @retried
    async def call() -> None:
        attempts.append(1)
        raise error

    with pytest.raises(ConnectionLost):
        await call()
    assert attempts == [1]


def test_every_public_operation_is_retried() -> None:
    public = [name for name, member in vars(ChatStore).items()
              if not name.startswith("_") and inspect.iscoroutinefunction(member)
              and name != "close"]
    assert len(public) >= 14
    unwrapped = [name for name in public if not hasattr(vars(ChatStore)[name], "__wrapped__")]
    assert unwrapped == []
    # A turn's calls: append itself; take, renew, end and abort through the statements
    # they run.
    assert hasattr(Turn.append, "__wrapped__")
    for statement in (turns._take, turns._holder_statement, turns._abort):
        assert hasattr(statement, "__wrapped__"), statement.__name__
