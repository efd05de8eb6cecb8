-- chatstore: the current schema, readable top to bottom.
--
-- This file and migrations/ describe the same schema twice, on purpose: this one is for
-- reading, the migrations are history. tests/migrations/test_migrations.py builds one database from
-- each and diffs `pg_dump --schema-only`; any drift fails the suite.
--
-- Rules this schema keeps:
--   * users belongs to the backend: created here only when absent, never altered.
--   * every primary key, unique constraint and foreign key among the chat tables leads with
--     user_id, so the schema can be distributed by owner (Citus) as it is.
--   * messages are ordered by seq (1, 2, 3 ... per conversation, gap-free), never by time.
--   * every constraint and index is named; every table and column has a comment.

-- users -------------------------------------------------------------------------------
-- The backend's own table. Only a minimal one is created, and only when none exists.
DO $$
BEGIN
    IF to_regclass('users') IS NULL THEN
        CREATE TABLE users (
            id text CONSTRAINT users_pkey PRIMARY KEY
        );
        COMMENT ON TABLE users IS
            'The backend''s users. Created by chatstore only because none existed; chatstore never alters it.';
        COMMENT ON COLUMN users.id IS
            'The backend''s user id; conversations.user_id and messages.user_id refer to it.';
    END IF;
END
$$;

-- conversations -----------------------------------------------------------------------
CREATE TABLE conversations (
    user_id       text        NOT NULL,
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    title         text,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    message_count integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    revision      bigint      NOT NULL DEFAULT 0,
    turn_token    uuid,
    turn_expires_at timestamptz,
    turn_base_count integer,
    root_id       uuid,
    parent_id     uuid,
    forked_at     integer,
    current_id    uuid,
    path_owners   uuid[],
    path_ends     integer[],
    forks_updated_at timestamptz,
    -- retention (0005)
    expires_at    timestamptz,
    held          boolean     NOT NULL DEFAULT false,
    CONSTRAINT conversations_pkey PRIMARY KEY (user_id, id),
    CONSTRAINT conversations_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT conversations_message_count_check CHECK (message_count >= 0),
    CONSTRAINT conversations_metadata_object_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT conversations_revision_check CHECK (revision >= 0),
    -- The turn lease: all three columns set (a turn is in flight) or none.
    CONSTRAINT conversations_turn_check CHECK (
        (turn_token IS NULL) = (turn_expires_at IS NULL)
        AND (turn_token IS NULL) = (turn_base_count IS NULL)
        AND (turn_base_count IS NULL OR turn_base_count BETWEEN 0 AND message_count)
    ),
    -- A root has none of the tree columns but current_id and forks_updated_at; a fork has
    -- its root, parent and fork point, and never those two.
    CONSTRAINT conversations_fork_check CHECK (
        (root_id IS NULL) = (parent_id IS NULL)
        AND (parent_id IS NULL) = (forked_at IS NULL)
        AND forked_at >= 0
        AND (root_id IS NULL OR (current_id IS NULL AND forks_updated_at IS NULL))
    ),
    -- The path: two arrays of one length, only on a fork, ending within the history.
    CONSTRAINT conversations_path_check CHECK (
        (path_owners IS NULL) = (path_ends IS NULL)
        AND cardinality(path_owners) = cardinality(path_ends)
        AND (root_id IS NOT NULL OR path_owners IS NULL)
        AND path_ends[cardinality(path_ends)] <= message_count
    ),
    -- retention (0005): a tree's expiry is kept on its root.
    CONSTRAINT conversations_expires_at_check CHECK (root_id IS NULL OR expires_at IS NULL)
);

-- "A user's conversations by latest activity": one index range scan, read backward.
CREATE INDEX conversations_user_id_updated_at_idx
    ON conversations (user_id, updated_at, id);

-- A tree's members (root_id names the root): one index range scan.
CREATE INDEX conversations_user_id_root_id_idx
    ON conversations (user_id, root_id) WHERE root_id IS NOT NULL;

-- "A user's chats by latest activity anywhere in the tree": the roots, one range scan.
CREATE INDEX conversations_user_id_active_at_idx
    ON conversations (user_id, (greatest(updated_at, forks_updated_at)), id)
    WHERE root_id IS NULL;

-- retention (0005), purge across users: the roots whose expiry has passed, oldest expiry
-- first (only conversations with an expiry have an entry) ...
CREATE INDEX conversations_expires_at_idx
    ON conversations (expires_at, user_id, id) WHERE expires_at IS NOT NULL;

-- ... and every user's roots by their own latest activity, oldest first (a root's
-- updated_at is never later than its tree's latest activity: every idle tree lies before
-- the cutoff).
CREATE INDEX conversations_root_updated_at_idx
    ON conversations (updated_at, user_id, id) WHERE root_id IS NULL;

