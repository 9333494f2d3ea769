"""Prometheus metrics: what the service counts and times, and their exposition.

Each app builds one `Metrics` (with its own `CollectorRegistry`) in the composition
root and hands it to the parts that observe something: the admission gate, the
worker pool, the HTTP middleware. Nothing is registered globally, so any number of
apps can live in one process.

Several server processes (`uvicorn --workers N`): when `PROMETHEUS_MULTIPROC_DIR`
names a directory at start, prometheus_client keeps every value in a file there and
`/metrics` of any process sums the files of all of them. That directory must be
empty when the server starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from retail.core import capacity
from retail.core.events import OrderEvent
from retail.core.types import AutoLevel, OverloadMode, Priority

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. Orders take seconds to minutes (and wait as long again when queued);
# requests take milliseconds, or as long as `Prefer: wait`.
ORDER_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
NOTICE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

OUTCOMES: dict[type, str] = {
    capacity.Admit: "admit",
    capacity.Queue: "queue",
    capacity.Degrade: "degrade",
    capacity.Reject: "reject",
}


def multiprocess_dir() -> str | None:
    """The directory prometheus_client shares values through, if it runs in that mode."""
    return os.environ.get(MULTIPROCESS_DIR_ENV) or None


class Metrics:
    def __init__(self) -> None:
        # No `_created` series: they double the series count and no query here needs them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        self.admission_decisions = Counter(
            "retail_admission_decisions",
            "Admission decisions for new orders, by overload mode, outcome and the order's "
            "priority (a refusal before the body is read counts as standard).",
            ["mode", "outcome", "priority"],
            registry=registry,
        )
        self.orders_in_flight = Gauge(
            "retail_orders_in_flight",
            "Orders being fulfilled now (summed over processes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.orders_queued = Gauge(
            "retail_orders_queued",
            "Orders waiting for a fulfilment slot.",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.overload_level = Gauge(
            "retail_overload_level",
            "1 for the level `auto` mode is at (queue, degrade or refuse), 0 for the others; "
            "queue in the other modes.",
            ["level"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.level_switched(AutoLevel.QUEUE)
        self.queue_oldest_age = Gauge(
            "retail_queue_oldest_age_seconds",
            "How long the oldest queued order has waited; 0 when none waits.",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.queue_wait = Histogram(
            "retail_order_queue_wait_seconds",
            "From an order's creation to the start of its fulfilment.",
            registry=registry,
            buckets=WAIT_BUCKETS_S,
        )
        self.fulfilment_duration = Histogram(
            "retail_order_fulfilment_duration_seconds",
            "From the start of an order's fulfilment to fulfilled or failed.",
            registry=registry,
            buckets=ORDER_BUCKETS_S,
        )
        self.step_duration = Histogram(
            "retail_fulfilment_step_duration_seconds",
            "Time one fulfilment step took, by step.",
            ["step"],
            registry=registry,
            buckets=STEP_BUCKETS_S,
        )
        self.fulfilment_writes = Counter(
            "retail_fulfilment_writes",
            "Transactions in which the workers wrote step transitions (their group commit).",
            registry=registry,
        )
        self.fulfilment_transitions = Counter(
            "retail_fulfilment_transitions_written",
            "Step transitions (step boundaries and ends) the workers wrote.",
            registry=registry,
        )
        self.orders_finished = Counter(
            "retail_orders_finished",
            "Orders that reached a terminal status, by status.",
            ["status"],
            registry=registry,
        )
        self.order_failures = Counter(
            "retail_order_failures",
            "Orders that failed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.http_requests = Counter(
            "retail_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "retail_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=registry,
            buckets=HTTP_BUCKETS_S,
        )

        self.fair_share_checks = Counter(
            "retail_fair_share_checks",
            "Fair-share checks of new orders, by outcome: alone (no other customer competes), "
            "within_share, over_share (refused with 429).",
            ["outcome"],
            registry=registry,
        )
        self.fair_share_customers = Gauge(
            "retail_fair_share_customers",
            "Customers competing for places: holding some, or asked within the window.",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.fair_share_top_refused = Gauge(
            "retail_fair_share_top_refused",
            "Over-share refusals of the most refused recently active customers, by rank "
            "(1 = most refused); one series per rank, never per customer.",
            ["rank"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self._fair_checks: dict[str, Counter] = {}

        # The fleet (RETAIL_FLEET): every process shows the same fleet, so the most recent.
        def fleet_gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(
                f"retail_fleet_{name}",
                f"Fleet: {documentation}",
                labels,
                registry=registry,
                multiprocess_mode="livemostrecent",
            )

        self.fleet_capacity = fleet_gauge("capacity", "the live workers' slots, all together.")
        self.fleet_in_flight = fleet_gauge("orders_in_flight", "orders in fulfilment anywhere.")
        self.fleet_queued = fleet_gauge("orders_queued", "orders waiting, as admission counts.")
        self.fleet_workers = fleet_gauge("workers", "live worker processes.")
        self.fleet_worker_slots = fleet_gauge(
            "worker_slots", "each live worker process's slots.", ("worker",)
        )
        self.fleet_worker_heartbeat_age = fleet_gauge(
            "worker_heartbeat_age_seconds", "how long ago each live worker beat.", ("worker",)
        )
        self.fleet_notice_delay = Histogram(
            "retail_fleet_notice_delay_seconds",
            "Fleet: from a change's commit to this process applying its notice.",
            registry=registry,
            buckets=NOTICE_BUCKETS_S,
        )

        # Children by label values, for the series touched on every request: `labels()`
        # checks and joins its arguments each time. The label sets are bounded (modes,
        # outcomes, methods, route templates, statuses).
        self._decisions: dict[tuple[OverloadMode, Priority, type], Counter] = {}
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    # --- observations, where they happen -----------------------------------------------

    def decided(self, mode: OverloadMode, priority: Priority, decision: capacity.Decision) -> None:
        key = (mode, priority, type(decision))
        child = self._decisions.get(key)
        if child is None:
            child = self.admission_decisions.labels(
                mode.value, OUTCOMES[type(decision)], priority.value
            )
            self._decisions[key] = child
        child.inc()

    def level_switched(self, level: AutoLevel, *_: object) -> None:
        """`auto` mode is at `level` now (extra arguments, as a `LevelObserver` gets, ignored)."""
        for each in AutoLevel:
            self.overload_level.labels(each.value).set(1 if each is level else 0)

    def order_started(self, queue_wait_s: float | None) -> None:
        """A worker claimed an order; `queue_wait_s` is None when it resumes one."""
        if queue_wait_s is not None:
            self.queue_wait.observe(max(0.0, queue_wait_s))

    def step_done(self, step: str, seconds: float) -> None:
        self.step_duration.labels(step).observe(max(0.0, seconds))

    def fulfilment_written(self, transitions: int) -> None:
        """The workers' writer committed `transitions` step transitions in one transaction."""
        self.fulfilment_writes.inc()
        self.fulfilment_transitions.inc(transitions)

    def order_done(self, fulfilment_s: float) -> None:
        """A worker brought an order to fulfilled or failed, `fulfilment_s` after it started."""
        self.fulfilment_duration.observe(max(0.0, fulfilment_s))

    def order_failed(self, reason: str) -> None:
        self.order_failures.labels(reason).inc()

    def notice(self, notice: OrderEvent) -> None:
        """Every published order event: count the terminal ones (cancellations too)."""
        if notice.status.is_terminal:
            self.orders_finished.labels(notice.status.value).inc()

    def set_in_flight(self, count: int) -> None:
        self.orders_in_flight.set(count)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._requests.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
            self._requests[key] = children
        count, duration = children
        count.inc()
        duration.observe(seconds)

    # --- scraping ------------------------------------------------------------------------

    def fair_checked(self, outcome: str) -> None:
        child = self._fair_checks.get(outcome)
        if child is None:
            child = self._fair_checks[outcome] = self.fair_share_checks.labels(outcome)
        child.inc()

    def refresh_fairness(self, competing: int, top_refused: list[int], top_n: int) -> None:
        """Set the fair-share gauges just before a scrape."""
        self.fair_share_customers.set(competing)
        for rank in range(top_n):
            count = top_refused[rank] if rank < len(top_refused) else 0
            self.fair_share_top_refused.labels(str(rank + 1)).set(count)

    def fleet_notice(self, delay_s: float) -> None:
        self.fleet_notice_delay.observe(delay_s)

    def refresh_fleet(
        self, *, capacity: int, in_flight: int, queued: int, workers: list[tuple[str, int, float]]
    ) -> None:
        """Set the fleet gauges just before a scrape; `workers`: (id, slots, heartbeat age)."""
        self.fleet_capacity.set(capacity)
        self.fleet_in_flight.set(in_flight)
        self.fleet_queued.set(queued)
        self.fleet_workers.set(len(workers))
        if multiprocess_dir() is None:  # (not kept per process: gone workers' series stay)
            self.fleet_worker_slots.clear()
            self.fleet_worker_heartbeat_age.clear()
        for worker, slots, age_s in workers:
            self.fleet_worker_slots.labels(worker).set(slots)
            self.fleet_worker_heartbeat_age.labels(worker).set(max(0.0, age_s))

    def refresh(self, *, queued: int, oldest_age_s: float | None) -> None:
        """Set the queue gauges just before a scrape (the worker pool keeps in-flight current)."""
        self.orders_queued.set(queued)
        if oldest_age_s is not None:
            self.queue_oldest_age.set(max(0.0, oldest_age_s))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type of a scrape: Prometheus text, or OpenMetrics if asked."""
        encode: Callable[[CollectorRegistry], bytes]
        encode, content_type = choose_encoder(accept or "")
        directory = multiprocess_dir()
        if directory is None:
            return encode(self.registry), content_type
        # Every process's values, from the shared directory.
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return encode(merged), content_type

    def process_exit(self) -> None:
        """Drop this process's live gauges from the shared directory (multiprocess mode)."""
        directory = multiprocess_dir()
        if directory is not None:
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
