-- chatstore's SQL: one named statement per block, run as prepared statements.
--
-- A block starts with a header line `-- name --`; the statement is everything up to the next
-- header. Each name is the verb_noun of what it does, and mostly the name of the ChatStore
-- method that runs it. Code names them as attributes of chatstore.sql.SQL, declared in
-- _statements.py (after adding one, run `python chatstore/sql/generate.py`), so mypy
-- catches a misspelt name. Every statement that reads or writes one user's rows filters on
-- the owner (user_id, always $1); the others are schema and server introspection,
-- savepoints, per-call settings, an import's user checks and the operators' keyset scans.
-- Statements that read rows name their columns; the tests prepare every statement and
-- check its columns against the model it feeds. The reads that return many
-- messages select them in the model's field order and leave out the keys the caller passed
-- (user_id, and conversation_id within one conversation): see models.messages_from_rows.

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
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision;

-- get_conversation --
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision
FROM conversations
WHERE user_id = $1 AND id = $2;

-- list_conversations --
-- Newest activity first: a backward range scan of conversations_user_id_updated_at_idx.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision
FROM conversations
WHERE user_id = $1
ORDER BY updated_at DESC, id DESC
LIMIT $2;

-- list_conversations_before --
-- The page after a cursor (updated_at $2, id $3): keyset pagination on the same index.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision
FROM conversations
WHERE user_id = $1 AND (updated_at, id) < ($2, $3)
ORDER BY updated_at DESC, id DESC
LIMIT $4;

-- update_conversation --
-- $3/$5 say whether to set title ($4) and metadata ($6); absent fields keep their value.
-- $7: expected revision (NULL: any). Allowed while a turn holds the conversation.
UPDATE conversations
SET title = CASE WHEN $3::boolean THEN $4::text ELSE title END,
    metadata = CASE WHEN $5::boolean THEN COALESCE($6::text::jsonb, '{}'::jsonb)
                    ELSE metadata END,
    revision = revision + 1,
    updated_at = greatest(updated_at, now())
WHERE user_id = $1 AND id = $2 AND ($7::bigint IS NULL OR revision = $7::bigint)
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision;

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
-- then see every message committed before the lock was granted. Returns what a writer
-- checks: the counter, the revision, and the turn lease (lease_expired: it ran out).
SELECT message_count, revision, turn_token, turn_expires_at <= now() AS lease_expired
FROM conversations
WHERE user_id = $1 AND id = $2
FOR UPDATE;

-- get_write_state --
-- The same, without the lock: why a one-statement write matched no row.
SELECT message_count, revision, turn_token, turn_expires_at <= now() AS lease_expired
FROM conversations
WHERE user_id = $1 AND id = $2;

-- take_turn --
-- The turn $3 holds the conversation for $4 seconds, if no turn holds it (run first on its
-- own; when it matches no row, again after lock_conversation removed an expired lease).
-- Moves no revision.
UPDATE conversations
SET turn_token = $3, turn_expires_at = now() + $4::double precision * interval '1 second',
    turn_base_count = message_count
WHERE user_id = $1 AND id = $2 AND turn_token IS NULL
RETURNING revision;

-- renew_turn --
-- The holder extends its lease to $4 seconds from now (also after it ran out, as long as no
-- one took the conversation over).
UPDATE conversations
SET turn_expires_at = now() + $4::double precision * interval '1 second'
WHERE user_id = $1 AND id = $2 AND turn_token = $3
RETURNING revision;

-- end_turn --
-- The turn $3 ends, keeping its messages: the lease is released. Moves no revision.
UPDATE conversations
SET turn_token = NULL, turn_expires_at = NULL, turn_base_count = NULL
WHERE user_id = $1 AND id = $2 AND turn_token = $3
RETURNING revision;

