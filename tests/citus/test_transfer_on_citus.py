"""tests/faults/test_transfer.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store  # noqa: F401
from ..faults.test_transfer import *  # noqa: F403
