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
  AND table_name IN ('users', 'conversations', 'messages', 'usage_entries', 'usage_daily',
                     'usage_conversation_daily');

-- user_exists --
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS found;

-- create_conversation --
-- $4: the ttl (an interval; NULL: never expires).
INSERT INTO conversations (user_id, title, metadata, expires_at)
VALUES ($1, $2, COALESCE($3::text::jsonb, '{}'::jsonb), now() + $4::interval)
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision,
          id AS root_id, parent_id, forked_at, id AS current_id, expires_at, held;

-- get_conversation --
-- A fork's current_id and expires_at are its root's (primary-key probes, only for a fork).
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision,
       COALESCE(root_id, id) AS root_id, parent_id, forked_at,
       CASE WHEN root_id IS NULL THEN COALESCE(current_id, id)
            ELSE (SELECT COALESCE(r.current_id, r.id) FROM conversations AS r
                  WHERE r.user_id = $1 AND r.id = conversations.root_id) END AS current_id,
       CASE WHEN root_id IS NULL THEN expires_at
            ELSE (SELECT rx.expires_at FROM conversations AS rx
                  WHERE rx.user_id = $1 AND rx.id = conversations.root_id) END AS expires_at,
       held
FROM conversations
WHERE user_id = $1 AND id = $2;

-- list_conversations --
-- One entry per tree, its root, by the latest activity anywhere in the tree (active_at,
-- the cursor's key): a backward range scan of conversations_user_id_active_at_idx.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision,
       id AS root_id, parent_id, forked_at, COALESCE(current_id, id) AS current_id,
       expires_at, held, greatest(updated_at, forks_updated_at) AS active_at
FROM conversations
WHERE user_id = $1 AND root_id IS NULL
ORDER BY greatest(updated_at, forks_updated_at) DESC, id DESC
LIMIT $2;

-- list_conversations_before --
-- The page after a cursor (active_at $2, id $3): keyset pagination on the same index.
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision,
       id AS root_id, parent_id, forked_at, COALESCE(current_id, id) AS current_id,
       expires_at, held, greatest(updated_at, forks_updated_at) AS active_at
FROM conversations
WHERE user_id = $1 AND root_id IS NULL
  AND (greatest(updated_at, forks_updated_at), id) < ($2, $3)
ORDER BY greatest(updated_at, forks_updated_at) DESC, id DESC
LIMIT $4;

-- list_all_conversations --
-- list_conversations(forks=True) and export: every conversation, forks included, by its own
-- updated_at: a backward range scan of conversations_user_id_updated_at_idx. (Export also
-- reads the path.)
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision,
       COALESCE(root_id, id) AS root_id, parent_id, forked_at,
       CASE WHEN root_id IS NULL THEN COALESCE(current_id, id)
            ELSE (SELECT COALESCE(r.current_id, r.id) FROM conversations AS r
                  WHERE r.user_id = $1 AND r.id = conversations.root_id) END AS current_id,
       CASE WHEN root_id IS NULL THEN expires_at
            ELSE (SELECT rx.expires_at FROM conversations AS rx
                  WHERE rx.user_id = $1 AND rx.id = conversations.root_id) END AS expires_at,
       held, updated_at AS active_at, path_owners, path_ends
FROM conversations
WHERE user_id = $1
ORDER BY updated_at DESC, id DESC
LIMIT $2;

-- list_all_conversations_before --
-- The page after a cursor (updated_at $2, id $3).
SELECT id, user_id, title, metadata, message_count, created_at, updated_at, revision,
       COALESCE(root_id, id) AS root_id, parent_id, forked_at,
       CASE WHEN root_id IS NULL THEN COALESCE(current_id, id)
            ELSE (SELECT COALESCE(r.current_id, r.id) FROM conversations AS r
                  WHERE r.user_id = $1 AND r.id = conversations.root_id) END AS current_id,
       CASE WHEN root_id IS NULL THEN expires_at
            ELSE (SELECT rx.expires_at FROM conversations AS rx
                  WHERE rx.user_id = $1 AND rx.id = conversations.root_id) END AS expires_at,
       held, updated_at AS active_at, path_owners, path_ends
FROM conversations
WHERE user_id = $1 AND (updated_at, id) < ($2, $3)
ORDER BY updated_at DESC, id DESC
LIMIT $4;

-- update_conversation --
-- $3/$5 say whether to set title ($4) and metadata ($6); absent fields keep their value.
-- $7: expected revision (NULL: any). Allowed while a turn holds the conversation. (A new
-- ttl is set_tree_expiry's, run first in the same transaction.)
UPDATE conversations
SET title = CASE WHEN $3::boolean THEN $4::text ELSE title END,
    metadata = CASE WHEN $5::boolean THEN COALESCE($6::text::jsonb, '{}'::jsonb)
                    ELSE metadata END,
    revision = revision + 1,
    updated_at = greatest(updated_at, now())
WHERE user_id = $1 AND id = $2 AND ($7::bigint IS NULL OR revision = $7::bigint)
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision,
          COALESCE(root_id, id) AS root_id, parent_id, forked_at,
          CASE WHEN root_id IS NULL THEN COALESCE(current_id, id)
              ELSE (SELECT COALESCE(r.current_id, r.id) FROM conversations AS r
                    WHERE r.user_id = $1 AND r.id = conversations.root_id) END AS current_id,
          CASE WHEN root_id IS NULL THEN expires_at
              ELSE (SELECT rx.expires_at FROM conversations AS rx
                    WHERE rx.user_id = $1 AND rx.id = conversations.root_id) END AS expires_at,
          held;

-- delete_tree --
-- Run after lock_tree on the root $2: the root and every fork of its tree; their messages
-- go with them (ON DELETE CASCADE). (Locked first so that a fork committed meanwhile is not
-- left without its root: this statement's snapshot is taken after the lock.) Nothing when a
-- conversation of the tree is held (set_hold takes the root's lock first: it cannot slip in).
DELETE FROM conversations
WHERE user_id = $1 AND (id = $2 OR root_id = $2)
  AND NOT EXISTS (SELECT 1 FROM conversations AS h
                  WHERE h.user_id = $1 AND (h.id = $2 OR h.root_id = $2) AND h.held)
RETURNING id;

-- lock_user_trees --
-- delete_user_data, step 1: the row locks of every root of the user, so that the next
-- statement's snapshot sees every hold and every fork (set_hold and fork take their tree's
-- root lock first).
SELECT count(*) AS roots
FROM (SELECT 1 FROM conversations WHERE user_id = $1 AND root_id IS NULL FOR UPDATE) AS locked;

-- delete_user_data --
-- Step 2: every conversation of the user and, by cascade, its messages, but the trees with a
-- held conversation (they stay whole: conversations_kept counts them); the users row stays.
-- The user's usage ledger and rollups go too, unless a hold keeps a tree: then the usage
-- stays whole with it (the rollups are per user and day, not per tree).
WITH kept AS (
    SELECT DISTINCT COALESCE(root_id, id) AS root_id
    FROM conversations WHERE user_id = $1 AND held
), deleted AS (
    DELETE FROM conversations
    WHERE user_id = $1 AND COALESCE(root_id, id) NOT IN (SELECT root_id FROM kept)
    RETURNING 1
), usage_deleted AS (
    DELETE FROM usage_entries WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM kept)
), daily_deleted AS (
    DELETE FROM usage_daily WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM kept)
), per_conversation_deleted AS (
    DELETE FROM usage_conversation_daily
    WHERE user_id = $1 AND NOT EXISTS (SELECT 1 FROM kept)
)
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_found,
       (SELECT count(*) FROM deleted) AS conversations_deleted,
       (SELECT count(*) FROM conversations
        WHERE user_id = $1 AND COALESCE(root_id, id) IN (SELECT root_id FROM kept))
           AS conversations_kept;

-- lock_conversation --
-- Takes the conversation's row lock for the rest of the transaction; later statements in it
-- then see every message committed before the lock was granted. Returns what a writer
-- checks: the counter, the revision, and the turn lease (lease_expired: it ran out), and
-- its tree: root_id, and in_tree (other conversations share the tree, so a pop or clear
-- must keep what they read); held (a legal hold: a pop or clear refuses). On a fork the root's row is locked first: every writer that
-- locks two rows of a tree locks the root first, so they cannot deadlock.
WITH tree AS (
    SELECT 1 FROM conversations
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    FOR UPDATE
)
SELECT message_count, revision, turn_token, turn_expires_at <= now() AS lease_expired,
       turn_base_count, COALESCE(root_id, id) AS root_id,
       root_id IS NOT NULL OR EXISTS (SELECT 1 FROM conversations AS f
                                      WHERE f.user_id = $1 AND f.root_id = $2) AS in_tree,
       held
FROM conversations
WHERE user_id = $1 AND id = $2 AND (SELECT count(*) FROM tree) >= 0
FOR UPDATE;

-- get_write_state --
-- The same, without the lock: why a one-statement write matched no row.
SELECT message_count, revision, turn_token, turn_expires_at <= now() AS lease_expired,
       turn_base_count, COALESCE(root_id, id) AS root_id,
       root_id IS NOT NULL OR EXISTS (SELECT 1 FROM conversations AS f
                                      WHERE f.user_id = $1 AND f.root_id = $2) AS in_tree,
       held
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

-- take_turn_with_message --
-- store.turn(..., messages=[one message]): take_turn and append_message in one statement
-- (one round trip, one commit): the turn $11 holds the conversation for $12 seconds if no
-- turn holds it, and its first message ($3..$10 as in append_message; never keyed) is
-- stored (its text once, as append_message stores it). turn_base_count is the count
-- before the message, so an abort removes it too. No
-- row when a turn holds the conversation (or it is missing): the caller takes the turn the
-- long way. The revision returned is the new one (the lease was taken at one less).
WITH tree AS (
    UPDATE conversations
    SET forks_updated_at = greatest(forks_updated_at, now())
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    RETURNING 1
), counter AS (
    UPDATE conversations
    SET message_count = message_count + 1,
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_token = $11::uuid,
        turn_expires_at = now() + $12::double precision * interval '1 second',
        turn_base_count = message_count
    WHERE user_id = $1 AND id = $2 AND turn_token IS NULL
      AND (SELECT count(*) FROM tree) >= 0
    RETURNING message_count AS seq, revision, $10::text::jsonb AS item
), stored AS (
    INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                          tool_call_id, metadata, token_count, idempotency_key, item)
    SELECT $1, $2, counter.seq, $3::text, NULLIF($4::text, chatstore_item_text(counter.item)),
           $5::text::jsonb, $6::text, $7::text::jsonb, $8::integer, $9::text, counter.item
    FROM counter
    RETURNING conversation_id, user_id, seq, role,
              COALESCE(content, chatstore_item_text(item)) AS content, tool_calls,
              tool_call_id, metadata, token_count, idempotency_key, created_at, item,
              summary_through
)
SELECT stored.conversation_id, stored.user_id, stored.seq, stored.role, stored.content,
       stored.tool_calls, stored.tool_call_id, stored.metadata, stored.token_count,
       stored.idempotency_key, stored.created_at, stored.item, stored.summary_through,
       counter.revision
