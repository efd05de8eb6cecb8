"""tests/faults/test_compaction_through_pgbouncer.py on a live Citus cluster: compaction
through a real pgbouncer in transaction mode in front of the coordinator."""

from ..faults.conftest import pgbouncer  # noqa: F401
from ..faults.test_compaction_through_pgbouncer import *  # noqa: F403
