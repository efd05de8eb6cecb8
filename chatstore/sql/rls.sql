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
--     for conversations and the usage tables), then DROP POLICY messages_owner_only ON messages;
--     and the same for each table's <table>_owner_only policy.

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

-- The usage ledger and its rollups (migration 0005).
ALTER TABLE usage_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_entries FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS usage_entries_owner_only ON usage_entries;
CREATE POLICY usage_entries_owner_only ON usage_entries
    USING (user_id = current_setting('chatstore.user_id', true))
    WITH CHECK (user_id = current_setting('chatstore.user_id', true));
COMMENT ON POLICY usage_entries_owner_only ON usage_entries IS
    'A session sees and writes only the usage entries of the user in chatstore.user_id.';

ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS usage_daily_owner_only ON usage_daily;
CREATE POLICY usage_daily_owner_only ON usage_daily
    USING (user_id = current_setting('chatstore.user_id', true))
    WITH CHECK (user_id = current_setting('chatstore.user_id', true));
COMMENT ON POLICY usage_daily_owner_only ON usage_daily IS
    'A session sees and writes only the usage rollups of the user in chatstore.user_id.';

ALTER TABLE usage_conversation_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_conversation_daily FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS usage_conversation_daily_owner_only ON usage_conversation_daily;
CREATE POLICY usage_conversation_daily_owner_only ON usage_conversation_daily
    USING (user_id = current_setting('chatstore.user_id', true))
    WITH CHECK (user_id = current_setting('chatstore.user_id', true));
COMMENT ON POLICY usage_conversation_daily_owner_only ON usage_conversation_daily IS
    'A session sees and writes only the usage rollups of the user in chatstore.user_id.';
