-- chatstore: distribute the chat tables on Citus (docs/scale-out.md).
--
-- Apply once on the coordinator, as the tables' owner, after chatstore's migrations, with the
-- citus extension created and the worker nodes added:
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f "$(python -c 'import importlib.resources as r;
--         print(r.files("chatstore") / "sql" / "citus.sql")')"
-- conversations and messages are distributed by user_id and co-located, so every statement
-- of chatstore (they all name the owner) runs on the one shard that holds the user. users
-- becomes a reference table, unless it is one already or is distributed by id (the chat
-- tables are then co-located with it). Citus cannot distribute a table that another local
-- table references, so messages' foreign key to conversations is dropped for the two calls
-- and added back, checked against every row, in the same transaction. The usage tables
-- (migration 0005) are distributed the same way, co-located with conversations (0005 does
-- it itself when it runs after this recipe). Safe to run again: it does nothing to a table
-- already distributed. Later migrations run on the coordinator, as DDL that Citus
-- propagates to the shards.
DO $distribute$
DECLARE
    users_by_id boolean := EXISTS (
        SELECT 1 FROM pg_dist_partition
        WHERE logicalrelid = 'users'::regclass AND partmethod = 'h');
    usage_table text;
BEGIN
    -- Citus distributes and adds back the foreign keys of reference tables one shard at a
    -- time inside a transaction that already wrote to one.
    SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'messages'::regclass AND partmethod = 'h') THEN
        ALTER TABLE messages DROP CONSTRAINT messages_conversation_fkey;
        IF NOT users_by_id AND NOT EXISTS (
                SELECT 1 FROM pg_dist_partition
                WHERE logicalrelid = 'users'::regclass AND repmodel = 't') THEN
            PERFORM create_reference_table('users');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                       WHERE logicalrelid = 'conversations'::regclass AND partmethod = 'h') THEN
            PERFORM create_distributed_table('conversations', 'user_id',
                colocate_with => CASE WHEN users_by_id THEN 'users' ELSE 'default' END);
        END IF;
        PERFORM create_distributed_table('messages', 'user_id',
                                         colocate_with => 'conversations');
        ALTER TABLE messages ADD CONSTRAINT messages_conversation_fkey
            FOREIGN KEY (user_id, conversation_id)
            REFERENCES conversations (user_id, id) ON DELETE CASCADE;
    END IF;
    -- The usage ledger and its rollups (0005), when migrated and not distributed yet.
    FOREACH usage_table IN ARRAY ARRAY['usage_entries', 'usage_daily',
                                       'usage_conversation_daily'] LOOP
        IF to_regclass(usage_table) IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM pg_dist_partition
                WHERE logicalrelid = to_regclass(usage_table) AND partmethod = 'h') THEN
            PERFORM create_distributed_table(usage_table, 'user_id',
                                             colocate_with => 'conversations');
        END IF;
    END LOOP;
END
$distribute$;
