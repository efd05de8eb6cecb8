"""tests/faults/test_limits.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store  # noqa: F401
from ..faults.test_limits import *  # noqa: F403
