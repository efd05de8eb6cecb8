"""One function per subcommand of ``chatstore`` but the demo (:mod:`.demo`): each takes the
parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from .. import ChatStore, Conflict, PurgeReport, connect
from ..doctor import CheckReport, check_database
from ..embedded import chatstore_home, is_running, running_url
from ..migrate import apply_migrations, migration_status, migrations_dir, rollback_migrations
from ..seed import seed_database
from ..sql import SQL
from ..transfer import USAGE_LINE_START, ImportReport, export_user, import_file
from ..urls import redact
from .output import CliError, Progress, size
from .target import connection, database, embedded, embedded_version, target

__all__ = ["DESTROYS", "cmd_check", "cmd_export", "cmd_import", "cmd_migrate",
           "cmd_migrations_dir", "cmd_psql", "cmd_purge", "cmd_rollback", "cmd_seed",
           "cmd_server", "cmd_status", "destroys_line", "migrate_or_fail", "purge_summary",
           "rollback_effects", "run_async"]


def migrate_or_fail(url: str) -> list[str]:
    try:
        return apply_migrations(url)
    except Exception as exc:  # psycopg/yoyo errors: unreachable server, bad credentials...
        raise CliError(redact(f"cannot migrate: {type(exc).__name__}: {exc}".strip())) from None


def cmd_migrate(args: argparse.Namespace) -> int:
    applied = migrate_or_fail(database(args))
    for ident in applied:
        print(f"applied {ident}")
    if not applied:
        print("nothing to apply: the database is up to date")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    url = database(args)
    try:
        applied = migration_status(url)[0]
    except Exception as exc:
        raise CliError(redact(f"cannot read migrations: {type(exc).__name__}: {exc}")) from None
    todo = applied[::-1] if args.count is None else applied[::-1][: args.count]
    if not todo:
        print("nothing to roll back: no chatstore migration is applied")
        return 0
    print("will roll back: " + ", ".join(todo))
    counts = run_async(_count_chat_rows(url))
    for line in rollback_effects(todo, counts):
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


DESTROYS = "-- destroys:"


def rollback_effects(todo: Sequence[str], counts: Mapping[str, int]) -> list[str]:
    """What rolling back ``todo`` destroys, with row counts: the ``-- destroys:`` line of
    each migration's rollback file, its ``{placeholders}`` filled from ``counts`` (the
    columns of ``count_chat_rows``); ``see <file>`` for a rollback file without one."""
    lines: list[str] = []
    for ident in todo:
        path = migrations_dir() / (ident + ".rollback.sql")
        effect = destroys_line(path)
        if effect is None:
            lines.append(f"{ident}: see {path}")
            continue
        # A placeholder count_chat_rows lacks leaves the line as written.
        with contextlib.suppress(KeyError, IndexError, ValueError):
            effect = effect.format_map(counts)
        lines.append(f"{ident}: {effect}")
    return lines


def destroys_line(path: Path) -> str | None:
    """The text of the ``-- destroys:`` line among the comments that open the rollback file
    at ``path`` (a comment: yoyo and PostgreSQL ignore it), or ``None``."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(DESTROYS):
                    return line.removeprefix(DESTROYS).strip()
                if not line.startswith("--"):
                    break  # the opening comments end at the first statement
    except OSError:
        pass
    return None


async def _count_chat_rows(url: str) -> dict[str, int]:
    async with connection(url) as conn:
        counts = await conn.fetchrow(SQL.count_chat_rows)
    assert counts is not None  # one row, always
    return dict(counts)


def cmd_migrations_dir(args: argparse.Namespace) -> int:
    print(migrations_dir())
    return 0


# chatstore's own tables: the sizes `status` shows and adds up (the usage ledger's
# included). `users` is the backend's.
CHAT_TABLES = ["conversations", "messages", "usage_entries", "usage_daily",
               "usage_conversation_daily"]


def _attention(settings: asyncpg.Record) -> list[str]:
    """Settings of this database (as its role gives them to a session) that need a look."""
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
    url = database(args)
    try:
        applied, pending = migration_status(url)
    except Exception as exc:
        raise CliError(redact(f"cannot read migrations: {type(exc).__name__}: {exc}")) from None

    async def read() -> None:
        # The settings as the database and role give them, not as chatstore's pool pins them.
        async with connection(url, database_defaults=True) as conn:
            settings = await conn.fetchrow(SQL.server_settings)
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
            sizes = await conn.fetch(SQL.relation_sizes, CHAT_TABLES)
            print(f"{'':5} {'':40} {'table':>11} {'toast':>11} {'indexes':>11} {'total':>11}")
            for r in sizes:
                print(f"{'size':5} {r['table_name']:40} {size(r['table_bytes']):>11} "
                      f"{size(r['toast_bytes']):>11} {size(r['index_bytes']):>11} "
                      f"{size(r['total_bytes']):>11}")
            if sizes:
                total = sum(r["total_bytes"] for r in sizes)
                print(f"{'size':5} {'all chatstore tables':40} {'':>11} {'':>11} {'':>11} "
                      f"{size(total):>11}")
            for r in await conn.fetch(SQL.index_sizes, CHAT_TABLES):
                print(f"{'index':5} {r['index_name']:40} {size(r['bytes']):>11}  "
                      f"(on {r['table_name']})")
            if not pending and applied:
                counts = await conn.fetchrow(SQL.count_chat_rows)
                assert counts is not None
                for table in ("conversations", "messages"):
                    print(f"{'rows':5} {table:40} {counts[table]:>11}")
                forks = await conn.fetchval(SQL.count_forks)
                print(f"{'rows':5} {'conversations that are forks':40} {forks:>11}")
                print(f"{'idle':5} {'oldest activity of a conversation':40} "
                      + await _oldest_idle(conn))

    run_async(read())
    return 0