-- abort_turn --
-- Run after lock_conversation (so this statement's snapshot sees every message of the
-- turn): the turn $3 ends and its messages (seq > turn_base_count) are removed; revision
-- +1 if there were any. The holder aborting, or a taker removing a turn whose lease ran out.
WITH turn AS (
    UPDATE conversations
    SET message_count = turn_base_count,
        revision = revision + (message_count > turn_base_count)::integer,
        -- updated_at moves only if messages go. now() stands alone, outside the CASE: Citus
        -- refuses now() inside CASE or COALESCE, and a stable operator on columns, in an
        -- UPDATE (it evaluates now() on the coordinator, once).
        updated_at = greatest(updated_at, least(now(), CASE WHEN message_count > turn_base_count
                                                            THEN timestamptz 'infinity'
                                                            ELSE timestamptz '-infinity' END)),
        turn_token = NULL, turn_expires_at = NULL, turn_base_count = NULL
    WHERE user_id = $1 AND id = $2 AND turn_token = $3
    RETURNING message_count AS base_count, revision
), removed AS (
    DELETE FROM messages
    USING turn
    WHERE messages.user_id = $1 AND messages.conversation_id = $2
      AND messages.seq > turn.base_count
    RETURNING 1
)
SELECT turn.revision, (SELECT count(*) FROM removed) AS removed
FROM turn;

-- append_messages --
-- k messages in one statement, one revision: the conversation's row lock orders concurrent
-- appends, the counter, revision and updated_at move with the insert, seqs are
-- message_count + 1 .. + k. $3..$10 are parallel arrays (JSON as text). The write happens
-- only if the revision is $11 (NULL: any) and the turn holding the conversation is $12
-- (NULL: none); a holder's append extends its lease to $13 seconds from now.
WITH counter AS (
    UPDATE conversations
    SET message_count = message_count + cardinality($3::text[]),
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_expires_at = CASE WHEN $12::uuid IS NULL THEN NULL
                               ELSE greatest(turn_expires_at,
                                             now() + $13::double precision
                                                     * interval '1 second') END
    WHERE user_id = $1 AND id = $2
      AND ($11::bigint IS NULL OR revision = $11::bigint)
      AND turn_token IS NOT DISTINCT FROM $12::uuid
    RETURNING message_count - cardinality($3::text[]) AS last_seq
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, item)
SELECT $1, $2, counter.last_seq + batch.ord::integer, batch.role, batch.content,
       batch.tool_calls::jsonb, batch.tool_call_id, batch.metadata::jsonb, batch.token_count,
       batch.idempotency_key, batch.item::jsonb
FROM counter,
     unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::integer[],
            $9::text[], $10::text[])
         WITH ORDINALITY AS batch(role, content, tool_calls, tool_call_id, metadata,
                                  token_count, idempotency_key, item, ord)
ORDER BY batch.ord
RETURNING conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
          token_count, idempotency_key, created_at, item;

-- append_message --
-- append_messages for one message, without unnest (the common case, a little cheaper):
-- $3..$10 are its fields, $11..$13 as in append_messages.
WITH counter AS (
    UPDATE conversations
    SET message_count = message_count + 1,
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_expires_at = CASE WHEN $12::uuid IS NULL THEN NULL
                               ELSE greatest(turn_expires_at,
                                             now() + $13::double precision
                                                     * interval '1 second') END
    WHERE user_id = $1 AND id = $2
      AND ($11::bigint IS NULL OR revision = $11::bigint)
      AND turn_token IS NOT DISTINCT FROM $12::uuid
    RETURNING message_count AS seq
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, item)
SELECT $1, $2, counter.seq, $3::text, $4::text, $5::text::jsonb, $6::text, $7::text::jsonb,
       $8::integer, $9::text, $10::text::jsonb
FROM counter
RETURNING conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
          token_count, idempotency_key, created_at, item;

-- find_messages_by_key --
-- Messages of a conversation already stored under any of the idempotency keys $3.
SELECT conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       token_count, idempotency_key, created_at, item
FROM messages
WHERE user_id = $1 AND conversation_id = $2
  AND idempotency_key IS NOT NULL AND idempotency_key = ANY ($3::text[]);

-- list_messages_newest --
-- The newest $3 messages, newest first (the caller reverses; context_messages by count then
-- applies the window rule): a backward range scan of messages_pkey.
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2
ORDER BY seq DESC
LIMIT $3;

-- list_messages_before --
-- $4 messages older than seq $3, newest first (the caller reverses).
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2 AND seq < $3
ORDER BY seq DESC
LIMIT $4;

-- list_messages_after --
-- $4 messages newer than seq $3, oldest first.
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4;

-- list_messages_all --
-- The whole history, oldest first, in one statement: a forward scan of messages_pkey.
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at
FROM messages
WHERE user_id = $1 AND conversation_id = $2
ORDER BY seq;

