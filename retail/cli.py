"""`retail serve | worker | load | demo | simulate | plan | db …`: the command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from retail.cli_support import Capacity, DatabaseUrl, Delay, Mode, QueueLimit
from retail.cli_support import fail as _fail
from retail.cli_support import settings_or_exit as _settings
from retail.config import Settings
from retail.loadgen.cli import demo, load
from retail.sim.cli import plan, simulate

app = typer.Typer(
    help="A simulated retail order-processing backend.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database schema (Alembic migrations).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")

T = TypeVar("T")


def _run_db(database_url: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run database work; a problem a person can fix ends with one line, not a traceback."""
    from retail.cli_errors import explain, sqlite_file_problem

    problem = sqlite_file_problem(database_url)
    if problem is not None:
        raise _fail(problem)

    async def run() -> T:
        return await work()

    try:
        return asyncio.run(run())
    except Exception as error:
        message = explain(error, database_url)
        if message is None:
            raise
        raise _fail(message) from None


def _check_database(database_url: str) -> None:
    """Connect once before starting, so an unreachable database is one plain line."""
    from retail.cli_errors import check_database

    problem = asyncio.run(check_database(database_url))
    if problem is not None:
        raise _fail(problem)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [RETAIL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RETAIL_PORT].")] = None,
    database_url: DatabaseUrl = None,
    capacity: Capacity = None,
    overload_mode: Mode = None,
    queue_limit: QueueLimit = None,
    fulfilment_delay: Delay = None,
    migrate: Annotated[
        bool | None, typer.Option(help="Migrate the schema on start [RETAIL_MIGRATE_ON_START].")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes on the one port (PostgreSQL: they form a fleet, each "
            "with its own fulfilment slots).",
        ),
    ] = 1,
    reuse_port: Annotated[
        bool,
        typer.Option(help="Bind the port with SO_REUSEPORT, beside other processes on it."),
    ] = False,
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
    if workers > 1:
        from retail.runtime.processes import serve_processes

        problem = _fleet_problem(settings)
        if problem is not None:
            raise _fail(problem, 2)
        _check_database(settings.database_url)
        if settings.migrate_on_start:  # once, here: the processes would race each other
            _migrate(settings.database_url)
        overrides = {
            "host": host,
            "port": port,
            "database_url": database_url,
            "capacity": capacity,
            "overload_mode": overload_mode.value if overload_mode is not None else None,
            "queue_limit": queue_limit,
            "fulfilment_delay": fulfilment_delay,
        }
        raise typer.Exit(
            serve_processes(workers, overrides, port=settings.port, access_log=access_log)
        )
    _check_database(settings.database_url)
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
            door=application.refuse_at_door,
        ),
        h11_max_incomplete_event_size=settings.max_header_bytes,  # if run with h11
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
    )
    sockets = [_reusable_socket(settings.host, settings.port)] if reuse_port else None
    Server(config, on_stop=lambda: announce_stop(application)).run(sockets=sockets)


def _fleet_problem(settings: Settings) -> str | None:
    """Why several processes cannot share this database (None: they can)."""
    if settings.database_url.startswith("sqlite"):
        return (
            "--workers (several processes, one fleet) needs PostgreSQL "
            "(RETAIL_DATABASE_URL=postgresql+asyncpg://…): SQLite is one process; run "
            "`retail serve` without --workers, it fulfils orders itself"
        )
    if settings.port == 0:
        return "--workers needs a fixed --port: the processes share it"
    return None


def _reusable_socket(host: str, port: int) -> Any:
    """A listening socket several processes bind at once; the kernel spreads connections."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    capacity: Capacity = None,
    fulfilment_delay: Delay = None,
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
    # A worker is always one of the fleet: it announces its slots, beats, and wakes on
    # the database's notice when orders are stored.
    settings = settings.model_copy(update={"fleet": True})
    _check_database(settings.database_url)
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


def _migrate(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    from retail.store.sql.migrations import migrate

    async def run() -> None:
        db = _engine(url)
        try:
            await migrate(db.writer, revision, downgrade=downgrade)
        finally:
            await db.dispose()

    _run_db(url, run)


def _engine(database_url: str) -> Any:
    from retail.store.sql.engine import Database

    return Database(database_url)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Migrate the schema up (to the newest revision by default)."""
    _migrate(_settings(database_url=database_url).database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base or -1.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Migrate the schema down."""
    _migrate(_settings(database_url=database_url).database_url, revision, downgrade=True)
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current(
    database_url: DatabaseUrl = None,
) -> None:
    """Show the database's revision and the code's head revision."""
    from retail.store.sql.migrations import schema_status

    url = _settings(database_url=database_url).database_url

    async def run() -> tuple[str | None, str | None]:
        db = _engine(url)
        try:
            return await schema_status(db.writer)
        finally:
            await db.dispose()

    current, head = _run_db(url, run)
    typer.echo(f"current: {current}\nhead:    {head}")


@db_app.command("reset")
def db_reset(
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask: drop every order and product.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Drop every table (orders, products, everything) and migrate to the newest schema.

    A clean slate: the next `retail serve` seeds the demo catalogue again.
    """
    from retail.store.sql.migrations import migrate

    url = _settings(database_url=database_url).database_url
    if not yes:
        if not sys.stdin.isatty():
            raise _fail("retail db reset drops every order and product: add --yes to confirm", 2)
        typer.confirm(f"Drop every table in {_display(url)}?", abort=True)

    async def run() -> None:
        from sqlalchemy import MetaData

        db = _engine(url)
        try:
            async with db.writer.begin() as connection:
                await connection.run_sync(_drop_everything, MetaData())
            await migrate(db.writer, "head")
        finally:
            await db.dispose()

    _run_db(url, run)
    typer.echo(f"database reset: {_display(url)} is empty, at the newest schema")


def _drop_everything(connection: Any, metadata: Any) -> None:
    metadata.reflect(connection)
    metadata.drop_all(connection)


def _display(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


app.command("load")(load)
app.command("demo")(demo)
app.command("simulate")(simulate)
app.command("plan")(plan)


def main() -> None:
    app()
