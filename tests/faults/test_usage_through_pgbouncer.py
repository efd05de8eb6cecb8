"""The usage ledger (a representative subset of tests/store/test_usage.py) through a real
pgbouncer in transaction mode, with and without row-level security: the store fixture of
test_through_pgbouncer.py, and a pgbouncer of this module's own."""

from __future__ import annotations

from ..store.test_usage import (
    test_a_key_stores_once_and_a_different_entry_conflicts,
    test_quota_exceeded_exactly_at_the_limit,
    test_totals_grouped,
    test_twenty_concurrent_retries_of_one_key_store_one_entry,
    test_usage_appended_with_the_reply_is_one_commit_and_survives_an_abort,
    test_usage_recorded_in_a_turn_survives_its_abort,
)
from .test_through_pgbouncer import store

__all__ = [  # collected here again, with test_through_pgbouncer.py's ``store``
    "store",
    "test_a_key_stores_once_and_a_different_entry_conflicts",
    "test_quota_exceeded_exactly_at_the_limit",
    "test_totals_grouped",
    "test_twenty_concurrent_retries_of_one_key_store_one_entry",
    "test_usage_appended_with_the_reply_is_one_commit_and_survives_an_abort",
    "test_usage_recorded_in_a_turn_survives_its_abort",
]
