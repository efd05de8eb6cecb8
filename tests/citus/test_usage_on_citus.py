"""tests/store/test_usage.py on a live Citus cluster (see conftest.py)."""

from ..store.test_usage import *  # noqa: F403
