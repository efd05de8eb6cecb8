"""One URL form: how each spelling is rewritten, how bad ones name the wrong part, how
passwords are hidden. No database needed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import chatstore
from chatstore.migrate import yoyo_url
from chatstore.urls import parse_url, redact


@pytest.mark.parametrize(("url", "asyncpg", "yoyo"), [
    ("postgres://u:p%40ss@db.example:6432/app?sslmode=require",
     "postgresql://u:p%40ss@db.example:6432/app?sslmode=require",
     "postgresql+psycopg://u:p%40ss@db.example:6432/app?sslmode=require"),
    ("postgresql+asyncpg://app:pw@[::1]:5432/app",
     "postgresql://app:pw@[::1]:5432/app", "postgresql+psycopg://app:pw@[::1]:5432/app"),
    ("postgresql+psycopg://me@/chat?host=/run/postgresql",
     "postgresql://me@/chat?host=/run/postgresql",
     "postgresql+psycopg://me@/chat?host=/run/postgresql"),
    ("host=/tmp/s port=5433 dbname=x user=u password='a b' sslmode=disable",
     "postgresql://u:a%20b@/x?host=/tmp/s&port=5433&sslmode=disable",
     "postgresql+psycopg://u:a%20b@/x?host=/tmp/s&port=5433&sslmode=disable"),
])
def test_forms_are_rewritten_for_each_consumer(url: str, asyncpg: str, yoyo: str) -> None:
    parsed = parse_url(url)
    assert parsed.asyncpg() == asyncpg
    assert parsed.yoyo() == yoyo == yoyo_url(url)
    if parsed.password is None:
        assert parsed.redacted() == asyncpg and parsed.password_env() == {}
        return
    assert "***" in parsed.redacted() and parsed.password not in parsed.redacted()
    assert parsed.password not in parsed.without_password()
    assert parsed.password_env() == {"PGPASSWORD": parsed.password}


@pytest.mark.parametrize(("url", "part"), [
    ("mysql://u:sekrit@h/db", "scheme 'mysql://'"),
    ("postgresql+psycopg2x://u:sekrit@h/db", "scheme"),
    ("postgresql://u:sekrit@h:54x2/db", "port '54x2'"),
    ("postgresql://u:sekrit@h:70000/db", "port '70000'"),
    ("postgresql://u:sekrit@h/db?port=abc", "port in ?port="),
    ("postgresql://u:sekrit@h/a/b", "database name 'a/b'"),
    ("postgresql://u:sekrit@[::1/db", "unclosed '['"),
    ("postgresql://u:sek#rit@h/db", "'#'"),
    ("postgresql://u:sekrit@h/db?=x&&", "after '?'"),
    ("host=h password=sekrit nonsense=1", "key=value"),
    ("just some words", "neither a URL nor key=value"),
    ("", "empty"),
])
def test_unusable_url_names_the_wrong_part(url: str, part: str) -> None:
    with pytest.raises(chatstore.InvalidInput) as caught:
        parse_url(url)
    assert caught.value.field == "dsn"
    assert part in str(caught.value)
    assert "sekrit" not in str(caught.value)
    assert caught.value.retryable is False


async def test_connect_refuses_an_unusable_url_as_invalid_input() -> None:
    with pytest.raises(chatstore.InvalidInput, match="scheme 'mysql://'") as caught:
        await chatstore.connect("mysql://u:sekrit@localhost/db")
    assert "sekrit" not in str(caught.value)


@pytest.mark.parametrize("text", [
    "postgresql://u:sekrit@h/db",
    "postgresql+asyncpg://u:sekrit@h:5/db",
    "postgresql://u@h/db?password=sekrit&sslmode=require",
    "host=h password=sekrit dbname=x",
    "host=h password = 'sek rit' dbname=x",
    "error: connection to postgresql://u:sekrit@h/db failed",
])
def test_redact_hides_every_password_form(text: str) -> None:
    hidden = redact(text)
    assert "sekrit" not in hidden and "sek rit" not in hidden
    assert "***" in hidden


def test_redact_leaves_text_without_a_password_alone() -> None:
    text: Callable[[], str] = lambda: "postgresql://u@h:5/db?sslmode=require host=x"  # noqa: E731
    assert redact(text()) == text()
