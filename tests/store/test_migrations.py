"""Alembic migrations: from empty to head and back, and they build what the models say."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from retail.cli import app as cli
from retail.store.sql.migrations import alembic_config
from retail.store.sql.models import Base
from tests.serving import environment

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
MODEL_TABLES = set(Base.metadata.tables)
VERSION_TABLE = "alembic_version"


def api_config(database_url: str) -> Config:
    """The configuration the `alembic` command builds from alembic.ini, for this database."""
    config = alembic_config(database_url)
    # alembic.ini's logging section is for the `alembic` command: keep pytest's logging.
    config.config_file_name = None
    return config


def inspect_db(database_url: str) -> dict[str, Any]:
    """Tables, revision and differences between the models and the schema."""

    def look(connection: Connection) -> dict[str, Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return {
            "tables": set(inspect(connection).get_table_names()),
            "revision": context.get_current_revision(),
            "differences": compare_metadata(context, Base.metadata),
        }

    async def run() -> dict[str, Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def assert_at_head(database_url: str) -> None:
    state = inspect_db(database_url)
    assert state["tables"] == MODEL_TABLES | {VERSION_TABLE}
    assert state["revision"] == HEAD
    assert state["differences"] == []


def assert_empty(database_url: str) -> None:
    state = inspect_db(database_url)
    assert state["tables"] <= {VERSION_TABLE}
    assert state["revision"] is None


def test_alembic_api_upgrades_from_empty_downgrades_to_nothing_and_upgrades_again(
    database_url: str,
) -> None:
    assert_empty(database_url)
    command.upgrade(api_config(database_url), "head")
    assert_at_head(database_url)

    command.downgrade(api_config(database_url), "base")
    assert_empty(database_url)

    command.upgrade(api_config(database_url), "head")
    assert_at_head(database_url)


def test_retail_db_upgrade_command_migrates_an_empty_database(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "retail", "db", "upgrade"],
        env=environment(database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database at head" in result.stdout
    assert_at_head(database_url)


def test_retail_db_current_downgrade_and_upgrade(database_url: str) -> None:
    runner = CliRunner()

    def retail_db(*args: str) -> str:
        result = runner.invoke(cli, ["db", *args, "--database-url", database_url])
        assert result.exit_code == 0, result.output
        return result.output

    assert retail_db("current").split() == ["current:", "None", "head:", str(HEAD)]
    retail_db("upgrade")
    assert retail_db("current").split() == ["current:", str(HEAD), "head:", str(HEAD)]
    assert "database at base" in retail_db("downgrade", "base")
    assert_empty(database_url)
    assert retail_db("current").split()[:2] == ["current:", "None"]
    retail_db("upgrade", "head")
    assert_at_head(database_url)