FROM stored, counter;

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
-- (NULL: none); a holder's append extends its lease to $13 seconds from now, or with $15
-- true ends the turn (its last append: turn.append(end=True)). With $14, the first message
-- is a summary through seq $14 (store.compact; NULL: an ordinary append). On a
-- fork, the root's row is locked first (tree: see lock_conversation) and its
-- forks_updated_at moves; on a root, tree matches nothing. A message item's text is stored
-- once: content is NULL where it equals chatstore_item_text(item) (0006), and every read,
-- RETURNING included, gives COALESCE(content, chatstore_item_text(item)).
WITH tree AS (
    UPDATE conversations
    SET forks_updated_at = greatest(forks_updated_at, now())
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    RETURNING 1
), counter AS (
    UPDATE conversations
    SET message_count = message_count + cardinality($3::text[]),
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_expires_at = CASE WHEN $12::uuid IS NULL OR $15::boolean THEN NULL
                               ELSE greatest(turn_expires_at,
                                             now() + $13::double precision
                                                     * interval '1 second') END,
        turn_token = CASE WHEN $15::boolean THEN NULL ELSE turn_token END,
        turn_base_count = CASE WHEN $15::boolean THEN NULL ELSE turn_base_count END
    WHERE user_id = $1 AND id = $2
      AND ($11::bigint IS NULL OR revision = $11::bigint)
      AND turn_token IS NOT DISTINCT FROM $12::uuid
      AND (SELECT count(*) FROM tree) >= 0
    RETURNING message_count - cardinality($3::text[]) AS last_seq
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, item,
                      summary_through)
SELECT $1, $2, counter.last_seq + batch.ord::integer, batch.role,
       NULLIF(batch.content, chatstore_item_text(batch.item)),
       batch.tool_calls::jsonb, batch.tool_call_id, batch.metadata::jsonb, batch.token_count,
       batch.idempotency_key, batch.item,
       CASE WHEN batch.ord = 1 THEN $14::integer END
FROM counter,
     unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::integer[],
            $9::text[], $10::text[]::jsonb[])
         WITH ORDINALITY AS batch(role, content, tool_calls, tool_call_id, metadata,
                                  token_count, idempotency_key, item, ord)
ORDER BY batch.ord
RETURNING conversation_id, user_id, seq, role,
          COALESCE(content, chatstore_item_text(item)) AS content, tool_calls, tool_call_id,
          metadata, token_count, idempotency_key, created_at, item, summary_through;

-- append_message --
-- append_messages for one message, without unnest (the common case, a little cheaper):
-- $3..$10 are its fields, $11..$15 as in append_messages. content is stored NULL where it
-- equals the item's text (chatstore_item_text). The item is parsed once, in counter's
-- RETURNING: chatstore_item_text is inlined, and with $10::text::jsonb as its argument the
-- JSON was parsed again at each of its ten references (+40 us an item); a sub-select
-- takes the statement off Citus's router path, and on Citus returning $4 as content
-- instead of reading the item again fails after the switch to a generic plan.
WITH tree AS (
    UPDATE conversations
    SET forks_updated_at = greatest(forks_updated_at, now())
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    RETURNING 1
), counter AS (
    UPDATE conversations
    SET message_count = message_count + 1,
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_expires_at = CASE WHEN $12::uuid IS NULL OR $15::boolean THEN NULL
                               ELSE greatest(turn_expires_at,
                                             now() + $13::double precision
                                                     * interval '1 second') END,
        turn_token = CASE WHEN $15::boolean THEN NULL ELSE turn_token END,
        turn_base_count = CASE WHEN $15::boolean THEN NULL ELSE turn_base_count END
    WHERE user_id = $1 AND id = $2
      AND ($11::bigint IS NULL OR revision = $11::bigint)
      AND turn_token IS NOT DISTINCT FROM $12::uuid
      AND (SELECT count(*) FROM tree) >= 0
    RETURNING message_count AS seq, $10::text::jsonb AS item
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, item,
                      summary_through)
SELECT $1, $2, counter.seq, $3::text, NULLIF($4::text, chatstore_item_text(counter.item)),
       $5::text::jsonb, $6::text, $7::text::jsonb,
       $8::integer, $9::text, counter.item, $14::integer
FROM counter
RETURNING conversation_id, user_id, seq, role,
          COALESCE(content, chatstore_item_text(item)) AS content, tool_calls, tool_call_id,
          metadata, token_count, idempotency_key, created_at, item, summary_through;

-- find_messages_by_key --
-- Messages of a conversation's history (its path included) already stored under any of
-- the idempotency keys $3, as read through the conversation $2.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
)
SELECT $2::uuid AS conversation_id, m.user_id, m.seq, m.role,
       COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
       m.tool_call_id, m.metadata, m.token_count, m.idempotency_key, m.created_at, m.item,
       m.summary_through
FROM path
JOIN messages AS m
  ON m.user_id = $1 AND m.conversation_id = path.owner
 AND m.seq > path.after AND m.seq <= path.upto
WHERE m.idempotency_key IS NOT NULL AND m.idempotency_key = ANY ($3::text[]);

-- list_messages_newest --
-- The newest $3 messages, newest first (the caller reverses; context_messages by count then
-- applies the window rule). Every read of a conversation's messages walks its path: the
-- parts of its history stored under other conversations (a fork's), then its own rows
-- (a root has only those). Each part is a range scan of messages_pkey, and only the parts
-- that reach the page are read: the cost follows the page and the depth, not the history.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
      AND part.upto > c.message_count - $3
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
           m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
    ORDER BY m.seq DESC
    LIMIT $3
) AS page
ORDER BY seq DESC
LIMIT $3;

-- list_messages_before --
-- $4 messages older than seq $3, newest first (the caller reverses).
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
      AND part.after < $3 - 1 AND part.upto > least($3 - 1, c.message_count) - $4
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
           m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
      AND m.seq < $3
    ORDER BY m.seq DESC
    LIMIT $4
) AS page
ORDER BY seq DESC
LIMIT $4;

-- list_messages_after --
-- $4 messages newer than seq $3, oldest first.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
      AND part.upto > $3 AND part.after - $4 < $3
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
           m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
      AND m.seq > $3
    ORDER BY m.seq
    LIMIT $4
) AS page
ORDER BY seq
LIMIT $4;

-- list_messages_all --
-- The whole history, oldest first, in one statement: a forward scan of messages_pkey per
-- part of the path.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
           m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
    ORDER BY m.seq
) AS page
ORDER BY seq;

-- view_messages --
-- The model's view of a conversation, newest first and the summary (if any) last, at most $3
-- messages (NULL: all): the caller reverses them (context_messages by count then applies the
-- window rule; view_messages and the Agents SDK session take them as they are). The view is
-- the newest summary on the conversation's history (a message with summary_through, stored
-- by store.compact), then the messages after its summary_through in seq order (the summary
-- itself not repeated there); with no summary, the whole history. A window is the newest part
-- of the view, so the summary comes last and only when the whole tail fits.
-- * The cut: one backward probe of messages_summary_through_idx (summaries only) per part of
--   the path (see list_messages_newest), newest part first.
-- * The rows: read as list_messages_newest reads a page, each part a backward range scan of
--   messages_pkey that stops at the cut, only the parts that reach the page. The summary lies
--   after its cut, so the scans read it too (one row more than the page: it is sorted last).
--   The cost follows the window and the path's depth, not the history.
WITH path AS MATERIALIZED (
    SELECT part.owner, part.after, part.upto, c.message_count
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
), cut AS MATERIALIZED (
    -- the newest summary on the history: its seq and summary_through (0 and 0: none)
    SELECT COALESCE(max(newest.seq), 0) AS seq,
           COALESCE(max(newest.summary_through), 0) AS through
    FROM (
        SELECT s.seq, s.summary_through
        FROM path
        CROSS JOIN LATERAL (
            SELECT sm.seq, sm.summary_through
            FROM messages AS sm
            WHERE sm.user_id = $1 AND sm.conversation_id = path.owner
              AND sm.seq > path.after AND sm.seq <= path.upto
              AND sm.summary_through IS NOT NULL
            ORDER BY sm.seq DESC
            LIMIT 1
        ) AS s
        ORDER BY s.seq DESC
        LIMIT 1
    ) AS newest
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
           m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
      AND m.seq > (SELECT cut.through FROM cut)
    ORDER BY m.seq DESC
    LIMIT $3::bigint + 1
) AS page
WHERE path.upto > greatest((SELECT cut.through FROM cut),
                           path.message_count - 1 - COALESCE($3::bigint, path.message_count))
ORDER BY CASE WHEN page.seq = (SELECT cut.seq FROM cut) THEN 0 ELSE page.seq END DESC
LIMIT $3::bigint;

