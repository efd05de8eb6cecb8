"""The store's own tests (a representative subset of tests/store/test_store.py and
tests/store/test_turns.py), run again with their ``store`` going through a real pgbouncer in
transaction mode (``connect(..., pooler="transaction")``), and again with row-level security
on, as a role bound by the policies, through the same pgbouncer. (The trees' are in
test_trees_through_pgbouncer.py, with a pgbouncer of their own: Debian's pgbouncer 1.18 stopped
opening server connections after about 33 of the tests' throwaway databases in one process.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

import chatstore
from chatstore import ChatStore

from ..store.test_store import (
    test_compare_and_append,
    test_concurrent_appends_get_consecutive_seqs,
    test_concurrent_retries_of_one_key_store_once,
    test_context_window_token_budget,
    test_create_and_get_conversation,
    test_idempotent_retry_stores_once,
    test_list_messages_pages_backward_and_forward,
    test_pop_and_clear_keep_seqs_gap_free,
    test_search_messages,
)
from ..store.test_turns import (
    test_a_turn_writes_contiguously_and_ends,
    test_items_round_trip_and_project,
    test_outside_writes_during_a_turn_are_busy,
    test_twenty_concurrent_turns_on_one_conversation,
)
from .conftest import APP_ROLE, Bouncer, apply_rls

__all__ = [  # collected here again, with this module's ``store``
    "test_a_turn_writes_contiguously_and_ends",
    "test_compare_and_append",
    "test_concurrent_appends_get_consecutive_seqs",
    "test_concurrent_retries_of_one_key_store_once",
    "test_context_window_token_budget",
    "test_create_and_get_conversation",
    "test_idempotent_retry_stores_once",
    "test_items_round_trip_and_project",
    "test_list_messages_pages_backward_and_forward",
    "test_outside_writes_during_a_turn_are_busy",
    "test_pop_and_clear_keep_seqs_gap_free",
    "test_search_messages",
    "test_twenty_concurrent_turns_on_one_conversation",
]


@pytest.fixture(params=["pgbouncer", "pgbouncer+rls"])
async def store(request: pytest.FixtureRequest, db_url: str, conn: asyncpg.Connection,
                pgbouncer: Bouncer) -> AsyncIterator[ChatStore]:
    await conn.execute("INSERT INTO users (id) VALUES ('alice'), ('bob')")
    rls = request.param == "pgbouncer+rls"
    role = None
    if rls:
        await apply_rls(conn, APP_ROLE)
        role = APP_ROLE
    async with await chatstore.connect(pgbouncer.url(db_url, user=role), pooler="transaction",
                                       row_level_security=rls, min_size=1,
                                       max_size=10) as s:
        yield s
