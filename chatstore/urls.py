"""One way to read a database URL, for ``connect()``, the command and the migrations.

Accepted: ``postgresql://``, ``postgres://``, ``postgresql+psycopg://``,
``postgresql+asyncpg://`` (a SQLAlchemy ``DATABASE_URL`` as a FastAPI app has it) and libpq
key/value strings (``host=db dbname=app user=app password=...``). :func:`parse_url` returns
a :class:`DatabaseURL` that writes the forms each consumer needs: asyncpg's and libpq's
``postgresql://``, yoyo's and SQLAlchemy's ``postgresql+psycopg://``, and one for printing,
without the password. A URL that cannot be used raises ``InvalidInput("dsn", ...)`` naming
the part that is wrong (never retryable, never containing the password).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .errors import InvalidInput

__all__ = ["SCHEMES", "DatabaseURL", "parse_url", "redact"]

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg",
           "postgresql+psycopg2")
_EXAMPLE = "postgresql://user:password@host:5432/dbname"
# Query parameters that are parts of the address rather than connection options.
_ADDRESS_KEYS = ("host", "port", "user", "password", "dbname")


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed PostgreSQL address. ``options`` are the other libpq/asyncpg parameters
    (``sslmode``, ``application_name``...), kept in order."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def _build(self, scheme: str, *, password: bool, hidden: bool = False) -> str:
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
        if self.password is not None and (password or hidden):
            auth += ":" + ("***" if hidden else quote(self.password, safe=""))
        if auth:
            auth += "@"
        query: list[tuple[str, str]] = []
        netloc_host = ""
        if self.host and (self.host.startswith("/") or "," in self.host):
            query.append(("host", self.host))  # a Unix socket folder (or several hosts)
            if self.port is not None:
                query.append(("port", str(self.port)))
        elif self.host:
            netloc_host = f"[{self.host}]" if ":" in self.host else self.host
            if self.port is not None:
                netloc_host += f":{self.port}"
        elif self.port is not None:
            query.append(("port", str(self.port)))
        query.extend(self.options)
        path = "/" + quote(self.dbname, safe="") if self.dbname else "/"
        text = f"{scheme}://{auth}{netloc_host}{path}"
        if query:
            text += "?" + urlencode(query, safe="/")
        return text

    def asyncpg(self) -> str:
        """``postgresql://`` with the password: what asyncpg (and libpq) connect with."""
        return self._build("postgresql", password=True)

    def yoyo(self) -> str:
        """``postgresql+psycopg://`` with the password: yoyo's psycopg 3 backend."""
        return self._build("postgresql+psycopg", password=True)

    def sqlalchemy(self) -> str:
        """``postgresql+psycopg://``: SQLAlchemy's psycopg 3 dialect (Alembic, SQLModel)."""
        return self._build("postgresql+psycopg", password=True)

    def without_password(self) -> str:
        """``postgresql://`` without the password (give it through ``PGPASSWORD``)."""
        return self._build("postgresql", password=False)

    def redacted(self) -> str:
        """For printing: the password, if any, shows as ``***``."""
        return self._build("postgresql", password=False, hidden=True)

    def password_env(self) -> dict[str, str]:
        """``{"PGPASSWORD": ...}`` when there is a password (for psql, pg_dump...)."""
        return {"PGPASSWORD": self.password} if self.password is not None else {}


def _invalid(problem: str) -> InvalidInput:
    return InvalidInput("dsn", problem)


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _invalid(f"the port {where}{text!r} is not a number from 1 to 65535")
    return int(text)


def parse_url(text: str) -> DatabaseURL:
    """Read a PostgreSQL URL or libpq key/value string; see the module docstring.

    :raises InvalidInput: (field ``"dsn"``) saying which part is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise _invalid("is empty; expected " + _EXAMPLE)
    text = text.strip()
    if "://" not in text:
        if "=" in text:
            return _parse_key_value(text)
        raise _invalid(f"is neither a URL nor key=value pairs; expected {_EXAMPLE}")
    scheme, _, rest = text.partition("://")
    if scheme.lower() not in SCHEMES:
        raise _invalid(f"the scheme {scheme + '://'!r} is not PostgreSQL; use postgresql:// "
                       f"(or postgres://, postgresql+psycopg://, postgresql+asyncpg://), "
                       f"as in {_EXAMPLE}")
    try:
        parts = urlsplit("postgresql://" + rest)
    except ValueError:  # urllib: "Invalid IPv6 URL"
        raise _invalid("the host has an unclosed '[' or a stray ']' (IPv6 address)") from None
    if parts.fragment:
        raise _invalid("has a '#' part; a password containing '#' must be written %23")
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    user: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    host: str | None = None
    port: int | None = None
    if hostport.startswith("["):
        inside, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _invalid(f"the host {hostport!r} has an unclosed '[' (IPv6 address)")
        host = inside
        if after:
            port = _port(after[1:], "")
    elif "," in hostport:
        host = unquote(hostport)  # several hosts: libpq's failover list, left as it is
    else:
        name, colon, port_text = hostport.partition(":")
        host = unquote(name) or None
        if colon:
            port = _port(port_text, "")
    dbname = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if "/" in dbname:
        raise _invalid(f"the database name {dbname!r} contains '/'; write it %2F")
    options: list[tuple[str, str]] = []
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _invalid("the part after '?' is not name=value pairs joined by '&'") from None
    for key, value in query:
        if key == "host":
            host = value or host
        elif key == "port":
            port = _port(value, "in ?port=")
        elif key == "user":
            user = value
        elif key == "password":
            password = value
        elif key == "dbname":
            dbname = value
        else:
            options.append((key, value))
    return DatabaseURL(user=user, password=password, host=host, port=port,
                       dbname=dbname or None, options=tuple(options))


def _parse_key_value(text: str) -> DatabaseURL:
    from psycopg import conninfo

    try:
        info = conninfo.conninfo_to_dict(text)
    except Exception:  # libpq's message may quote the password: never repeat it
        raise _invalid("cannot read the key=value connection string (expected "
                       "host=... port=... dbname=... user=... password=...)") from None
    values = {k: str(v) for k, v in info.items() if v is not None}
    port = _port(values["port"], "") if "port" in values else None
    return DatabaseURL(
        user=values.get("user"), password=values.get("password"), host=values.get("host"),
        port=port, dbname=values.get("dbname"),
        options=tuple((k, v) for k, v in values.items() if k not in _ADDRESS_KEYS),
    )


# The password of a URL whose text is known: in ``user:pw@`` or a ``password=`` parameter.
_PASSWORDS = re.compile(r"^[^:/]+://[^:@/]*:([^@]*)@|[?&]password=([^&]*)")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^@\s]*@")
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&'\"]*)", re.IGNORECASE)


def redact(text: str, url: str | None = None) -> str:
    """``text`` with any password in it replaced by ``***``: in a URL's ``user:pw@``, a
    ``?password=`` parameter or a key/value ``password=``, and, given the ``url`` the text
    is about, that URL's password wherever it stands (quoted or not: a driver's message may
    quote it alone). For messages and logs."""
    if url is not None:
        for match in _PASSWORDS.finditer(url):
            for secret in match.groups():
                if secret:
                    text = text.replace(secret, "***").replace(unquote(secret), "***")
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))