-- context_messages_by_tokens --
-- The newest messages of the model's view (see view_messages) that fit $4 tokens (and at
-- most $3 messages), newest first (the caller reverses them and applies the window rule).
-- Walks back from the newest seq one primary-key probe per message and stops at the budget,
-- so the cost follows the window, not the history. The walk goes over the view: it steps
-- over the newest summary's own seq, and after the message just past the summary's
-- summary_through it reads the summary itself, last (so the summary is taken only when the
-- whole tail fit), then stops. Carries the message's columns through the walk, never a row
-- of messages (Citus rewrites table names to shard names but not row types). A message
-- without token_count costs a quarter of its characters, rounded up, at least 1: of its
-- item's JSON when it has one, else of its content plus its tool_calls JSON. Each step finds
-- the part of the path (see list_messages_newest) that stores the seq it reads.
WITH RECURSIVE path AS MATERIALIZED (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS conv,
         unnest(COALESCE(conv.path_owners, '{}') || conv.id,
                ARRAY[0] || COALESCE(conv.path_ends, '{}'),
                COALESCE(conv.path_ends, '{}') || conv.message_count)
             AS part(owner, after, upto)
    WHERE conv.user_id = $1 AND conv.id = $2 AND part.upto > part.after
), cut AS MATERIALIZED (
    -- the newest summary on the history: its seq and summary_through (0 and 0: none), one
    -- backward probe of messages_summary_through_idx per part of the path
    SELECT COALESCE(max(newest.seq), 0) AS seq,
           COALESCE(max(newest.summary_through), 0) AS through
    FROM (
        SELECT s.seq, s.summary_through
        FROM path
        CROSS JOIN LATERAL (
            SELECT sm.seq, sm.summary_through
            FROM messages AS sm
            WHERE sm.user_id = $1 AND sm.conversation_id = path.owner
              AND sm.seq > path.after AND sm.seq <= path.upto
              AND sm.summary_through IS NOT NULL
            ORDER BY sm.seq DESC
            LIMIT 1
        ) AS s
        ORDER BY s.seq DESC
        LIMIT 1
    ) AS newest
), walk AS (
    -- next_seq: what the next step reads: the seq before (stepping over the summary's),
    -- until that is the cut; then the summary; after the summary, 0 (seqs start at 1)
    SELECT CASE WHEN c.message_count - (c.message_count = cut.seq)::integer > cut.through
                THEN c.message_count - (c.message_count = cut.seq)::integer
                ELSE cut.seq END AS next_seq,
           0::bigint AS running, 0 AS taken,
           NULL::text AS role, NULL::text AS content, NULL::jsonb AS tool_calls,
           NULL::text AS tool_call_id, NULL::jsonb AS metadata, NULL::integer AS token_count,
           NULL::text AS idempotency_key, NULL::jsonb AS item, NULL::integer AS seq,
           NULL::timestamptz AS created_at, NULL::integer AS summary_through
    FROM conversations c
    CROSS JOIN cut
    WHERE c.user_id = $1 AND c.id = $2
  UNION ALL
    SELECT CASE WHEN step.seq = (SELECT cut.seq FROM cut) THEN 0
                WHEN step.before > (SELECT cut.through FROM cut) THEN step.before
                ELSE (SELECT cut.seq FROM cut) END,
           walk.running + step.tokens, walk.taken + 1,
           step.role, step.content, step.tool_calls, step.tool_call_id, step.metadata,
           step.token_count, step.idempotency_key, step.item, step.seq, step.created_at,
           step.summary_through
    FROM walk
    CROSS JOIN LATERAL (
        -- LIMIT 1 keeps this a primary-key probe per step (the planner cannot turn it
        -- into a join that rescans the whole conversation on every iteration).
        SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
           m.tool_call_id, m.metadata, m.token_count,
               m.idempotency_key, m.item, m.seq, m.created_at, m.summary_through,
               m.seq - 1 - (m.seq - 1 = (SELECT cut.seq FROM cut))::integer AS before,
               COALESCE(m.token_count,
                        GREATEST(1, ceil(CASE WHEN m.item IS NOT NULL
                                              THEN char_length(m.item::text)
                                              ELSE char_length(COALESCE(m.content, ''))
                                                   + char_length(COALESCE(m.tool_calls::text,
                                                                          ''))
                                         END / 4.0)::integer)) AS tokens
        FROM messages m
        WHERE m.user_id = $1
          AND m.conversation_id = (SELECT path.owner FROM path
                                   WHERE path.after < walk.next_seq
                                     AND path.upto >= walk.next_seq)
          AND m.seq = walk.next_seq
          AND walk.next_seq > 0
        LIMIT 1
    ) AS step
    WHERE walk.taken < $3 AND walk.running + step.tokens <= $4::bigint
)
SELECT role, content, tool_calls, tool_call_id, metadata, token_count, idempotency_key, item,
       seq, created_at, summary_through
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
          COALESCE(messages.content, chatstore_item_text(messages.item)) AS content,
          messages.tool_calls, messages.tool_call_id, messages.metadata,
          messages.token_count, messages.idempotency_key, messages.created_at,
          messages.item, messages.summary_through;

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

-- newest_summary --
-- store.compact, under the row lock: the newest summary on the conversation's history (its
-- seq and summary_through; no row: none yet), one backward probe of
-- messages_summary_through_idx per part of the path (see view_messages).
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
)
SELECT s.seq, s.summary_through
FROM path
CROSS JOIN LATERAL (
    SELECT m.seq, m.summary_through
    FROM messages AS m
    WHERE m.user_id = $1 AND m.conversation_id = path.owner
      AND m.seq > path.after AND m.seq <= path.upto
      AND m.summary_through IS NOT NULL
    ORDER BY m.seq DESC
    LIMIT 1
) AS s
ORDER BY s.seq DESC
LIMIT 1;

-- tool_links --
-- store.compact, under the row lock: the messages of the conversation's history with seq in
-- ($3, $4] that call tools (call_ids: the ids of their tool_calls) or answer a call
-- (answers: tool_call_id), for chatstore.items.compaction_boundary. One range scan of
-- messages_pkey per part of the path that reaches the range.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $2 AND part.upto > part.after
      AND part.upto > $3 AND part.after < $4
)
SELECT m.seq,
       ARRAY(SELECT call ->> 'id' FROM jsonb_array_elements(m.tool_calls) AS call)
           AS call_ids,
       m.tool_call_id AS answers
FROM path
JOIN messages AS m
  ON m.user_id = $1 AND m.conversation_id = path.owner
 AND m.seq > path.after AND m.seq <= path.upto AND m.seq > $3 AND m.seq <= $4
WHERE m.tool_calls IS NOT NULL OR m.tool_call_id IS NOT NULL
ORDER BY m.seq;

-- search_messages --
-- Full-text search over one user's messages, optionally within one conversation ($3): the
-- newest max($4, 100) matches, best match first among them, newest first among equals. A
-- query without lexemes (punctuation only) matches nothing.
-- * The query is ANDed with the caller's owner lexeme (' ' || md5(user_id), in the entry
--   messages_search_idx indexes), so the GIN scan walks the caller's own postings: its cost
--   follows the caller's matches, not every user's. The condition repeats the index's
--   expression exactly (else the planner cannot use it). Its text is content, else the
--   item's one part's text or content string: on the rows kept (a chat form, and no tool
--   call without content: role and tool_calls, checked on the heap row) that is the message's
--   text, COALESCE(content, chatstore_item_text(item)); a reasoning item's words never match.
-- * No stored vector (it cost about 380 B a message): ranking re-tokenises a match's text
--   (about 15-25 us), so only the newest max($4, 100) matches are ranked; finding them reads
--   every match's keys and created_at from the heap (a few us each), never its words.
-- * The tsquery is built once per call, in sub-selects (InitPlans), never per row: in the
--   generic plan a prepared statement switches to after five runs, a bare
--   websearch_to_tsquery($2) in ts_rank() was parsed again for every match (+1 us each).
-- * user_id = $1 is the boundary, checked on every match; COLLATE "C" (the same equality:
--   user ids compare byte for byte under any deterministic collation) keeps messages_pkey
--   from serving it, else the planner ANDs the GIN scan with a scan of all the user's keys,
--   a cost that follows the user's message count.
-- * Only the keys and the rank go through the sort; the LIMIT best rows are then read by
--   primary key.
-- * Within one conversation ($3), a match must lie on its path (a fork's history includes
--   rows stored under the conversations it was forked from) and is reported as $3's.
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS c,
         unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE c.user_id = $1 AND c.id = $3::uuid AND part.upto > part.after
)
SELECT m.role, COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
       m.tool_call_id, m.metadata, m.token_count, m.idempotency_key, m.item,
       COALESCE($3::uuid, m.conversation_id) AS conversation_id, m.seq, m.created_at,
       m.summary_through
