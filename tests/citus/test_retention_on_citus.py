"""tests/store/test_retention.py on a live Citus cluster (see conftest.py)."""

from ..store.test_retention import *  # noqa: F403