async def _oldest_idle(conn: Any) -> str:
    """The conversation tree idle longest (its latest activity anywhere is the oldest) and
    since when, for `status`. Roots come in order of their own latest activity, which is
    never later than their tree's: the scan stops once no later root can be idler."""
    position: tuple[Any, ...] = (datetime.min.replace(tzinfo=UTC), "", uuid.UUID(int=0))
    best = None
    while True:
        rows = await conn.fetch(SQL.oldest_idle_trees, *position, 100)
        for row in rows:
            if best is None or row["active_at"] < best["active_at"]:
                best = row
        if not rows or len(rows) < 100 or (best is not None
                                           and rows[-1]["position"] >= best["active_at"]):
            break
        position = (rows[-1]["position"], rows[-1]["user_id"], rows[-1]["id"])
    if best is None:
        return "none (no conversations)"
    now = await conn.fetchval(SQL.purge_clock)
    days = (now - best["active_at"]).total_seconds() / 86_400
    return (f"{best['active_at']:%Y-%m-%d %H:%M:%S %Z} ({days:,.1f} days ago): conversation "
            f"{best['id']} of user {best['user_id']!r}")


def _spoken(span: timedelta) -> str:
    """``90 days``, ``12:00:00`` (hours), as timedelta says it without ``, 0:00:00``."""
    return f"{span.days} days" if span == timedelta(days=span.days) else str(span)


