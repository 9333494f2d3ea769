"""Settings: every knob of the service, read from the environment.

One `Settings` object, read from `RETAIL_*` environment variables and an optional
`.env` file; the CLI overrides fields by constructing `Settings(**overrides)`.
Business code receives settings from the composition root (`retail.web.app`), it never
reads the environment itself.
"""

from __future__ import annotations

import enum
import json
import secrets
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from retail.core.capacity import DEFAULT_TARGET_WAIT_S, Limits
from retail.core.fairness import FairLimits
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./retail.db"
# `sqlite:` and `postgres(ql)://` are accepted too, and mapped to these async drivers.
SUPPORTED_DATABASE_SCHEMES = ("sqlite+aiosqlite:", "postgresql+asyncpg://")
DEFAULT_FULFILMENT_DELAY = "2"
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600.0


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class OrderAccess(enum.StrEnum):
    OPEN = "open"
    TOKEN = "token"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _split_list(value: Any) -> Any:
    """Accept `a,b,c` or a JSON list for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _parse_mapping(value: Any) -> Any:
    """Accept a JSON object or `step=spec;step=spec` for mapping settings."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return json.loads(text)
        pairs = [part.split("=", 1) for part in text.split(";") if part.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("expected a JSON object or 'step=spec;step=spec'")
        return {key.strip(): spec.strip() for key, spec in pairs}
    return value


class Settings(BaseSettings):
    """Every setting of the service. Environment: `RETAIL_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="RETAIL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- server and storage -------------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    host: str = Field("127.0.0.1", description="Interface `retail serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `retail serve` listens on.")
    migrate_on_start: bool = Field(True, description="Run `alembic upgrade head` on start.")
    seed_demo_catalogue: bool = Field(
        True, description="Insert the demo catalogue on start when the product table is empty."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for /admin endpoints. Unset: every admin call is refused.",
    )
    log_format: LogFormat = Field(LogFormat.TEXT, description="Log lines as `text` or `json`.")
    log_level: LogLevel = Field(
        LogLevel.INFO, description="Least severe level logged; `debug` adds every fulfilment step."
    )
    ready_timeout_s: float = Field(
        2.0, gt=0, le=60, description="`/readyz` answers 503 when the database is slower than this."
    )
    db_pool_size: int = Field(10, ge=1, le=200, description="Connections per process (PostgreSQL).")

    # --- request limits ----------------------------------------------------------
    max_body_bytes: int = Field(
        64 * 1024, ge=256, description="Largest accepted request body, in bytes."
    )
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long a client may take to send a request body before `408`.",
    )
    max_order_lines: int = Field(50, ge=1, le=1000, description="Most lines in one order.")
    max_line_quantity: int = Field(1000, ge=1, description="Most units of one SKU in one line.")
    idempotency_ttl_s: float = Field(
        DEFAULT_IDEMPOTENCY_TTL_S, gt=0, description="How long an Idempotency-Key is remembered."
    )
    prefer_wait_max_s: float = Field(
        60.0, ge=0, description="Longest `Prefer: wait=N` honoured; larger N is capped."
    )

    # --- capacity policy --------------------------------------------------------
    overload_mode: OverloadMode = Field(
        OverloadMode.QUEUE,
        description="`queue`, `reject` or `degrade` when all slots are busy; `auto` picks "
        "among them by the predicted wait (RETAIL_TARGET_WAIT_S).",
    )
    capacity: int = Field(4, ge=1, le=10_000, description="Most orders in fulfilment at once.")
    queue_limit: int = Field(
        100, ge=0, description="Most orders waiting for a slot (queue and degrade modes)."
    )
    max_queue_wait_s: float | None = Field(
        None, gt=0, description="Shed when the estimated wait for a slot exceeds this (optional)."
    )
    critical_reserve: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Room only critical orders may take: fulfilment slots in reject mode, "
        "queue places in queue and degrade modes.",
    )
    sheddable_max_wait_s: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="A sheddable order is taken only if it can start within this many seconds.",
    )
    target_wait_s: float = Field(
        DEFAULT_TARGET_WAIT_S,
        gt=0,
        allow_inf_nan=False,
        description="`auto` mode: orders queue while their predicted wait is within this; "
        "past it they are refused until it is under a quarter of it, then take the reduced "
        "path.",
    )
    fair_share: bool = Field(
        True, description="Share admission max-min fairly between competing customers (`429`)."
    )
    fair_window_s: float = Field(
        10.0, gt=0, description="A customer competes for a share this long after its last order."
    )
    fair_customers: int = Field(
        1000, ge=1, description="Most recently active customers considered for fair shares."
    )

    # --- fulfilment ----------------------------------------------------------------
    workers_enabled: bool = Field(True, description="Run the fulfilment workers in this process.")
    fulfilment_delay: str = Field(
        DEFAULT_FULFILMENT_DELAY,
        description=(
            "Total simulated time per order: a number of seconds, or "
            "`fixed:S`, `uniform:LO,HI`, `exponential:MEAN`, `lognormal:MEAN,SIGMA`."
        ),
    )
    step_delays: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Per-step delays instead of a share of the total: `payment=0.5;ship=1`.",
    )
    delay_per_extra_line: float = Field(
        0.0, ge=0, description="Delay grows by this fraction for each order line after the first."
    )
    fulfilment_seed: int | None = Field(
        None, description="Seed for delays and failures, so a run can be repeated."
    )
    payment_decline_probability: float = Field(
        0.0, ge=0, le=1, description="Chance that payment is declined and the order fails."
    )
    degrade_skip_steps: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["fraud_check"],
        description="Optional steps a degraded order skips.",
    )
    degrade_delay_factor: float = Field(
        0.5, gt=0, le=1, description="Degraded orders' remaining step delays are scaled by this."
    )
    lease_s: float = Field(
        10.0,
        gt=0,
        description="Worker lease on an order; a crashed worker's orders resume after it.",
    )
    poll_interval_s: float = Field(
        0.5, gt=0, description="How often idle workers look for orders written by other processes."
    )
    shutdown_timeout_s: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM, how long in-flight orders may run before they are left.",
    )

    # --- the fleet: many processes on one PostgreSQL database -----------------------
    fleet: bool = Field(
        False,
        description="Share one capacity with every process on the database (PostgreSQL): "
        "admission counts the live workers' slots and the fleet's orders.",
    )
    heartbeat_s: float = Field(1.0, gt=0, le=60, description="Fleet: how often a worker beats.")
    worker_dead_after_s: float = Field(
        5.0, gt=0, le=600, description="Fleet: a worker silent this long leaves the fleet."
    )
    fleet_reconcile_s: float = Field(
        1.0, gt=0, le=60, description="Fleet: how often the whole fleet is read again."
    )

    # --- live views: dashboard, /ws, SSE --------------------------------------------
    max_streams: int = Field(
        100,
        ge=0,
        description="Most live streams (SSE and /ws together) open at once.",
    )
    snapshot_interval_s: float = Field(
        1.0, gt=0, le=3600, description="How often /ws sends a capacity snapshot."
    )
    keepalive_s: float = Field(
        15.0, gt=0, le=3600, description="Keep-alive comment interval on idle SSE streams."
    )

    # --- protection: server limits, access, secrets ---------------------------------
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="`retail serve`: largest request line plus headers; over it `431`.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="`retail serve`: time a client has to send its request line and headers.",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, le=600, description="`retail serve`: idle keep-alive connections close after."
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="`retail serve`: most connections and requests at once; past it `503`.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="`Origin`s allowed on `/ws` besides the service's own host.",
    )
    order_access: OrderAccess = Field(
        OrderAccess.OPEN,
        description="`open`: anyone may read or cancel any order; `token`: the order's token.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Signs list cursors and order tokens; unset: a random key per process.",
    )

    @field_validator("degrade_skip_steps", "allowed_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("step_delays", mode="before")
    @classmethod
    def _mappings(cls, value: Any) -> Any:
        return _parse_mapping(value)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("sqlite:"):
            return "sqlite+aiosqlite:" + value.removeprefix("sqlite:")
        if value.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(SUPPORTED_DATABASE_SCHEMES):
            scheme = value.split(":", 1)[0] if ":" in value else value
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: use "
                "sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user@host/db"
            )
        return value

    @model_validator(mode="after")
    def _check_delays(self) -> Settings:
        self.pipeline()  # raises ValueError with a readable message
        return self

    @model_validator(mode="after")
    def _fleet_needs_postgres(self) -> Settings:
        if self.fleet and not self.database_url.startswith("postgresql"):
            raise ValueError(
                "RETAIL_FLEET=true needs PostgreSQL (RETAIL_DATABASE_URL=postgresql+asyncpg://…): "
                "SQLite is one process; run `retail serve` alone, it fulfils orders itself"
            )
        if self.fleet and self.worker_dead_after_s <= self.heartbeat_s:
            raise ValueError(
                "RETAIL_WORKER_DEAD_AFTER_S must be longer than RETAIL_HEARTBEAT_S, or live "
                "workers are given up for dead"
            )
        return self

    @model_validator(mode="after")
    def _key_for_tokens(self) -> Settings:
        if self.order_access is OrderAccess.TOKEN and self.secret_key is None:
            raise ValueError(
                "RETAIL_ORDER_ACCESS=token needs RETAIL_SECRET_KEY, so that order tokens "
                "stay valid across restarts and processes"
            )
        if self.secret_key is None:
            self.secret_key = SecretStr(secrets.token_hex(32))
        return self

    def pipeline(self) -> Pipeline:
        """The fulfilment steps and delay models these settings describe."""
        return Pipeline.build(
            fulfilment_delay=self.fulfilment_delay,
            step_delays=self.step_delays,
            delay_per_extra_line=self.delay_per_extra_line,
            seed=self.fulfilment_seed,
            decline_probability=self.payment_decline_probability,
            degrade_skip_steps=self.degrade_skip_steps,
            degrade_delay_factor=self.degrade_delay_factor,
        )

    def signing_key(self) -> bytes:
        """The key list cursors and order tokens are signed with."""
        assert self.secret_key is not None  # set by `_key_for_tokens`
        return self.secret_key.get_secret_value().encode()

    def fair_limits(self) -> FairLimits | None:
        """The fair-share policy's limits; None when it is off."""
        if not self.fair_share:
            return None
        return FairLimits(window_s=self.fair_window_s, max_customers=self.fair_customers)

    def limits(self) -> Limits:
        """The capacity policy's limits at start."""
        return Limits(
            mode=self.overload_mode,
            capacity=self.capacity,
            queue_limit=self.queue_limit,
            max_queue_wait_s=self.max_queue_wait_s,
            critical_reserve=self.critical_reserve,
            sheddable_max_wait_s=self.sheddable_max_wait_s,
            target_wait_s=self.target_wait_s,
        )


class SettingsError(ValueError):
    """Settings that do not validate; the message names each variable and what is wrong."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `.env`, with the given overrides (None: not given).

    `SettingsError` says, one line per problem, which `RETAIL_*` variable is wrong and why.
    """
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = f"RETAIL_{str(item['loc'][0]).upper()}: " if item["loc"] else ""
            problems.append(f"  {where}{item['msg'].removeprefix('Value error, ')}")
        raise SettingsError("Invalid settings:\n" + "\n".join(problems)) from None
