-- destroys: drops tables usage_entries, usage_daily and usage_conversation_daily (every recorded usage entry and its rollups)
-- Undo 0005. Each part undoes its own section of the migration, in reverse order.

-- == usage ==
DROP TABLE usage_conversation_daily;
DROP TABLE usage_daily;
DROP TABLE usage_entries;
