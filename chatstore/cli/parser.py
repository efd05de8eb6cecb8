"""The command line: subcommands, their options, and the global ``--database`` that goes
before or after the subcommand."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import timedelta

from . import commands, demo

__all__ = ["DESCRIPTION", "build_parser", "pull_global_options", "pull_option"]

DESCRIPTION = ("The ``chatstore`` command: migrate, rollback, check, status, purge, demo, psql "
               "and more.")

DATABASE_HELP = ("postgresql:// URL (postgres://, postgresql+psycopg://, postgresql+asyncpg:// "
                 "and libpq key=value strings work too; default: $CHATSTORE_DSN, "
                 "$DATABASE_URL, else the embedded server)")


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


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    """A positive duration written ``<number><unit>``: ``90d``, ``12h``, ``30m``, ``45s``,
    ``2w`` (a whole or decimal number, one unit)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a number and a unit, s, m, h, d or w "
            "(90d, 12h)")
    value = timedelta(**{_UNITS[found.group(2)]: float(found.group(1))})
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every subcommand takes, before or after its name."""
    parser.add_argument("--database", metavar="URL", help=DATABASE_HELP,
                        default=None if top else argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstore", description=DESCRIPTION,
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

    command("migrate", "apply pending migrations", commands.cmd_migrate)
    rollback = command("rollback", "roll back chatstore's migrations (lists what it drops, "
                       "with row counts; asks first)", commands.cmd_rollback)
    rollback.add_argument("--count", type=_positive, default=None,
                          help="roll back only the newest N migrations (default: all)")
    rollback.add_argument("--yes", action="store_true",
                          help="do not ask (needed when standard input is not a terminal)")
    sub.add_parser("migrations-dir", help="print the folder of the migration files (for yoyo)"
                   ).set_defaults(func=commands.cmd_migrations_dir)
    command("status", "version, migrations, settings needing attention, sizes, row counts",
            commands.cmd_status)
    check = command("check", "verify counters, seqs, leases and schema on every conversation, "
                    "and that the usage rollups equal the ledger", commands.cmd_check)
    check.add_argument("--repair", action="store_true",
                       help="fix what is found, one transaction per conversation (and per "
                            "user whose usage rollups differ)")
    check.add_argument("--lease-grace", metavar="SECONDS", type=_nonnegative_seconds,
                       default=600.0,
                       help="a turn lease is stuck this long after it ran out (default 600)")
    purge = command("purge", "delete whole conversation trees idle longer than --idle-for "
                    "and/or expired (--expired), never held ones or ones in a turn; asks "
                    "first", commands.cmd_purge)
    purge.add_argument("--idle-for", metavar="DURATION", type=duration, default=None,
                       help="delete trees whose latest activity is older than this "
                            "(90d, 12h, 30m, 2w)")
    purge.add_argument("--expired", action="store_true",
                       help="delete trees whose expiry (ttl) has passed")
    purge.add_argument("--dry-run", action="store_true",
                       help="delete nothing: say what would be deleted and skipped")
    purge.add_argument("--yes", action="store_true",
                       help="do not ask (needed when standard input is not a terminal)")
    purge.add_argument("--batch-size", metavar="N", type=_positive, default=100,
                       help="trees per transaction (default 100)")
    command("demo", "migrate, play a scripted chat, show transcript and plans", demo.cmd_demo)
    psql = command("psql", "open psql on the database (password via PGPASSWORD); other "
                   "arguments go to psql", commands.cmd_psql)
    psql.add_argument("--dbname", metavar="NAME", default=None,
                      help="another database on the same server (the example's "
                           "todo_chatbot, say): same host, user and password")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER)
    export = command("export", "a user's conversations and usage entries as JSON Lines",
                     commands.cmd_export)
    export.add_argument("--user", required=True, help="the user id")
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    imp = command("import", "restore a JSON Lines export (idempotent)", commands.cmd_import)
    imp.add_argument("file")
    imp.add_argument("--create-users", action="store_true",
                     help="add missing users rows (id only) instead of refusing")
    imp.add_argument("--max-content-bytes", type=_positive, default=1 << 20, metavar="N",
                     help="the largest message content accepted, as the store that wrote "
                          "the file was configured (default 1 MiB)")
    seed = command("seed", "load synthetic chat data (for benchmarks, demos)",
                   commands.cmd_seed)
    seed.add_argument("--users", type=_positive, default=10)
    seed.add_argument("--conversations", type=_positive, default=10, help="per user")
    seed.add_argument("--messages", type=_positive, default=100, help="per conversation")
    seed.add_argument("--seed", type=int, default=None, help="make the data reproducible")
    seed.add_argument("--user-prefix", default="seed-user-")
    server = sub.add_parser("server", help="manage the embedded PostgreSQL",
                            description="start, stop or look at the embedded PostgreSQL; "
                                        "`url` prints its URL when it is running (exit 1 "
                                        "when it is not, unless --start)")
    server.set_defaults(func=commands.cmd_server)
    server.add_argument("action", choices=["start", "stop", "status", "url"])
    server.add_argument("--start", action="store_true",
                        help="with url: start the server first when it is not running")
    return parser


def pull_option(name: str, argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``name VALUE`` / ``name=VALUE`` out of ``argv`` (up to a ``--``): the last one's
    value and the arguments without them (``None`` when absent)."""
    value: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def pull_global_options(argv: list[str]) -> tuple[list[str], list[str]]:
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
