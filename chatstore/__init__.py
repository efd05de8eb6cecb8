"""chatstore: conversation history for AI chat backends on PostgreSQL.

    store = await chatstore.connect("postgresql://...")
    conversation = await store.create_conversation("user-1", title="Groceries")
    await store.append_message("user-1", conversation.id, {"role": "user", "content": "hi"})
    window = await store.context_messages("user-1", conversation.id, max_tokens=4000)

See README.md and docs/api.md.
"""

from ._call import CallPath, Unset
from ._connect import Pooler, connect, init_connection
from .errors import (
    ChatStoreError,
    Conflict,
    ConnectionLost,
    ConversationBusy,
    ConversationHeld,
    Deadlock,
    InvalidInput,
    NotFound,
    Outcome,
    QuotaExceeded,
    SchemaChanged,
    SchemaNotMigrated,
    SerializationFailure,
    StaleRevision,
    StoreClosed,
    Timeout,
    WrongEventLoop,
)
from .items import to_items, to_openai_messages
from .models import (
    Alternative,
    Conversation,
    Message,
    NewMessage,
    Page,
    PurgeReport,
    Quota,
    Role,
    Usage,
    UsageTotal,
    UserDataDeleted,
)
from .store import ChatStore
from .turns import Turn
from .validation import TextPolicy, Validator

# The API, and the types its signatures use (CallPath, Pooler, TextPolicy, Unset, Validator).
__all__ = [
    "Alternative",
    "CallPath",
    "ChatStore",
    "ChatStoreError",
    "Conflict",
    "ConnectionLost",
    "Conversation",
    "ConversationBusy",
    "ConversationHeld",
    "Deadlock",
    "InvalidInput",
    "Message",
    "NewMessage",
    "NotFound",
    "Outcome",
    "Page",
    "Pooler",
    "PurgeReport",
    "Quota",
    "QuotaExceeded",
    "Role",
    "SchemaChanged",
    "SchemaNotMigrated",
    "SerializationFailure",
    "StaleRevision",
    "StoreClosed",
    "TextPolicy",
    "Timeout",
    "Turn",
    "Unset",
    "Usage",
    "UsageTotal",
    "UserDataDeleted",
    "Validator",
    "WrongEventLoop",
    "connect",
    "init_connection",
    "to_items",
    "to_openai_messages",
]
