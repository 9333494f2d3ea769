"""One load run: place orders on schedule, follow them, sample the server's load.

Open loop, no coordinated omission:

- every order is due at a time fixed before the run starts (`schedule.due_times`);
- the pacer starts each order as its own task at that time, whatever the answers to
  earlier orders are doing; the connection limit is meant to be large enough never to
  hold a request back, and if it does (or the event loop is late) the order records
  when its request really got a connection (`sent_s`, from httpcore's trace events),
  so late sends are counted;
- every latency is measured from the moment the order was due, so time an order
  spent waiting for a connection or a retry is part of its latency.

With a `mix` every order is sent with its priority (`retail.loadgen.mix`: drawn from the
seed, as `retail simulate` draws it), with `start_within_s` its deadline; with `retry`
a refused order comes back after its `Retry-After` (`Retry-After-Ms` where given) plus
jitter, while the retries stay within `retry_budget` of the orders sent so far.

Accepted orders are then followed (`GET /orders/{id}`, waiting as long as each
`Retry-After` says) to a terminal state or until the follow deadline, and their
events are read for the timeline. `GET /capacity` is sampled throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx

from retail.loadgen.mix import DEFAULT_RETRY_BUDGET, Mix, RetryBudget, retry_delay
from retail.loadgen.pacer import MonotonicTimer, Timer, pace
from retail.loadgen.schedule import Arrivals, Schedule, due_times
from retail.loadgen.timeline import elapsed

DEFAULT_SKU = "MUG-1"
DEFAULT_MAX_ORDERS = 10_000
DEFAULT_FOLLOW_TIMEOUT_S = 60.0
DEFAULT_SAMPLE_INTERVAL_S = 0.25
LATE_SEND_S = 0.01
DEFAULT_POLL_S = 1.0
RETRYABLE_STATUSES = frozenset({429, 503})
KEY_IN_USE = "idempotency-key-in-use"  # the 409 problem worth retrying
RETRY_BACKOFF_S = 0.1
RETRY_WAIT_MAX_S = 30.0
SENDING_EVENTS = (
    "connect_tcp.started",
    "connect_unix_socket.started",
    "send_request_headers.started",
)
TERMINAL_STATUSES = frozenset({"fulfilled", "failed", "cancelled", "expired"})


@dataclass(frozen=True)
class LoadConfig:
    """What to send, when, and what to do with the answers."""

    schedule: Schedule
    arrivals: Arrivals = Arrivals.FIXED
    seed: int | None = None
    max_orders: int = DEFAULT_MAX_ORDERS
    skus: tuple[str, ...] = (DEFAULT_SKU,)
    quantity: int = 1
    customer: str | None = None  # default: load-<run id>
    idempotency_keys: bool = False
    retries: int = 0
    follow: bool = True
    follow_timeout_s: float = DEFAULT_FOLLOW_TIMEOUT_S
    fetch_events: bool = True
    sample_interval_s: float | None = DEFAULT_SAMPLE_INTERVAL_S
    mix: Mix | None = None  # priorities to send (None: none sent, so standard)
    start_within_s: float | None = None  # the deadline sent with every order
    retry: bool = False  # retries jittered and within `retry_budget`
    retry_budget: float = (
        DEFAULT_RETRY_BUDGET  # with `retry`: retries at most this share of the orders sent
    )

    def __post_init__(self) -> None:
        if not self.skus:
            raise ValueError("at least one SKU is needed")
        if self.quantity < 1:
            raise ValueError("quantity must be at least 1")
        if self.retries < 0:
            raise ValueError("retries cannot be negative")
        if self.max_orders < 0:
            raise ValueError("max_orders cannot be negative")
        if self.follow_timeout_s < 0:
            raise ValueError("follow_timeout_s cannot be negative")
        if self.start_within_s is not None and not self.start_within_s > 0:
            raise ValueError("start_within_s must be a positive number of seconds")
        if self.retry_budget < 0:
            raise ValueError("retry_budget cannot be negative")

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.describe(),
            "duration_s": self.schedule.duration_s,
            "arrivals": str(self.arrivals),
            "seed": self.seed,
            "max_orders": self.max_orders,
            "skus": list(self.skus),
            "quantity": self.quantity,
            "idempotency_keys": self.idempotency_keys,
            "retries": self.retries,
            "follow": self.follow,
            "follow_timeout_s": self.follow_timeout_s,
            "sample_interval_s": self.sample_interval_s,
            "mix": None if self.mix is None else self.mix.describe(),
            "start_within_s": self.start_within_s,
            "retry": self.retry,
            "retry_budget": self.retry_budget if self.retry else None,
        }


@dataclass
class OrderResult:
    """Everything observed about one order. Client times are seconds from the run's
    start (monotonic); server times are Unix epoch seconds from the order's timestamps."""

    index: int
    due_s: float
    sku: str
    priority: str | None = None  # as sent (None: not sent, so standard)
    started_s: float | None = None  # the pacer handed the order over
    sent_s: float | None = None  # its request headers started to go out
    answered_s: float | None = None  # the final answer (or error) arrived
    attempts: int = 0
    status: int | None = None  # HTTP status of the final answer
    error: str | None = None  # transport error of the final attempt
    problem_type: str | None = None  # RFC 9457 `type` of a refusal
    retry_after_s: float | None = None
    order_id: str | None = None
    service_level: str | None = None
    order_status: str | None = None  # the last status seen
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    polls: int = 0
    follow_errors: int = 0
    events: list[tuple[str, float]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """`accepted` (2xx), `refused` (any other HTTP answer), `error` or `pending`."""
        if self.error is not None:
            return "error"
        if self.status is None:
            return "pending"
        return "accepted" if 200 <= self.status < 300 else "refused"

    @property
    def latency_s(self) -> float | None:
        return None if self.answered_s is None else self.answered_s - self.due_s

    @property
    def send_lag_s(self) -> float | None:
        return elapsed(self.due_s, self.sent_s if self.sent_s is not None else self.started_s)

    @property
    def wait_s(self) -> float | None:
        """Server time from stored to fulfilment started (time in the queue)."""
        return elapsed(self.created_at, self.started_at)

    @property
    def start_s(self) -> float | None:
        """From due to fulfilment started: the answer's latency plus the time in the queue
        (time-to-start; the spans are added, as for `fulfilment_s`)."""
        latency, wait = self.latency_s, self.wait_s
        if self.outcome != "accepted" or latency is None or wait is None:
            return None
        return latency + wait

    @property
    def fulfilment_s(self) -> float | None:
        """From due to fulfilled: the answer's latency plus the order's stored→finished time.

        Adding the two spans keeps client and server clocks apart, so the figure holds
        even when the server's clock is not the client's.
        """
        latency = self.latency_s
        if (
            self.order_status != "fulfilled"
            or latency is None
            or self.created_at is None
            or self.finished_at is None
        ):
            return None
        return latency + max(0.0, self.finished_at - self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "due_s": self.due_s,
            "sku": self.sku,
            "priority": self.priority,
            "started_s": self.started_s,
            "sent_s": self.sent_s,
            "answered_s": self.answered_s,
            "latency_s": self.latency_s,
            "send_lag_s": self.send_lag_s,
            "attempts": self.attempts,
            "outcome": self.outcome,
            "status": self.status,
            "error": self.error,
            "problem_type": self.problem_type,
            "retry_after_s": self.retry_after_s,
            "order_id": self.order_id,
            "service_level": self.service_level,
            "order_status": self.order_status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wait_s": self.wait_s,
            "start_s": self.start_s,
            "fulfilment_s": self.fulfilment_s,
            "polls": self.polls,
            "follow_errors": self.follow_errors,
            "events": [{"kind": kind, "at": at} for kind, at in self.events],
        }


@dataclass(frozen=True, slots=True)
class CapacitySample:
    t_s: float
    mode: str
    capacity: int
    in_flight: int
    queued: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """The service as `GET /capacity` described it when the run started."""

    mode: str
    capacity: int
    full_service_s: float | None
    queue_limit: int | None

    @property
    def limit_per_s(self) -> float | None:
        """Orders per second the service can fulfil in full: capacity / time per order."""
        if not self.full_service_s or self.full_service_s <= 0:
            return None
        return self.capacity / self.full_service_s

    def describe(self) -> str:
        """`queue mode, capacity 2, 1 s per order`."""
        text = f"{self.mode} mode, capacity {self.capacity}"
        if self.full_service_s:
            text += f", {self.full_service_s:.3g} s per order"
        return text

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "limit_per_s": self.limit_per_s}

    @classmethod
    def from_capacity(cls, data: dict[str, Any]) -> ServiceInfo | None:
        try:
            full = data.get("full_service_s")
            limit = data.get("queue_limit")
            return cls(
                mode=str(data["mode"]),
                capacity=int(data["capacity"]),
                full_service_s=None if full is None else float(full),
                queue_limit=None if limit is None else int(limit),
            )
        except (KeyError, TypeError, ValueError):
            return None


