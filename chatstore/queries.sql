-- chatstore's SQL: one named statement per block, run as prepared statements.
--
-- A block starts with a header line `-- name --`; the statement is everything up to the next
-- header. Each name is the verb_noun of what it does, and mostly the name of the ChatStore
-- method that runs it. Every statement filters on the owner (user_id, always $1).
-- Statements that read rows name their columns; tests/test_queries.py prepares every
-- statement and checks its columns against the model it feeds.

-- check_schema --
-- The chat tables' columns as the database has them, for ChatStore.check_schema().
SELECT table_name::text AS table_name, column_name::text AS column_name
FROM information_schema.columns
WHERE table_schema = current_schema()
  AND table_name IN ('users', 'conversations', 'messages');

-- user_exists --
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS found;

-- create_conversation --
INSERT INTO conversations (user_id, title, metadata)
VALUES ($1, $2, COALESCE($3::text::jsonb, '{}'::jsonb))
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at;

-- get_conversation --
SELECT id, user_id, title, metadata, message_count, created_at, updated_at
FROM conversations
WHERE user_id = $1 AND id = $2;

-- list_conversations --
-- Newest activity first: a backward range scan of conversations_user_id_updated_at_idx.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at
FROM conversations
WHERE user_id = $1
ORDER BY updated_at DESC, id DESC
LIMIT $2;

-- list_conversations_before --
-- The page after a cursor (updated_at $2, id $3): keyset pagination on the same index.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at
FROM conversations
WHERE user_id = $1 AND (updated_at, id) < ($2, $3)
ORDER BY updated_at DESC, id DESC
LIMIT $4;

-- update_conversation --
-- $3/$5 say whether to set title ($4) and metadata ($6); absent fields keep their value.
UPDATE conversations
SET title = CASE WHEN $3::boolean THEN $4::text ELSE title END,
    metadata = CASE WHEN $5::boolean THEN COALESCE($6::text::jsonb, '{}'::jsonb)
                    ELSE metadata END,
    updated_at = now()
WHERE user_id = $1 AND id = $2
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at;

-- delete_conversation --
-- Its messages go with it (ON DELETE CASCADE).
DELETE FROM conversations
WHERE user_id = $1 AND id = $2
RETURNING id;

-- delete_user_data --
-- Every conversation of the user and, by cascade, every message; the users row stays.
WITH deleted AS (
    DELETE FROM conversations WHERE user_id = $1 RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_found,
       (SELECT count(*) FROM deleted) AS conversations_deleted;

-- lock_conversation --
-- Takes the conversation's row lock for the rest of the transaction; later statements in it
-- then see every message committed before the lock was granted.
SELECT message_count
FROM conversations
WHERE user_id = $1 AND id = $2
FOR UPDATE;

-- append_messages --
-- k messages in one statement: the conversation's row lock orders concurrent appends, the
-- counter and updated_at move with the insert, seqs are message_count + 1 .. + k.
-- $3..$9 are parallel arrays (JSON as text); $10 is expected_last_seq (NULL: any).
WITH counter AS (
    UPDATE conversations
    SET message_count = message_count + cardinality($3::text[]),
        updated_at = now()
    WHERE user_id = $1 AND id = $2
      AND ($10::integer IS NULL OR message_count = $10::integer)
    RETURNING message_count - cardinality($3::text[]) AS last_seq
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key)
SELECT $1, $2, counter.last_seq + batch.ord::integer, batch.role, batch.content,
       batch.tool_calls::jsonb, batch.tool_call_id, batch.metadata::jsonb, batch.token_count,
       batch.idempotency_key
FROM counter,
     unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::integer[],
            $9::text[])
         WITH ORDINALITY AS batch(role, content, tool_calls, tool_call_id, metadata,
                                  token_count, idempotency_key, ord)
ORDER BY batch.ord
RETURNING conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
          token_count, idempotency_key, created_at;

-- find_messages_by_key --
-- Messages of a conversation already stored under any of the idempotency keys $3.
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2
  AND idempotency_key IS NOT NULL AND idempotency_key = ANY ($3::text[]);

-- list_messages_newest --
-- The newest $3 messages, newest first (the caller reverses): a backward scan of messages_pkey.
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2
ORDER BY seq DESC
LIMIT $3;

-- list_messages_before --
-- $4 messages older than seq $3, newest first (the caller reverses).
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2 AND seq < $3
ORDER BY seq DESC
LIMIT $4;

-- list_messages_after --
-- $4 messages newer than seq $3, oldest first.
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4;

-- context_messages_by_count --
-- The newest $3 messages, oldest first, without leading tool results (whose calling
-- assistant message fell outside): a backward range scan of messages_pkey.
WITH newest AS (
    SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
           token_count, idempotency_key, created_at
    FROM messages
    WHERE user_id = $1 AND conversation_id = $2
    ORDER BY seq DESC
    LIMIT $3
)
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM newest
WHERE seq >= (SELECT min(seq) FROM newest WHERE role <> 'tool')
ORDER BY seq;

