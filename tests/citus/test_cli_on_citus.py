"""tests/store/test_cli.py on a live Citus cluster (see conftest.py)."""

from ..store.test_cli import *  # noqa: F403
