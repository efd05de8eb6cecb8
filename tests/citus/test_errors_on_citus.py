"""tests/faults/test_errors.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store  # noqa: F401
from ..faults.test_errors import *  # noqa: F403
