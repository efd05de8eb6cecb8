-- depends: 0005.add-usage-retention-compaction
-- Smaller rows for agent items: a message item's text is stored once, and search keeps no
-- stored vector.
--
-- chatstore_item_text(item): the text of a message item whose content is a string or a
--   single text part (user input, an assistant's output_text), exactly as the chat
--   projection gives it; NULL for every other item. Appends store content NULL when it
--   equals this text, and every read returns COALESCE(content, chatstore_item_text(item)):
--   the text was stored twice (about 185 B of an Agents SDK history's 1,150 B a message).
--   A plain SQL expression (no sub-query), so the planner inlines it: only rows with
--   content NULL evaluate it, a few jsonb lookups each.
-- messages.search_vector (381 B a message: words, positions and the owner lexeme) is
--   dropped; messages_search_idx indexes the same entry as an expression, the text's words
--   plus the owner lexeme ' ' || md5(user_id), which search still ANDs with the query (the
--   scan walks the caller's own postings). The text is content, else the item's one part's
--   text or content string: plain operators, not chatstore_item_text, since every append
--   prepares the index expression anew (the inlined CASE cost about 6 us an append). On
--   the rows search keeps (a chat form, and no tool call without content) it equals
--   COALESCE(content, chatstore_item_text(item)). Ranking re-tokenises, so search ranks
--   only the newest matches (see search_messages).
-- Dropping the column is instant; the UPDATE rewrites the item rows and the index build
-- tokenises every row (about 15 us a message): plan it on a large table. Citus: the
-- function is created before the index and the UPDATE that use it (propagated to workers).

CREATE FUNCTION chatstore_item_text(item jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE
    WHEN (item ->> 'type' IS NULL OR item ->> 'type' = 'message')
         AND item ->> 'role' IN ('system', 'developer', 'user', 'assistant')
    THEN CASE
        WHEN jsonb_typeof(item -> 'content') = 'string' THEN item ->> 'content'
        WHEN jsonb_typeof(item -> 'content') = 'array' THEN CASE
            WHEN jsonb_array_length(item -> 'content') <> 1 THEN NULL
            WHEN item #>> '{content,0,type}' IN ('input_text', 'output_text', 'text')
                 AND jsonb_typeof(item #> '{content,0,text}') = 'string'
            THEN item #>> '{content,0,text}'
            WHEN item #>> '{content,0,type}' = 'refusal'
                 AND jsonb_typeof(item #> '{content,0,refusal}') = 'string'
            THEN item #>> '{content,0,refusal}'
        END
    END
END
$$;

COMMENT ON FUNCTION chatstore_item_text(jsonb) IS
    'The chat text of a message item whose content is a string or one text part (as chatstore.items.project gives it), else NULL. messages.content is NULL where it equals this; reads return COALESCE(content, chatstore_item_text(item)).';

DROP INDEX messages_search_vector_idx;
ALTER TABLE messages DROP COLUMN search_vector;

UPDATE messages SET content = NULL
WHERE item IS NOT NULL AND content = chatstore_item_text(item);

CREATE INDEX messages_search_idx ON messages USING gin ((
    to_tsvector('simple'::regconfig,
                COALESCE(content, item #>> '{content,0,text}', item ->> 'content', ''))
    || array_to_tsvector(ARRAY[' ' || md5(user_id)])));

COMMENT ON INDEX messages_search_idx IS
    'Full-text entry of the message text (''simple'' configuration) plus the owner lexeme '' '' || md5(user_id), which search matches together with the query.';

COMMENT ON COLUMN messages.content IS
    'Message text; NULL for an assistant message that only calls tools, and NULL where it equals the item''s text (chatstore_item_text(item)): read it as COALESCE(content, chatstore_item_text(item)).';
