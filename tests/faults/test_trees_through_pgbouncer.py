"""Conversation trees (a representative subset of tests/store/test_trees.py) through a real
pgbouncer in transaction mode, with and without row-level security: the store fixture of
test_through_pgbouncer.py, and a pgbouncer of this module's own."""

from __future__ import annotations

from ..store.test_trees import (
    test_every_mutation_of_a_source_leaves_its_forks_as_they_were,
    test_fork_shares_rows_and_reads_like_a_conversation,
    test_regenerate_and_edit_through_turns,
    test_set_current_with_expected_current,
    test_twenty_concurrent_regenerations,
)
from .test_through_pgbouncer import store

__all__ = [  # collected here again, with test_through_pgbouncer.py's ``store``
    "store",
    "test_every_mutation_of_a_source_leaves_its_forks_as_they_were",
    "test_fork_shares_rows_and_reads_like_a_conversation",
    "test_regenerate_and_edit_through_turns",
    "test_set_current_with_expected_current",
    "test_twenty_concurrent_regenerations",
]
