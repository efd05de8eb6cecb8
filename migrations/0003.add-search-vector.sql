-- depends: 0002.add-revisions-turns-items
-- Search whose cost follows the caller's own matches.
--
-- messages.search_vector: the message's full-text entry, stored (ts_rank reads it instead
--   of re-tokenising every candidate, about 28 us each), plus one owner lexeme: a space
--   and md5(user_id). The parser never emits a lexeme with a space, so no word can collide
--   with it. search_messages matches the query AND the caller's owner lexeme, and GIN's
--   scan of an AND is driven by its rarest entry: it walks the caller's own postings, not
--   every user's matches. `WHERE user_id = $1` stays the security boundary; the lexeme
--   only narrows the scan. Core PostgreSQL only (btree_gin is absent on many servers).
-- Adding a stored generated column rewrites messages under an ACCESS EXCLUSIVE lock
-- (tokenising every row: about 30 us a message); plan it on a large table.

DROP INDEX messages_content_fts_idx;

ALTER TABLE messages
    ADD COLUMN search_vector tsvector NOT NULL GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, COALESCE(content, ''))
        || array_to_tsvector(ARRAY[' ' || md5(user_id)])
    ) STORED;

CREATE INDEX messages_search_vector_idx ON messages USING gin (search_vector);

COMMENT ON COLUMN messages.search_vector IS
    'Full-text entry of content (''simple'' configuration) plus the owner lexeme '' '' || md5(user_id), which search matches together with the query; generated, never written.';
