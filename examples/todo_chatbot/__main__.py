"""Run the todo chatbot: ``make example``, or ``python -m examples.todo_chatbot``.

Uses ``$TODO_DATABASE_URL`` (else ``$CHATSTORE_DSN``, else ``$DATABASE_URL``), or else a
database ``todo_chatbot`` on chatstore's embedded PostgreSQL (in ``$CHATSTORE_HOME``). It
prepares the database (the app's tables, then chatstore's migrations), adds the user
``demo``, and serves the API and its web page on http://127.0.0.1:8000 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

import psycopg
import uvicorn
from psycopg import sql

from chatstore.embedded import EmbeddedServer, chatstore_home, is_running, start_embedded

from .app import create_app
from .database import add_user, prepare_database

DATABASE = "todo_chatbot"
# At SIGTERM, uvicorn stops accepting and waits for requests in progress; without a bound it
# waits for ever for one that never ends, and the process outlives its SIGTERM. 5 s lets a
# scripted turn finish; a deployment with a real model may give its turns longer (and its
# orchestrator's kill grace period more than this).
GRACEFUL_TIMEOUT = 5


def embedded_database() -> tuple[EmbeddedServer, str]:
    """chatstore's embedded server, with a database of the example's own on it."""
    version = int(os.environ.get("CHATSTORE_PG", "16"))
    home = chatstore_home()
    home.mkdir(parents=True, exist_ok=True)
    pgdata = home / f"pg{version}"
    server = start_embedded(pgdata, version=version, runtime_dir=home / "run",
                            cleanup=None if is_running(pgdata) else "stop")
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        (DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return server, server.url(DATABASE)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.todo_chatbot",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--graceful-timeout", type=int, default=GRACEFUL_TIMEOUT,
                        metavar="SECONDS",
                        help="at SIGTERM or Ctrl-C, how long requests in progress may run "
                             "before they are cancelled (default %(default)s)")
    args = parser.parse_args()
    url = (os.environ.get("TODO_DATABASE_URL") or os.environ.get("CHATSTORE_DSN")
           or os.environ.get("DATABASE_URL"))
    server = None
    if not url:
        server, url = embedded_database()
        print(f"todo_chatbot: database {DATABASE} on the embedded PostgreSQL in "
              f"{server.pgdata}", file=sys.stderr)
    try:
        for ident in prepare_database(url):
            print(f"todo_chatbot: applied chatstore migration {ident}", file=sys.stderr)
        add_user(url, "demo", "Demo user")
        model = "real model" if os.environ.get("OPENAI_API_KEY") else "offline scripted model"
        base = f"http://{args.host}:{args.port}"
        print(f"todo_chatbot: {model}; open {base}/ for the web page, or try\n"
              f"  curl -s {base}/api/demo/chat -H 'content-type: application/json' "
              f"-d '{{\"message\": \"add milk and eggs\"}}'\n"
              f"  curl -s {base}/api/demo/conversations", file=sys.stderr)
        # uvicorn shuts down gracefully on SIGTERM (requests in progress get
        # --graceful-timeout seconds, then are cancelled; the app's lifespan closes the pool
        # within a bound of its own) and then raises the signal again with the handler it
        # found: make that an exit, so the embedded server below is stopped.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        uvicorn.run(create_app(url), host=args.host, port=args.port,
                    timeout_graceful_shutdown=max(1, args.graceful_timeout))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