FROM (SELECT conversation_id, seq, created_at,
             ts_rank(to_tsvector('simple'::regconfig,
                                 COALESCE(content, chatstore_item_text(item), '')),
                     (SELECT websearch_to_tsquery('simple'::regconfig, $2))) AS rank
      FROM (SELECT conversation_id, seq, created_at, content, item
            FROM messages
            WHERE user_id = $1 COLLATE "C"
              AND (to_tsvector('simple'::regconfig,
                               COALESCE(content, item #>> '{content,0,text}',
                                        item ->> 'content', ''))
                   || array_to_tsvector(ARRAY[' ' || md5(user_id)]))
                  @@ (SELECT websearch_to_tsquery('simple'::regconfig, $2)
                             && quote_literal(' ' || md5($1))::tsquery)
              AND role IS NOT NULL AND (content IS NOT NULL OR tool_calls IS NULL)
              AND numnode(websearch_to_tsquery('simple'::regconfig, $2)) > 0
              AND ($3::uuid IS NULL
                   OR EXISTS (SELECT 1 FROM path
                              WHERE path.owner = messages.conversation_id
                                AND messages.seq > path.after
                                AND messages.seq <= path.upto))
            ORDER BY created_at DESC, conversation_id, seq DESC
            LIMIT GREATEST($4::integer, 100)) AS newest
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

-- export_messages --
-- Export: $4 of the rows stored under the conversation $2 (a fork's own, not its path's)
-- after seq $3, oldest first.
SELECT role, COALESCE(content, chatstore_item_text(item)) AS content, tool_calls,
       tool_call_id, metadata, token_count, idempotency_key, item, seq, created_at,
       summary_through
FROM messages
WHERE user_id = $1 AND conversation_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4;

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
-- Restore conversations as exported (ids, timestamps and trees kept: a root's root_id and
-- current_id equal to its id are stored as NULL, a fork's current_id and expires_at, its
-- root's, not at all; paths arrive as array literals); one
-- already present is left as it is. Returns the ones inserted, whose stored messages the
-- import then COPies in.
INSERT INTO conversations (user_id, id, title, metadata, message_count, created_at,
                           updated_at, revision, root_id, parent_id, forked_at, current_id,
                           path_owners, path_ends, expires_at, held)
SELECT batch.user_id, batch.id, batch.title, batch.metadata::jsonb, batch.message_count,
       batch.created_at, batch.updated_at, batch.revision, NULLIF(batch.root_id, batch.id),
       batch.parent_id, batch.forked_at,
       CASE WHEN batch.root_id = batch.id THEN NULLIF(batch.current_id, batch.id) END,
       batch.path_owners::uuid[], batch.path_ends::integer[],
       CASE WHEN batch.root_id = batch.id THEN batch.expires_at END, batch.held
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::integer[],
            $6::timestamptz[], $7::timestamptz[], $8::bigint[], $9::uuid[], $10::uuid[],
            $11::integer[], $12::uuid[], $13::text[], $14::text[], $15::timestamptz[],
            $16::boolean[])
         AS batch(user_id, id, title, metadata, message_count, created_at, updated_at,
                  revision, root_id, parent_id, forked_at, current_id, path_owners,
                  path_ends, expires_at, held)
ON CONFLICT ON CONSTRAINT conversations_pkey DO NOTHING
RETURNING user_id, id;

-- restore_tree_activity --
-- After an import: each imported root $2 (of users $1) gets its forks' latest activity.
UPDATE conversations AS r
SET forks_updated_at = f.latest
FROM (SELECT fork.user_id, fork.root_id, max(fork.updated_at) AS latest
      FROM conversations AS fork
      JOIN unnest($1::text[], $2::uuid[]) AS batch(user_id, id)
        ON fork.user_id = batch.user_id AND fork.root_id = batch.id
      GROUP BY fork.user_id, fork.root_id) AS f
WHERE r.user_id = f.user_id AND r.id = f.root_id;

-- export_usage --
-- An export's usage entries of user $1 (deleted conversations' included), oldest first:
-- the first $2 in primary-key order (created_at, id). export_usage_after pages on.
SELECT id, user_id, conversation_id, idempotency_key AS key, model, input_tokens,
       output_tokens, cached_input_tokens, reasoning_tokens, requests, cost_micros, metadata,
       created_at
FROM usage_entries
WHERE user_id = $1
ORDER BY created_at, id
LIMIT $2;

-- export_usage_after --
-- The next $4 entries of user $1 after (created_at $2, id $3): keyset pagination on the
-- primary key.
SELECT id, user_id, conversation_id, idempotency_key AS key, model, input_tokens,
       output_tokens, cached_input_tokens, reasoning_tokens, requests, cost_micros, metadata,
       created_at
FROM usage_entries
WHERE user_id = $1 AND (created_at, id) > ($2::timestamptz, $3::uuid)
ORDER BY created_at, id
LIMIT $4;

-- import_usage --
-- Restore usage entries as exported (arrays: $1 user_id, $2 id, $3 created_at,
-- $4 conversation_id, $5 idempotency key, $6 model, $7..$11 input, output, cached input,
-- reasoning tokens and requests, $12 cost in micros, $13 metadata as JSON text), and move
-- both rollups by the entries inserted, in the same statement, as record_usage does (sums
-- per rollup key first: an upsert may touch a row once per statement). An entry already
-- stored (its primary key, or its user's idempotency key) is skipped and moves nothing, so
-- importing a file twice counts it once. Returns how many were inserted.
WITH entry AS (
    INSERT INTO usage_entries (user_id, id, created_at, conversation_id, idempotency_key,
                               model, input_tokens, output_tokens, cached_input_tokens,
                               reasoning_tokens, requests, cost_micros, metadata)
    SELECT batch.user_id, batch.id, batch.created_at, batch.conversation_id, batch.key,
           batch.model, batch.input_tokens, batch.output_tokens, batch.cached_input_tokens,
           batch.reasoning_tokens, batch.requests, batch.cost_micros, batch.metadata::jsonb
    FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[],
                $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                $11::bigint[], $12::bigint[], $13::text[])
             AS batch(user_id, id, created_at, conversation_id, key, model, input_tokens,
                      output_tokens, cached_input_tokens, reasoning_tokens, requests,
                      cost_micros, metadata)
    ON CONFLICT DO NOTHING
    RETURNING user_id, conversation_id, created_at, model, input_tokens, output_tokens,
              cached_input_tokens, reasoning_tokens, requests, cost_micros
), daily AS (
    INSERT INTO usage_daily AS d (user_id, day, model, input_tokens, output_tokens,
                                  cached_input_tokens, reasoning_tokens, requests,
                                  cost_micros, entries)
    SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model, sum(e.input_tokens),
           sum(e.output_tokens), sum(e.cached_input_tokens), sum(e.reasoning_tokens),
           sum(e.requests), sum(COALESCE(e.cost_micros, 0)), count(*)
    FROM entry AS e
    GROUP BY e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model
    ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + excluded.entries
), per_conversation AS (
    INSERT INTO usage_conversation_daily AS d (user_id, conversation_id, day, model,
                                               input_tokens, output_tokens,
                                               cached_input_tokens, reasoning_tokens,
                                               requests, cost_micros, entries)
    SELECT e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model,
           sum(e.input_tokens), sum(e.output_tokens), sum(e.cached_input_tokens),
           sum(e.reasoning_tokens), sum(e.requests), sum(COALESCE(e.cost_micros, 0)),
           count(*)
    FROM entry AS e
    GROUP BY e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model
    ON CONFLICT ON CONSTRAINT usage_conversation_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + excluded.entries
)
SELECT count(*) AS imported FROM entry;

-- set_call_settings --
-- First statement of a call that needs per-transaction settings (is_local = true: they end
-- with the transaction, so a pooled connection never carries them to its next user): the
-- row-level-security user $1 (NULL: none, '' sees nothing) and statement_timeout $2 in
-- milliseconds (NULL: keep the session's).
SELECT set_config('chatstore.user_id', COALESCE($1::text, ''), true) AS user_id,
       set_config('statement_timeout',
                  COALESCE($2::text, current_setting('statement_timeout')), true)
           AS statement_timeout;
-- trees --------
-- Forks, their paths, and how a pop, clear or delete hands rows that other conversations of
-- the tree still read over to one of them (chatstore/_trees.py plans it; docs/api.md,
-- "Conversation trees", says it in words). Every statement that changes a tree runs after
-- lock_tree or lock_conversation, which lock the root's row first.

-- lock_tree --
-- The root $2's row lock (every change to a tree's shape takes it first) and its current
-- version. No row: $2 is not a root of this user's.
SELECT COALESCE(current_id, id) AS current_id
FROM conversations
WHERE user_id = $1 AND id = $2 AND root_id IS NULL
FOR UPDATE;

-- tree_members --
-- Every conversation of the tree whose root is $2: its place in the tree and its path.
SELECT id, parent_id, forked_at, path_owners, path_ends, message_count, created_at,
       updated_at, turn_token, turn_base_count, held
FROM conversations
WHERE user_id = $1 AND (id = $2 OR root_id = $2);

-- lock_fork_source --
-- fork(new_chat=True), step 1 (and why fork_conversation wrote nothing):
-- lock_conversation's locks (the root's row, then the source $2's) and what a copy takes:
-- the source's counter, lease, title, metadata and path.
WITH tree AS (
    SELECT 1 FROM conversations
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    FOR UPDATE
)
SELECT message_count, turn_token, turn_base_count, COALESCE(root_id, id) AS root_id, title,
       metadata, path_owners, path_ends
FROM conversations
WHERE user_id = $1 AND id = $2 AND (SELECT count(*) FROM tree) >= 0
FOR UPDATE;

-- fork_conversation --
-- A fork of $2 at seq $3, in one statement: the root's row lock (on a fork source, first),
-- the source's row lock, the fork row (one row, whatever the history's length: its path is
-- the source's history cut at $3), and, on the root, current_id ($6: make it current) and
-- the tree's latest activity (the fork expires with its tree: the root's expires_at).
-- Title $4 and metadata $5 default to the source's; with $7,
-- the turn $7 holds the fork for $8 seconds from the start. No row when $2 is missing, $3
-- is past its message_count, or a turn holds it and $3 is past the turn's start (the caller
-- then says which).
WITH tree AS (
    SELECT 1 FROM conversations
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    FOR UPDATE
), source AS (
    SELECT id, COALESCE(root_id, id) AS root_id, title, metadata, message_count, turn_token,
           turn_base_count, path_owners, path_ends
    FROM conversations
    WHERE user_id = $1 AND id = $2 AND (SELECT count(*) FROM tree) >= 0
    FOR UPDATE
), fork AS (
    INSERT INTO conversations (user_id, title, metadata, message_count, root_id, parent_id,
                               forked_at, path_owners, path_ends, turn_token,
                               turn_expires_at, turn_base_count)
    SELECT $1, COALESCE($4::text, source.title), COALESCE($5::text::jsonb, source.metadata),
           $3, source.root_id, source.id, $3, cut.owners, cut.ends, $7::uuid,
           now() + $8::double precision * interval '1 second',
           CASE WHEN $7::uuid IS NULL THEN NULL ELSE $3 END
    FROM source
    CROSS JOIN LATERAL (
        SELECT array_agg(part.owner ORDER BY part.upto) AS owners,
               array_agg(least(part.upto, $3) ORDER BY part.upto) AS ends
        FROM unnest(COALESCE(source.path_owners, '{}') || source.id,
                    ARRAY[0] || COALESCE(source.path_ends, '{}'),
                    COALESCE(source.path_ends, '{}') || source.message_count)
            AS part(owner, after, upto)
        WHERE part.upto > part.after AND part.after < $3
    ) AS cut
    WHERE $3 <= source.message_count
      AND (source.turn_token IS NULL OR $3 <= source.turn_base_count)
    RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision,
              root_id, parent_id, forked_at, held
), made AS (
    UPDATE conversations AS r
    SET current_id = CASE WHEN $6::boolean THEN fork.id ELSE r.current_id END,
        forks_updated_at = greatest(r.forks_updated_at, now())
    FROM fork
    WHERE r.user_id = $1 AND r.id = fork.root_id
    RETURNING COALESCE(r.current_id, r.id) AS current_id, r.expires_at
)
SELECT fork.id, fork.user_id, fork.title, fork.metadata, fork.message_count,
       fork.created_at, fork.updated_at, fork.revision, fork.root_id, fork.parent_id,
       fork.forked_at, made.current_id, made.expires_at, fork.held
