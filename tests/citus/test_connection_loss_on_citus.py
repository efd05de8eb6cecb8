"""tests/faults/test_connection_loss.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store, pgbouncer  # noqa: F401
from ..faults.test_connection_loss import *  # noqa: F403
