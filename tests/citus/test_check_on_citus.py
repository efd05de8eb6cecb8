"""tests/store/test_check.py on a live Citus cluster (see conftest.py)."""

from ..store.test_check import *  # noqa: F403
