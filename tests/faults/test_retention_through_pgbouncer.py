"""Retention (a representative subset of tests/store/test_retention.py) through a real
pgbouncer in transaction mode: expiry, holds, delete_user_data's holds, and purge, whose
batch transactions lock with SKIP LOCKED and re-check under the lock. purge is an operator's
call that row-level security would hide every row from (it refuses such a store:
test_retention.py), so this store has none; a pgbouncer of this module's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore

from ..store.test_retention import (
    test_a_hold_in_a_tree_protects_what_deleting_would_take,
    test_a_tree_expires_as_one_and_new_chat_starts_its_own_expiry,
    test_a_tree_written_to_after_selection_is_checked_again_under_the_lock,
    test_delete_user_data_keeps_held_trees_whole_and_says_so,
    test_dry_run_deletes_nothing_and_reports_what_purge_then_does,
    test_purge_loses_no_acknowledged_write,
    test_purge_never_deletes_held_active_or_in_flight_trees,
    test_update_sets_clears_or_keeps_the_expiry,
)
from .conftest import Bouncer

__all__ = [  # collected here again, with this module's ``store``
    "store",
    "test_a_hold_in_a_tree_protects_what_deleting_would_take",
    "test_a_tree_expires_as_one_and_new_chat_starts_its_own_expiry",
    "test_a_tree_written_to_after_selection_is_checked_again_under_the_lock",
    "test_delete_user_data_keeps_held_trees_whole_and_says_so",
    "test_dry_run_deletes_nothing_and_reports_what_purge_then_does",
    "test_purge_loses_no_acknowledged_write",
    "test_purge_never_deletes_held_active_or_in_flight_trees",
    "test_update_sets_clears_or_keeps_the_expiry",
]


@pytest.fixture
async def store(db_url: str, conn: asyncpg.Connection,
                pgbouncer: Bouncer) -> AsyncIterator[ChatStore]:
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    async with await chatstore.connect(pgbouncer.url(db_url), pooler="transaction",
                                       min_size=1, max_size=10) as s:
        yield s