FROM fork, made;

-- copy_conversation --
-- fork(new_chat=True), step 2: a new root holding $4 messages (copy_history writes them),
-- titled $2 with metadata $3, expiring $5 from now (NULL: never).
INSERT INTO conversations (user_id, title, metadata, message_count, expires_at)
VALUES ($1, $2, COALESCE($3::text::jsonb, '{}'::jsonb), $4, now() + $5::interval)
RETURNING id;

-- copy_history --
-- fork(new_chat=True), step 3: copies of the messages 1..$4 of $2's history (its path
-- included) under the new conversation $3, with their seqs, keys and times. No CTE, and
-- the rows joined on the owner's column: Citus pushes the whole INSERT ... SELECT down to
-- the user's shard.
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls, tool_call_id,
                      metadata, token_count, idempotency_key, created_at, item, summary_through)
SELECT m.user_id, $3, m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.metadata,
       m.token_count, m.idempotency_key, m.created_at, m.item, m.summary_through
FROM conversations AS c
CROSS JOIN LATERAL unnest(COALESCE(c.path_owners, '{}') || c.id,
                          ARRAY[0] || COALESCE(c.path_ends, '{}'),
                          COALESCE(c.path_ends, '{}') || c.message_count)
    AS part(owner, after, upto)
JOIN messages AS m
  ON m.user_id = c.user_id AND m.conversation_id = part.owner
 AND m.seq > part.after AND m.seq <= part.upto
WHERE c.user_id = $1 AND c.id = $2 AND m.seq <= $4;

-- set_current --
-- Run after lock_tree: the root $2's current version becomes $3 (NULL: the root itself).
-- Moves no revision and no activity time.
UPDATE conversations
SET current_id = NULLIF($3::uuid, $2)
WHERE user_id = $1 AND id = $2 AND root_id IS NULL
RETURNING id;

-- touch_tree --
-- Activity in a fork of the root $2 (a fork made, a pop, a clear): the tree's place in
-- list_conversations moves up.
UPDATE conversations
SET forks_updated_at = greatest(forks_updated_at, now())
WHERE user_id = $1 AND id = $2 AND root_id IS NULL
RETURNING id;

-- move_messages --
-- Copy-on-write by moving: the rows of $2 with seq in ($4, $5], which the conversation $3
-- reads and $2 is about to lose, are stored under $3 from now on (set_path then points
-- every reader at $3).
UPDATE messages
SET conversation_id = $3
WHERE user_id = $1 AND conversation_id = $2 AND seq > $4 AND seq <= $5;

-- set_path --
-- A conversation $2's new path (owners $3, ends $4; NULL: none), after a hand-over.
UPDATE conversations
SET path_owners = $3::uuid[], path_ends = $4::integer[]
WHERE user_id = $1 AND id = $2;

-- truncate_history --
-- A pop or clear on a conversation of a tree, after the hand-over: its history keeps seqs
-- 1..$3, its own rows after $3 are deleted; counter to $3, revision +1.
WITH counter AS (
    UPDATE conversations
    SET message_count = $3, revision = revision + 1, updated_at = greatest(updated_at, now())
    WHERE user_id = $1 AND id = $2
    RETURNING id
), removed AS (
    DELETE FROM messages
    USING counter
    WHERE messages.user_id = $1 AND messages.conversation_id = counter.id
      AND messages.seq > $3
    RETURNING 1
)
SELECT count(*) AS removed FROM removed;

-- delete_conversations --
-- Run after lock_tree and the hand-over: the conversations $2 (a fork and the forks made
-- from it) and the rows still stored under them.
DELETE FROM conversations
WHERE user_id = $1 AND id = ANY ($2::uuid[])
RETURNING id;

