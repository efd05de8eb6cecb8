"""tests/integrations/test_langchain.py on a live Citus cluster (see conftest.py)."""

from ..integrations.test_langchain import *  # noqa: F403
