"""Every CLI error a person can fix is one line on stderr, saying what to do, and a
non-zero exit; `retail db reset` gives a clean slate and asks before it does."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retail.cli import app
from tests.conftest import postgres_url
from tests.serving import free_port

WIDE = {"COLUMNS": "200"}


def run(args: list[str], **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env={**WIDE, **env})
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def unreachable_postgres() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/retail"


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["serve"], ["worker"]])
def test_an_unreachable_postgresql_is_one_line(command: list[str]) -> None:
    code, _, stderr = run(command, RETAIL_DATABASE_URL=unreachable_postgres())
    assert code == 1
    line = one_line(stderr)
    assert line.startswith("Error: cannot reach PostgreSQL at 127.0.0.1:")
    assert "is it running?" in line and "RETAIL_DATABASE_URL" in line


def test_a_missing_postgresql_database_says_how_to_create_it() -> None:
    base = postgres_url()
    if base is None:
        pytest.skip("needs RETAIL_TEST_POSTGRES_URL")
    name = f"retail_missing_{uuid.uuid4().hex[:8]}"
    url = base.rsplit("/", 1)[0] + "/" + name
    code, _, stderr = run(["db", "upgrade"], RETAIL_DATABASE_URL=url)
    assert code == 1
    line = one_line(stderr)
    assert f'database "{name}" does not exist' in line
    assert "createdb" in line and f"CREATE DATABASE {name}" in line


def test_an_unsupported_url_scheme_is_a_settings_error() -> None:
    code, _, stderr = run(["db", "upgrade"], RETAIL_DATABASE_URL="mysql://root@localhost/retail")
    assert code == 2
    assert stderr.startswith("Invalid settings:")
    assert "unsupported database URL scheme 'mysql'" in stderr
    assert "sqlite+aiosqlite" in stderr and "postgresql+asyncpg" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("url", ["sqlite:///x.db", "postgres://u@h/db", "postgresql://u@h/db"])
def test_the_plain_aliases_are_still_accepted(url: str) -> None:
    from retail.config import Settings

    assert Settings(_env_file=None, database_url=url).database_url.split(":")[0] in (
        "sqlite+aiosqlite",
        "postgresql+asyncpg",
    )


def test_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"
    code, _, stderr = run(["db", "upgrade", "9999"], RETAIL_DATABASE_URL=url)
    assert code == 1
    line = one_line(stderr)
    assert "'9999'" in line and "alembic history" in line


def test_an_sqlite_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'retail.db'}"
    code, _, stderr = run(["db", "upgrade"], RETAIL_DATABASE_URL=url)
    assert code == 1
    assert "cannot open the SQLite database" in one_line(stderr)


def test_db_reset_refuses_without_yes_when_nobody_can_answer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"
    code, _, stderr = run(["db", "reset"], RETAIL_DATABASE_URL=url)
    assert code == 2
    assert "--yes" in one_line(stderr)


def test_db_reset_drops_every_row_and_migrates_to_head(tmp_path: Path) -> None:
    path = tmp_path / "retail.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert run(["db", "upgrade"], RETAIL_DATABASE_URL=url)[0] == 0
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO products (sku, name, unit_price, stock, currency, updated_at) "
            "VALUES ('OLD-1', 'left over', 100, 1, 'EUR', '2026-01-01 00:00:00')"
        )
        connection.execute("CREATE TABLE stray (x INTEGER)")
    code, stdout, _ = run(["db", "reset", "--yes"], RETAIL_DATABASE_URL=url)
    assert code == 0, stdout
    assert "database reset" in stdout
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM products").fetchone() == (0,)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "stray" not in tables and "orders" in tables
    code, stdout, _ = run(["db", "current"], RETAIL_DATABASE_URL=url)
    current, head = (line.split()[-1] for line in stdout.splitlines())
    assert current == head != "None"


def test_serve_help_shows_whole_option_names_at_80_columns() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    for option in ("--fulfilment-delay", "--overload-mode", "--database-url", "--queue-limit"):
        assert option in result.stdout
    assert "…" not in result.stdout
