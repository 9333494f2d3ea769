"""Configuration: environment and .env, readable errors, admin access, CLI flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from fastapi import FastAPI
from pydantic import ValidationError
from typer.testing import CliRunner

from retail.cli import app as cli
from retail.config import Settings
from retail.core.types import OverloadMode, ServiceLevel
from retail.web.app import create_app
from tests.conftest import ADMIN, StartApp
from tests.serving import python_environment


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"RETAIL_{name.upper()}", value)
    return Settings()


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """What the settings say about values they refuse."""
    with pytest.raises(ValidationError) as raised:
        settings_from_env(monkeypatch, **env)
    return str(raised.value)


# --- where settings come from ---------------------------------------------------------


def test_settings_come_from_retail_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPACITY", "99")  # not ours: no RETAIL_ prefix
    settings = settings_from_env(
        monkeypatch,
        capacity="7",
        overload_mode="degrade",
        admin_token="s3cret",
        max_queue_wait_s="2.5",
        workers_enabled="false",
    )
    assert settings.capacity == 7
    assert settings.overload_mode is OverloadMode.DEGRADE
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.max_queue_wait_s == 2.5
    assert settings.workers_enabled is False


def test_dotenv_in_the_working_directory_under_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Path.cwd() == tmp_path
    (tmp_path / ".env").write_text(
        "# local settings\nRETAIL_CAPACITY=9\nRETAIL_QUEUE_LIMIT=3\nRETAIL_OVERLOAD_MODE=reject\n"
    )
    monkeypatch.setenv("RETAIL_QUEUE_LIMIT", "5")  # the environment wins over .env
    settings = Settings()
    assert (settings.capacity, settings.queue_limit, settings.overload_mode) == (
        9,
        5,
        OverloadMode.REJECT,
    )
    # What `uvicorn retail.main:app` gets: create_app() with no arguments reads the same.
    assert create_app().state.settings.capacity == 9


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db/retail", "postgresql+asyncpg://u:p@db/retail"),
        ("postgresql://u:p@db/retail", "postgresql+asyncpg://u:p@db/retail"),
        ("sqlite:///orders.db", "sqlite+aiosqlite:///orders.db"),
        ("sqlite+aiosqlite:///orders.db", "sqlite+aiosqlite:///orders.db"),
    ],
)
def test_database_urls_get_the_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, used: str
) -> None:
    assert settings_from_env(monkeypatch, database_url=given).database_url == used


# --- delay specs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["2", "fixed:2", "uniform:1,3", "exponential:2", "lognormal:2,0.5"]
)
def test_every_delay_model_is_accepted(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    assert settings_from_env(monkeypatch, fulfilment_delay=spec).fulfilment_delay == spec


FULFILMENT, STEPS = "fulfilment_delay", "step_delays"


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (FULFILMENT, "uniform:3,1", "delay 'uniform:3,1': low must not exceed high"),
        (FULFILMENT, "gaussian:1", "unknown model 'gaussian'; use a number, fixed:S"),
        (FULFILMENT, "uniform:1", "uniform takes 2 number(s)"),
        (FULFILMENT, "fixed:-1", "arguments must be finite and >= 0"),
        (FULFILMENT, "soon", "arguments must be numbers of seconds"),
        (STEPS, "payment", "expected a JSON object or 'step=spec;step=spec'"),
        (STEPS, "teleport=1", "step_delays: unknown step(s) ['teleport']; steps are ['reserve'"),
        (STEPS, "payment=uniform:3,1", "delay 'uniform:3,1': low must not exceed high"),
    ],
)
def test_a_bad_delay_says_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, message: str
) -> None:
    """`RETAIL_FULFILMENT_DELAY` and each delay in `RETAIL_STEP_DELAYS`."""
    assert message in settings_error(monkeypatch, **{setting: value})


def test_retail_serve_reports_bad_settings_in_a_line_not_a_traceback() -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--capacity", "2"], env={"RETAIL_FULFILMENT_DELAY": "uniform:3,1"}
    )
    assert result.exit_code == 2
    assert result.output == "Invalid settings:\n  delay 'uniform:3,1': low must not exceed high\n"

    result = CliRunner().invoke(cli, ["serve", "--capacity", "0"])
    assert result.exit_code == 2
    assert "RETAIL_CAPACITY: Input should be greater than or equal to 1" in result.output
    assert "Traceback" not in result.output


# --- list and mapping settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "steps"),
    [
        ("fraud_check", ["fraud_check"]),
        (" fraud_check , ", ["fraud_check"]),
        ('["fraud_check"]', ["fraud_check"]),
        ("", []),
    ],
)
def test_degrade_skip_steps_as_a_list(
    monkeypatch: pytest.MonkeyPatch, value: str, steps: list[str]
) -> None:
    settings = settings_from_env(monkeypatch, degrade_skip_steps=value)
    assert settings.degrade_skip_steps == steps
    assert list(settings.pipeline().skipped(ServiceLevel.DEGRADED)) == steps


def test_only_optional_steps_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    error = settings_error(monkeypatch, degrade_skip_steps="fraud_check,payment")
    assert "['payment'] cannot be skipped; optional steps are ['fraud_check']" in error


@pytest.mark.parametrize(
    "value",
    ["payment=0.5;ship=1", " payment = 0.5 ; ship=fixed:1 ; ", '{"payment": "0.5", "ship": "1"}'],
)
def test_step_delays_as_a_mapping(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    settings = settings_from_env(monkeypatch, step_delays=value, fulfilment_delay="0")
    assert set(settings.step_delays) == {"payment", "ship"}
    # The other steps take their share of the (zero) total: an order takes 1.5 s.
    assert settings.pipeline().mean_s(ServiceLevel.FULL) == pytest.approx(1.5)


def test_empty_step_delays_mean_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_env(monkeypatch, step_delays="").step_delays == {}


# --- admin access -------------------------------------------------------------------------


def admin_operations(app: FastAPI) -> set[tuple[str, str]]:
    """The operations the OpenAPI document marks as needing the admin bearer token."""
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if any("HTTPBearer" in requirement for requirement in operation.get("security", []))
    }


# A valid call to each admin operation; a new admin route needs an entry here.
ADMIN_CALLS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("PUT", "/admin/capacity"): ("/admin/capacity", {"mode": "reject"}),
    ("PUT", "/products/{sku}"): (
        "/products/LAMP-9",
        {"name": "Desk lamp", "unit_price": 3900, "stock": 5},
    ),
}


def test_the_admin_operations_are_known() -> None:
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    assert admin_operations(app) == set(ADMIN_CALLS)


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
async def test_admin_refuses_every_call_without_a_configured_token(
    start_app: StartApp, token: str | None
) -> None:
    running = await start_app(admin_token=token)
    assert admin_operations(running.app) == set(ADMIN_CALLS)
    for operation in sorted(ADMIN_CALLS):
        path, body = ADMIN_CALLS[operation]
        for headers in ({}, ADMIN, {"Authorization": "Bearer "}):
            response = await running.client.request(operation[0], path, json=body, headers=headers)
            assert response.status_code == 403, (operation, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["type"] == "/problems/admin-disabled"
            assert problem["status"] == 403
            assert "RETAIL_ADMIN_TOKEN" in problem["detail"]
    # Nothing changed.
    assert (await running.client.get("/capacity")).json()["mode"] == "queue"
    assert (await running.client.get("/products/LAMP-9")).status_code == 404


async def test_admin_wants_the_right_token(start_app: StartApp) -> None:
    running = await start_app()  # admin token configured
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Basic {ADMIN['Authorization'].split()[1]}"},
    ]
    for operation in sorted(ADMIN_CALLS):
        path, body = ADMIN_CALLS[operation]
        for headers in wrong:
            response = await running.client.request(operation[0], path, json=body, headers=headers)
            assert response.status_code == 401, (operation, headers, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["type"] == "/problems/not-authorized"
        response = await running.client.request(operation[0], path, json=body, headers=ADMIN)
        assert response.status_code in (200, 201), (operation, response.text)
    assert (await running.client.get("/capacity")).json()["mode"] == "reject"
    assert (await running.client.get("/products/LAMP-9")).json()["stock"] == 5


# --- the command line ---------------------------------------------------------------------


def test_retail_serve_help_lists_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "retail", "serve", "--help"],
        env={**python_environment(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    flags = {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}
    assert {
        "--host",
        "--port",
        "--database-url",
        "--capacity",
        "--overload-mode",
        "--queue-limit",
        "--fulfilment-delay",
        "--migrate",
        "--no-migrate",
        "--access-log",
        "--no-access-log",
    } <= flags
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.stdout))
    assert flags <= shown, flags - shown
    assert "queue|reject|degrade" in result.stdout
    # Every variable a flag names is a real setting.
    named = set(re.findall(r"\[(RETAIL_[A-Z_]+)\]", result.stdout))
    assert named
    assert named <= {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
