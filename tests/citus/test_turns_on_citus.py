"""tests/store/test_turns.py on a live Citus cluster (see conftest.py)."""

from ..store.test_turns import *  # noqa: F403
