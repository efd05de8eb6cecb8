"""Drop-in adapters between chatstore and agent frameworks.

Each lives in its own module and needs its framework, installed through an extra:

- :mod:`chatstore.integrations.openai_agents` (``pip install 'chatstore[openai-agents]'``):
  ``ChatStoreSession``, the OpenAI Agents SDK ``Session`` protocol on a chatstore
  conversation, items stored losslessly, writes bound to a chat turn if wanted.
- :mod:`chatstore.integrations.langchain` (``pip install 'chatstore[langchain]'``):
  ``ChatStoreMessageHistory``, a langchain-core ``BaseChatMessageHistory``.

Importing this package imports neither framework. See docs/integrations.md.
"""

from uuid import UUID

from ..errors import InvalidInput

__all__ = ["conversation_uuid"]


def conversation_uuid(value: UUID | str) -> UUID:
    """A conversation id given as a ``UUID`` or its string (a session id is a string).

    :raises InvalidInput: anything else (field ``conversation_id``).
    """
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidInput("conversation_id", f"{value!r} is not a UUID") from None
