"""tests/faults/test_retention_through_pgbouncer.py on a live Citus cluster: expiry, holds
and purge through a real pgbouncer in transaction mode in front of the coordinator."""

from ..faults.conftest import pgbouncer  # noqa: F401
from ..faults.test_retention_through_pgbouncer import *  # noqa: F403
