"""tests/faults/test_usage_through_pgbouncer.py on a live Citus cluster: the usage ledger
through a real pgbouncer in transaction mode in front of the coordinator."""

from ..faults.conftest import pgbouncer  # noqa: F401
from ..faults.test_usage_through_pgbouncer import *  # noqa: F403
