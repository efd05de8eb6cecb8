"""tests/faults/test_hostile_input.py on a live Citus cluster (see conftest.py)."""

from ..faults.conftest import alice_store  # noqa: F401
from ..faults.test_hostile_input import *  # noqa: F403
