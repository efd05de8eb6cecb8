"""tests/store/test_trees.py on a live Citus cluster (see conftest.py)."""

from ..store.test_trees import *  # noqa: F403
