-- destroys: drops table messages ({messages} rows) and table conversations ({conversations} rows); keeps users
-- Undo 0001: drop the chat tables. users is left alone, whether chatstore created it or
-- the backend did: it belongs to the backend, and other tables (tasks) may refer to it.
DROP TABLE messages;
DROP TABLE conversations;
