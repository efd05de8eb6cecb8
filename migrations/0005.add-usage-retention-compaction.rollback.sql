-- destroys: drops columns conversations.expires_at and held (every expiry and legal hold)
-- == retention ==
DROP INDEX conversations_root_updated_at_idx;
DROP INDEX conversations_expires_at_idx;
ALTER TABLE conversations DROP CONSTRAINT conversations_expires_at_check;
ALTER TABLE conversations
    DROP COLUMN held,
    DROP COLUMN expires_at;
