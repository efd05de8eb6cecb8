-- depends: 0004.add-conversation-trees
-- What a chat costs (usage), how long it is kept (retention) and how it is compacted
-- (compaction). Each part is its own section below, delimited by a `-- == name ==` line.
-- One ADD CONSTRAINT per ALTER TABLE (Citus).

-- == usage ==
-- The usage ledger: one row per recorded model call (or run), and two rollups kept in the
-- same statement as each entry, so a user's totals for a day or a month read a few rollup
-- rows however many entries there are. Entries name a conversation without a foreign key
-- to it: they outlive the conversation (the tokens were spent); they go with the user.
-- Every key leads with user_id (Citus distributes the three tables by it).
CREATE TABLE usage_entries (
    user_id             text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    conversation_id     uuid        NOT NULL,
    idempotency_key     text,
    model               text        NOT NULL,
    input_tokens        bigint      NOT NULL DEFAULT 0,
    output_tokens       bigint      NOT NULL DEFAULT 0,
    cached_input_tokens bigint      NOT NULL DEFAULT 0,
    reasoning_tokens    bigint      NOT NULL DEFAULT 0,
    requests            bigint      NOT NULL DEFAULT 0,
    cost_micros         bigint,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT usage_entries_pkey PRIMARY KEY (user_id, created_at, id),
    CONSTRAINT usage_entries_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT usage_entries_counts_check CHECK (
        input_tokens >= 0 AND output_tokens >= 0 AND cached_input_tokens >= 0
        AND reasoning_tokens >= 0 AND requests >= 0
    ),
    CONSTRAINT usage_entries_cost_micros_check CHECK (cost_micros >= 0),
    CONSTRAINT usage_entries_metadata_object_check CHECK (jsonb_typeof(metadata) = 'object')
);

