"""The README matches the code and the repository, the files the docs name exist, and the
Makefile and the suite pick the PostgreSQL versions they say: no database needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatstore.embedded import SUPPORTED_VERSIONS

from ..conftest import REPO, SYSTEM_VERSIONS

README = (REPO / "README.md").read_text()


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
                                  "sql/schema.sql", "yoyo.ini",
                                  "examples/todo_chatbot/README.md"])
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
         "tests/store/test_check.py::test_expected_columns_are_what_the_migrations_create"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "1 skipped" in done.stdout, done.stdout
    assert f"PostgreSQL 15 is not installed: no {tmp_path}/initdb" in done.stdout
