-- chatstore: optional row-level security on the chat tables (docs/reliability.md).
--
-- Apply once, as the tables' owner, after the migrations:
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f "$(python -c 'import importlib.resources as r;
--         print(r.files("chatstore") / "sql" / "rls.sql")')"
-- then connect the application with chatstore.connect(..., row_level_security=True), as a role
-- that does not own the tables and has no BYPASSRLS. The store sets chatstore.user_id to the
-- caller's user with set_config(..., true) in the transaction of every call; a session that
-- has not set it (or set it to another user) sees and changes no row. FORCE makes the policies
-- bind the owner too; superusers and BYPASSRLS roles (migrations, import, psql as an
-- administrator) are not bound. Safe to run again. To undo:
--     ALTER TABLE messages NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY; (and the same
--     for conversations), then DROP POLICY messages_owner_only ON messages; and
--     DROP POLICY conversations_owner_only ON conversations;

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS conversations_owner_only ON conversations;
CREATE POLICY conversations_owner_only ON conversations
    USING (user_id = current_setting('chatstore.user_id', true))
    WITH CHECK (user_id = current_setting('chatstore.user_id', true));
COMMENT ON POLICY conversations_owner_only ON conversations IS
    'A session sees and writes only the conversations of the user in chatstore.user_id '
    '(set per transaction by chatstore; unset or empty: none).';

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS messages_owner_only ON messages;
CREATE POLICY messages_owner_only ON messages
    USING (user_id = current_setting('chatstore.user_id', true))
    WITH CHECK (user_id = current_setting('chatstore.user_id', true));
COMMENT ON POLICY messages_owner_only ON messages IS
    'A session sees and writes only the messages of the user in chatstore.user_id '
    '(set per transaction by chatstore; unset or empty: none).';
