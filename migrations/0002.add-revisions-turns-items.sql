-- depends: 0001.create-chat-tables
-- Revisions, turn leases and lossless agent items.
--
-- conversations.revision: +1 with every change to the conversation, never back; the
--   compare-and-set key (message_count moves back on pop and clear, so it cannot be one).
-- conversations.turn_*: the lease of the chat turn in flight, kept in the row itself (no
--   session-level lock, no held connection), so it works behind poolers and on Citus.
-- messages.item: the exact JSON item an agent framework produced; the chat columns hold
--   its chat-format projection. role becomes NULL for an item with no chat form
--   (a reasoning item, a web search call...).
-- Adding columns with constant defaults rewrites no table; each CHECK scans its table once.
-- One ADD CONSTRAINT per ALTER TABLE: Citus refuses ADD CONSTRAINT with other subcommands on
-- the tables it manages (as soon as they reference a `users` reference table). Until
-- 2026-12 this file added the columns and constraints in one ALTER TABLE per table; the
-- schema it makes is the same (tests/migrations/test_migrations.py), so installs that
-- applied the earlier text need nothing.

ALTER TABLE conversations
    ADD COLUMN revision bigint NOT NULL DEFAULT 0,
    ADD COLUMN turn_token uuid,
    ADD COLUMN turn_expires_at timestamptz,
    ADD COLUMN turn_base_count integer;
ALTER TABLE conversations
    ADD CONSTRAINT conversations_revision_check CHECK (revision >= 0);
ALTER TABLE conversations
    ADD CONSTRAINT conversations_turn_check CHECK (
        (turn_token IS NULL) = (turn_expires_at IS NULL)
        AND (turn_token IS NULL) = (turn_base_count IS NULL)
        AND (turn_base_count IS NULL OR turn_base_count BETWEEN 0 AND message_count)
    );

COMMENT ON COLUMN conversations.revision IS
    'Version: +1 with every change (an append call, pop, clear, update, an aborted turn); never goes back. expected_revision compares against it.';
COMMENT ON COLUMN conversations.turn_token IS
    'The chat turn holding the conversation (a random id known only to its holder); NULL when no turn is in flight.';
COMMENT ON COLUMN conversations.turn_expires_at IS
    'When the turn''s lease runs out; after it, the next turn may take the conversation over.';
COMMENT ON COLUMN conversations.turn_base_count IS
    'message_count when the turn began: aborting the turn removes the messages after it.';

ALTER TABLE messages
    ALTER COLUMN role DROP NOT NULL,
    ADD COLUMN item jsonb;
ALTER TABLE messages
    ADD CONSTRAINT messages_item_object_check
        CHECK (item IS NULL OR jsonb_typeof(item) = 'object');
ALTER TABLE messages
    ADD CONSTRAINT messages_chat_form_check CHECK (role IS NOT NULL OR item IS NOT NULL);

COMMENT ON COLUMN messages.role IS
    'Who speaks: system, user, assistant or tool (OpenAI chat roles); NULL for an agent item with no chat form (item->>''type'' says what it is).';
COMMENT ON COLUMN messages.item IS
    'The exact JSON item an agent framework produced (an OpenAI Responses / Agents SDK input item), stored as given; NULL when the message was appended in chat format.';
