"""The docs are true: docs/migrating.md's code runs, the README matches the code and the
repository, supported versions are the ones the suite runs on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from chatstore.embedded import SUPPORTED_VERSIONS
from chatstore.urls import parse_url

from .conftest import REPO, SYSTEM_VERSIONS

MIGRATING = REPO / "docs" / "migrating.md"
README = (REPO / "README.md").read_text()


def doc_files() -> dict[str, str]:
    """docs/migrating.md's code blocks that start with ``# file: NAME``."""
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", MIGRATING.read_text(), re.S)
    return dict(blocks)


def write_files(folder: Path, names: list[str]) -> None:
    files = doc_files()
    for name in names:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[name])


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute(
            b"SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_sqlmodel_init_db_creates_the_apps_tables_then_chatstores(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    url = new_database(template=False)
    write_files(tmp_path, ["init_db.py"])
    env = {**os.environ, "DATABASE_URL": url}
    for expected in ("['0001", "none pending"):
        done = subprocess.run([sys.executable, "init_db.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
    assert {"users", "tasks", "conversations", "messages"} <= tables(url)
    with psycopg.connect(url) as c:  # the app's users table, not chatstore's minimal one
        c.execute(b"INSERT INTO users (id, email) VALUES ('u1', 'u1@example.test')")
        c.execute(b"INSERT INTO conversations (user_id) VALUES ('u1')")


def test_alembic_revision_applies_and_undoes_chatstores_migrations(
        new_database: Callable[..., str], tmp_path: Path) -> None:
    url = new_database(template=False)
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n"
                                          "prepend_sys_path = .\n")
    write_files(tmp_path, ["alembic/env.py", "models.py", "alembic/versions/0001_users.py",
                           "alembic/versions/0002_chatstore.py"])
    # The app's URL as SQLAlchemy apps write it; chatstore reads the same variable.
    env = {**os.environ, "DATABASE_URL": parse_url(url).sqlalchemy()}

    def alembic(*args: str) -> str:
        done = subprocess.run([bin_path("alembic"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    alembic("upgrade", "head")
    both = {"alembic_version", "_yoyo_migration", "users", "tasks", "conversations",
            "messages"}
    assert both <= tables(url)
    # Autogenerate sees no difference: chatstore's and yoyo's tables are left out.
    assert "No new upgrade operations detected" in alembic("check")

    alembic("downgrade", "-1")
    assert {"conversations", "messages"}.isdisjoint(tables(url))
    assert {"users", "tasks", "alembic_version"} <= tables(url)
    alembic("upgrade", "head")
    assert {"conversations", "messages"} <= tables(url)


def test_migrations_need_no_superuser_and_no_extension(
        new_database: Callable[..., str], pg_server: object) -> None:
    """A managed PostgreSQL: the app's role owns its database but is no superuser."""
    for path in (REPO / "migrations").glob("*.sql"):
        assert "EXTENSION" not in path.read_text().upper(), path.name
    admin = new_database(template=False)
    name = admin.split("/")[3].split("?")[0]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(b"DROP ROLE IF EXISTS chat_app")
        c.execute(b"CREATE ROLE chat_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        c.execute(f"ALTER DATABASE {name} OWNER TO chat_app".encode())
        c.execute(b"ALTER SCHEMA public OWNER TO chat_app")
    app = admin.replace("postgresql://postgres@", "postgresql://chat_app@", 1)
    try:
        chatstore = bin_path("chatstore")
        for command in ("migrate", "check"):
            done = subprocess.run([chatstore, command, "--database", app], capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert done.returncode == 0, done.stderr
        with psycopg.connect(app) as c:
            row = c.execute(b"SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone()
            assert row == (False,)
            owner = c.execute(b"SELECT tableowner FROM pg_tables WHERE tablename = 'messages'"
                              ).fetchone()
            assert owner == ("chat_app",)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(b"DROP OWNED BY chat_app CASCADE")
            c.execute(f"ALTER DATABASE {name} OWNER TO postgres".encode())
        with psycopg.connect(admin.replace(f"/{name}?", "/postgres?"),
                             autocommit=True) as c:
            c.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
            c.execute(b"DROP ROLE chat_app")


# -- the README and the repository ----------------------------------------------------

def test_readme_layout_lists_every_module() -> None:
    """Every module of the package and of its subpackages (chatstore/cli/ ...) is named."""
    layout = README.split("## Layout", 1)[1]
    for module in sorted((REPO / "chatstore").rglob("*.py")):
        name = module.relative_to(REPO / "chatstore")
        if module.name != "__init__.py" and "_migrations" not in name.parts:
            assert module.name in layout, f"README's layout omits chatstore/{name}"
        if module.name == "__init__.py" and module.parent != REPO / "chatstore":
            package = module.parent.relative_to(REPO).as_posix()
            assert f"{package}/" in layout, f"README's layout omits {package}/"


def test_readme_states_exit_statuses_and_supported_versions() -> None:
    assert "Usage errors exit with status 2" in README
    assert "every other failure with 1" in README
    majors = sorted({*SUPPORTED_VERSIONS, *SYSTEM_VERSIONS})
    assert f"Supported PostgreSQL versions: {', '.join(map(str, majors[:-1]))} and " \
           f"{majors[-1]}" in README


@pytest.mark.parametrize("path", ["README.md", "docs/migrating.md", "docs/api.md",
                                  "sql/schema.sql", "yoyo.ini"])
def test_files_the_docs_point_to_exist_in_the_repository(path: str) -> None:
    text = (REPO / path).read_text()
    named = set(re.findall(r"(?<![\w./-])((?:docs|sql|migrations|chatstore|tests|bench)/"
                           r"[\w./-]*\w)", text))
    named |= set(re.findall(r"\]\(([^)#:]+)\)", text))  # markdown links
    for name in sorted(named):
        base = REPO if not name.startswith(".") else (REPO / path).parent
        if name.startswith(("alembic/", "chatstore/_migrations")):
            continue  # the user's own Alembic folder; the wheel's copy of migrations/
        assert (base / name).exists() or (REPO / path).parent.joinpath(name).exists(), (
            f"{path} names {name}, which is not in the repository")
    assert "design.md" not in text


def test_make_test_includes_15_exactly_when_its_binaries_exist(tmp_path: Path) -> None:
    # Run the Makefile as a user would: not with `make test PG=16`'s variables, which a
    # parent make passes down through MAKEFLAGS.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PG")}

    def versions(bin_dir: Path) -> str:
        return subprocess.run(["make", "-s", "--no-print-directory", "versions",
                               f"PG15_BIN={bin_dir}"], cwd=REPO, capture_output=True,
                              text=True, check=True, env=env).stdout.strip()

    assert versions(tmp_path) == "16 18"
    (tmp_path / "initdb").write_text("")
    assert versions(tmp_path) == "15 16 18"
    dry = subprocess.run(["make", "-n", "test", f"PG15_BIN={tmp_path}/absent"], cwd=REPO,
                         capture_output=True, text=True, check=True, env=env).stdout
    assert "PostgreSQL 15: skipped" in dry


def test_an_absent_version_is_skipped_by_name(tmp_path: Path) -> None:
    env = {**os.environ, "CHATSTORE_TEST_PG": "15", "CHATSTORE_TEST_PG15_BIN": str(tmp_path),
           "CHATSTORE_TEST_DSN": ""}
    env.pop("CHATSTORE_TEST_DSN")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs",
         "tests/test_check.py::test_expected_columns_are_what_the_migrations_create"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "1 skipped" in done.stdout, done.stdout
    assert f"PostgreSQL 15 is not installed: no {tmp_path}/initdb" in done.stdout


async def test_suite_runs_on_the_requested_major(conn: object) -> None:
    import asyncpg

    assert isinstance(conn, asyncpg.Connection)
    number = int(await conn.fetchval("SHOW server_version_num"))
    assert number >= 150000
    wanted = os.environ.get("CHATSTORE_TEST_PG")
    if wanted and not os.environ.get("CHATSTORE_TEST_DSN"):
        assert number // 10000 == int(wanted)
