-- depends: 0004.add-conversation-trees
-- What a chat costs, how long it is kept, and how it is compacted (issue 19). Each section
-- below is self-contained; one ADD CONSTRAINT per ALTER TABLE (Citus).

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