-- context_messages_by_tokens --
-- The newest messages that fit $4 tokens (and at most $3 messages), newest first (the
-- caller reverses them and applies the window rule). Walks back from the newest seq one
-- primary-key probe per message and stops at the budget, so the cost follows the window,
-- not the history. Carries the message's columns through the walk, never a row of
-- messages (Citus rewrites table names to shard names but not row types). A message
-- without token_count costs a quarter of its characters, rounded up, at least 1: of its
-- item's JSON when it has one, else of its content plus its tool_calls JSON.
WITH RECURSIVE walk AS (
    SELECT c.message_count + 1 AS seq, 0::bigint AS running, 0 AS taken,
           NULL::uuid AS conversation_id, NULL::text AS user_id, NULL::text AS role,
           NULL::text AS content, NULL::jsonb AS tool_calls, NULL::text AS tool_call_id,
           NULL::jsonb AS metadata, NULL::integer AS token_count,
           NULL::text AS idempotency_key, NULL::timestamptz AS created_at,
           NULL::jsonb AS item
    FROM conversations c
    WHERE c.user_id = $1 AND c.id = $2
  UNION ALL
    SELECT step.seq, walk.running + step.tokens, walk.taken + 1,
           step.conversation_id, step.user_id, step.role, step.content, step.tool_calls,
           step.tool_call_id, step.metadata, step.token_count, step.idempotency_key,
           step.created_at, step.item
    FROM walk
    CROSS JOIN LATERAL (
        -- LIMIT 1 keeps this a primary-key probe per step (the planner cannot turn it
        -- into a join that rescans the whole conversation on every iteration).
        SELECT m.conversation_id, m.user_id, m.seq, m.role, m.content, m.tool_calls,
               m.tool_call_id, m.metadata, m.token_count, m.idempotency_key, m.created_at,
               m.item,
               COALESCE(m.token_count,
                        GREATEST(1, ceil(CASE WHEN m.item IS NOT NULL
                                              THEN char_length(m.item::text)
                                              ELSE char_length(COALESCE(m.content, ''))
                                                   + char_length(COALESCE(m.tool_calls::text,
                                                                          ''))
                                         END / 4.0)::integer)) AS tokens
        FROM messages m
        WHERE m.user_id = $1 AND m.conversation_id = $2 AND m.seq = walk.seq - 1
        LIMIT 1
    ) AS step
    WHERE walk.taken < $3 AND walk.running + step.tokens <= $4::bigint
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at
FROM walk
WHERE taken > 0;

-- pop_message --
-- Run after lock_conversation in the same transaction: removes the newest message and moves
-- the counter back, so the next append continues without a gap; revision +1.
WITH counter AS (
    UPDATE conversations
    SET message_count = message_count - 1, revision = revision + 1,
        updated_at = greatest(updated_at, now())
    WHERE user_id = $1 AND id = $2 AND message_count > 0
    RETURNING message_count + 1 AS popped_seq
)
DELETE FROM messages
USING counter
WHERE messages.user_id = $1 AND messages.conversation_id = $2
  AND messages.seq = counter.popped_seq
RETURNING messages.conversation_id, messages.user_id, messages.seq, messages.role,
          messages.content, messages.tool_calls, messages.tool_call_id, messages.metadata,
          messages.token_count, messages.idempotency_key, messages.created_at,
          messages.item;

-- clear_messages --
-- Run after lock_conversation in the same transaction: removes every message, counter to 0,
-- revision +1.
WITH counter AS (
    UPDATE conversations
    SET message_count = 0, revision = revision + 1, updated_at = greatest(updated_at, now())
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
-- match first, newest first among equals. A query without lexemes (punctuation only) matches
-- nothing.
-- * The query is ANDed with the caller's owner lexeme (' ' || md5(user_id), stored in
--   messages.search_vector), so the scan of messages_search_vector_idx walks the caller's own
--   postings: its cost follows the caller's matches, not every user's.
-- * The tsquery is built once per call, in sub-selects (InitPlans), never per row: in the
--   generic plan a prepared statement switches to after five runs, a bare
--   websearch_to_tsquery($2) in ts_rank() was parsed again for every match (+1 us each).
-- * user_id = $1 is the boundary, checked on every match; COLLATE "C" (the same equality:
--   user ids compare byte for byte under any deterministic collation) keeps messages_pkey
--   from serving it, else the planner ANDs the GIN scan with a scan of all the user's keys,
--   a cost that follows the user's message count.
-- * Only the keys and the rank go through the sort (ts_rank reads the stored vector; the
--   owner lexeme leaves it unchanged: no length normalisation); the LIMIT best rows are then
--   read by primary key.
SELECT m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata, m.token_count,
       m.idempotency_key, m.item, m.conversation_id, m.seq, m.created_at
FROM (SELECT conversation_id, seq, created_at,
             ts_rank(search_vector,
                     (SELECT websearch_to_tsquery('simple'::regconfig, $2))) AS rank
      FROM messages
      WHERE user_id = $1 COLLATE "C"
        AND search_vector @@ (SELECT websearch_to_tsquery('simple'::regconfig, $2)
                                     && quote_literal(' ' || md5($1))::tsquery)
        AND numnode(websearch_to_tsquery('simple'::regconfig, $2)) > 0
        AND ($3::uuid IS NULL OR conversation_id = $3::uuid)
      ORDER BY rank DESC, created_at DESC, conversation_id, seq DESC
      LIMIT $4) AS best
JOIN messages AS m
  ON m.user_id = $1 AND m.conversation_id = best.conversation_id AND m.seq = best.seq
ORDER BY best.rank DESC, best.created_at DESC, best.conversation_id, best.seq DESC;

-- savepoint --
-- Atomicity inside a transaction the caller holds (store.using(conn)).
SAVEPOINT chatstore_atomic;

-- release_savepoint --
RELEASE SAVEPOINT chatstore_atomic;

-- rollback_to_savepoint --
ROLLBACK TO SAVEPOINT chatstore_atomic;

-- find_unknown_users --
-- Which of the user ids $1 have no row in users (import checks this before writing).
SELECT id
FROM unnest($1::text[]) AS wanted(id)
WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = wanted.id);

