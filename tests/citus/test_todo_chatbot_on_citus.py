"""tests/integrations/test_todo_chatbot.py on a live Citus cluster (see conftest.py)."""

from ..integrations.test_todo_chatbot import *  # noqa: F403