async def service_info(client: httpx.AsyncClient) -> ServiceInfo | None:
    """`GET /capacity` once; None when the service does not say."""
    try:
        response = await client.get("/capacity")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return ServiceInfo.from_capacity(data) if isinstance(data, dict) else None


@dataclass
class LiveCounts:
    """Running totals, updated as the run goes (for a progress display)."""

    planned: int = 0
    sent: int = 0
    answered: int = 0
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    late: int = 0
    following: int = 0
    finished: int = 0  # followed orders seen in a terminal state
    sending_done: bool = False

    @property
    def in_flight(self) -> int:
        return self.sent - self.answered


@dataclass
class LoadRun:
    """The raw record of a run; `retail.loadgen.report` turns it into figures."""

    url: str
    config: LoadConfig
    run_id: str
    customer: str
    started_epoch: float  # wall-clock time of the run's start (client clock)
    elapsed_s: float
    orders: list[OrderResult]
    samples: list[CapacitySample]
    service: ServiceInfo | None = None  # GET /capacity at the start, when it answered
    retries_denied: int = 0  # retries the retry budget did not allow


def retry_wait_s(headers: Mapping[str, str]) -> float | None:
    """When to come back, in seconds: `Retry-After-Ms` where the server gives it (the
    estimate itself; `Retry-After` has whole seconds), else `Retry-After`."""
    fine = headers.get("retry-after-ms")
    if fine is not None and (fine := fine.strip()).isascii() and fine.isdigit():
        return int(fine) / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass
