"""tests/faults/test_through_pgbouncer.py on a live Citus cluster: the store's and turns'
tests through a real pgbouncer in transaction mode in front of the coordinator."""

from ..faults.conftest import alice_store, pgbouncer  # noqa: F401
from ..faults.test_through_pgbouncer import *  # noqa: F403
from ..faults.test_through_pgbouncer import store  # noqa: F401 (not in its __all__)
