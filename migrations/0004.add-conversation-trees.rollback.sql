-- destroys: drops columns conversations.root_id, parent_id, forked_at, current_id, path_owners, path_ends, forks_updated_at (refused while any fork exists)
-- Undo 0004, only on a database with no forks: a fork's history is partly stored under
-- other conversations, which 0003's schema cannot say.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM conversations WHERE root_id IS NOT NULL) THEN
        RAISE EXCEPTION 'cannot roll back 0004: % conversation(s) are forks, whose history 0003''s schema cannot hold',
            (SELECT count(*) FROM conversations WHERE root_id IS NOT NULL)
            USING HINT = 'delete the forks (or export them) first; `chatstore status` counts them';
    END IF;
END
$$;
DROP INDEX conversations_user_id_active_at_idx;
DROP INDEX conversations_user_id_root_id_idx;
ALTER TABLE conversations DROP CONSTRAINT conversations_path_check;
ALTER TABLE conversations DROP CONSTRAINT conversations_fork_check;
ALTER TABLE conversations
    DROP COLUMN forks_updated_at,
    DROP COLUMN path_ends,
    DROP COLUMN path_owners,
    DROP COLUMN current_id,
    DROP COLUMN forked_at,
    DROP COLUMN parent_id,
    DROP COLUMN root_id;
COMMENT ON TABLE messages IS
    'The messages of a conversation, ordered by seq. Deleting the conversation deletes them.';