class _Context:
    config: LoadConfig
    client: httpx.AsyncClient
    timer: Timer
    start: float
    follow_deadline: float
    customer: str
    live: LiveCounts
    rng: random.Random
    budget: RetryBudget | None = None

    def now_s(self) -> float:
        return self.timer.now() - self.start


async def run_load(
    config: LoadConfig,
    *,
    client: httpx.AsyncClient,
    timer: Timer | None = None,
    live: LiveCounts | None = None,
) -> LoadRun:
    """Run `config` against the server behind `client` (its `base_url` is the service)."""
    timer = timer or MonotonicTimer()
    live = live if live is not None else LiveCounts()
    dues = due_times(
        config.schedule, config.arrivals, seed=config.seed, max_orders=config.max_orders
    )
    priorities: list[str | None] = (
        list(config.mix.assign(len(dues), config.seed)) if config.mix else [None] * len(dues)
    )
    orders = [
        OrderResult(index, due, config.skus[index % len(config.skus)], priorities[index])
        for index, due in enumerate(dues)
    ]
    live.planned = len(orders)
    run_id = uuid.uuid4().hex[:8]
    customer = config.customer or f"load-{run_id}"
    service = await service_info(client) if config.sample_interval_s else None
    start = timer.now()
    started_epoch = time.time()
    context = _Context(
        config=config,
        client=client,
        timer=timer,
        start=start,
        follow_deadline=start + max(dues, default=0.0) + config.follow_timeout_s,
        customer=customer,
        live=live,
        rng=random.Random(config.seed),
        budget=RetryBudget(config.retry_budget) if config.retry else None,
    )
    samples: list[CapacitySample] = []
    sampler = (
        asyncio.create_task(_sample(context, samples), name="loadgen-capacity-sampler")
        if config.sample_interval_s
        else None
    )
    try:
        async with asyncio.TaskGroup() as group:

            def send(index: int, lag_s: float) -> None:
                live.sent += 1
                if lag_s > LATE_SEND_S:
                    live.late += 1
                group.create_task(_order(context, orders[index]), name=f"loadgen-order-{index}")

            await pace(dues, timer=timer, start=start, send=send)
            live.sending_done = True
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    return LoadRun(
        url=str(client.base_url),
        config=config,
        run_id=run_id,
        customer=customer,
        started_epoch=started_epoch,
        elapsed_s=timer.now() - start,
        orders=orders,
        samples=samples,
        service=service,
        retries_denied=context.budget.denied if context.budget is not None else 0,
    )


async def _order(context: _Context, order: OrderResult) -> None:
    await _place(context, order)
    if context.config.follow and order.outcome == "accepted" and order.order_id is not None:
        context.live.following += 1
        await _follow(context, order)


async def _place(context: _Context, order: OrderResult) -> None:
    config, live = context.config, context.live
    order.started_s = context.now_s()
    body: dict[str, Any] = {
        "customer_id": context.customer,
        "items": [{"sku": order.sku, "quantity": config.quantity}],
    }
    if order.priority is not None:
        body["priority"] = order.priority
    if config.start_within_s is not None:
        body["start_within_s"] = config.start_within_s
    if context.budget is not None:
        context.budget.sent()
    headers = {"Idempotency-Key": str(uuid.uuid4())} if config.idempotency_keys else {}

    async def trace(name: str, info: dict[str, Any]) -> None:
        # The request has a connection: it opens one, or starts writing on one.
        if order.sent_s is None and name.endswith(SENDING_EVENTS):
            order.sent_s = context.now_s()

    for attempt in range(config.retries + 1):
        order.attempts = attempt + 1
        try:
            response = await context.client.post(
                "/orders", json=body, headers=headers, extensions={"trace": trace}
            )
        except httpx.HTTPError as error:
            # A request that never connected cannot have created an order; after any
            # other failure only an Idempotency-Key makes a second try safe.
            safe = isinstance(error, httpx.ConnectError | httpx.PoolTimeout)
            if (
                attempt < config.retries
                and (safe or config.idempotency_keys)
                and await _back_off(context, attempt, None)
            ):
                continue
            order.status, order.error = None, type(error).__name__
            break
        order.status, order.error = response.status_code, None
        order.retry_after_s = parse_retry_after(response.headers.get("retry-after"))
        _read_answer(order, response)
        if (
            _retryable(order)
            and attempt < config.retries
            and await _back_off(context, attempt, retry_wait_s(response.headers))
        ):
            continue
        break
    order.answered_s = context.now_s()
    live.answered += 1
    if order.outcome == "accepted":
        live.accepted += 1
    elif order.outcome == "refused":
        live.refused += 1
    else:
        live.errors += 1