COMMENT ON TABLE conversations IS
    'One chat thread of one user. Keyed by (user_id, id); deleting the user deletes it.';
COMMENT ON COLUMN conversations.user_id IS
    'Owner: users.id. Leads every key, so every lookup names the owner.';
COMMENT ON COLUMN conversations.id IS
    'Conversation id (UUID), unique together with user_id.';
COMMENT ON COLUMN conversations.title IS
    'Optional human-readable title.';
COMMENT ON COLUMN conversations.metadata IS
    'Free-form JSON object owned by the backend (for example the model or agent name).';
COMMENT ON COLUMN conversations.message_count IS
    'Number of messages, which is also the highest seq: the next message gets message_count + 1.';
COMMENT ON COLUMN conversations.created_at IS
    'When the conversation was created.';
COMMENT ON COLUMN conversations.updated_at IS
    'Latest activity: moves with every append, pop, clear or update; lists sort by it.';
COMMENT ON COLUMN conversations.revision IS
    'Version: +1 with every change (an append call, pop, clear, update, an aborted turn); never goes back. expected_revision compares against it.';
COMMENT ON COLUMN conversations.turn_token IS
    'The chat turn holding the conversation (a random id known only to its holder); NULL when no turn is in flight.';
COMMENT ON COLUMN conversations.turn_expires_at IS
    'When the turn''s lease runs out; after it, the next turn may take the conversation over.';
COMMENT ON COLUMN conversations.turn_base_count IS
    'message_count when the turn began: aborting the turn removes the messages after it.';
COMMENT ON COLUMN conversations.root_id IS
    'The root of this conversation''s tree (conversations.id); NULL for a root itself.';
COMMENT ON COLUMN conversations.parent_id IS
    'The conversation this one was forked from; NULL for a root.';
COMMENT ON COLUMN conversations.forked_at IS
    'The parent''s seq this fork was made at (its history then was the parent''s messages 1..forked_at); NULL for a root.';
COMMENT ON COLUMN conversations.current_id IS
    'On a root: the tree''s current conversation (the version a UI shows), NULL meaning the root itself. NULL on a fork.';
COMMENT ON COLUMN conversations.path_owners IS
    'Where the history before this conversation''s own rows is stored: path_owners[i] holds the messages with seq in (path_ends[i-1], path_ends[i]]; NULL for a root (all its rows are its own).';
COMMENT ON COLUMN conversations.path_ends IS
    'The last seq of each part of path_owners; after the last one, up to message_count, the rows are this conversation''s own.';
COMMENT ON COLUMN conversations.forks_updated_at IS
    'On a root: the latest activity in any of its forks (greatest(updated_at, forks_updated_at) orders the list of chats); NULL otherwise.';
COMMENT ON COLUMN conversations.expires_at IS
    'On a root: when its tree expires (ttl= on create, fork or update), after which store.purge() deletes the whole tree unless a conversation of it is held or in a turn; NULL: never. NULL on a fork (a fork expires with its tree).';
COMMENT ON COLUMN conversations.held IS
    'Legal hold: while true, nothing deletes this conversation or its tree (delete_conversation and pop/clear refuse, delete_user_data and purge leave it); set with store.set_hold().';