def purge_summary(report: PurgeReport) -> str:
    """One line: the trees, conversations and messages a purge deleted (or would), and the
    trees it skipped, by reason."""
    reasons = {"held": "held", "turn_in_flight": "with a turn in flight",
               "locked": "locked by a live chat", "changed": "written to meanwhile"}
    skipped = [f"{count} {reasons.get(reason, reason)}"
               for reason, count in report.skipped.items() if count]
    return (f"{report.trees_deleted:,} tree(s): {report.conversations_deleted:,} "
            f"conversation(s), {report.messages_deleted:,} message(s); skipped "
            + (", ".join(skipped) if skipped else "none"))


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete whole trees idle for longer than --idle-for and/or expired: a dry run first
    (what would go), a question unless --yes, then the purge with a progress bar."""
    url = database(args)
    what = " and ".join(filter(None, [
        f"idle for more than {_spoken(args.idle_for)}" if args.idle_for is not None else "",
        "expired" if args.expired else ""]))
    print(f"purge: conversation trees {what} (never a held one or one in a turn)")

    async def run(dry_run: bool, progress: Progress | None = None) -> PurgeReport:
        async with await _store(url) as store:
            return await store.purge(idle_for=args.idle_for, expired=args.expired,
                                     batch_size=args.batch_size, dry_run=dry_run,
                                     progress=progress)

    preview: PurgeReport = run_async(run(True))
    print("would delete " + purge_summary(preview))
    if args.dry_run:
        return 0
    if not preview.trees_deleted:
        print("nothing to delete")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("not purged: confirm on a terminal, or pass --yes (standard "
                           "input is not a terminal)")
        try:
            answer = input("Type 'yes' to delete: ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            print("not purged")
            return 1
    progress = Progress("deleting conversations", preview.conversations_deleted)
    started = time.monotonic()
    report: PurgeReport = run_async(run(False, progress))
    progress.finish()
    seconds = time.monotonic() - started
    print(f"deleted {purge_summary(report)} in {seconds:.2f} s "
          f"({report.messages_deleted / max(seconds, 1e-9):,.0f} messages/s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    url = database(args)
    progress = Progress("checking conversations")
    usage_progress = Progress("checking usage entries")
    started = time.monotonic()
    report: CheckReport = run_async(check_database(url, repair=args.repair,
                                                    lease_grace=args.lease_grace,
                                                    progress=progress,
                                                    usage_progress=usage_progress))
    progress.finish()
    usage_progress.finish()
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
    for u in report.usage_violations:
        print(f"usage rollups of user {u.user_id!r}: " + "; ".join(u.problems))
        for fix in u.repaired:
            print(f"  repaired: {fix}")
    if report.usage_violation_count > len(report.usage_violations):
        print(f"... and {report.usage_violation_count - len(report.usage_violations)} more")
    fix = ", repaired" if args.repair else " (run with --repair to fix)"
    print(f"checked {report.conversations_checked} conversation(s), "
          f"{report.messages_checked} message(s) in {seconds:.2f} s: "
          + (f"{report.violation_count} with problems{fix}" if report.violation_count
             else "no problems"))
    print(f"checked the usage rollups of {report.usage_users_checked} user(s) against "
          f"{report.usage_entries_checked} ledger entries: "
          + (f"{report.usage_violation_count} user(s) with problems{fix}"
             if report.usage_violation_count else "no problems"))
    return 0 if report.ok or (args.repair and not report.usage_unrepaired) else 1


def _psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from ..embedded import embedded_bin_dir

    return str(embedded_bin_dir() / "psql")


def cmd_psql(args: argparse.Namespace) -> int:
    """psql on the database; the password goes through PGPASSWORD, never the command line
    (where ``ps`` would show it)."""
    url = target(args, keep_running=True, dbname=args.dbname)
    env = {**os.environ, **url.password_env()}
    psql_args = list(args.psql_args)
    if psql_args[:1] == ["--"]:
        psql_args = psql_args[1:]
    try:
        return subprocess.run([_psql_binary(), url.without_password(), *psql_args],
                              env=env, check=False).returncode
    except OSError as exc:
        raise CliError(f"cannot run psql: {exc.strerror}") from None


def cmd_server(args: argparse.Namespace) -> int:
    version = embedded_version()
    pgdata = chatstore_home() / f"pg{version}"
    if args.action == "stop":
        if not is_running(pgdata):
            print(f"embedded PostgreSQL {version} in {pgdata} is not running")
            return 0
        embedded(None).shutdown()
        print(f"stopped the embedded PostgreSQL {version} in {pgdata}")
        return 0
    if args.action == "status":
        print(f"embedded PostgreSQL {version} in {pgdata}: "
              + ("running" if is_running(pgdata) else "stopped"))
        return 0
    if args.action == "url":
        # Only a question: it starts nothing unless asked to (--start), and says so then.
        url = running_url(pgdata)
        if url is None and not args.start:
            print(f"embedded PostgreSQL {version} in {pgdata} is not running (start it with "
                  "`chatstore server start`, or ask for `chatstore server url --start`)",
                  file=sys.stderr)
            return 1
        if url is None:
            url = embedded(None).dsn
            print(f"started the embedded PostgreSQL {version} in {pgdata}", file=sys.stderr)
        print(url)
        return 0
    server = embedded(None)
    print(f"embedded PostgreSQL {version} running in {server.pgdata}\n{server.dsn}")
    return 0


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def _store(url: str, max_content_bytes: int = 1 << 20) -> ChatStore:
    return await connect(url, min_size=1, max_size=2, max_content_bytes=max_content_bytes)


def cmd_export(args: argparse.Namespace) -> int:
    url = database(args)
    progress = Progress("exporting messages")

    async def run(out: Any) -> Counter[bool]:
        count: Counter[bool] = Counter()  # lines, by whether they are usage entries
        async with await _store(url) as store:
            async for line in export_user(store, args.user, progress):
                out.write(line + "\n")
                count[line.startswith(USAGE_LINE_START)] += 1
        return count

    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                count = run_async(run(out))
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    else:
        count = run_async(run(sys.stdout))
    progress.finish()
    print(f"exported {count[False]} conversation(s), {progress.done} message(s) and "
          f"{count[True]} usage entries of user {args.user!r}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    url = database(args)
    try:
        with open(args.file, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{args.file} is not UTF-8 text ({exc.reason})") from None
    progress = Progress("importing messages")

    async def run() -> ImportReport:
        async with await _store(url, args.max_content_bytes) as store:
            return await import_file(store, lines, create_users=args.create_users,
                                     progress=progress)

    started = time.monotonic()
    report = run_async(run())
    progress.finish()
    seconds = time.monotonic() - started
    print(f"imported {report.conversations_imported} of {report.conversations_read} "
          f"conversation(s) and {report.messages_imported} of {report.messages_read} "
          f"message(s) in {seconds:.2f} s "
          f"({report.messages_imported / max(seconds, 1e-9):,.0f} messages/s); "
          f"{report.conversations_read - report.conversations_imported} already present"
          + (f"; {report.usage_imported} of {report.usage_read} usage entries "
             f"({report.usage_read - report.usage_imported} already present)"
             if report.usage_read else "")
          + (f"; created {report.users_created} user(s)" if report.users_created else ""))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    url = database(args)
    migrate_or_fail(url)
    total = args.users * args.conversations * args.messages
    progress = Progress("seeding messages", total)
    try:
        report = run_async(seed_database(url, users=args.users,
                                         conversations=args.conversations,
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
