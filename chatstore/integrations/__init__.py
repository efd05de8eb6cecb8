"""Drop-in adapters between chatstore and agent frameworks.

Each lives in its own module and needs its framework, installed through an extra:

- :mod:`chatstore.integrations.openai_agents` (``pip install 'chatstore[openai-agents]'``):
  ``ChatStoreSession``, the OpenAI Agents SDK ``Session`` protocol on a chatstore
  conversation, items stored losslessly, writes bound to a chat turn if wanted.
- :mod:`chatstore.integrations.langchain` (``pip install 'chatstore[langchain]'``):
  ``ChatStoreMessageHistory``, a langchain-core ``BaseChatMessageHistory``.

Importing this package imports neither framework. See docs/integrations.md.
"""

from ..validation import conversation_id as conversation_uuid

__all__ = ["conversation_uuid"]
