"""`retail serve | worker | load | demo | simulate | plan | db …`."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import typer

from retail.config import Settings
from retail.core.types import OverloadMode
from retail.loadgen.cli import demo, load
from retail.sim.cli import plan, simulate

app = typer.Typer(help="A simulated retail order-processing backend.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, `.env` and options; a mistake ends with a short message."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = f"RETAIL_{str(item['loc'][0]).upper()}: " if item["loc"] else ""
            problems.append(f"  {where}{item['msg'].removeprefix('Value error, ')}")
        typer.echo("Invalid settings:\n" + "\n".join(problems), err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [RETAIL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RETAIL_PORT].")] = None,
    database_url: Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")] = None,
    capacity: Annotated[
        int | None, typer.Option(help="Most orders in fulfilment at once [RETAIL_CAPACITY].")
    ] = None,
    overload_mode: Annotated[
        OverloadMode | None,
        typer.Option(help="What to do when all slots are busy [RETAIL_OVERLOAD_MODE]."),
    ] = None,
    queue_limit: Annotated[int | None, typer.Option(help="[RETAIL_QUEUE_LIMIT]")] = None,
    fulfilment_delay: Annotated[
        str | None,
        typer.Option(help="Seconds per order or a delay model [RETAIL_FULFILMENT_DELAY]."),
    ] = None,
    migrate: Annotated[
        bool | None, typer.Option(help="Migrate the schema on start [RETAIL_MIGRATE_ON_START].")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Start the HTTP API and the fulfilment workers."""
    import uvicorn

    from retail.runtime.logs import configure_logging
    from retail.web.app import announce_stop, create_app
    from retail.web.protocol import guarded_protocol
    from retail.web.server import Server

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        capacity=capacity,
        overload_mode=overload_mode,
        queue_limit=queue_limit,
        fulfilment_delay=fulfilment_delay,
        migrate_on_start=migrate,
    )
    configure_logging(settings.log_format, settings.log_level, access_log=access_log)
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        # uvicorn's own lines go through the same handler; the request lines are the app's.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
        # Limits on each request's head (size, time) and on idle and concurrent connections.
        http=guarded_protocol(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
        ),
        h11_max_incomplete_event_size=settings.max_header_bytes,  # if run with h11
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
    )
    Server(config, on_stop=lambda: announce_stop(application)).run()


@app.command()
def worker(
    database_url: Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")] = None,
    capacity: Annotated[
        int | None, typer.Option(help="Most orders in fulfilment at once [RETAIL_CAPACITY].")
    ] = None,
    fulfilment_delay: Annotated[
        str | None,
        typer.Option(help="Seconds per order or a delay model [RETAIL_FULFILMENT_DELAY]."),
    ] = None,
) -> None:
    """Fulfil orders without serving HTTP: add fulfilment capacity beside `retail serve`."""
    import signal

    from retail.runtime.clock import SystemClock
    from retail.runtime.logs import configure_logging
    from retail.runtime.services import running_services

    settings = _settings(
        database_url=database_url,
        capacity=capacity,
        fulfilment_delay=fulfilment_delay,
        workers_enabled=True,
    )
    if settings.database_url.startswith("sqlite"):
        typer.echo(
            "retail worker needs PostgreSQL (RETAIL_DATABASE_URL=postgresql+asyncpg://…): "
            "on SQLite, run `retail serve` alone; it fulfils orders itself.",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with running_services(settings, SystemClock()):
            logging.getLogger("retail.worker").info(
                "fulfilling orders with capacity %d; Ctrl+C to stop", settings.capacity
            )
            await stop.wait()

    asyncio.run(run())


def _engine(database_url: str | None) -> Any:
    from retail.store.sql.engine import Database

    return Database(_settings(database_url=database_url).database_url)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")] = None,
) -> None:
    """Migrate the schema up (to the newest revision by default)."""
    from retail.store.sql.migrations import migrate

    async def run() -> None:
        db = _engine(database_url)
        try:
            await migrate(db.writer, revision)
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base or -1.")],
    database_url: Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")] = None,
) -> None:
    """Migrate the schema down."""
    from retail.store.sql.migrations import migrate

    async def run() -> None:
        db = _engine(database_url)
        try:
            await migrate(db.writer, revision, downgrade=True)
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current(
    database_url: Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")] = None,
) -> None:
    """Show the database's revision and the code's head revision."""
    from retail.store.sql.migrations import schema_status

    async def run() -> tuple[str | None, str | None]:
        db = _engine(database_url)
        try:
            return await schema_status(db.writer)
        finally:
            await db.dispose()

    current, head = asyncio.run(run())
    typer.echo(f"current: {current}\nhead:    {head}")


app.command("load")(load)
app.command("demo")(demo)
app.command("simulate")(simulate)
app.command("plan")(plan)


def main() -> None:
    app()