-- alternatives --
-- The versions of the message at seq $3 of $2: every distinct stored row that stands at $3
-- in a conversation of the tree whose history 1..$3-1 is the same stored rows as $2's (its
-- path cut at $3-1 equals $2's), oldest first. For each: a conversation to open that holds
-- it (the tree's current version if it does, else the most recently active) and whether it
-- is $2's own. One statement: the tree's members and their paths are a few rows.
WITH me AS (
    SELECT COALESCE(root_id, id) AS root_id FROM conversations WHERE user_id = $1 AND id = $2
), tree AS (
    SELECT t.id, t.updated_at, t.message_count,
           COALESCE(t.path_owners, '{}') || t.id AS owners,
           ARRAY[0] || COALESCE(t.path_ends, '{}') AS afters,
           COALESCE(t.path_ends, '{}') || t.message_count AS uptos
    FROM me
    JOIN conversations AS t
      ON t.user_id = $1 AND (t.id = me.root_id OR t.root_id = me.root_id)
    WHERE t.message_count >= $3
), cut AS (
    -- each member's history 1..$3-1 as text ("owner:end,..."), and the owner of seq $3
    SELECT tree.id, tree.updated_at,
           (SELECT string_agg(part.owner || ':' || least(part.upto, $3 - 1), ','
                              ORDER BY part.upto)
            FROM unnest(tree.owners, tree.afters, tree.uptos) AS part(owner, after, upto)
            WHERE part.upto > part.after AND part.after < $3 - 1) AS prefix,
           (SELECT part.owner
            FROM unnest(tree.owners, tree.afters, tree.uptos) AS part(owner, after, upto)
            WHERE part.after < $3 AND part.upto >= $3) AS owner
    FROM tree
), same AS (
    SELECT cut.id, cut.updated_at, cut.owner
    FROM cut
    WHERE cut.prefix IS NOT DISTINCT FROM (SELECT mine.prefix FROM cut AS mine
                                          WHERE mine.id = $2)
), versions AS (
    SELECT DISTINCT ON (same.owner)
           same.owner, same.id AS open_id,
           same.owner = (SELECT mine.owner FROM cut AS mine WHERE mine.id = $2) AS current
    FROM same
    ORDER BY same.owner,
             same.id = (SELECT COALESCE(r.current_id, r.id) FROM me
                        JOIN conversations AS r ON r.user_id = $1 AND r.id = me.root_id)
                 DESC,
             same.updated_at DESC, same.id
)
SELECT versions.open_id AS conversation_id, versions.current, m.user_id, m.seq, m.role,
       COALESCE(m.content, chatstore_item_text(m.item)) AS content, m.tool_calls,
       m.tool_call_id, m.metadata, m.token_count,
       m.idempotency_key, m.created_at, m.item, m.summary_through
FROM versions
JOIN messages AS m ON m.user_id = $1 AND m.conversation_id = versions.owner AND m.seq = $3
ORDER BY m.created_at, m.conversation_id;

-- usage --------
-- The usage ledger (usage_entries) and its two rollups, usage_daily (per user, UTC day and
-- model) and usage_conversation_daily (the same per conversation), which the statement
-- recording an entry moves (docs/api.md, "Usage and quotas"). Totals read the rollups for
-- whole UTC days and the ledger only for the partial days at either end of a range.

-- record_usage --
-- One entry for the conversation $2 (which must exist: no row otherwise), under the
-- idempotency key $3 (NULL: none; a key already stored: no row, nothing written), and the
-- two rollups moved by it, in one statement. $4 model, $5..$9 input, output, cached input,
-- reasoning tokens and requests, $10 cost in micros (NULL: unknown), $11 metadata (JSON
-- text). The rollups are upserted in one order (usage_daily, then the conversation's), so
-- two recordings wait for each other, never deadlock.
WITH entry AS (
    INSERT INTO usage_entries (user_id, conversation_id, idempotency_key, model, input_tokens,
                               output_tokens, cached_input_tokens, reasoning_tokens, requests,
                               cost_micros, metadata)
    SELECT c.user_id, c.id, $3::text, $4::text, $5::bigint, $6::bigint, $7::bigint,
           $8::bigint, $9::bigint, $10::bigint, COALESCE($11::text::jsonb, '{}'::jsonb)
    FROM conversations AS c
    WHERE c.user_id = $1 AND c.id = $2
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING user_id, conversation_id, idempotency_key, model, input_tokens, output_tokens,
              cached_input_tokens, reasoning_tokens, requests, cost_micros, metadata,
              created_at
), daily AS (
    INSERT INTO usage_daily AS d (user_id, day, model, input_tokens, output_tokens,
                                  cached_input_tokens, reasoning_tokens, requests,
                                  cost_micros, entries)
    SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens,
           e.output_tokens, e.cached_input_tokens, e.reasoning_tokens, e.requests,
           COALESCE(e.cost_micros, 0), 1
    FROM entry AS e
    ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + 1
), per_conversation AS (
    INSERT INTO usage_conversation_daily AS d (user_id, conversation_id, day, model,
                                               input_tokens, output_tokens,
                                               cached_input_tokens, reasoning_tokens,
                                               requests, cost_micros, entries)
    SELECT e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model,
           e.input_tokens, e.output_tokens, e.cached_input_tokens, e.reasoning_tokens,
           e.requests, COALESCE(e.cost_micros, 0), 1
    FROM entry AS e
    ON CONFLICT ON CONSTRAINT usage_conversation_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + 1
)
SELECT user_id, conversation_id, idempotency_key AS key, model, input_tokens, output_tokens,
       cached_input_tokens, reasoning_tokens, requests, cost_micros, metadata, created_at
FROM entry;

-- append_message_with_usage --
-- turn.append(message, usage=...): append_message ($1..$13 as there; never a summary) and
-- a usage entry of the conversation ($14 model, $15..$19 input, output, cached input,
-- reasoning tokens and requests, $20 cost in micros, $21 metadata; $22 as append_messages'
-- $15), with its rollups, in one statement and so one commit: both are written, or (the
-- append matched no row) neither. Without an idempotency key (a keyed entry goes through record_usage in the
-- append's transaction).
WITH tree AS (
    UPDATE conversations
    SET forks_updated_at = greatest(forks_updated_at, now())
    WHERE user_id = $1
      AND id = (SELECT root_id FROM conversations WHERE user_id = $1 AND id = $2)
    RETURNING 1
), counter AS (
    UPDATE conversations
    SET message_count = message_count + 1,
        revision = revision + 1,
        updated_at = greatest(updated_at, now()),
        turn_expires_at = CASE WHEN $12::uuid IS NULL OR $22::boolean THEN NULL
                               ELSE greatest(turn_expires_at,
                                             now() + $13::double precision
                                                     * interval '1 second') END,
        turn_token = CASE WHEN $22::boolean THEN NULL ELSE turn_token END,
        turn_base_count = CASE WHEN $22::boolean THEN NULL ELSE turn_base_count END
    WHERE user_id = $1 AND id = $2
      AND ($11::bigint IS NULL OR revision = $11::bigint)
      AND turn_token IS NOT DISTINCT FROM $12::uuid
      AND (SELECT count(*) FROM tree) >= 0
    RETURNING message_count AS seq, $10::text::jsonb AS item
), entry AS (
    INSERT INTO usage_entries (user_id, conversation_id, model, input_tokens, output_tokens,
                               cached_input_tokens, reasoning_tokens, requests, cost_micros,
                               metadata)
    SELECT $1, $2, $14::text, $15::bigint, $16::bigint, $17::bigint, $18::bigint,
           $19::bigint, $20::bigint, COALESCE($21::text::jsonb, '{}'::jsonb)
    FROM counter
    RETURNING user_id, conversation_id, model, input_tokens, output_tokens,
              cached_input_tokens, reasoning_tokens, requests, cost_micros, created_at
), daily AS (
    INSERT INTO usage_daily AS d (user_id, day, model, input_tokens, output_tokens,
                                  cached_input_tokens, reasoning_tokens, requests,
                                  cost_micros, entries)
    SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens,
           e.output_tokens, e.cached_input_tokens, e.reasoning_tokens, e.requests,
           COALESCE(e.cost_micros, 0), 1
    FROM entry AS e
    ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + 1
), per_conversation AS (
    INSERT INTO usage_conversation_daily AS d (user_id, conversation_id, day, model,
                                               input_tokens, output_tokens,
                                               cached_input_tokens, reasoning_tokens,
                                               requests, cost_micros, entries)
    SELECT e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model,
           e.input_tokens, e.output_tokens, e.cached_input_tokens, e.reasoning_tokens,
           e.requests, COALESCE(e.cost_micros, 0), 1
    FROM entry AS e
    ON CONFLICT ON CONSTRAINT usage_conversation_daily_pkey DO UPDATE
    SET input_tokens = d.input_tokens + excluded.input_tokens,
        output_tokens = d.output_tokens + excluded.output_tokens,
        cached_input_tokens = d.cached_input_tokens + excluded.cached_input_tokens,
        reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
        requests = d.requests + excluded.requests,
        cost_micros = d.cost_micros + excluded.cost_micros,
        entries = d.entries + 1
)
INSERT INTO messages (user_id, conversation_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, token_count, idempotency_key, item)
SELECT $1, $2, counter.seq, $3::text, NULLIF($4::text, chatstore_item_text(counter.item)),
       $5::text::jsonb, $6::text, $7::text::jsonb,
       $8::integer, $9::text, counter.item
FROM counter
RETURNING conversation_id, user_id, seq, role,
          COALESCE(content, chatstore_item_text(item)) AS content, tool_calls, tool_call_id,
          metadata, token_count, idempotency_key, created_at, item, summary_through;

-- find_usage_by_key --
-- The user's entry stored under the idempotency key $2 (usage_entries_idempotency_key_idx).
SELECT user_id, conversation_id, idempotency_key AS key, model, input_tokens, output_tokens,
       cached_input_tokens, reasoning_tokens, requests, cost_micros, metadata, created_at
FROM usage_entries
WHERE user_id = $1 AND idempotency_key = $2;

-- usage_totals --
-- The user's usage over the whole UTC days [$2, $3) from usage_daily (NULL: unbounded)
-- plus the instants [$4, $5) and [$6, $7) from the ledger (the partial days at the ends of
-- the range; NULL: none), grouped by $8: 'model', 'day' or NULL (one total). The rollup
-- part reads at most days x models rows; the ledger parts, the entries of two partial days.
WITH parts AS (
    SELECT d.day, d.model, d.input_tokens, d.output_tokens, d.cached_input_tokens,
           d.reasoning_tokens, d.requests, d.cost_micros, d.entries
    FROM usage_daily AS d
    WHERE d.user_id = $1
      AND d.day >= COALESCE($2::date, '-infinity'::date)
      AND d.day < COALESCE($3::date, 'infinity'::date)
  UNION ALL
    SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens, e.output_tokens,
           e.cached_input_tokens, e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0),
           1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $4::timestamptz AND e.created_at < $5::timestamptz
  UNION ALL
    SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens, e.output_tokens,
           e.cached_input_tokens, e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0),
           1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $6::timestamptz AND e.created_at < $7::timestamptz
)
SELECT CASE WHEN $8::text = 'model' THEN parts.model END AS model,
       CASE WHEN $8::text = 'day' THEN parts.day END AS day,
       NULL::uuid AS conversation_id,
       sum(parts.input_tokens) AS input_tokens, sum(parts.output_tokens) AS output_tokens,
       sum(parts.cached_input_tokens) AS cached_input_tokens,
       sum(parts.reasoning_tokens) AS reasoning_tokens, sum(parts.requests) AS requests,
       sum(parts.cost_micros) AS cost_micros, sum(parts.entries) AS entries
FROM parts
GROUP BY 1, 2
ORDER BY 1, 2;

-- usage_totals_by_conversation --
-- usage_totals grouped by conversation (deleted ones included), from
-- usage_conversation_daily and the ledger's partial days; $2..$7 as in usage_totals.
WITH parts AS (
    SELECT d.conversation_id, d.input_tokens, d.output_tokens, d.cached_input_tokens,
           d.reasoning_tokens, d.requests, d.cost_micros, d.entries
    FROM usage_conversation_daily AS d
    WHERE d.user_id = $1
      AND d.day >= COALESCE($2::date, '-infinity'::date)
      AND d.day < COALESCE($3::date, 'infinity'::date)
  UNION ALL
    SELECT e.conversation_id, e.input_tokens, e.output_tokens, e.cached_input_tokens,
           e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0), 1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $4::timestamptz AND e.created_at < $5::timestamptz
  UNION ALL
    SELECT e.conversation_id, e.input_tokens, e.output_tokens, e.cached_input_tokens,
           e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0), 1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $6::timestamptz AND e.created_at < $7::timestamptz
)
SELECT NULL::text AS model, NULL::date AS day, parts.conversation_id,
       sum(parts.input_tokens) AS input_tokens, sum(parts.output_tokens) AS output_tokens,
       sum(parts.cached_input_tokens) AS cached_input_tokens,
       sum(parts.reasoning_tokens) AS reasoning_tokens, sum(parts.requests) AS requests,
       sum(parts.cost_micros) AS cost_micros, sum(parts.entries) AS entries
FROM parts
GROUP BY parts.conversation_id
ORDER BY parts.conversation_id;

-- usage_totals_of_conversation --
-- usage_totals of one conversation $8 (deleted or not): its days of
-- usage_conversation_daily (one range of the primary key) and the ledger's partial days;
-- grouped by $9: 'model', 'day' or NULL.
WITH parts AS (
    SELECT d.day, d.model, d.input_tokens, d.output_tokens, d.cached_input_tokens,
           d.reasoning_tokens, d.requests, d.cost_micros, d.entries
    FROM usage_conversation_daily AS d
    WHERE d.user_id = $1 AND d.conversation_id = $8::uuid
      AND d.day >= COALESCE($2::date, '-infinity'::date)
      AND d.day < COALESCE($3::date, 'infinity'::date)
  UNION ALL
    SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens, e.output_tokens,
           e.cached_input_tokens, e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0),
           1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $4::timestamptz AND e.created_at < $5::timestamptz
      AND e.conversation_id = $8::uuid
  UNION ALL
    SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.model, e.input_tokens, e.output_tokens,
           e.cached_input_tokens, e.reasoning_tokens, e.requests, COALESCE(e.cost_micros, 0),
           1
    FROM usage_entries AS e
    WHERE e.user_id = $1 AND e.created_at >= $6::timestamptz AND e.created_at < $7::timestamptz
      AND e.conversation_id = $8::uuid
)
SELECT CASE WHEN $9::text = 'model' THEN parts.model END AS model,
       CASE WHEN $9::text = 'day' THEN parts.day END AS day,
       $8::uuid AS conversation_id,
       sum(parts.input_tokens) AS input_tokens, sum(parts.output_tokens) AS output_tokens,
       sum(parts.cached_input_tokens) AS cached_input_tokens,
       sum(parts.reasoning_tokens) AS reasoning_tokens, sum(parts.requests) AS requests,
       sum(parts.cost_micros) AS cost_micros, sum(parts.entries) AS entries
FROM parts
GROUP BY 1, 2
ORDER BY 1, 2;

