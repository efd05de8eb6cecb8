-- destroys: drops column messages.summary_through (summaries stay as ordinary messages; the model's view becomes the whole history again)

-- == compaction ==
DROP INDEX messages_summary_through_idx;
ALTER TABLE messages DROP CONSTRAINT messages_summary_through_check;
ALTER TABLE messages DROP COLUMN summary_through;
