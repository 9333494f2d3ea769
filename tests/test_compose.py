"""docker-compose.yml and the Dockerfile stay true to the service they run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from retail.cli import app as cli
from retail.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(name): str(value) for name, value in env.items()}


def with_defaults(value: str) -> str:
    """`${NAME:-default}` as compose fills it in when NAME is not set."""
    return INTERPOLATION.sub(lambda match: match.group(2) or "", value)


def test_every_retail_variable_is_a_setting() -> None:
    fields = {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    used = {name for service in SERVICES for name in environment(service)}
    retail = {name for name in used if name.startswith("RETAIL_")}
    assert "RETAIL_DATABASE_URL" in retail
    assert retail <= fields, retail - fields


def test_the_app_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment("app").items():
        monkeypatch.setenv(name, with_defaults(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_the_app_reaches_the_db_service_with_its_credentials() -> None:
    db = environment("db")
    url = environment("app")["RETAIL_DATABASE_URL"]
    user, password, name = db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]
    assert url == f"postgresql+asyncpg://{user}:{password}@db:5432/{name}"
    assert SERVICES["db"]["image"].startswith("postgres:16")


def test_the_app_starts_only_once_the_database_is_healthy() -> None:
    assert SERVICES["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    check = SERVICES["db"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(check)


def test_the_database_lives_in_a_declared_volume() -> None:
    mounts = SERVICES["db"]["volumes"]
    named = [m.split(":")[0] for m in mounts if m.endswith(":/var/lib/postgresql/data")]
    assert named, mounts
    assert set(named) <= set(COMPOSE["volumes"])


def test_the_app_is_healthy_only_when_ready() -> None:
    app = SERVICES["app"]
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    assert "8000:8000" in app["ports"]


def test_the_command_migrates_then_serves_with_real_options() -> None:
    command = SERVICES["app"]["command"]
    script = command[-1] if isinstance(command, list) else command
    steps = [shlex.split(step) for step in script.split("&&")]
    assert [step[:3] for step in steps] == [
        ["retail", "db", "upgrade"],
        ["exec", "retail", "serve"],
    ]
    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    options = {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}
    flags = [word for word in steps[1] if word.startswith("--")]
    assert flags == ["--host"]
    assert set(flags) <= options
    assert steps[1][steps[1].index("--host") + 1] == "0.0.0.0"


def test_the_image_has_what_the_service_reads_at_run_time() -> None:
    assert re.search(r"^FROM python:3\.11-slim\b", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(r"^RUN pip install .*\buv\b", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(r"^RUN uv sync --frozen --no-dev$", DOCKERFILE, flags=re.MULTILINE)
    copied = {
        source
        for line in re.findall(r"^COPY (.+)$", DOCKERFILE, flags=re.MULTILINE)
        for source in line.split()[:-1]
    }
    # The project's metadata and lock, the code, and Alembic's files beside it.
    assert {"pyproject.toml", "uv.lock", "README.md", "alembic.ini", "migrations", "retail"} <= (
        copied
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not set(ignored) & copied
