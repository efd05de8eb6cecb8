"""The columns each named statement of chatstore/sql/queries.sql selects, as its model reads them
(tests/unit/test_queries.py checks every statement is listed; tests/store/test_queries.py
prepares each one)."""

from __future__ import annotations

from chatstore import Conversation, Message, Usage
from chatstore.models import CONVERSATION_COLUMNS, USER_COLUMNS

CONVERSATION = set(Conversation.model_fields)


MESSAGE = set(Message.model_fields)


USAGE = set(Usage.model_fields)
# usage_totals*: the three grouping columns, then the sums (UsageTotal's fields but key).
USAGE_TOTAL = {"model", "day", "conversation_id", "input_tokens", "output_tokens",
               "cached_input_tokens", "reasoning_tokens", "requests", "cost_micros",
               "entries"}


# Lean reads (models.messages_from_rows): the caller's keys are left out, the order is fixed.
LEAN_READS: dict[str, tuple[str, ...]] = {
    "list_messages_newest": CONVERSATION_COLUMNS,
    "list_messages_before": CONVERSATION_COLUMNS,
    "list_messages_after": CONVERSATION_COLUMNS,
    "list_messages_all": CONVERSATION_COLUMNS,
    "export_messages": CONVERSATION_COLUMNS,
    "context_messages_by_tokens": CONVERSATION_COLUMNS,
    "view_messages": CONVERSATION_COLUMNS,
    "search_messages": USER_COLUMNS,
}


COLUMNS: dict[str, set[str]] = {
    "check_schema": {"table_name", "column_name"},
    "user_exists": {"found"},
    "create_conversation": CONVERSATION,
    "get_conversation": CONVERSATION,
    "list_conversations": CONVERSATION | {"active_at"},
    "list_conversations_before": CONVERSATION | {"active_at"},
    "list_all_conversations": CONVERSATION | {"active_at", "path_owners", "path_ends"},
    "list_all_conversations_before": CONVERSATION | {"active_at", "path_owners",
                                                     "path_ends"},
    "update_conversation": CONVERSATION,
    "delete_tree": {"id"},
    "lock_user_trees": {"roots"},
    "delete_user_data": {"user_found", "conversations_deleted", "conversations_kept"},
    "lock_conversation": {"message_count", "revision", "turn_token", "lease_expired",
                          "turn_base_count", "root_id", "in_tree", "held"},
    "get_write_state": {"message_count", "revision", "turn_token", "lease_expired",
                        "turn_base_count", "root_id", "in_tree", "held"},
    # trees
    "lock_tree": {"current_id"},
    "tree_members": {"id", "parent_id", "forked_at", "path_owners", "path_ends",
                     "message_count", "created_at", "updated_at", "turn_token",
                     "turn_base_count", "held"},
    "lock_fork_source": {"message_count", "turn_token", "turn_base_count", "root_id",
                         "title", "metadata", "path_owners", "path_ends"},
    "fork_conversation": CONVERSATION,
    "copy_conversation": {"id"},
    "copy_history": set(),
    "set_current": {"id"},
    "touch_tree": {"id"},
    "move_messages": set(),
    "set_path": set(),
    "truncate_history": {"removed"},
    "delete_conversations": {"id"},
    "alternatives": MESSAGE | {"current"},
    "take_turn": {"revision"},
    "take_turn_with_message": MESSAGE | {"revision"},
    "renew_turn": {"revision"},
    "end_turn": {"revision"},
    "abort_turn": {"revision", "removed"},
    "list_messages_all": set(CONVERSATION_COLUMNS),
    "savepoint": set(),
    "release_savepoint": set(),
    "rollback_to_savepoint": set(),
    "append_messages": MESSAGE,
    "append_message": MESSAGE,
    "find_messages_by_key": MESSAGE,
    "list_messages_newest": set(CONVERSATION_COLUMNS),
    "list_messages_before": set(CONVERSATION_COLUMNS),
    "list_messages_after": set(CONVERSATION_COLUMNS),
    "context_messages_by_tokens": set(CONVERSATION_COLUMNS),
    # compaction
    "view_messages": set(CONVERSATION_COLUMNS),
    "newest_summary": {"seq", "summary_through"},
    "tool_links": {"seq", "call_ids", "answers"},
    "pop_message": MESSAGE,
    "clear_messages": {"removed"},
    "search_messages": set(USER_COLUMNS),
    "find_unknown_users": {"id"},
    "create_users": set(),
    "import_conversations": {"user_id", "id"},
    "export_messages": set(CONVERSATION_COLUMNS),
    "restore_tree_activity": set(),
    "export_usage": USAGE | {"id"},
    "export_usage_after": USAGE | {"id"},
    "import_usage": {"imported"},
    "set_call_settings": {"user_id", "statement_timeout"},
    # usage
    "record_usage": USAGE,
    "append_message_with_usage": MESSAGE,
    "find_usage_by_key": USAGE,
    "usage_totals": USAGE_TOTAL,
    "usage_totals_by_conversation": USAGE_TOTAL,
    "usage_totals_of_conversation": USAGE_TOTAL,
    "usage_in_window": {"used", "resets_on"},
    "take_turn_within_quota": {"revision", "used", "resets_on"},
    # retention
    "set_tree_expiry": {"expires_at"},
    "set_hold": CONVERSATION,
    "purge_clock": {"now"},
    "purge_expired": {"user_id", "id", "position", "conversations", "held", "in_flight",
                      "active_at", "messages"},
    "purge_idle": {"user_id", "id", "position", "conversations", "held", "in_flight",
                   "active_at", "messages"},
    "lock_purge_root": {"id"},
    "lock_purge_tree": {"conversations", "locked", "held", "in_flight", "active_at",
                        "expires_at", "messages"},
    "oldest_idle_trees": {"user_id", "id", "position", "active_at"},
    # operator checks (chatstore check / status / rollback)
    "check_conversations": {"user_id", "id", "message_count", "highest_seq", "messages",
                            "lease_stuck", "owned", "owned_top", "in_tree"},
    "check_tree_member": {"broken_parts", "root_missing", "current_outside"},
    "lock_conversation_for_repair": {"message_count", "turn_base_count", "turn_token",
                                     "lease_stuck"},
    "conversation_message_stats": {"highest_seq", "messages"},
    "shift_message_seqs": set(),
    "renumber_message_seqs": set(),
    "recount_conversation": {"message_count"},
    "check_usage_users": {"id"},
    "check_usage_rollups": {"user_id", "entries", "daily_keys", "conversation_keys"},
    "set_lock_timeout": {"lock_timeout"},
    "lock_usage_for_repair": set(),
    "clear_usage_rollups": {"daily_rows", "conversation_rows"},
    "rebuild_usage_daily": set(),
    "rebuild_usage_conversation_daily": set(),
    "analyze_chat_tables": set(),
    "count_chat_rows": {"conversations", "messages", "messages_without_role"},
    "count_forks": {"forks"},
    "relation_sizes": {"table_name", "table_bytes", "toast_bytes", "index_bytes",
                       "total_bytes"},
    "index_sizes": {"table_name", "index_name", "bytes"},
    "server_settings": {"server_version", "server_version_num",
                        "default_transaction_isolation", "default_transaction_read_only",
                        "statement_timeout", "idle_in_transaction_session_timeout",
                        "server_encoding"},
    "table_pages": {"pages"},
    "prefer_index_plans": {"enable_seqscan", "enable_bitmapscan"},
}