-- create_users --
-- Import with --create-users, seed and the demo: add users rows (id only) that do not
-- exist yet.
INSERT INTO users (id)
SELECT id FROM unnest($1::text[]) AS wanted(id)
ON CONFLICT DO NOTHING;

-- import_conversations --
-- Restore conversations as exported (ids and timestamps kept); one already present is left
-- as it is. Returns the ones inserted, whose messages the import then COPies in.
INSERT INTO conversations (user_id, id, title, metadata, message_count, created_at,
                           updated_at, revision)
SELECT batch.user_id, batch.id, batch.title, batch.metadata::jsonb, batch.message_count,
       batch.created_at, batch.updated_at, batch.revision
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::integer[],
            $6::timestamptz[], $7::timestamptz[], $8::bigint[])
         AS batch(user_id, id, title, metadata, message_count, created_at, updated_at,
                  revision)
ON CONFLICT ON CONSTRAINT conversations_pkey DO NOTHING
RETURNING user_id, id;

-- set_call_settings --
-- First statement of a call that needs per-transaction settings (is_local = true: they end
-- with the transaction, so a pooled connection never carries them to its next user): the
-- row-level-security user $1 (NULL: none, '' sees nothing) and statement_timeout $2 in
-- milliseconds (NULL: keep the session's).
SELECT set_config('chatstore.user_id', COALESCE($1::text, ''), true) AS user_id,
       set_config('statement_timeout',
                  COALESCE($2::text, current_setting('statement_timeout')), true)
           AS statement_timeout;
-- operator checks --------
-- The statements of `chatstore check` (chatstore/doctor.py), `status` and `rollback`
-- (chatstore/cli/). They read the whole database in keyset batches; none is on a hot path.

-- check_conversations --
-- `chatstore check`: the next $3 conversations after ($1, $2) in primary-key order, each with
-- its highest seq and number of messages (one messages_pkey range each) and whether its turn
-- lease ran out more than $4 seconds ago. A lateral join on the conversation's own keys,
-- grouped by them, and one LIMIT at the top: Citus pushes it down to every shard (an
-- aggregate over a LIMITed subquery it cannot push down).
SELECT c.user_id, c.id, c.message_count,
       COALESCE(m.highest_seq, 0) AS highest_seq, COALESCE(m.messages, 0) AS messages,
       COALESCE(c.turn_expires_at < now() - make_interval(secs => $4::float8), false)
           AS lease_stuck
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT max(seq) AS highest_seq, count(*) AS messages
    FROM messages
    WHERE messages.user_id = c.user_id AND messages.conversation_id = c.id
    GROUP BY messages.user_id, messages.conversation_id
) AS m ON true
WHERE (c.user_id, c.id) > ($1::text, $2::uuid)
ORDER BY c.user_id, c.id
LIMIT $3;

