"""The ``chatstore`` command: migrate, status, demo, psql and the embedded server.

Which database: ``--database URL``, else ``$CHATSTORE_DSN``, else ``$DATABASE_URL``, else an
embedded PostgreSQL whose data lives in ``$CHATSTORE_HOME`` (see
:func:`chatstore.embedded.chatstore_home`). Every command says on stderr which one it uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from . import ChatStore, ChatStoreError, Message, connect
from .embedded import (
    CleanupMode,
    EmbeddedServer,
    chatstore_home,
    is_running,
    start_embedded,
)
from .migrate import apply_migrations, migration_status
from .queries import QUERIES
from .seed import seed_database
from .transfer import ImportReport, export_user, import_file

DEMO_USER = "demo-user"


class CliError(Exception):
    """A failure to report as one line on stderr."""


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _embedded(cleanup: CleanupMode) -> EmbeddedServer:
    """The embedded server; one that `chatstore server start` left running stays running."""
    version = int(os.environ.get("CHATSTORE_PG", "16"))
    home = chatstore_home()
    home.mkdir(parents=True, exist_ok=True)
    if is_running(home / f"pg{version}"):
        cleanup = None
    try:
        return start_embedded(home / f"pg{version}", version=version, cleanup=cleanup,
                              runtime_dir=home / "run")
    except (RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _database(args: argparse.Namespace, *, keep_running: bool = False) -> str:
    url = args.database or os.environ.get("CHATSTORE_DSN") or os.environ.get("DATABASE_URL")
    if url:
        if urlsplit(url).scheme not in ("postgres", "postgresql"):
            raise CliError(f"not a PostgreSQL URL: {_hide_password(url)!r} "
                           "(expected postgresql://user:password@host:port/dbname)")
        print(f"chatstore: database {_hide_password(url)}", file=sys.stderr)
        return str(url)
    server = _embedded(None if keep_running else "stop")
    print(f"chatstore: database embedded PostgreSQL {server.version} in {server.pgdata}",
          file=sys.stderr)
    return server.dsn


def _migrate(url: str) -> list[str]:
    try:
        return apply_migrations(url)
    except Exception as exc:  # psycopg/yoyo errors: unreachable server, bad credentials...
        raise CliError(f"cannot migrate: {type(exc).__name__}: {exc}".strip()) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = _migrate(_database(args))
    for ident in applied:
        print(f"applied {ident}")
    if not applied:
        print("nothing to apply: the database is up to date")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url = _database(args)
    try:
        applied, pending = migration_status(url)
    except Exception as exc:
        raise CliError(f"cannot read migrations: {type(exc).__name__}: {exc}") from None
    print("applied migrations: " + (", ".join(applied) if applied else "none"))
    print("pending migrations: " + (", ".join(pending) if pending else "none")
          + (" (run `chatstore migrate`)" if pending else ""))

    async def sizes() -> None:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                """SELECT c.relname,
                          CASE c.relkind WHEN 'r' THEN 'table' ELSE 'index' END AS kind,
                          pg_relation_size(c.oid) AS bytes
                   FROM pg_class c
                   WHERE c.relnamespace = current_schema()::regnamespace
                     AND (c.relname IN ('users', 'conversations', 'messages')
                          OR c.relname LIKE 'conversations\\_%' OR c.relname LIKE 'messages\\_%')
                     AND c.relkind IN ('r', 'i')
                   ORDER BY c.relkind DESC, c.relname""")
            for r in rows:
                print(f"{r['kind']:5} {r['relname']:40} {r['bytes'] / 1024:10.0f} KiB")
            if not pending:
                for table in ("conversations", "messages"):
                    count = await conn.fetchval(f"SELECT count(*) FROM {table}")
                    print(f"rows  {table:40} {count:10}")
        finally:
            await conn.close()

    _run(sizes())
    return 0


def _psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from .embedded import embedded_bin_dir

    return str(embedded_bin_dir() / "psql")


def cmd_psql(args: argparse.Namespace) -> int:
    url = _database(args, keep_running=True)
    return os.spawnv(os.P_WAIT, _psql_binary(), ["psql", url, *args.psql_args])


def cmd_server(args: argparse.Namespace) -> int:
    version = int(os.environ.get("CHATSTORE_PG", "16"))
    pgdata = chatstore_home() / f"pg{version}"
    if args.action == "stop":
        if not is_running(pgdata):
            print(f"embedded PostgreSQL {version} in {pgdata} is not running")
            return 0
        _embedded(None).shutdown()
        print(f"stopped the embedded PostgreSQL {version} in {pgdata}")
        return 0
    if args.action == "status":
        print(f"embedded PostgreSQL {version} in {pgdata}: "
              + ("running" if is_running(pgdata) else "stopped"))
        return 0
    server = _embedded(None)
    if args.action == "url":
        print(server.dsn)
    else:
        print(f"embedded PostgreSQL {version} running in {server.pgdata}\n{server.dsn}")
    return 0


# -- demo ------------------------------------------------------------------------------

TURNS: list[tuple[str, Callable[[list[Message]], list[dict[str, Any]]]]] = [
    ("Hi! Can you add 'buy oat milk' to my todo list?", lambda ctx: [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_add_1", "type": "function",
            "function": {"name": "add_task", "arguments": json.dumps({"title": "buy oat milk"})},
        }]},
        {"role": "tool", "tool_call_id": "call_add_1",
         "content": json.dumps({"ok": True, "task_id": 1})},
        {"role": "assistant", "content": "Done: 'buy oat milk' is on your list."},
    ]),
    ("What is on my list now?", lambda ctx: [
        {"role": "assistant", "content": "You have one task: buy oat milk. "
                                         f"(I read {len(ctx)} earlier messages for context.)"},
    ]),
]


def _print_plan(title: str, rows: Sequence[asyncpg.Record]) -> None:
    print(f"\n{title}")
    for row in rows:
        print("  " + row[0])


async def _demo(url: str) -> None:
    async with await connect(url, min_size=1, max_size=2) as store:
        async with store.pool.acquire() as conn:
            await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING",
                               DEMO_USER)
        earlier = await store.list_conversations(DEMO_USER, limit=200)
        if earlier.items:
            print(f"The demo ran here before ({len(earlier.items)} demo conversation(s)); "
                  "adding one more.")
        conversation = await store.create_conversation(
            DEMO_USER, title=f"Todo assistant #{len(earlier.items) + 1}",
            metadata={"agent": "scripted demo"})
        for text, assistant in TURNS:
            # One stateless chat turn: load the context, store the user's message,
            # call the model (scripted here), store its reply.
            context = await store.context_messages(DEMO_USER, conversation.id, max_tokens=4000)
            await store.append_message(DEMO_USER, conversation.id,
                                       {"role": "user", "content": text})
            await store.append_messages(DEMO_USER, conversation.id, assistant(context))

        print(f"\nTranscript of {conversation.title!r} ({conversation.id}):")
        for message in (await store.list_messages(DEMO_USER, conversation.id)).items:
            if message.tool_calls:
                calls = ", ".join(f"{c['function']['name']}({c['function']['arguments']})"
                                  for c in message.tool_calls)
                body = f"[calls {calls}]"
            else:
                body = message.content or ""
            role = message.role.value if message.role else (message.item or {}).get("type")
            print(f"  {message.seq:>3} {role!s:>9}: {body}")

        print(f"\nConversations of {DEMO_USER!r}, latest activity first:")
        for conv in (await store.list_conversations(DEMO_USER)).items:
            print(f"  {conv.updated_at:%Y-%m-%d %H:%M:%S}  {conv.message_count:>3} messages  "
                  f"{conv.title}")

        async with store.pool.acquire() as conn:
            explain = "EXPLAIN (ANALYZE, BUFFERS) "
            _print_plan("Newest 50 messages of the conversation (list_messages_newest):",
                        await conn.fetch(explain + QUERIES["list_messages_newest"],
                                         DEMO_USER, conversation.id, 51))
            _print_plan("Newest 20 conversations of the user (list_conversations):",
                        await conn.fetch(explain + QUERIES["list_conversations"],
                                         DEMO_USER, 21))


def cmd_demo(args: argparse.Namespace) -> int:
    url = _database(args)
    applied = _migrate(url)
    print("Migrations: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    _run(_demo(url))
    return 0


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class _Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if self.total:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            text = f"{self.label} [{bar}] {self.done:,}/{self.total:,}"
        else:
            text = f"{self.label} {self.done:,}"
        print(f"\r{text}  {rate:,.0f}/s", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.done:
            print(file=sys.stderr)


async def _store(url: str) -> ChatStore:
    return await connect(url, min_size=1, max_size=2)


def cmd_export(args: argparse.Namespace) -> int:
    url = _database(args)
    progress = _Progress("exporting messages")

    async def run(out: Any) -> int:
        count = 0
        async with await _store(url) as store:
            async for line in export_user(store, args.user, progress):
                out.write(line + "\n")
                count += 1
        return count

    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                count = _run(run(out))
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    else:
        count = _run(run(sys.stdout))
    progress.finish()
    print(f"exported {count} conversation(s), {progress.done} message(s) of user "
          f"{args.user!r}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    url = _database(args)
    try:
        with open(args.file, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{args.file} is not UTF-8 text ({exc.reason})") from None
    progress = _Progress("importing messages")

    async def run() -> ImportReport:
        async with await _store(url) as store:
            return await import_file(store, lines, create_users=args.create_users,
                                     progress=progress)

    started = time.monotonic()
    report = _run(run())
    progress.finish()
    seconds = time.monotonic() - started
    print(f"imported {report.conversations_imported} of {report.conversations_read} "
          f"conversation(s) and {report.messages_imported} of {report.messages_read} "
          f"message(s) in {seconds:.2f} s "
          f"({report.messages_imported / max(seconds, 1e-9):,.0f} messages/s); "
          f"{report.conversations_read - report.conversations_imported} already present"
          + (f"; created {report.users_created} user(s)" if report.users_created else ""))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    url = _database(args)
    _migrate(url)
    total = args.users * args.conversations * args.messages
    progress = _Progress("seeding messages", total)
    try:
        report = _run(seed_database(url, users=args.users, conversations=args.conversations,
                                    messages=args.messages, seed=args.seed,
                                    user_prefix=args.user_prefix, progress=progress))
    except asyncpg.UniqueViolationError:
        raise CliError("these seed rows exist already (same --seed and --user-prefix); "
                       "pick another --seed or --user-prefix") from None
    progress.finish()
    print(f"seeded {report.users} user(s), {report.conversations} conversation(s), "
          f"{report.messages:,} message(s) in {report.seconds:.2f} s "
          f"({report.messages_per_second:,.0f} messages/s)")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatstore", description=__doc__.split("\n")[0])
    parser.add_argument("--database", metavar="URL",
                        help="postgresql:// URL (default: $CHATSTORE_DSN, $DATABASE_URL, "
                             "else the embedded server)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("status", help="pending migrations, row counts, table and index sizes"
                   ).set_defaults(func=cmd_status)
    sub.add_parser("demo", help="migrate, play a scripted chat, show transcript and plans"
                   ).set_defaults(func=cmd_demo)
    psql = sub.add_parser("psql", help="open psql on the database")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER)
    psql.set_defaults(func=cmd_psql)
    export = sub.add_parser("export", help="a user's conversations as JSON Lines")
    export.add_argument("--user", required=True, help="the user id")
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)
    imp = sub.add_parser("import", help="restore a JSON Lines export (idempotent)")
    imp.add_argument("file")
    imp.add_argument("--create-users", action="store_true",
                     help="add missing users rows (id only) instead of refusing")
    imp.set_defaults(func=cmd_import)
    seed = sub.add_parser("seed", help="load synthetic chat data (for benchmarks, demos)")
    seed.add_argument("--users", type=_positive, default=10)
    seed.add_argument("--conversations", type=_positive, default=10, help="per user")
    seed.add_argument("--messages", type=_positive, default=100, help="per conversation")
    seed.add_argument("--seed", type=int, default=None, help="make the data reproducible")
    seed.add_argument("--user-prefix", default="seed-user-")
    seed.set_defaults(func=cmd_seed)
    server = sub.add_parser("server", help="manage the embedded PostgreSQL")
    server.add_argument("action", choices=["start", "stop", "status", "url"])
    server.set_defaults(func=cmd_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = [*extra, *args.psql_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.func(args)
        return code
    except (CliError, ChatStoreError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for an operational failure
        _fail(f"{type(exc).__name__}: {exc}")
    return 1


def _fail(message: str) -> None:
    """One line on stderr, whatever the message's own line breaks."""
    print("chatstore: error: " + " ".join(message.split()), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
