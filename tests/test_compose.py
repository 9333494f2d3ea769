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
    assert "127.0.0.1:8000:8000" in app["ports"]


def test_every_published_port_is_bound_to_loopback() -> None:
    published = [
        (name, str(port)) for name, service in SERVICES.items() for port in service.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert port.startswith("127.0.0.1:"), (name, port)


def test_every_setting_reaches_the_app_through_env_file() -> None:
    app = SERVICES["app"]
    files = [entry["path"] if isinstance(entry, dict) else entry for entry in app["env_file"]]
    assert files == [".env"]
    assert all(
        entry.get("required") is False for entry in app["env_file"] if isinstance(entry, dict)
    )
    # only what must differ inside compose is pinned in `environment` (the app shares its
    # database with the worker service: one fleet)
    assert set(environment("app")) == {
        "RETAIL_DATABASE_URL",
        "RETAIL_MIGRATE_ON_START",
        "RETAIL_FLEET",
    }


def env_example() -> dict[str, str | None]:
    """`.env.example` as {variable: value}, None for a commented-out (unset) one."""
    found: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(#\s*)?(RETAIL_[A-Z0-9_]+)=(.*)$", line)
        if match:
            assert match[2] not in found, f"{match[2]} twice"
            found[match[2]] = None if match[1] else match[3]
    return found


def test_env_example_lists_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = env_example()
    assert set(listed) == {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    for name, value in listed.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    from_example = Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.undo()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    random_per_process = {"secret_key"}  # unset, each process draws its own
    assert from_example.model_dump(exclude=random_per_process) == defaults.model_dump(
        exclude=random_per_process
    )
    unset = {name for name, value in listed.items() if value is None}
    assert unset == {
        f"RETAIL_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.get_default(call_default_factory=True) is None
    }


def test_the_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    # the user is made before it is used, and nothing runs as root after it
    last_user = DOCKERFILE.rindex("\nUSER ")
    assert re.search(rf"useradd .*\b{users[-1]}\b", DOCKERFILE[:last_user])
    assert not re.search(r"^RUN ", DOCKERFILE[last_user:], flags=re.MULTILINE)


def test_monitoring_is_an_optional_profile() -> None:
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["profiles"] == ["monitoring"]
    for name in ("db", "app"):
        assert "profiles" not in SERVICES[name]


def mounted(service: str, target: str) -> Path:
    for volume in SERVICES[service]["volumes"]:
        source, destination = volume.split(":")[:2]
        if destination == target:
            return ROOT / source
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_prometheus_scrapes_the_app() -> None:
    config = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["app:8000"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "retail.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    assert folder == "/var/lib/grafana/dashboards"
    assert (mounted("grafana", folder) / "retail.json").is_file()


def test_the_dashboard_charts_only_metrics_the_service_exports() -> None:
    import json

    from retail.runtime.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    families = {family.name: family.type for family in Metrics().registry.collect()}
    exported = {name + suffix for name, kind in families.items() for suffix in suffixes[kind]}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/retail.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\bretail_\w+", expr)}
    assert used and used <= exported, used - exported
    charted = {name for name in families if any(u.startswith(name) for u in used)}
    assert charted == set(families), set(families) - charted  # every metric has a panel


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


def test_a_scalable_worker_service_joins_the_apps_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = SERVICES["worker"]
    command = worker["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert words[:2] == ["retail", "worker"]
    assert typer.main.get_command(cli).commands["worker"]  # type: ignore[attr-defined]
    # Scalable: no fixed name and no published port for copies to fight over.
    assert "container_name" not in worker
    assert "ports" not in worker
    # The same database as the app, migrated by the app before any worker starts.
    assert environment("worker")["RETAIL_DATABASE_URL"] == environment("app")["RETAIL_DATABASE_URL"]
    assert worker["depends_on"]["app"]["condition"] == "service_healthy"
    for name, value in environment("worker").items():
        monkeypatch.setenv(name, with_defaults(value))
    assert Settings(_env_file=None).database_url.startswith("postgresql")  # type: ignore[call-arg]
    # The app shares its capacity with the workers.
    monkeypatch.setenv("RETAIL_FLEET", environment("app")["RETAIL_FLEET"])
    assert Settings(_env_file=None).fleet  # type: ignore[call-arg]