-- context_messages_by_tokens --
-- The newest messages that fit $4 tokens (and at most $3 messages), oldest first, without
-- leading tool results. Walks back from the newest seq one primary-key probe per message
-- and stops at the budget, so the cost follows the window, not the history. A message
-- without token_count costs ceil((characters of content + of tool_calls) / 4), at least 1.
WITH RECURSIVE walk AS (
    SELECT c.message_count + 1 AS seq, 0::bigint AS running, 0 AS taken,
           NULL::messages AS message
    FROM conversations c
    WHERE c.user_id = $1 AND c.id = $2
  UNION ALL
    SELECT step.seq, walk.running + step.tokens, walk.taken + 1, step.message
    FROM walk
    CROSS JOIN LATERAL (
        -- LIMIT 1 keeps this a primary-key probe per step (the planner cannot turn it
        -- into a join that rescans the whole conversation on every iteration).
        SELECT m.seq, m AS message,
               COALESCE(m.token_count,
                        GREATEST(1, ceil((char_length(COALESCE(m.content, ''))
                                          + char_length(COALESCE(m.tool_calls::text, '')))
                                         / 4.0)::integer)) AS tokens
        FROM messages m
        WHERE m.user_id = $1 AND m.conversation_id = $2 AND m.seq = walk.seq - 1
        LIMIT 1
    ) AS step
    WHERE walk.taken < $3 AND walk.running + step.tokens <= $4::bigint
), fitting AS (
    SELECT (message).* FROM walk WHERE taken > 0
)
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM fitting
WHERE seq >= (SELECT min(seq) FROM fitting WHERE role <> 'tool')
ORDER BY seq;

-- pop_message --
-- Run after lock_conversation in the same transaction: removes the newest message and moves
-- the counter back, so the next append continues without a gap.
WITH counter AS (
    UPDATE conversations
    SET message_count = message_count - 1, updated_at = now()
    WHERE user_id = $1 AND id = $2 AND message_count > 0
    RETURNING message_count + 1 AS popped_seq
)
DELETE FROM messages
USING counter
WHERE messages.user_id = $1 AND messages.conversation_id = $2
  AND messages.seq = counter.popped_seq
RETURNING messages.conversation_id, messages.user_id, messages.seq, messages.role,
          messages.content, messages.tool_calls, messages.tool_call_id, messages.metadata,
          messages.token_count, messages.idempotency_key, messages.created_at;

-- clear_messages --
-- Run after lock_conversation in the same transaction: removes every message, counter to 0.
WITH counter AS (
    UPDATE conversations
    SET message_count = 0, updated_at = now()
    WHERE user_id = $1 AND id = $2
    RETURNING id
), removed AS (
    DELETE FROM messages
    USING counter
    WHERE messages.user_id = $1 AND messages.conversation_id = counter.id
    RETURNING 1
)
SELECT count(*) AS removed FROM removed;

-- search_messages --
-- Full-text search over one user's messages, optionally within one conversation ($3), best
-- match first, newest first among equals. The query is ANDed with the caller's owner lexeme
-- (' ' || md5(user_id), stored in messages.search_vector), so the scan of
-- messages_search_vector_idx is driven by the caller's own postings and its cost follows the
-- caller's matches, not every user's; user_id = $1 stays the boundary. ts_rank reads the
-- stored vector (the owner lexeme leaves the rank unchanged: no length normalisation).
-- A query without lexemes (punctuation only) matches nothing.
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at
FROM messages
WHERE user_id = $1
  AND search_vector @@ (websearch_to_tsquery('simple'::regconfig, $2)
                        && quote_literal(' ' || md5($1))::tsquery)
  AND numnode(websearch_to_tsquery('simple'::regconfig, $2)) > 0
  AND ($3::uuid IS NULL OR conversation_id = $3::uuid)
ORDER BY ts_rank(search_vector, websearch_to_tsquery('simple'::regconfig, $2)) DESC,
         created_at DESC, conversation_id, seq DESC
LIMIT $4;

-- find_unknown_users --
-- Which of the user ids $1 have no row in users (import checks this before writing).
SELECT id
FROM unnest($1::text[]) AS wanted(id)
WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = wanted.id);

-- create_users --
-- Import with --create-users, and seed: add users rows (id only) that do not exist yet.
INSERT INTO users (id)
SELECT id FROM unnest($1::text[]) AS wanted(id)
ON CONFLICT DO NOTHING;

-- import_conversations --
-- Restore conversations as exported (ids and timestamps kept); one already present is left
-- as it is. Returns the ones inserted, whose messages import_messages then restores.
INSERT INTO conversations (user_id, id, title, metadata, message_count, created_at,
                           updated_at)
SELECT batch.user_id, batch.id, batch.title, batch.metadata::jsonb, batch.message_count,
       batch.created_at, batch.updated_at
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::integer[],
            $6::timestamptz[], $7::timestamptz[])
         AS batch(user_id, id, title, metadata, message_count, created_at, updated_at)
ON CONFLICT ON CONSTRAINT conversations_pkey DO NOTHING
RETURNING user_id, id;

-- import_messages --
-- Restore messages as exported (seq and created_at kept), in one statement per batch.
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, created_at)
SELECT batch.user_id, batch.conversation_id, batch.seq, batch.role, batch.content,
       batch.tool_calls::jsonb, batch.tool_call_id, batch.metadata::jsonb,
       batch.token_count, batch.idempotency_key, batch.created_at
FROM unnest($1::text[], $2::uuid[], $3::integer[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::integer[], $10::text[], $11::timestamptz[])
         AS batch(user_id, conversation_id, seq, role, content, tool_calls, tool_call_id,
                  metadata, token_count, idempotency_key, created_at);
