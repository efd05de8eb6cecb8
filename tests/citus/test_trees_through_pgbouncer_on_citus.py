"""tests/faults/test_trees_through_pgbouncer.py on a live Citus cluster: conversation trees
through a real pgbouncer in transaction mode in front of the coordinator."""

from ..faults.conftest import pgbouncer  # noqa: F401
from ..faults.test_trees_through_pgbouncer import *  # noqa: F403