-- Retry-safe recording: an idempotency key is stored once per user. Partial: unkeyed
-- entries cost it nothing.
CREATE UNIQUE INDEX usage_entries_idempotency_key_idx
    ON usage_entries (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

COMMENT ON TABLE usage_entries IS
    'The usage ledger: what each recorded model call (or agent run) of a user cost. Rows are only ever added; usage_daily and usage_conversation_daily sum them. Deleting a conversation keeps its entries; deleting the user deletes them.';
COMMENT ON COLUMN usage_entries.user_id IS
    'Owner: users.id. Leads every key.';
COMMENT ON COLUMN usage_entries.created_at IS
    'When the entry was recorded (transaction time); its UTC date is the rollups'' day.';
COMMENT ON COLUMN usage_entries.id IS
    'Entry id (UUID); with user_id and created_at the primary key, which also serves reads of a time range.';
COMMENT ON COLUMN usage_entries.conversation_id IS
    'The conversation the usage was spent in (conversations.id when recorded). No foreign key: the entry outlives the conversation.';
COMMENT ON COLUMN usage_entries.idempotency_key IS
    'Optional client key: recording the same key twice for a user stores one entry.';
COMMENT ON COLUMN usage_entries.model IS
    'The model that was called (as the backend names it: per-model totals group by it).';
COMMENT ON COLUMN usage_entries.input_tokens IS
    'Input (prompt) tokens, cached ones included.';
COMMENT ON COLUMN usage_entries.output_tokens IS
    'Output (completion) tokens, reasoning ones included.';
COMMENT ON COLUMN usage_entries.cached_input_tokens IS
    'Of input_tokens, those served from the provider''s prompt cache.';
COMMENT ON COLUMN usage_entries.reasoning_tokens IS
    'Of output_tokens, those the model spent reasoning.';
COMMENT ON COLUMN usage_entries.requests IS
    'Model API requests the entry covers.';
COMMENT ON COLUMN usage_entries.cost_micros IS
    'What it cost, in millionths of the operator''s currency, when the backend knows it; NULL otherwise.';
COMMENT ON COLUMN usage_entries.metadata IS
    'Free-form JSON object owned by the backend (for example the request id).';

CREATE TABLE usage_daily (
    user_id             text    NOT NULL,
    day                 date    NOT NULL,
    model               text    NOT NULL,
    input_tokens        numeric NOT NULL DEFAULT 0,
    output_tokens       numeric NOT NULL DEFAULT 0,
    cached_input_tokens numeric NOT NULL DEFAULT 0,
    reasoning_tokens    numeric NOT NULL DEFAULT 0,
    requests            numeric NOT NULL DEFAULT 0,
    cost_micros         numeric NOT NULL DEFAULT 0,
    entries             bigint  NOT NULL DEFAULT 0,
    CONSTRAINT usage_daily_pkey PRIMARY KEY (user_id, day, model),
    CONSTRAINT usage_daily_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);

COMMENT ON TABLE usage_daily IS
    'Rollup of usage_entries per user, UTC day and model, moved by the statement that records each entry: a user''s totals for a day or a month read at most days x models rows, however many entries there are.';
COMMENT ON COLUMN usage_daily.user_id IS
    'Owner: users.id.';
COMMENT ON COLUMN usage_daily.day IS
    'The UTC date of the entries'' created_at.';
COMMENT ON COLUMN usage_daily.model IS
    'The entries'' model.';
COMMENT ON COLUMN usage_daily.input_tokens IS
    'Sum of the entries'' input_tokens (numeric: a sum may pass bigint''s range).';
COMMENT ON COLUMN usage_daily.output_tokens IS
    'Sum of the entries'' output_tokens.';
COMMENT ON COLUMN usage_daily.cached_input_tokens IS
    'Sum of the entries'' cached_input_tokens.';
COMMENT ON COLUMN usage_daily.reasoning_tokens IS
    'Sum of the entries'' reasoning_tokens.';
COMMENT ON COLUMN usage_daily.requests IS
    'Sum of the entries'' requests.';
COMMENT ON COLUMN usage_daily.cost_micros IS
    'Sum of the entries'' cost_micros (an entry without a cost counts 0).';
COMMENT ON COLUMN usage_daily.entries IS
    'Number of entries summed.';

CREATE TABLE usage_conversation_daily (
    user_id             text    NOT NULL,
    conversation_id     uuid    NOT NULL,
    day                 date    NOT NULL,
    model               text    NOT NULL,
    input_tokens        numeric NOT NULL DEFAULT 0,
    output_tokens       numeric NOT NULL DEFAULT 0,
    cached_input_tokens numeric NOT NULL DEFAULT 0,
    reasoning_tokens    numeric NOT NULL DEFAULT 0,
    requests            numeric NOT NULL DEFAULT 0,
    cost_micros         numeric NOT NULL DEFAULT 0,
    entries             bigint  NOT NULL DEFAULT 0,
    CONSTRAINT usage_conversation_daily_pkey PRIMARY KEY (user_id, conversation_id, day, model),
    CONSTRAINT usage_conversation_daily_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);

COMMENT ON TABLE usage_conversation_daily IS
    'Rollup of usage_entries per user, conversation, UTC day and model, moved with each entry: one conversation''s totals read its days x models rows. Kept after the conversation is deleted, like its entries.';
COMMENT ON COLUMN usage_conversation_daily.user_id IS
    'Owner: users.id.';
COMMENT ON COLUMN usage_conversation_daily.conversation_id IS
    'The entries'' conversation_id (the conversation may since have been deleted).';
COMMENT ON COLUMN usage_conversation_daily.day IS
    'The UTC date of the entries'' created_at.';
COMMENT ON COLUMN usage_conversation_daily.model IS
    'The entries'' model.';
COMMENT ON COLUMN usage_conversation_daily.input_tokens IS
    'Sum of the entries'' input_tokens.';
COMMENT ON COLUMN usage_conversation_daily.output_tokens IS
    'Sum of the entries'' output_tokens.';
COMMENT ON COLUMN usage_conversation_daily.cached_input_tokens IS
    'Sum of the entries'' cached_input_tokens.';
COMMENT ON COLUMN usage_conversation_daily.reasoning_tokens IS
    'Sum of the entries'' reasoning_tokens.';
COMMENT ON COLUMN usage_conversation_daily.requests IS
    'Sum of the entries'' requests.';
COMMENT ON COLUMN usage_conversation_daily.cost_micros IS
    'Sum of the entries'' cost_micros (an entry without a cost counts 0).';
COMMENT ON COLUMN usage_conversation_daily.entries IS
    'Number of entries summed.';

-- On a Citus cluster whose chat tables are distributed already (chatstore/sql/citus.sql
-- ran before this migration), the new tables join them: distributed by user_id, co-located
-- with conversations. Elsewhere this does nothing (the recipe distributes them later).
-- (Two IFs: the inner one names Citus's catalog, which only exists there.)
DO $usage_citus$
BEGIN
    IF to_regclass('pg_dist_partition') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'conversations'::regclass AND partmethod = 'h') THEN
            SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
            PERFORM create_distributed_table('usage_entries', 'user_id',
                                             colocate_with => 'conversations');
            PERFORM create_distributed_table('usage_daily', 'user_id',
                                             colocate_with => 'conversations');
            PERFORM create_distributed_table('usage_conversation_daily', 'user_id',
                                             colocate_with => 'conversations');
        END IF;
    END IF;
END
$usage_citus$;

-- == retention ==
-- A tree's expiry (set with ttl= on create_conversation, fork and update_conversation) and
-- a legal hold per conversation; store.purge() deletes whole trees that have expired or
-- been idle too long, never one with a held member or a turn in flight.
--
-- The new columns are NULL / false for every existing conversation: no expiry, no hold.
-- A constant default rewrites nothing. The expiry is the tree's and is kept on its root
-- (conversations_expires_at_check). The two indexes let purge find its candidates across
-- users without reading every conversation: the ones with an expiry (a partial index, as
-- small as the number of temporary chats), and the roots by their own latest activity
-- (a root's updated_at is never later than its tree's latest activity, so every idle tree
-- is found in the range before the cutoff). One ADD CONSTRAINT per ALTER TABLE (Citus).

ALTER TABLE conversations
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN held boolean NOT NULL DEFAULT false;
ALTER TABLE conversations
    ADD CONSTRAINT conversations_expires_at_check CHECK (root_id IS NULL OR expires_at IS NULL);

-- purge, expired trees: the roots whose expiry has passed, oldest expiry first.
CREATE INDEX conversations_expires_at_idx
    ON conversations (expires_at, user_id, id) WHERE expires_at IS NOT NULL;

-- purge, idle trees: every user's roots by their own latest activity, oldest first.
CREATE INDEX conversations_root_updated_at_idx
    ON conversations (updated_at, user_id, id) WHERE root_id IS NULL;

COMMENT ON COLUMN conversations.expires_at IS
    'On a root: when its tree expires (ttl= on create, fork or update), after which store.purge() deletes the whole tree unless a conversation of it is held or in a turn; NULL: never. NULL on a fork (a fork expires with its tree).';
COMMENT ON COLUMN conversations.held IS
    'Legal hold: while true, nothing deletes this conversation or its tree (delete_conversation and pop/clear refuse, delete_user_data and purge leave it); set with store.set_hold().';

-- == compaction ==
-- messages.summary_through: a summary message (store.compact) holds the seq it summarizes
--   through; the model's view of a conversation (context windows, turn.context, the Agents
--   SDK session) starts at the newest summary on its history, then the messages after
--   summary_through. Every other message has NULL, so nothing is rewritten: adding the
--   column is a catalog change, but the CHECK and the partial index each scan messages once
--   under the ALTER's lock (plan a short write pause on a large table). The index holds
--   only summaries: finding the newest one on a history is one probe per part of its path.
ALTER TABLE messages
    ADD COLUMN summary_through integer;
ALTER TABLE messages
    ADD CONSTRAINT messages_summary_through_check
        CHECK (summary_through >= 0 AND summary_through < seq);
CREATE INDEX messages_summary_through_idx
    ON messages (user_id, conversation_id, seq) WHERE summary_through IS NOT NULL;
COMMENT ON COLUMN messages.summary_through IS
    'On a summary message (store.compact): the seq it summarizes through; the model''s view starts at the newest summary, then the messages after this seq. NULL on every other message.';
