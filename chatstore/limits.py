"""Every limit chatstore enforces, in one place; :mod:`chatstore.validation` checks them
before any SQL runs, and the integrations cap their arguments by them."""

from __future__ import annotations

from typing import Final

# Integer columns and parameters: an int4 column takes up to 2**31 - 1, an int8 2**63 - 1.
MAX_INT4: Final = 2**31 - 1
MAX_BIGINT: Final = 2**63 - 1
# Seqs and message counts are int4 columns.
MAX_SEQ: Final = MAX_INT4

MAX_MESSAGE_PAGE: Final = 1000  # list_messages, search_messages
MAX_CONVERSATION_PAGE: Final = 200  # list_conversations
MAX_CONTEXT_MESSAGES: Final = 10_000  # context_messages' ceiling and default
MAX_BATCH: Final = 10_000  # messages in one append

# Ids and keys live in indexes (a btree entry holds at most ~2,700 bytes): at most 512 bytes.
MAX_ID_BYTES: Final = 512
MAX_TITLE_BYTES: Final = 4096
MAX_QUERY_BYTES: Final = 4096
MAX_METADATA_BYTES: Final = 64 << 10
DEFAULT_MAX_CONTENT_BYTES: Final = 1 << 20  # a store's max_content_bytes by default
# JSON nesting (metadata, tool calls, items): PostgreSQL's jsonb parser stops near a few
# thousand levels, Python's encoder at the recursion limit; no real value goes past 64.
MAX_JSON_DEPTH: Final = 64
# The byte limit of a text field, by its last name part ("messages[2].tool_call_id" ->
# "tool_call_id"); message content has the store's own limit (max_content_bytes).
TEXT_LIMITS: Final[dict[str, int]] = {
    "user_id": MAX_ID_BYTES, "tool_call_id": MAX_ID_BYTES, "idempotency_key": MAX_ID_BYTES,
    "title": MAX_TITLE_BYTES, "query": MAX_QUERY_BYTES,
}

# Retention: the longest ttl (a conversation's expiry), in days (100 years; None: never).
MAX_TTL_DAYS: Final = 36_525
# purge: trees per transaction (default, ceiling).
DEFAULT_PURGE_BATCH: Final = 100
MAX_PURGE_BATCH: Final = 10_000

# Turn leases, in seconds.
DEFAULT_LEASE: Final = 120.0
MAX_LEASE: Final = 86_400.0
# Timeouts (statement, acquire), in seconds.
MIN_TIMEOUT: Final = 0.001
MAX_TIMEOUT: Final = 86_400.0
# How long a call waits for a pooled connection by default (``connect``, ``ChatStore``).
# A healthy pool hands one out within milliseconds: a call holds it for a few statements,
# never while a model thinks. Ten seconds is far longer than any healthy wait, and short
# enough that an HTTP request still answers (503, retry) instead of hanging for ever
# behind a pool that cannot free up (every connection held by a caller that waits for a
# second one). ``acquire_timeout=None`` still means "wait for ever".
DEFAULT_ACQUIRE_TIMEOUT: Final = 10.0