def _retryable(order: OrderResult) -> bool:
    """Shed (503), throttled (429), or the same Idempotency-Key still in flight (409)."""
    if order.status in RETRYABLE_STATUSES:
        return True
    return order.status == 409 and (order.problem_type or "").endswith(KEY_IN_USE)


def _read_answer(order: OrderResult, response: httpx.Response) -> None:
    order.problem_type = None
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if 200 <= response.status_code < 300:
            order.status, order.error = None, "InvalidResponse"
        return
    if 200 <= response.status_code < 300:
        if not isinstance(data.get("id"), str):
            order.status, order.error = None, "InvalidResponse"
            return
        _absorb(order, data)
    else:
        problem = data.get("type")
        order.problem_type = problem if isinstance(problem, str) else None


def _absorb(order: OrderResult, data: dict[str, Any]) -> None:
    """Take what an order representation says."""
    order.order_id = data.get("id", order.order_id)
    order.service_level = data.get("service_level", order.service_level)
    order.order_status = data.get("status", order.order_status)
    order.created_at = _epoch(data.get("created_at")) or order.created_at
    order.started_at = _epoch(data.get("started_at")) or order.started_at
    order.finished_at = _epoch(data.get("finished_at")) or order.finished_at


async def _back_off(context: _Context, attempt: int, retry_after_s: float | None) -> bool:
    """Wait before another attempt: `retry_wait_s` if the server gave one (plus jitter
    with `retry`), otherwise exponential backoff with jitter. False (no wait) when that
    would pass the deadline or, with `retry`, when the retry budget is spent."""
    budget = context.budget
    if retry_after_s is not None:
        delay = retry_after_s if budget is None else retry_delay(retry_after_s, context.rng)
    else:
        delay = RETRY_BACKOFF_S * 2**attempt * context.rng.uniform(0.5, 1.5)
    delay = min(delay, RETRY_WAIT_MAX_S)
    if context.timer.now() + delay > context.follow_deadline:
        return False
    if budget is not None and not budget.spend():
        return False
    await context.timer.sleep(delay)
    return True


async def _follow(context: _Context, order: OrderResult) -> None:
    """Poll the order until it is terminal or the follow deadline passes."""
    timer, client = context.timer, context.client
    wait = order.retry_after_s if order.retry_after_s is not None else DEFAULT_POLL_S
    while order.order_status not in TERMINAL_STATUSES:
        remaining = context.follow_deadline - timer.now()
        if remaining <= 0:
            return
        await timer.sleep(min(wait, remaining))
        try:
            response = await client.get(f"/orders/{order.order_id}")
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            data = None
        order.polls += 1
        if not isinstance(data, dict):
            order.follow_errors += 1
            wait = DEFAULT_POLL_S
            continue
        _absorb(order, data)
        retry = parse_retry_after(response.headers.get("retry-after"))
        wait = retry if retry is not None else DEFAULT_POLL_S
    context.live.finished += 1
    if context.config.fetch_events:
        await _read_events(context, order)


async def _read_events(context: _Context, order: OrderResult) -> None:
    try:
        response = await context.client.get(f"/orders/{order.order_id}/events")
        events = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        events = None
    if not isinstance(events, list):
        order.follow_errors += 1
        return
    for event in events:
        at = _epoch(event.get("at")) if isinstance(event, dict) else None
        if at is not None:
            order.events.append((str(event.get("kind")), at))


async def _sample(context: _Context, samples: list[CapacitySample]) -> None:
    interval = context.config.sample_interval_s or DEFAULT_SAMPLE_INTERVAL_S
    while True:
        began = context.timer.now()
        try:
            response = await context.client.get("/capacity")
            data = response.json() if response.status_code == 200 else None
            if isinstance(data, dict):
                samples.append(
                    CapacitySample(
                        t_s=began - context.start,
                        mode=str(data["mode"]),
                        capacity=int(data["capacity"]),
                        in_flight=int(data["in_flight"]),
                        queued=int(data["queued"]),
                    )
                )
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        await context.timer.sleep(interval - (context.timer.now() - began))