-- lock_conversation_for_repair --
-- `chatstore check --repair`: lock one conversation (appends wait) and read its counter and
-- lease; its messages are counted by the next statement, in a snapshot taken after the lock.
-- A stuck lease is then ended with abort_turn, exactly as its holder's abort would end it.
SELECT message_count, turn_base_count, turn_token,
       COALESCE(turn_expires_at < now() - make_interval(secs => $3::float8), false)
           AS lease_stuck
FROM conversations
WHERE user_id = $1 AND id = $2
FOR UPDATE;

-- conversation_message_stats --
-- Highest seq and number of messages of one conversation (messages_pkey).
SELECT COALESCE(max(seq), 0) AS highest_seq, count(*) AS messages
FROM messages
WHERE user_id = $1 AND conversation_id = $2;

-- shift_message_seqs --
-- Repair, closing seq gaps, step 1: move the conversation's seqs up by $3 (its highest seq)
-- so that renumber_message_seqs can write 1..n without colliding in the primary key.
UPDATE messages
SET seq = seq + $3
WHERE user_id = $1 AND conversation_id = $2;

-- renumber_message_seqs --
-- Repair, closing seq gaps, step 2: number the conversation's messages 1..n in seq order.
UPDATE messages
SET seq = ranked.n
FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS n
      FROM messages
      WHERE user_id = $1 AND conversation_id = $2) AS ranked
WHERE messages.user_id = $1 AND messages.conversation_id = $2
  AND messages.seq = ranked.seq;

-- recount_conversation --
-- Repair: message_count := the number of the conversation's messages, revision + 1; no row
-- (and no change) when it is right already.
WITH actual AS (
    SELECT count(*) AS n FROM messages WHERE user_id = $1 AND conversation_id = $2
)
UPDATE conversations
SET message_count = actual.n, revision = revision + 1
FROM actual
WHERE conversations.user_id = $1 AND conversations.id = $2
  AND conversations.message_count <> actual.n
RETURNING conversations.message_count;

-- count_chat_rows --
-- `chatstore status` and `rollback`: rows of the chat tables, and the messages that have no
-- chat form (role NULL; rolling back 0002 deletes them).
SELECT (SELECT count(*) FROM conversations) AS conversations,
       (SELECT count(*) FROM messages) AS messages,
       (SELECT count(*) FROM messages WHERE role IS NULL) AS messages_without_role;

-- relation_sizes --
-- `chatstore status`: each table of $1 (in the current schema) as heap (with its free-space
-- and visibility maps), TOAST (with its index) and indexes; the three add up to total_bytes
-- (pg_total_relation_size).
SELECT c.relname::text AS table_name,
       pg_table_size(c.oid) - COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0)
           AS table_bytes,
       COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       pg_total_relation_size(c.oid) AS total_bytes
FROM pg_class AS c
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($1::text[])
ORDER BY c.relname;

-- index_sizes --
-- `chatstore status`: each index of the tables $1 (in the current schema) and its size.
SELECT t.relname::text AS table_name, i.relname::text AS index_name,
       pg_relation_size(i.oid) AS bytes
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_class AS t ON t.oid = x.indrelid
WHERE t.relnamespace = current_schema()::regnamespace
  AND t.relname = ANY($1::text[])
ORDER BY t.relname, i.relname;

-- server_settings --
-- `chatstore status`: the server's version and the settings, as this session sees them
-- (with any ALTER ROLE/DATABASE SET), that chatstore cares about.
SELECT current_setting('server_version') AS server_version,
       current_setting('server_version_num')::integer AS server_version_num,
       current_setting('default_transaction_isolation') AS default_transaction_isolation,
       current_setting('default_transaction_read_only') AS default_transaction_read_only,
       current_setting('statement_timeout') AS statement_timeout,
       current_setting('idle_in_transaction_session_timeout')
           AS idle_in_transaction_session_timeout,
       current_setting('server_encoding') AS server_encoding;

-- analyze_chat_tables --
-- After `chatstore seed` loaded its rows: fresh planner statistics.
ANALYZE conversations, messages;

-- table_pages --
-- `chatstore demo`: how many pages the table $1 fills (a tiny table is read whole).
SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint AS pages;

-- prefer_index_plans --
-- `chatstore demo`: for the rest of this transaction, plan without sequential and bitmap
-- scans, to show the plan a hot read gets once its table is large.
SELECT set_config('enable_seqscan', 'off', true) AS enable_seqscan,
       set_config('enable_bitmapscan', 'off', true) AS enable_bitmapscan;
