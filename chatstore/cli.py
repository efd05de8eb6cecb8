"""The ``chatstore`` command: migrate, rollback, check, status, demo, psql and more.

Which database: ``--database URL`` (before or after the subcommand), else ``$CHATSTORE_DSN``,
else ``$DATABASE_URL``, else an embedded PostgreSQL whose data lives in ``$CHATSTORE_HOME``
(see :func:`chatstore.embedded.chatstore_home`). Any URL form :mod:`chatstore.urls` reads is
accepted. Every command says on stderr which database it uses, never with its password.
Usage errors exit with status 2, every other failure with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from . import ChatStore, ChatStoreError, Conflict, Message, connect
from .doctor import CheckReport, check_database
from .embedded import (
    CleanupMode,
    EmbeddedServer,
    chatstore_home,
    is_running,
    start_embedded,
)
from .migrate import (
    apply_migrations,
    migration_status,
    migrations_dir,
    rollback_migrations,
)
from .seed import seed_database
from .sql import QUERIES
from .transfer import ImportReport, export_user, import_file
from .urls import DatabaseURL, parse_url, redact

DEMO_USER = "demo-user"


class CliError(Exception):
    """A failure to report as one line on stderr."""


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


def _target(args: argparse.Namespace, *, keep_running: bool = False) -> DatabaseURL:
    """The database the command works on, parsed; says on stderr which (no password)."""
    url = (getattr(args, "database", None) or os.environ.get("CHATSTORE_DSN")
           or os.environ.get("DATABASE_URL"))
    if url:
        parsed = parse_url(url)
        print(f"chatstore: database {parsed.redacted()}", file=sys.stderr)
        return parsed
    server = _embedded(None if keep_running else "stop")
    print(f"chatstore: database embedded PostgreSQL {server.version} in {server.pgdata}",
          file=sys.stderr)
    return parse_url(server.dsn)


def _database(args: argparse.Namespace, *, keep_running: bool = False) -> str:
    return _target(args, keep_running=keep_running).asyncpg()


def _migrate(url: str) -> list[str]:
    try:
        return apply_migrations(url)
    except Exception as exc:  # psycopg/yoyo errors: unreachable server, bad credentials...
        raise CliError(redact(f"cannot migrate: {type(exc).__name__}: {exc}".strip())) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = _migrate(_database(args))
    for ident in applied:
        print(f"applied {ident}")
    if not applied:
        print("nothing to apply: the database is up to date")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    url = _database(args)
    try:
        applied = migration_status(url)[0]
    except Exception as exc:
        raise CliError(redact(f"cannot read migrations: {type(exc).__name__}: {exc}")) from None
    todo = applied[::-1] if args.count is None else applied[::-1][: args.count]
    if not todo:
        print("nothing to roll back: no chatstore migration is applied")
        return 0
    print("will roll back: " + ", ".join(todo))
    counts = _run(_fetchrow(url, "count_chat_rows"))
    for line in _rollback_effects(todo, counts):
        print("  " + line)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("not rolled back: confirm on a terminal, or pass --yes "
                           "(standard input is not a terminal)")
        try:
            answer = input("Type 'yes' to roll back: ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            print("not rolled back")
            return 1
    try:
        done = rollback_migrations(url, len(todo))
    except Exception as exc:
        raise CliError(redact(f"cannot roll back: {type(exc).__name__}: {exc}")) from None
    for ident in done:
        print(f"rolled back {ident}")
    return 0


def _rollback_effects(todo: Sequence[str], counts: asyncpg.Record | None) -> list[str]:
    """What rolling back ``todo`` destroys, with row counts."""
    lines: list[str] = []
    conversations = counts["conversations"] if counts else 0
    messages = counts["messages"] if counts else 0
    for ident in todo:
        if ident.startswith("0002."):
            without_role = counts["messages_without_role"] if counts else 0
            lines.append(f"{ident}: deletes {without_role} message(s) with no chat form "
                         "(agent items with role NULL); drops columns conversations.revision, "
                         "turn_token, turn_expires_at, turn_base_count and messages.item")
        elif ident.startswith("0003."):
            lines.append(f"{ident}: drops column messages.search_vector and its index, "
                         f"rebuilds the content index ({messages} rows): no data lost")
        elif ident.startswith("0001."):
            lines.append(f"{ident}: drops table messages ({messages} rows) and table "
                         f"conversations ({conversations} rows); keeps users")
        else:
            lines.append(f"{ident}: see {migrations_dir() / (ident + '.rollback.sql')}")
    return lines


async def _fetchrow(url: str, statement: str, *args: Any) -> asyncpg.Record | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchrow(QUERIES[statement], *args)
    finally:
        await conn.close()


def cmd_migrations_dir(args: argparse.Namespace) -> int:
    print(migrations_dir())
    return 0


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} TiB"  # pragma: no cover


CHAT_TABLES = ["users", "conversations", "messages"]


def _attention(settings: asyncpg.Record) -> list[str]:
    """Settings of this database (as chatstore's sessions see them) that need a look."""
    notes: list[str] = []
    if settings["server_version_num"] < 150000:
        notes.append(f"PostgreSQL {settings['server_version']} is older than 15, the oldest "
                     "supported version")
    if settings["default_transaction_isolation"] != "read committed":
        notes.append(f"default_transaction_isolation is "
                     f"{settings['default_transaction_isolation']!r}: chatstore's writes are "
                     "written for 'read committed' and would fail with serialization errors")
    if settings["default_transaction_read_only"] == "on":
        notes.append("default_transaction_read_only is on: every write will fail")
    if settings["server_encoding"] != "UTF8":
        notes.append(f"server_encoding is {settings['server_encoding']}: messages need UTF8")
    if settings["statement_timeout"] not in ("0", "0ms"):
        notes.append(f"statement_timeout is {settings['statement_timeout']}: long operator "
                     "commands (check, import, seed) may be cancelled")
    return notes


def cmd_status(args: argparse.Namespace) -> int:
    url = _database(args)
    try:
        applied, pending = migration_status(url)
    except Exception as exc:
        raise CliError(redact(f"cannot read migrations: {type(exc).__name__}: {exc}")) from None

    async def read() -> None:
        conn = await asyncpg.connect(url)
        try:
            settings = await conn.fetchrow(QUERIES["server_settings"])
            assert settings is not None
            print(f"PostgreSQL {settings['server_version']}")
            print("applied migrations: " + (", ".join(applied) if applied else "none"))
            print("pending migrations: " + (", ".join(pending) if pending else "none")
                  + (" (run `chatstore migrate`)" if pending else ""))
            notes = _attention(settings)
            print("settings: " + ("nothing needs attention" if not notes else
                                  f"{len(notes)} need(s) attention"))
            for note in notes:
                print(f"  ! {note}")
            sizes = await conn.fetch(QUERIES["relation_sizes"], CHAT_TABLES)
            print(f"{'':5} {'':40} {'table':>11} {'toast':>11} {'indexes':>11} {'total':>11}")
            for r in sizes:
                print(f"{'size':5} {r['table_name']:40} {_size(r['table_bytes']):>11} "
                      f"{_size(r['toast_bytes']):>11} {_size(r['index_bytes']):>11} "
                      f"{_size(r['total_bytes']):>11}")
            if sizes:
                total = sum(r["total_bytes"] for r in sizes)
                print(f"{'size':5} {'all chatstore tables':40} {'':>11} {'':>11} {'':>11} "
                      f"{_size(total):>11}")
            for r in await conn.fetch(QUERIES["index_sizes"], CHAT_TABLES):
                print(f"{'index':5} {r['index_name']:40} {_size(r['bytes']):>11}  "
                      f"(on {r['table_name']})")
            if not pending and applied:
                counts = await conn.fetchrow(QUERIES["count_chat_rows"])
                assert counts is not None
                for table in ("conversations", "messages"):
                    print(f"{'rows':5} {table:40} {counts[table]:>11}")
        finally:
            await conn.close()

    _run(read())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    url = _database(args)
    progress = _Progress("checking conversations")
    started = time.monotonic()
    report: CheckReport = _run(check_database(url, repair=args.repair,
                                              lease_grace=args.lease_grace,
                                              progress=progress))
    progress.finish()
    seconds = time.monotonic() - started
    for problem in report.schema_problems:
        print(f"schema: {problem}")
    if report.schema_problems:
        print("schema does not match the migrations; conversations not checked")
        return 1
    for v in report.violations:
        print(f"conversation {v.conversation_id} of user {v.user_id!r}: "
              + "; ".join(v.problems))
        for fix in v.repaired:
            print(f"  repaired: {fix}")
    if report.violation_count > len(report.violations):
        print(f"... and {report.violation_count - len(report.violations)} more")
    print(f"checked {report.conversations_checked} conversation(s), "
          f"{report.messages_checked} message(s) in {seconds:.2f} s: "
          + (f"{report.violation_count} with problems"
             + (", repaired" if args.repair else " (run with --repair to fix)")
             if report.violation_count else "no problems"))
    return 0 if report.ok or args.repair else 1


def _psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from .embedded import embedded_bin_dir

    return str(embedded_bin_dir() / "psql")


def cmd_psql(args: argparse.Namespace) -> int:
    """psql on the database; the password goes through PGPASSWORD, never the command line
    (where ``ps`` would show it)."""
    target = _target(args, keep_running=True)
    env = {**os.environ, **target.password_env()}
    psql_args = list(args.psql_args)
    if psql_args[:1] == ["--"]:
        psql_args = psql_args[1:]
    try:
        return subprocess.run([_psql_binary(), target.without_password(), *psql_args],
                              env=env, check=False).returncode
    except OSError as exc:
        raise CliError(f"cannot run psql: {exc.strerror}") from None


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
        async with store.pool.acquire(timeout=store.call_path.acquire_timeout) as conn:
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
            # One stateless chat turn, under the turn's lease: load the context, store the
            # user's message, call the model (scripted here), store its reply.
            async with store.turn(DEMO_USER, conversation.id) as turn:
                context = await turn.context(max_tokens=4000)
                await turn.append([{"role": "user", "content": text}])
                await turn.append(assistant(context))

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

        async with store.pool.acquire(timeout=store.call_path.acquire_timeout) as conn:
            await _show_plan(conn, "Newest 50 messages of the conversation "
                             "(list_messages_newest):", "list_messages_newest",
                             [DEMO_USER, conversation.id, 51], "messages", "messages_pkey")
            await _show_plan(conn, "Newest 20 conversations of the user (list_conversations):",
                             "list_conversations", [DEMO_USER, 21], "conversations",
                             "conversations_user_id_updated_at_idx")


async def _show_plan(conn: Any, title: str, statement: str, args: list[Any], table: str,
                     index: str) -> None:
    """EXPLAIN ANALYZE a hot read. On a table of a few pages the planner rightly reads the
    table instead of the index; say so, then show the plan it uses at scale (the same
    statement with sequential and bitmap scans switched off for that one EXPLAIN)."""
    explain = "EXPLAIN (ANALYZE, BUFFERS) " + QUERIES[statement]
    rows = await conn.fetch(explain, *args)
    _print_plan(title, rows)
    if any(f"using {index}" in row[0] and "Bitmap" not in row[0] for row in rows):
        return
    pages = await conn.fetchval(QUERIES["table_pages"], table)
    print(f"  -> Not the index: {table} fills only {pages} page(s) of 8 KiB here, so reading "
          "those and sorting costs the planner less than walking the index. With more rows it "
          "switches to the index, as below (the same EXPLAIN with sequential and bitmap scans "
          "switched off).")
    async with conn.transaction():
        await conn.fetchrow(QUERIES["prefer_index_plans"])
        _print_plan(title.rstrip(":") + ", the plan at scale:", await conn.fetch(explain, *args))


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


async def _store(url: str, max_content_bytes: int = 1 << 20) -> ChatStore:
    return await connect(url, min_size=1, max_size=2, max_content_bytes=max_content_bytes)


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
        async with await _store(url, args.max_content_bytes) as store:
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
    except Conflict:  # the seed's rows are keyed by --seed and --user-prefix
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


def _nonnegative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


DATABASE_HELP = ("postgresql:// URL (postgres://, postgresql+psycopg://, postgresql+asyncpg:// "
                 "and libpq key=value strings work too; default: $CHATSTORE_DSN, "
                 "$DATABASE_URL, else the embedded server)")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every subcommand takes, before or after its name."""
    parser.add_argument("--database", metavar="URL", help=DATABASE_HELP,
                        default=None if top else argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstore", description=__doc__.split("\n")[0],
        epilog="Global options go before or after the subcommand. Usage errors exit with "
               "status 2, every other failure with 1.")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int]
                ) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=help, description=help)
        _global_options(child, top=False)
        child.set_defaults(func=func)
        return child

    command("migrate", "apply pending migrations", cmd_migrate)
    rollback = command("rollback", "roll back chatstore's migrations (lists what it drops, "
                       "with row counts; asks first)", cmd_rollback)
    rollback.add_argument("--count", type=_positive, default=None,
                          help="roll back only the newest N migrations (default: all)")
    rollback.add_argument("--yes", action="store_true",
                          help="do not ask (needed when standard input is not a terminal)")
    sub.add_parser("migrations-dir", help="print the folder of the migration files (for yoyo)"
                   ).set_defaults(func=cmd_migrations_dir)
    command("status", "version, migrations, settings needing attention, sizes, row counts",
            cmd_status)
    check = command("check", "verify counters, seqs, leases and schema on every conversation",
                    cmd_check)
    check.add_argument("--repair", action="store_true",
                       help="fix what is found, one transaction per conversation")
    check.add_argument("--lease-grace", metavar="SECONDS", type=_nonnegative_seconds,
                       default=600.0,
                       help="a turn lease is stuck this long after it ran out (default 600)")
    command("demo", "migrate, play a scripted chat, show transcript and plans", cmd_demo)
    psql = command("psql", "open psql on the database (password via PGPASSWORD)", cmd_psql)
    psql.add_argument("psql_args", nargs=argparse.REMAINDER)
    export = command("export", "a user's conversations as JSON Lines", cmd_export)
    export.add_argument("--user", required=True, help="the user id")
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    imp = command("import", "restore a JSON Lines export (idempotent)", cmd_import)
    imp.add_argument("file")
    imp.add_argument("--create-users", action="store_true",
                     help="add missing users rows (id only) instead of refusing")
    imp.add_argument("--max-content-bytes", type=_positive, default=1 << 20, metavar="N",
                     help="the largest message content accepted, as the store that wrote "
                          "the file was configured (default 1 MiB)")
    seed = command("seed", "load synthetic chat data (for benchmarks, demos)", cmd_seed)
    seed.add_argument("--users", type=_positive, default=10)
    seed.add_argument("--conversations", type=_positive, default=10, help="per user")
    seed.add_argument("--messages", type=_positive, default=100, help="per conversation")
    seed.add_argument("--seed", type=int, default=None, help="make the data reproducible")
    seed.add_argument("--user-prefix", default="seed-user-")
    server = sub.add_parser("server", help="manage the embedded PostgreSQL")
    server.set_defaults(func=cmd_server)
    server.add_argument("action", choices=["start", "stop", "status", "url"])
    return parser


def _pull_global_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """Move ``--database URL`` / ``--database=URL`` found anywhere (up to a ``--``) to the
    front, so that arguments passed through to psql cannot swallow it."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--database" and i + 1 < len(argv):
            front += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--database="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front, rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    front, rest = _pull_global_options(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args([*front, *rest])
    if args.command == "psql":
        args.psql_args = [*extra, *args.psql_args]
    elif extra:
        parser.error(f"unrecognized arguments: {redact(' '.join(extra))}")
    if args.command in ("server", "migrations-dir") and args.database:
        parser.error(f"--database does not apply to {args.command} "
                     + ("(it manages the embedded PostgreSQL)" if args.command == "server"
                        else "(it reads no database)"))
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
    print("chatstore: error: " + redact(" ".join(message.split())), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
