"""chatstore: conversation history for AI chat backends on PostgreSQL.

    store = await chatstore.connect("postgresql://...")
    conversation = await store.create_conversation("user-1", title="Groceries")
    await store.append_message("user-1", conversation.id, {"role": "user", "content": "hi"})
    window = await store.context_messages("user-1", conversation.id, max_tokens=4000)

See README.md and docs/api.md.
"""

from .errors import (
    ChatStoreError,
    Conflict,
    ConnectionLost,
    ConversationBusy,
    InvalidInput,
    NotFound,
    SchemaNotMigrated,
    StaleRevision,
)
from .items import to_items, to_openai_messages
from .models import Conversation, Message, NewMessage, Page, Role
from .store import ChatStore, Turn, connect, init_connection

__all__ = [
    "ChatStore",
    "ChatStoreError",
    "Conflict",
    "ConnectionLost",
    "Conversation",
    "ConversationBusy",
    "InvalidInput",
    "Message",
    "NewMessage",
    "NotFound",
    "Page",
    "Role",
    "SchemaNotMigrated",
    "StaleRevision",
    "Turn",
    "connect",
    "init_connection",
    "to_items",
    "to_openai_messages",
]