-- usage_in_window --
-- The tokens (input + output) the user spent in the current UTC window $2 ('day' or
-- 'month'), from usage_daily (at most 31 x models rows), and the day the window ends
-- (resets) on. turn(fork_at=..., quota=...) checks it before making its fork.
SELECT COALESCE(sum(d.input_tokens + d.output_tokens), 0) AS used,
       CASE WHEN $2::text = 'month'
            THEN (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date
            ELSE (now() AT TIME ZONE 'UTC')::date + 1 END AS resets_on
FROM usage_daily AS d
WHERE d.user_id = $1
  AND d.day >= CASE WHEN $2::text = 'month'
                    THEN date_trunc('month', now() AT TIME ZONE 'UTC')::date
                    ELSE (now() AT TIME ZONE 'UTC')::date END;

-- take_turn_within_quota --
-- take_turn with a quota, in one statement: the turn $3 holds the conversation $2 for $4
-- seconds if no turn holds it and the user's tokens (input + output) in the current UTC
-- window $6 ('day' or 'month') are below $5. Always one row: revision (NULL: not taken),
-- used, and the day the window resets on; the caller tells a spent quota (used >= $5) from
-- a busy or missing conversation.
WITH used AS (
    SELECT COALESCE(sum(d.input_tokens + d.output_tokens), 0) AS tokens
    FROM usage_daily AS d
    WHERE d.user_id = $1
      AND d.day >= CASE WHEN $6::text = 'month'
                        THEN date_trunc('month', now() AT TIME ZONE 'UTC')::date
                        ELSE (now() AT TIME ZONE 'UTC')::date END
), taken AS (
    UPDATE conversations
    SET turn_token = $3, turn_expires_at = now() + $4::double precision * interval '1 second',
        turn_base_count = message_count
    WHERE user_id = $1 AND id = $2 AND turn_token IS NULL
      AND (SELECT used.tokens FROM used) < $5::numeric
    RETURNING revision
)
SELECT (SELECT taken.revision FROM taken) AS revision, used.tokens AS used,
       CASE WHEN $6::text = 'month'
            THEN (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date
            ELSE (now() AT TIME ZONE 'UTC')::date + 1 END AS resets_on
FROM used;

-- operator checks --------
-- The statements of `chatstore check` (chatstore/doctor.py), `status` and `rollback`
-- (chatstore/cli/). They read the whole database in keyset batches; none is on a hot path.

-- check_conversations --
-- `chatstore check`: the next $3 conversations after ($1, $2) in primary-key order, each with
-- its highest seq and number of messages (one messages_pkey range each) and whether its turn
-- lease ran out more than $4 seconds ago. A lateral join on the conversation's own keys,
-- grouped by them, and one LIMIT at the top: Citus pushes it down to every shard (an
-- aggregate over a LIMITed subquery it cannot push down). For trees: owned and owned_top,
-- how many rows and up to which seq should be stored under it (all of 1..message_count for
-- a root; a fork's own parts), and in_tree (check_tree_member then checks the rest).
SELECT c.user_id, c.id, c.message_count,
       COALESCE(m.highest_seq, 0) AS highest_seq, COALESCE(m.messages, 0) AS messages,
       COALESCE(c.turn_expires_at < now() - make_interval(secs => $4::float8), false)
           AS lease_stuck,
       own.owned, own.owned_top,
       c.root_id IS NOT NULL OR c.current_id IS NOT NULL AS in_tree
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT max(seq) AS highest_seq, count(*) AS messages
    FROM messages
    WHERE messages.user_id = c.user_id AND messages.conversation_id = c.id
    GROUP BY messages.user_id, messages.conversation_id
) AS m ON true
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(part.upto - part.after) FILTER (WHERE part.owner = c.id), 0)
               AS owned,
           COALESCE(max(part.upto) FILTER (WHERE part.owner = c.id), 0) AS owned_top
    FROM unnest(COALESCE(c.path_owners, '{}') || c.id,
                ARRAY[0] || COALESCE(c.path_ends, '{}'),
                COALESCE(c.path_ends, '{}') || c.message_count) AS part(owner, after, upto)
    WHERE part.upto > part.after
) AS own
WHERE (c.user_id, c.id) > ($1::text, $2::uuid)
ORDER BY c.user_id, c.id
LIMIT $3;

