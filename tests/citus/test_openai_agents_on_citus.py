"""tests/integrations/test_openai_agents.py on a live Citus cluster (see conftest.py)."""

from ..integrations.test_openai_agents import *  # noqa: F403
