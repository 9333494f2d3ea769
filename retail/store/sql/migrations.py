"""Run Alembic from inside the application (on start, and for `retail db`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def _run(connection: Connection, revision: str, downgrade: bool) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    if downgrade:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


async def upgrade_to_head(engine: AsyncEngine) -> None:
    await migrate(engine, "head")


async def migrate(engine: AsyncEngine, revision: str, *, downgrade: bool = False) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_run, revision, downgrade)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def schema_status(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """(current revision in the database, head revision of the code)."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current)
    return current, _head()