-- check_tree_member --
-- `chatstore check`, for a conversation of a tree ($2 of user $1): broken_parts, the parts
-- of its path whose rows are not all there (a fork point beyond its parent's rows),
-- root_missing, and current_outside (a root's current_id is not one of its tree).
WITH path AS (
    SELECT part.owner, part.after, part.upto
    FROM conversations AS conv,
         unnest(COALESCE(conv.path_owners, '{}'), ARRAY[0] || COALESCE(conv.path_ends, '{}'),
                COALESCE(conv.path_ends, '{}')) AS part(owner, after, upto)
    WHERE conv.user_id = $1 AND conv.id = $2 AND part.upto > part.after
)
SELECT (SELECT count(*) FROM path
        WHERE (SELECT count(*) FROM messages AS shared
               WHERE shared.user_id = $1 AND shared.conversation_id = path.owner
                 AND shared.seq > path.after AND shared.seq <= path.upto)
              <> path.upto - path.after) AS broken_parts,
       c.root_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM conversations AS r
                           WHERE r.user_id = $1 AND r.id = c.root_id
                             AND r.root_id IS NULL) AS root_missing,
       c.current_id IS NOT NULL AND c.current_id <> c.id
           AND NOT EXISTS (SELECT 1 FROM conversations AS t
                           WHERE t.user_id = $1 AND t.id = c.current_id
                             AND t.root_id = c.id) AS current_outside
FROM conversations AS c
WHERE c.user_id = $1 AND c.id = $2;

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

-- check_usage_users --
-- `chatstore check`, the usage rollups: the next $2 users after $1, in the order of users'
-- primary key (every usage row belongs to a user: usage_*_user_id_fkey). A batch's ids go
-- to check_usage_rollups as they are, so the ledger's comparisons never depend on an order.
SELECT id
FROM users
WHERE id > $1
ORDER BY id
LIMIT $2;

-- check_usage_rollups --
-- `chatstore check`: for each user of $1 (a batch of check_usage_users) that has usage, its
-- ledger entries, and how many keys of each rollup differ from what the ledger sums to: a
-- key whose sums or entry count differ, one the ledger has and the rollup lacks, or a stray
-- one. One statement, one snapshot: an entry and its rollups commit together, so a
-- recording in flight is in neither and never shows as a difference. Every part groups and
-- joins on user_id, so Citus pushes the whole statement down to each shard (each user's
-- rows are compared by one task, in one snapshot, on the user's worker).
SELECT parts.user_id, sum(parts.entries)::bigint AS entries,
       sum(parts.daily_keys)::bigint AS daily_keys,
       sum(parts.conversation_keys)::bigint AS conversation_keys
FROM (
    SELECT COALESCE(l.user_id, d.user_id) AS user_id, COALESCE(l.entries, 0) AS entries,
           ((l.input_tokens, l.output_tokens, l.cached_input_tokens, l.reasoning_tokens,
             l.requests, l.cost_micros, l.entries)
            IS DISTINCT FROM (d.input_tokens, d.output_tokens, d.cached_input_tokens,
                              d.reasoning_tokens, d.requests, d.cost_micros, d.entries))::int
               AS daily_keys,
           0 AS conversation_keys
    FROM (SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date AS day, e.model,
                 sum(e.input_tokens) AS input_tokens, sum(e.output_tokens) AS output_tokens,
                 sum(e.cached_input_tokens) AS cached_input_tokens,
                 sum(e.reasoning_tokens) AS reasoning_tokens, sum(e.requests) AS requests,
                 sum(COALESCE(e.cost_micros, 0)) AS cost_micros, count(*) AS entries
          FROM usage_entries AS e
          WHERE e.user_id = ANY($1::text[])
          GROUP BY e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model) AS l
    FULL JOIN (SELECT user_id, day, model, input_tokens, output_tokens, cached_input_tokens,
                      reasoning_tokens, requests, cost_micros, entries
               FROM usage_daily
               WHERE user_id = ANY($1::text[])) AS d
      ON d.user_id = l.user_id AND d.day = l.day AND d.model = l.model
  UNION ALL
    SELECT COALESCE(l.user_id, d.user_id), 0, 0, 1
    FROM (SELECT e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date AS day,
                 e.model, sum(e.input_tokens) AS input_tokens,
                 sum(e.output_tokens) AS output_tokens,
                 sum(e.cached_input_tokens) AS cached_input_tokens,
                 sum(e.reasoning_tokens) AS reasoning_tokens, sum(e.requests) AS requests,
                 sum(COALESCE(e.cost_micros, 0)) AS cost_micros, count(*) AS entries
          FROM usage_entries AS e
          WHERE e.user_id = ANY($1::text[])
          GROUP BY e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date,
                   e.model) AS l
    FULL JOIN (SELECT user_id, conversation_id, day, model, input_tokens, output_tokens,
                      cached_input_tokens, reasoning_tokens, requests, cost_micros, entries
               FROM usage_conversation_daily
               WHERE user_id = ANY($1::text[])) AS d
      ON d.user_id = l.user_id AND d.conversation_id = l.conversation_id AND d.day = l.day
         AND d.model = l.model
    WHERE (l.input_tokens, l.output_tokens, l.cached_input_tokens, l.reasoning_tokens,
           l.requests, l.cost_micros, l.entries)
          IS DISTINCT FROM (d.input_tokens, d.output_tokens, d.cached_input_tokens,
                            d.reasoning_tokens, d.requests, d.cost_micros, d.entries)
) AS parts
GROUP BY parts.user_id
ORDER BY parts.user_id;

-- set_lock_timeout --
-- `chatstore check --repair`, before lock_usage_for_repair: how long ($1, e.g. '2s') its
-- lock may wait, for this transaction only (usage recordings queue behind a waiting lock).
SELECT set_config('lock_timeout', $1::text, true) AS lock_timeout;

-- lock_usage_for_repair --
-- `chatstore check --repair`, the usage rollups of one user: every statement that writes
-- usage (record_usage, append_message_with_usage, import_usage, delete_user_data) takes ROW
-- EXCLUSIVE on usage_entries when it starts, before it touches a rollup row, and holds it to
-- its commit. SHARE ROW EXCLUSIVE conflicts with it: this waits for the writers in flight to
-- commit and holds new ones at their start until the repair commits (reads, totals and
-- quota checks, go on). So the ledger read after it is complete, nothing moves the rollups
-- meanwhile, and no writer can hold a rollup row the repair waits for (no deadlock).
LOCK TABLE usage_entries IN SHARE ROW EXCLUSIVE MODE;

-- clear_usage_rollups --
-- Repair, step 1 (after lock_usage_for_repair): delete the rollup rows of user $1, both
-- tables; rebuild_usage_daily and rebuild_usage_conversation_daily then sum the ledger again.
WITH daily AS (
    DELETE FROM usage_daily WHERE user_id = $1 RETURNING 1
), per_conversation AS (
    DELETE FROM usage_conversation_daily WHERE user_id = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM daily) AS daily_rows,
       (SELECT count(*) FROM per_conversation) AS conversation_rows;

-- rebuild_usage_daily --
-- Repair, step 2: usage_daily's rows of user $1, summed from the ledger (in a snapshot
-- taken after the lock: every committed entry).
INSERT INTO usage_daily (user_id, day, model, input_tokens, output_tokens,
                         cached_input_tokens, reasoning_tokens, requests, cost_micros, entries)
SELECT e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model, sum(e.input_tokens),
       sum(e.output_tokens), sum(e.cached_input_tokens), sum(e.reasoning_tokens),
       sum(e.requests), sum(COALESCE(e.cost_micros, 0)), count(*)
FROM usage_entries AS e
WHERE e.user_id = $1
GROUP BY e.user_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model;

-- rebuild_usage_conversation_daily --
-- Repair, step 3: usage_conversation_daily's rows of user $1, summed from the ledger.
INSERT INTO usage_conversation_daily (user_id, conversation_id, day, model, input_tokens,
                                      output_tokens, cached_input_tokens, reasoning_tokens,
                                      requests, cost_micros, entries)
SELECT e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model,
       sum(e.input_tokens), sum(e.output_tokens), sum(e.cached_input_tokens),
       sum(e.reasoning_tokens), sum(e.requests), sum(COALESCE(e.cost_micros, 0)), count(*)
FROM usage_entries AS e
WHERE e.user_id = $1
GROUP BY e.user_id, e.conversation_id, (e.created_at AT TIME ZONE 'UTC')::date, e.model;

-- count_chat_rows --
-- `chatstore status` and `rollback`: rows of the chat tables, and the messages that have no
-- chat form (role NULL; rolling back 0002 deletes them).
SELECT (SELECT count(*) FROM conversations) AS conversations,
       (SELECT count(*) FROM messages) AS messages,
       (SELECT count(*) FROM messages WHERE role IS NULL) AS messages_without_role;

-- count_forks --
-- `chatstore status`: how many conversations are forks (rolling back 0004 refuses while any
-- is; a separate statement, since count_chat_rows also runs on schemas before 0004).
SELECT count(*) AS forks FROM conversations WHERE root_id IS NOT NULL;

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

-- retention --------
-- Expiry (a tree's, kept on its root), legal holds, and purge (chatstore/_retention.py;
-- docs/api.md, "Retention"). purge's candidate scans read every user's roots (an operator's
-- keyset scan); everything it locks and deletes is one tree of one user.

-- set_tree_expiry --
-- The tree of $2 expires $3 from now (an interval; NULL: never): set on its root, whose row
-- lock it takes (before the conversation's own, as every writer does). Moves no revision.
UPDATE conversations
SET expires_at = now() + $3::interval
WHERE user_id = $1
  AND id = (SELECT COALESCE(root_id, id) FROM conversations WHERE user_id = $1 AND id = $2)
RETURNING expires_at;

-- set_hold --
-- The conversation $2's legal hold set to $3, after its tree's root's row lock (delete,
-- purge and delete_user_data take it first: they either see the hold or finish before it).
-- Moves no revision and no activity time.
WITH tree AS (
    SELECT 1 FROM conversations
    WHERE user_id = $1
      AND id = (SELECT COALESCE(root_id, id) FROM conversations WHERE user_id = $1 AND id = $2)
    FOR UPDATE
)
UPDATE conversations
SET held = $3
WHERE user_id = $1 AND id = $2 AND (SELECT count(*) FROM tree) >= 0
RETURNING id, user_id, title, metadata, message_count, created_at, updated_at, revision,
          COALESCE(root_id, id) AS root_id, parent_id, forked_at,
          CASE WHEN root_id IS NULL THEN COALESCE(current_id, id)
              ELSE (SELECT COALESCE(r.current_id, r.id) FROM conversations AS r
                    WHERE r.user_id = $1 AND r.id = conversations.root_id) END AS current_id,
          CASE WHEN root_id IS NULL THEN expires_at
              ELSE (SELECT rx.expires_at FROM conversations AS rx
                    WHERE rx.user_id = $1 AND rx.id = conversations.root_id) END AS expires_at,
          held;

-- purge_clock --
-- purge: the server's time when it starts; "expired" and "idle" are measured against it.
SELECT now() AS now;

-- purge_expired --
-- purge, across users: the next $5 trees whose root's expiry is at or before $1, after the
-- keyset position ($2 expires_at, $3 user_id, $4 id), oldest expiry first: a range of
-- conversations_expires_at_idx. For each tree, read without locks (lock_purge_tree reads
-- the same under the locks): its conversations, whether one is held or in a turn whose
-- lease has not run out, its latest activity anywhere, and the messages stored under it.
SELECT r.user_id, r.id, r.expires_at AS position, tree.conversations, tree.held,
       tree.in_flight, tree.active_at, stored.messages
FROM conversations AS r
CROSS JOIN LATERAL (
    SELECT count(*) AS conversations, COALESCE(bool_or(t.held), false) AS held,
           COALESCE(bool_or(t.turn_token IS NOT NULL AND t.turn_expires_at > now()), false)
               AS in_flight,
           max(t.updated_at) AS active_at
    FROM conversations AS t
    WHERE t.user_id = r.user_id AND (t.id = r.id OR t.root_id = r.id)
) AS tree
CROSS JOIN LATERAL (
    SELECT count(*) AS messages
    FROM conversations AS owner
    JOIN messages AS m ON m.user_id = owner.user_id AND m.conversation_id = owner.id
    WHERE owner.user_id = r.user_id AND (owner.id = r.id OR owner.root_id = r.id)
) AS stored
WHERE r.expires_at <= $1 AND r.root_id IS NULL
  AND (r.expires_at, r.user_id, r.id) > ($2::timestamptz, $3::text, $4::uuid)
ORDER BY r.expires_at, r.user_id, r.id
LIMIT $5;

-- purge_idle --
-- purge, across users: the next $5 trees whose latest activity anywhere (the greatest
-- updated_at of their conversations) is before $1, after the keyset position ($2 the root's
-- updated_at, $3 user_id, $4 id): a range of conversations_root_updated_at_idx (a root's
-- updated_at is never later than its tree's latest activity). Leaves out the trees that
-- expired at or before $6 (purge_expired's; NULL: none). Columns as purge_expired.
SELECT r.user_id, r.id, r.updated_at AS position, tree.conversations, tree.held,
       tree.in_flight, tree.active_at, stored.messages
FROM conversations AS r
CROSS JOIN LATERAL (
    SELECT count(*) AS conversations, COALESCE(bool_or(t.held), false) AS held,
           COALESCE(bool_or(t.turn_token IS NOT NULL AND t.turn_expires_at > now()), false)
               AS in_flight,
           max(t.updated_at) AS active_at
    FROM conversations AS t
    WHERE t.user_id = r.user_id AND (t.id = r.id OR t.root_id = r.id)
) AS tree
CROSS JOIN LATERAL (
    SELECT count(*) AS messages
    FROM conversations AS owner
    JOIN messages AS m ON m.user_id = owner.user_id AND m.conversation_id = owner.id
    WHERE owner.user_id = r.user_id AND (owner.id = r.id OR owner.root_id = r.id)
) AS stored
WHERE r.updated_at < $1 AND r.root_id IS NULL
  AND (r.updated_at, r.user_id, r.id) > ($2::timestamptz, $3::text, $4::uuid)
  AND tree.active_at < $1
  AND ($6::timestamptz IS NULL OR r.expires_at IS NULL OR r.expires_at > $6::timestamptz)
ORDER BY r.updated_at, r.user_id, r.id
LIMIT $5;

-- lock_purge_root --
-- purge, one tree: the root $2's row lock, unless another session holds it (SKIP LOCKED:
-- purge never waits for a live chat). No row: locked elsewhere, or gone.
SELECT id
FROM conversations
WHERE user_id = $1 AND id = $2 AND root_id IS NULL
FOR UPDATE SKIP LOCKED;

-- lock_purge_tree --
-- purge, one tree, after lock_purge_root (so this statement's snapshot holds every
-- conversation of the tree: a fork is made, and a fork's messages written, only under the
-- root's lock): the row locks of the tree's conversations, skipping any another session
-- holds, and what decides, read under them: how many conversations the tree has and how
-- many were locked, whether one is held or in a turn whose lease has not run out, the
-- latest activity anywhere in it, the root's expiry and the messages stored under it.
WITH locked AS (
    SELECT id, held, turn_token, turn_expires_at, updated_at, expires_at
    FROM conversations
    WHERE user_id = $1 AND (id = $2 OR root_id = $2)
    FOR UPDATE SKIP LOCKED
)
SELECT (SELECT count(*) FROM conversations
        WHERE user_id = $1 AND (id = $2 OR root_id = $2)) AS conversations,
       count(*) AS locked,
       COALESCE(bool_or(held), false) AS held,
       COALESCE(bool_or(turn_token IS NOT NULL AND turn_expires_at > now()), false)
           AS in_flight,
       max(updated_at) AS active_at, max(expires_at) AS expires_at,
       (SELECT count(*) FROM messages
        WHERE user_id = $1 AND conversation_id IN (SELECT id FROM locked)) AS messages
FROM locked;

-- oldest_idle_trees --
-- `chatstore status`: the $4 roots of least recent own activity after the keyset position
-- ($1 updated_at, $2 user_id, $3 id), each with its tree's latest activity anywhere
-- (conversations_root_updated_at_idx; the command keeps the tree idle longest).
SELECT r.user_id, r.id, r.updated_at AS position, tree.active_at
FROM conversations AS r
CROSS JOIN LATERAL (
    SELECT max(t.updated_at) AS active_at
    FROM conversations AS t
    WHERE t.user_id = r.user_id AND (t.id = r.id OR t.root_id = r.id)
) AS tree
WHERE r.root_id IS NULL
  AND (r.updated_at, r.user_id, r.id) > ($1::timestamptz, $2::text, $3::uuid)
ORDER BY r.updated_at, r.user_id, r.id
LIMIT $4;
