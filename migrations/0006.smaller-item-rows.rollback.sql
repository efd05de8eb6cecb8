-- destroys: drops function chatstore_item_text and index messages_search_idx, writes the item text back into content and rebuilds the stored search vector ({messages} rows): no data lost
-- Undo 0006: content holds every message's text again, and the stored search vector of
-- 0003 comes back (this rewrites messages).
-- On Citus a function command (the DROP FUNCTION at the end) may not follow a parallel
-- multi-shard statement in one transaction: this rollback's statements run over one
-- connection per node there. (A DO block: the setting exists only where Citus is loaded.)
DO $rollback_citus$
BEGIN
    IF to_regclass('pg_dist_partition') IS NOT NULL THEN
        SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
    END IF;
END
$rollback_citus$;

DROP INDEX messages_search_idx;

UPDATE messages SET content = chatstore_item_text(item)
WHERE content IS NULL AND chatstore_item_text(item) IS NOT NULL;

ALTER TABLE messages
    ADD COLUMN search_vector tsvector NOT NULL GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, COALESCE(content, ''))
        || array_to_tsvector(ARRAY[' ' || md5(user_id)])
    ) STORED;

CREATE INDEX messages_search_vector_idx ON messages USING gin (search_vector);

COMMENT ON COLUMN messages.search_vector IS
    'Full-text entry of content (''simple'' configuration) plus the owner lexeme '' '' || md5(user_id), which search matches together with the query; generated, never written.';
COMMENT ON COLUMN messages.content IS
    'Message text; NULL for an assistant message that only calls tools.';

DROP FUNCTION chatstore_item_text(jsonb);
