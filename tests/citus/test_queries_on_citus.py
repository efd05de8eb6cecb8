"""tests/store/test_queries.py on a live Citus cluster (see conftest.py)."""

from ..store.test_queries import *  # noqa: F403
