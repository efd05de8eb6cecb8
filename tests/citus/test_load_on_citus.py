"""tests/faults/test_load.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store, pgbouncer  # noqa: F401
from ..faults.test_load import *  # noqa: F403
