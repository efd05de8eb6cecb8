"""Compaction (a representative subset of tests/store/test_compaction.py) through a real
pgbouncer in transaction mode, with and without row-level security: the store fixture of
test_through_pgbouncer.py, and a pgbouncer of this module's own."""

from __future__ import annotations

from ..store.test_compaction import (
    test_a_retried_compaction_with_keys_stores_once,
    test_compaction_during_a_turn_goes_through_the_turn,
    test_forks_see_the_summaries_on_their_own_history,
    test_the_cut_moves_back_before_a_call_whose_results_follow_it,
    test_the_view_starts_at_the_summary_and_the_transcript_keeps_everything,
)
from .test_through_pgbouncer import store

__all__ = [  # collected here again, with test_through_pgbouncer.py's ``store``
    "store",
    "test_a_retried_compaction_with_keys_stores_once",
    "test_compaction_during_a_turn_goes_through_the_turn",
    "test_forks_see_the_summaries_on_their_own_history",
    "test_the_cut_moves_back_before_a_call_whose_results_follow_it",
    "test_the_view_starts_at_the_summary_and_the_transcript_keeps_everything",
]
