-- depends: 0003.add-search-vector
-- Conversation trees: forks that share their parent's stored rows.
--
-- A fork of conversation C at seq k is a conversation whose history is C's messages
-- 1..k (the same rows, not copies) followed by its own. Its row says where each part of its
-- history is stored: path_owners[i] holds the rows with seq in
-- (path_ends[i-1], path_ends[i]] (path_ends[0] = 0), and the conversation itself the rows
-- after the last path end, up to message_count. A root has no path: its history is all its
-- own rows, exactly as before this migration. docs/api.md ("Conversation trees") says how
-- a pop, clear or delete that removes rows another conversation reads first hands them to
-- that conversation (copy-on-write by moving, never copying).
--
-- Every new column is NULL for an existing conversation, which thereby becomes the root of
-- a one-conversation tree: nothing is rewritten. The two indexes are built here (the
-- conversations table is small next to messages; plan a short write pause on a big one).
-- One ADD CONSTRAINT per ALTER TABLE (Citus).

ALTER TABLE conversations
    ADD COLUMN root_id uuid,
    ADD COLUMN parent_id uuid,
    ADD COLUMN forked_at integer,
    ADD COLUMN current_id uuid,
    ADD COLUMN path_owners uuid[],
    ADD COLUMN path_ends integer[],
    ADD COLUMN forks_updated_at timestamptz;
ALTER TABLE conversations
    ADD CONSTRAINT conversations_fork_check CHECK (
        (root_id IS NULL) = (parent_id IS NULL)
        AND (parent_id IS NULL) = (forked_at IS NULL)
        AND forked_at >= 0
        AND (root_id IS NULL OR (current_id IS NULL AND forks_updated_at IS NULL))
    );
ALTER TABLE conversations
    ADD CONSTRAINT conversations_path_check CHECK (
        (path_owners IS NULL) = (path_ends IS NULL)
        AND cardinality(path_owners) = cardinality(path_ends)
        AND (root_id IS NOT NULL OR path_owners IS NULL)
        AND path_ends[cardinality(path_ends)] <= message_count
    );

-- A tree's members (root_id names the root): one index range scan.
CREATE INDEX conversations_user_id_root_id_idx
    ON conversations (user_id, root_id) WHERE root_id IS NOT NULL;

-- "A user's chats by latest activity anywhere in the tree": the roots, one range scan.
CREATE INDEX conversations_user_id_active_at_idx
    ON conversations (user_id, (greatest(updated_at, forks_updated_at)), id)
    WHERE root_id IS NULL;

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
COMMENT ON TABLE messages IS
    'The messages stored under a conversation, ordered by seq. A fork''s history also reads rows stored under the conversations its path names (conversations.path_owners). Deleting the conversation deletes them.';
