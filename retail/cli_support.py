"""What the service's commands share (`retail.cli`, `retail.sim.cli`): the options that
set a setting, settings from the environment with options on top, and the one-line
shape of every error."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retail.config import Settings, SettingsError, load_settings
from retail.core.types import OverloadMode

# An option left out (None) leaves the setting to the environment and `.env`.
DatabaseUrl = Annotated[str | None, typer.Option(help="[RETAIL_DATABASE_URL]")]
Capacity = Annotated[
    int | None, typer.Option(help="Most orders in fulfilment at once [RETAIL_CAPACITY].")
]
Mode = Annotated[
    OverloadMode | None,
    typer.Option(help="What to do when all slots are busy [RETAIL_OVERLOAD_MODE]."),
]
QueueLimit = Annotated[int | None, typer.Option(help="[RETAIL_QUEUE_LIMIT]")]
Delay = Annotated[
    str | None, typer.Option(help="Seconds per order or a delay model [RETAIL_FULFILMENT_DELAY].")
]


def settings_or_exit(**overrides: Any) -> Settings:
    """Settings from the environment, `.env` and options; a mistake ends with a short message."""
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """One line on stderr, then the exit code: the shape of every CLI error."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)
