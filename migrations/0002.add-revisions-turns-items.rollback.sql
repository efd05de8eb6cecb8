-- destroys: deletes {messages_without_role} message(s) with no chat form (agent items with role NULL); drops columns conversations.revision, turn_token, turn_expires_at, turn_base_count and messages.item
-- Undo 0002. Messages that are agent items with no chat form (role NULL) are deleted first,
-- since 0001's schema cannot hold them; the conversations' counters are then recounted.
DELETE FROM messages WHERE role IS NULL;
ALTER TABLE messages
    DROP CONSTRAINT messages_chat_form_check,
    DROP CONSTRAINT messages_item_object_check,
    DROP COLUMN item,
    ALTER COLUMN role SET NOT NULL;
COMMENT ON COLUMN messages.role IS
    'Who speaks: system, user, assistant or tool (OpenAI chat roles).';
ALTER TABLE conversations
    DROP CONSTRAINT conversations_turn_check,
    DROP CONSTRAINT conversations_revision_check,
    DROP COLUMN turn_base_count,
    DROP COLUMN turn_expires_at,
    DROP COLUMN turn_token,
    DROP COLUMN revision;
