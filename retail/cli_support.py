"""What the service's commands share (`retail.cli`, `retail.sim.cli`): settings from
the environment with options on top, and the one-line shape of every error."""

from __future__ import annotations

from typing import Any

import typer

from retail.config import Settings, SettingsError, load_settings


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
