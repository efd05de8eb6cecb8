-- destroys: drops tables usage_entries, usage_daily and usage_conversation_daily (every recorded usage entry and its rollups); drops columns conversations.expires_at and held (every expiry and legal hold); drops column messages.summary_through (summaries stay as ordinary messages; the model's view becomes the whole history again)
-- Undo 0005. Each part undoes its own section of the migration, in reverse order.

-- == compaction ==
DROP INDEX messages_summary_through_idx;
ALTER TABLE messages DROP CONSTRAINT messages_summary_through_check;
ALTER TABLE messages DROP COLUMN summary_through;

-- == retention ==
DROP INDEX conversations_root_updated_at_idx;
DROP INDEX conversations_expires_at_idx;
ALTER TABLE conversations DROP CONSTRAINT conversations_expires_at_check;
ALTER TABLE conversations
    DROP COLUMN held,
    DROP COLUMN expires_at;

-- == usage ==
DROP TABLE usage_conversation_daily;
DROP TABLE usage_daily;
DROP TABLE usage_entries;
