"""tests/store/test_store.py on a live Citus cluster (see conftest.py)."""

from ..store.test_store import *  # noqa: F403
