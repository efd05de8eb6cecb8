"""tests/store/test_compaction.py on a live Citus cluster (see conftest.py)."""

from ..store.test_compaction import *  # noqa: F403