-- chatstore_item_text -----------------------------------------------------------------
-- The chat text of a message item whose content is a string or one text part (user input,
-- an assistant's output_text), exactly as chatstore.items.project gives it; NULL for every
-- other item. messages.content is stored NULL where it equals this (the text was stored
-- twice), and every read returns COALESCE(content, chatstore_item_text(item)). A plain SQL
-- expression, which the planner inlines: only rows with content NULL evaluate it.
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

-- messages ----------------------------------------------------------------------------
CREATE TABLE messages (
    user_id         text        NOT NULL,
    conversation_id uuid        NOT NULL,
    seq             integer     NOT NULL,
    role            text,
    content         text,
    tool_calls      jsonb,
    tool_call_id    text,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    token_count     integer,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    item            jsonb,
    -- compaction: on a summary message, the seq it summarizes through (NULL otherwise)
    summary_through integer,
    CONSTRAINT messages_pkey PRIMARY KEY (user_id, conversation_id, seq),
    CONSTRAINT messages_conversation_fkey FOREIGN KEY (user_id, conversation_id)
        REFERENCES conversations (user_id, id) ON DELETE CASCADE,
    CONSTRAINT messages_role_check
        CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    CONSTRAINT messages_tool_call_id_check
        CHECK ((role = 'tool') = (tool_call_id IS NOT NULL)),
    CONSTRAINT messages_seq_check CHECK (seq > 0),
    CONSTRAINT messages_token_count_check CHECK (token_count >= 0),
    CONSTRAINT messages_tool_calls_array_check
        CHECK (tool_calls IS NULL OR jsonb_typeof(tool_calls) = 'array'),
    CONSTRAINT messages_metadata_object_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT messages_item_object_check CHECK (item IS NULL OR jsonb_typeof(item) = 'object'),
    -- A row without a chat role is an agent item with no chat form (a reasoning item...).
    CONSTRAINT messages_chat_form_check CHECK (role IS NOT NULL OR item IS NOT NULL),
    -- A summary summarizes messages before it (0: none, a summary that replaces nothing).
    CONSTRAINT messages_summary_through_check
        CHECK (summary_through >= 0 AND summary_through < seq)
);

-- Newest N, or a page before/after a seq: the primary key, scanned backward or forward.

-- Retry-safe appends: an idempotency key is stored once per conversation. Partial, so that
-- unkeyed messages cost it nothing and no other query can pick it: it shares messages_pkey's
-- leading columns, and a generic plan once chose it for "newest 50" and sorted the whole
-- conversation.
CREATE UNIQUE INDEX messages_idempotency_key_idx
    ON messages (user_id, conversation_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Full-text search over a user's messages ('simple' configuration: no stemming, any language):
-- the text's words plus the owner's lexeme (' ' || md5(user_id)). Queries AND the owner
-- lexeme in: the scan is driven by it and costs the caller's matches. An expression, not a
-- stored vector (which cost about 380 B a message); ranking re-tokenises the newest matches.
-- The text is content, or where content is stored once in the item, the item's text: its
-- one part's text or its content string (a plain expression, cheap to prepare per append;
-- search keeps only rows with a chat form and no tool call without content, on which this
-- equals COALESCE(content, chatstore_item_text(item))).
CREATE INDEX messages_search_idx ON messages USING gin ((
    to_tsvector('simple'::regconfig,
                COALESCE(content, item #>> '{content,0,text}', item ->> 'content', ''))
    || array_to_tsvector(ARRAY[' ' || md5(user_id)])));

COMMENT ON INDEX messages_search_idx IS
    'Full-text entry of the message text (''simple'' configuration) plus the owner lexeme '' '' || md5(user_id), which search matches together with the query.';

-- Compaction: the summaries only. The newest summary on a conversation's history (where the
-- model's view starts) is one backward probe per part of its path.
CREATE INDEX messages_summary_through_idx
    ON messages (user_id, conversation_id, seq) WHERE summary_through IS NOT NULL;

COMMENT ON TABLE messages IS
    'The messages stored under a conversation, ordered by seq. A fork''s history also reads rows stored under the conversations its path names (conversations.path_owners). Deleting the conversation deletes them.';
COMMENT ON COLUMN messages.user_id IS
    'Owner; the composite foreign key makes it equal to the conversation''s owner.';
COMMENT ON COLUMN messages.conversation_id IS
    'The conversation (conversations.id) this message belongs to.';
COMMENT ON COLUMN messages.seq IS
    'Position in the conversation: 1, 2, 3 ... without gaps. The only ordering key.';
COMMENT ON COLUMN messages.role IS
    'Who speaks: system, user, assistant or tool (OpenAI chat roles); NULL for an agent item with no chat form (item->>''type'' says what it is).';
COMMENT ON COLUMN messages.content IS
    'Message text; NULL for an assistant message that only calls tools, and NULL where it equals the item''s text (chatstore_item_text(item)): read it as COALESCE(content, chatstore_item_text(item)).';
COMMENT ON COLUMN messages.tool_calls IS
    'JSON array of tool calls an assistant message makes (OpenAI format), else NULL.';
COMMENT ON COLUMN messages.tool_call_id IS
    'For a tool message: the id of the tool call it answers. NULL for every other role.';
COMMENT ON COLUMN messages.metadata IS
    'Free-form JSON object owned by the backend (for example the model that wrote it).';
COMMENT ON COLUMN messages.token_count IS
    'Tokens the message costs in a model''s context, when the backend knows it.';
COMMENT ON COLUMN messages.idempotency_key IS
    'Optional client key: appending the same key twice to a conversation stores it once.';
COMMENT ON COLUMN messages.created_at IS
    'When the message was stored (transaction time: never order by it, order by seq).';
COMMENT ON COLUMN messages.item IS
    'The exact JSON item an agent framework produced (an OpenAI Responses / Agents SDK input item), stored as given; NULL when the message was appended in chat format.';

-- usage -------------------------------------------------------------------------------
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
COMMENT ON COLUMN messages.summary_through IS
    'On a summary message (store.compact): the seq it summarizes through; the model''s view starts at the newest summary, then the messages after this seq. NULL on every other message.';
