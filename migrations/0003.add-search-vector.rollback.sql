-- destroys: drops column messages.search_vector and its index, rebuilds the content index ({messages} rows): no data lost
-- Undo 0003: back to the expression index on content (this rewrites messages too).
DROP INDEX messages_search_vector_idx;
ALTER TABLE messages DROP COLUMN search_vector;
CREATE INDEX messages_content_fts_idx
    ON messages USING gin (to_tsvector('simple'::regconfig, COALESCE(content, '')));
