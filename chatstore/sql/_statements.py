"""The names of chatstore's SQL statements, one attribute each (text: the statement).

Generated from queries.sql by chatstore/sql/generate.py; do not edit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statements:
    check_schema: str
    user_exists: str
    create_conversation: str
    get_conversation: str
    list_conversations: str
    list_conversations_before: str
    list_all_conversations: str
    list_all_conversations_before: str
    update_conversation: str
    delete_tree: str
    lock_user_trees: str
    delete_user_data: str
    lock_conversation: str
    get_write_state: str
    take_turn: str
    renew_turn: str
    end_turn: str
    abort_turn: str
    append_messages: str
    append_message: str
    find_messages_by_key: str
    list_messages_newest: str
    list_messages_before: str
    list_messages_after: str
    list_messages_all: str
    view_messages: str
    context_messages_by_tokens: str
    pop_message: str
    clear_messages: str
    newest_summary: str
    tool_links: str
    search_messages: str
    savepoint: str
    release_savepoint: str
    rollback_to_savepoint: str
    export_messages: str
    find_unknown_users: str
    create_users: str
    import_conversations: str
    restore_tree_activity: str
    set_call_settings: str
    lock_tree: str
    tree_members: str
    lock_fork_source: str
    fork_conversation: str
    copy_conversation: str
    copy_history: str
    set_current: str
    touch_tree: str
    move_messages: str
    set_path: str
    truncate_history: str
    delete_conversations: str
    alternatives: str
    record_usage: str
    append_message_with_usage: str
    find_usage_by_key: str
    usage_totals: str
    usage_totals_by_conversation: str
    usage_totals_of_conversation: str
    usage_in_window: str
    take_turn_within_quota: str
    check_conversations: str
    check_tree_member: str
    lock_conversation_for_repair: str
    conversation_message_stats: str
    shift_message_seqs: str
    renumber_message_seqs: str
    recount_conversation: str
    count_chat_rows: str
    count_forks: str
    relation_sizes: str
    index_sizes: str
    server_settings: str
    analyze_chat_tables: str
    table_pages: str
    prefer_index_plans: str
    set_tree_expiry: str
    set_hold: str
    purge_clock: str
    purge_expired: str
    purge_idle: str
    lock_purge_root: str
    lock_purge_tree: str
    oldest_idle_trees: str
