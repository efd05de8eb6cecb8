"""The ``chatstore`` command: migrate, rollback, check, status, purge, demo, psql and more.

Which database: ``--database URL`` (before or after the subcommand), else ``$CHATSTORE_DSN``,
else ``$DATABASE_URL``, else an embedded PostgreSQL whose data lives in ``$CHATSTORE_HOME``
(see :func:`chatstore.embedded.chatstore_home`). Any URL form :mod:`chatstore.urls` reads is
accepted. Every command says on stderr which database it uses, never with its password.
Usage errors exit with status 2, every other failure with 1.

:mod:`.parser` reads the command line, :mod:`.target` picks the database, :mod:`.commands`
runs each command (:mod:`.demo` the demo), :mod:`.output` reports failures and progress.
Every statement goes through chatstore's call path (`_call.py`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import ChatStoreError
from ..urls import redact
from .output import CliError, fail
from .parser import build_parser, pull_global_options, pull_option

__all__ = ["CliError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    front, rest = pull_global_options(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args([*front, *rest])
    if args.command == "psql":
        # --dbname after psql's own arguments is chatstore's too (argparse left it in them).
        dbname, args.psql_args = pull_option("--dbname", [*extra, *args.psql_args])
        if dbname is not None:
            args.dbname = dbname
        if args.dbname == "":
            parser.error("--dbname: give a database name")
    elif extra:
        parser.error(f"unrecognized arguments: {redact(' '.join(extra))}")
    if args.command == "server" and args.start and args.action != "url":
        parser.error("--start applies to `server url` only")
    if args.command == "purge" and args.idle_for is None and not args.expired:
        parser.error("purge: give --idle-for DURATION, --expired, or both")
    if args.command in ("server", "migrations-dir") and args.database:
        parser.error(f"--database does not apply to {args.command} "
                     + ("(it manages the embedded PostgreSQL)" if args.command == "server"
                        else "(it reads no database)"))
    try:
        code: int = args.func(args)
        return code
    except (CliError, ChatStoreError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback for an operational failure
        fail(f"{type(exc).__name__}: {exc}")
    return 1
