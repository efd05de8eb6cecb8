-- The todo backend's own tables, created before chatstore's migrations run: chatstore then
-- joins this schema (its conversations reference users(id); it never alters users or tasks).

CREATE TABLE IF NOT EXISTS users (
    id         text PRIMARY KEY,
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tasks (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    user_id     text NOT NULL,
    title       text NOT NULL,
    description text,
    completed   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_pkey PRIMARY KEY (id),
    CONSTRAINT tasks_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS tasks_user_id_id_idx ON tasks (user_id, id);
