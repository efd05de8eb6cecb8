-- depends: 0004.add-conversation-trees
-- Usage ledger, retention and compaction. Each part below is self-contained, in its own
-- section.

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
