"""A load run's figures: the summary table and the JSON report.

Definitions used throughout:

- offered rate: orders sent / the schedule's duration;
- accepted: answered `2xx`, split by `service_level` (full, degraded);
- refused: any other HTTP answer, counted by status code (503, 409, 422, ...) and by
  status and problem (`503 capacity-exceeded`, `409 insufficient-stock`, ...);
- errors: no HTTP answer (connection refused, timeout, ...), counted by exception;
- latency: from the moment the order was due to its final answer (including time
  spent waiting for a connection and any retries), for accepted and refused apart;
- late send: an order whose request got its connection more than `LATE_SEND_S` after it
  was due; `late_for_connection` counts those held back by the connection limit (the
  rest were late because the client's event loop was busy);
- order → fulfilled: from due to the order's `finished_at` (see
  `OrderResult.fulfilment_s`), for followed orders that were fulfilled;
- order → started (time-to-start): from due to `started_at`, i.e. the answer's latency
  plus the queue wait, for followed orders that started;
- queue wait: from `created_at` to `started_at` (server clock);
- goodput: orders fulfilled per second over the window the orders were offered in,
  from the run's start to the end of the schedule, or to the last fulfilment when
  that is later. Work cannot start before the run does, so goodput never exceeds the
  service's limit (`capacity / full_service_s`, read from `GET /capacity` at the
  start) for orders served in full; when it does exceed it (degraded orders are
  cheaper, or the server's clock is not this one's), `goodput_note` says why;
- per priority (`by_priority`, when orders were sent with a priority, `--mix`): the
  orders sent at each priority, accepted, degraded, refused, `expired` (accepted, but
  the start deadline passed while it waited), fulfilled, goodput over the same window,
  the queue wait and the refusals' latency.

JSON report (`retail load --json FILE`), schema `retail.loadgen.report/1`. Times are
seconds; `*_at` fields are Unix epoch seconds of the server's timestamps; `t_s`,
`due_s`, `sent_s`, `answered_s` are seconds from the run's start on the client's clock.

    {
      "schema": "retail.loadgen.report/1",
      "url": str, "run_id": str, "customer": str,
      "started_at": float,                  # client wall clock at the run's start
      "elapsed_s": float,                   # the whole run, following included
      "config": {"schedule": "10@5,20@5", "duration_s", "arrivals", "seed",
                 "max_orders", "skus", "quantity", "idempotency_keys", "retries",
                 "follow", "follow_timeout_s", "sample_interval_s", "mix",
                 "start_within_s", "retry", "retry_budget"},
      "summary": {
        "orders": int, "duration_s": float, "offered_rate": float,
        "accepted": {"total": int, "full": int, "degraded": int},
        "refused": {"total": int, "by_status": {"503": int, ...},
                    "by_problem": {"503 capacity-exceeded": int, ...}},
        "errors": {"total": int, "by_kind": {"ConnectError": int, ...}},
        "retries": int,                     # attempts beyond the first, all orders
        "late_sends": int, "late_for_connection": int, "max_send_lag_s": float | null,
        "followed": bool,
        "fulfilled": int, "failed": int, "cancelled": int, "expired": int,
        "unfinished": int,                  # followed, not terminal by the deadline
        "goodput_per_s": float | null,      # null without --follow
        "limit_per_s": float | null,        # capacity / full_service_s, when known
        "goodput_note": str | null,         # why goodput is above limit_per_s
        "latency_accepted": PERCENTILES, "latency_refused": PERCENTILES,
        "start": PERCENTILES, "fulfilment": PERCENTILES, "queue_wait": PERCENTILES,
        "retries_denied": int,              # retries the --retry budget did not allow
        "by_priority": {"critical" | "standard" | "sheddable": {
            "orders", "accepted", "degraded", "refused", "refused_share", "expired",
            "fulfilled", "goodput_per_s", "queue_wait": PERCENTILES,
            "latency_refused": PERCENTILES}}   # {} without --mix
      },
      "service": {"mode", "capacity", "full_service_s", "queue_limit", "limit_per_s"} | null,
      "histograms": {"latency_accepted": HISTOGRAM, "latency_refused": HISTOGRAM,
                     "start": HISTOGRAM, "fulfilment": HISTOGRAM, "queue_wait": HISTOGRAM},
      "orders": [{"index", "due_s", "sku", "priority", "started_s", "sent_s", "answered_s",
                  "latency_s", "send_lag_s", "attempts", "outcome", "status", "error",
                  "problem_type", "retry_after_s", "order_id", "service_level",
                  "order_status", "created_at", "started_at", "finished_at", "wait_s",
                  "start_s", "fulfilment_s", "polls", "follow_errors",
                  "events": [{"kind": str, "at": float}]}],
      "capacity_samples": [{"t_s", "mode", "capacity", "in_flight", "queued"}]
    }

    PERCENTILES = {"count", "min_s", "mean_s", "p50_s", "p90_s", "p99_s", "p99_9_s", "max_s"}
                  (all but count null when empty)
    HISTOGRAM   = {"unit": "us", "bits", "count", "min_us", "max_us", "sum_us",
                   "buckets": [[lowest_us, width_us, count], ...]}
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from retail.loadgen.histogram import LatencyHistogram, Percentiles
from retail.loadgen.mix import PRIORITIES
from retail.loadgen.runner import LATE_SEND_S, LoadRun, OrderResult

SCHEMA = "retail.loadgen.report/1"


@dataclass(frozen=True)
class PrioritySummary:
    """The figures of the orders sent at one priority."""

    orders: int
    accepted: int
    degraded: int
    refused: int
    expired: int
    fulfilled: int
    goodput_per_s: float | None
    queue_wait: Percentiles
    latency_refused: Percentiles

    @property
    def refused_share(self) -> float:
        return self.refused / self.orders if self.orders else 0.0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["refused_share"] = self.refused_share
        data["queue_wait"] = self.queue_wait.to_json()
        data["latency_refused"] = self.latency_refused.to_json()
        return data


@dataclass(frozen=True)
class Summary:
    orders: int
    duration_s: float
    offered_rate: float
    accepted_full: int
    accepted_degraded: int
    refused_by_status: dict[int, int]
    refused_by_problem: dict[str, int]
    errors_by_kind: dict[str, int]
    retries: int
    late_sends: int
    late_for_connection: int
    max_send_lag_s: float | None
    followed: bool
    fulfilled: int
    failed: int
    cancelled: int
    unfinished: int
    goodput_per_s: float | None
    latency_accepted: Percentiles
    latency_refused: Percentiles
    fulfilment: Percentiles
    queue_wait: Percentiles
    start: Percentiles
    limit_per_s: float | None = None
    goodput_note: str | None = None
    retries_denied: int = 0
    expired: int = 0  # accepted, never started: the start deadline passed while it waited
    by_priority: dict[str, PrioritySummary] | None = None

    @property
    def accepted(self) -> int:
        return self.accepted_full + self.accepted_degraded

    @property
    def refused(self) -> int:
        return sum(self.refused_by_status.values())

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "duration_s": self.duration_s,
            "offered_rate": self.offered_rate,
            "accepted": {
                "total": self.accepted,
                "full": self.accepted_full,
                "degraded": self.accepted_degraded,
            },
            "refused": {
                "total": self.refused,
                "by_status": {str(k): v for k, v in sorted(self.refused_by_status.items())},
                "by_problem": dict(sorted(self.refused_by_problem.items())),
            },
            "errors": {"total": self.errors, "by_kind": dict(sorted(self.errors_by_kind.items()))},
            "retries": self.retries,
            "late_sends": self.late_sends,
            "late_for_connection": self.late_for_connection,
            "max_send_lag_s": self.max_send_lag_s,
            "followed": self.followed,
            "fulfilled": self.fulfilled,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "unfinished": self.unfinished,
            "goodput_per_s": self.goodput_per_s,
            "limit_per_s": self.limit_per_s,
            "goodput_note": self.goodput_note,
            "latency_accepted": self.latency_accepted.to_json(),
            "latency_refused": self.latency_refused.to_json(),
            "start": self.start.to_json(),
            "fulfilment": self.fulfilment.to_json(),
            "queue_wait": self.queue_wait.to_json(),
            "retries_denied": self.retries_denied,
            "by_priority": {name: row.to_json() for name, row in (self.by_priority or {}).items()},
        }


@dataclass(frozen=True)
class Histograms:
    latency_accepted: LatencyHistogram
    latency_refused: LatencyHistogram
    fulfilment: LatencyHistogram
    queue_wait: LatencyHistogram
    start: LatencyHistogram


def histograms(run: LoadRun) -> Histograms:
    result = Histograms(
        LatencyHistogram(),
        LatencyHistogram(),
        LatencyHistogram(),
        LatencyHistogram(),
        LatencyHistogram(),
    )
    for order in run.orders:
        latency = order.latency_s
        if latency is not None and order.outcome == "accepted":
            result.latency_accepted.record(latency)
        elif latency is not None and order.outcome == "refused":
            result.latency_refused.record(latency)
        if order.fulfilment_s is not None:
            result.fulfilment.record(order.fulfilment_s)
        if order.wait_s is not None:
            result.queue_wait.record(order.wait_s)
        if order.start_s is not None:
            result.start.record(order.start_s)
    return result


def goodput(
    finished_at: list[float], duration_s: float, started_at: float, count: int | None = None
) -> float:
    """Fulfilled orders per second over the offered window (see the module docstring):
    from `started_at` (the run's start) to the end of the schedule, or to the last
    fulfilment when that is later. `count`: of those, the ones to count (one priority's)."""
    if not finished_at:
        return 0.0
    count = len(finished_at) if count is None else count
    window = max(duration_s, max(finished_at) - started_at)
    return count / window if window > 0 else float(count)


def priority_summaries(
    run: LoadRun, sent: list[OrderResult], finished_at: list[float]
) -> dict[str, PrioritySummary]:
    """Per priority sent (none without a mix); goodput over the run's whole window."""
    result: dict[str, PrioritySummary] = {}
    duration = run.config.schedule.duration_s
    for name in PRIORITIES:
        mine = [o for o in sent if o.priority == name]
        if not mine:
            continue
        accepted = [o for o in mine if o.outcome == "accepted"]
        fulfilled = sum(1 for o in accepted if o.order_status == "fulfilled")
        refused = [o for o in mine if o.outcome == "refused"]
        result[name] = PrioritySummary(
            orders=len(mine),
            accepted=len(accepted),
            degraded=sum(1 for o in accepted if o.service_level == "degraded"),
            refused=len(refused),
            expired=sum(1 for o in accepted if o.order_status == "expired"),
            fulfilled=fulfilled,
            goodput_per_s=(
                goodput(finished_at, duration, run.started_epoch, fulfilled)
                if run.config.follow
                else None
            ),
            queue_wait=LatencyHistogram.from_values(
                [w for o in accepted if (w := o.wait_s) is not None]
            ).summary(),
            latency_refused=LatencyHistogram.from_values(
                [lat for o in refused if (lat := o.latency_s) is not None]
            ).summary(),
        )
    return result


def goodput_note(
    goodput_per_s: float | None, limit_per_s: float | None, degraded: int
) -> str | None:
    """Why goodput reads above what the service can fulfil in full, if it does."""
    if goodput_per_s is None or limit_per_s is None or goodput_per_s <= limit_per_s * 1.0001:
        return None
    if degraded:
        return (
            f"above the full-service limit of {limit_per_s:.2f}/s: {degraded} orders were "
            "degraded, and a degraded order takes less time"
        )
    return (
        f"above the limit of {limit_per_s:.2f}/s: the service's clock differs from this "
        "one's, or its capacity changed during the run"
    )


def _problem(order: OrderResult) -> str:
    """`503 capacity-exceeded`: the status and the last part of the problem's `type`."""
    slug = (order.problem_type or "").rstrip("/").rsplit("/", 1)[-1]
    return f"{order.status} {slug}" if slug and slug != "about:blank" else str(order.status)


def summarize(run: LoadRun, hists: Histograms | None = None) -> Summary:
    hists = hists or histograms(run)
    sent = [o for o in run.orders if o.started_s is not None]
    outcomes = Counter(o.outcome for o in sent)
    levels = Counter(o.service_level for o in sent if o.outcome == "accepted")
    lags = [lag for o in sent if (lag := o.send_lag_s) is not None]
    followed = [o for o in sent if o.outcome == "accepted"] if run.config.follow else []
    statuses = Counter(o.order_status for o in followed)
    finished = [
        o.finished_at
        for o in followed
        if o.order_status == "fulfilled" and o.finished_at is not None
    ]
    duration = run.config.schedule.duration_s
    terminal = (
        statuses["fulfilled"] + statuses["failed"] + statuses["cancelled"] + statuses["expired"]
    )
    rate = goodput(finished, duration, run.started_epoch) if run.config.follow else None
    limit = run.service.limit_per_s if run.service is not None else None
    return Summary(
        orders=len(sent),
        duration_s=duration,
        offered_rate=len(sent) / duration if duration > 0 else 0.0,
        accepted_full=outcomes["accepted"] - levels["degraded"],
        accepted_degraded=levels["degraded"],
        refused_by_status=dict(
            Counter(o.status for o in sent if o.outcome == "refused" and o.status is not None)
        ),
        refused_by_problem=dict(Counter(_problem(o) for o in sent if o.outcome == "refused")),
        errors_by_kind=dict(
            Counter(o.error for o in sent if o.outcome == "error" and o.error is not None)
        ),
        retries=sum(max(0, o.attempts - 1) for o in sent),
        late_sends=sum(1 for lag in lags if lag > LATE_SEND_S),
        late_for_connection=sum(
            1
            for o in sent
            if o.sent_s is not None
            and o.started_s is not None
            and o.sent_s - o.started_s > LATE_SEND_S
        ),
        max_send_lag_s=max(lags, default=None),
        followed=run.config.follow,
        fulfilled=statuses["fulfilled"],
        failed=statuses["failed"],
        cancelled=statuses["cancelled"],
        unfinished=len(followed) - terminal,
        goodput_per_s=rate,
        latency_accepted=hists.latency_accepted.summary(),
        latency_refused=hists.latency_refused.summary(),
        fulfilment=hists.fulfilment.summary(),
        queue_wait=hists.queue_wait.summary(),
        start=hists.start.summary(),
        limit_per_s=limit,
        goodput_note=goodput_note(rate, limit, levels["degraded"]),
        retries_denied=run.retries_denied,
        expired=statuses["expired"],
        by_priority=priority_summaries(run, sent, finished),
    )


def to_json(run: LoadRun) -> dict[str, Any]:
    """The full report (schema in the module docstring)."""
    hists = histograms(run)
    return {
        "schema": SCHEMA,
        "url": run.url,
        "run_id": run.run_id,
        "customer": run.customer,
        "started_at": run.started_epoch,
        "elapsed_s": run.elapsed_s,
        "config": run.config.to_json(),
        "summary": summarize(run, hists).to_json(),
        "service": None if run.service is None else run.service.to_json(),
        "histograms": {
            "latency_accepted": hists.latency_accepted.to_json(),
            "latency_refused": hists.latency_refused.to_json(),
            "start": hists.start.to_json(),
            "fulfilment": hists.fulfilment.to_json(),
            "queue_wait": hists.queue_wait.to_json(),
        },
        "orders": [order.to_json() for order in run.orders],
        "capacity_samples": [sample.to_json() for sample in run.samples],
    }


def write_json(run: LoadRun, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(run), indent=2) + "\n")


# --- the table ----------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}/s"


def _by(counts: dict[Any, int]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items(), key=lambda kv: str(kv[0])))


def overview_table(summary: Summary, *, title: str | None = None) -> Table:
    table = Table(title=title, show_header=False, box=None, padding=(0, 2), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "offered",
        f"{summary.orders} orders in {summary.duration_s:g} s = {_rate(summary.offered_rate)}",
    )
    table.add_row("accepted", accepted_text(summary))
    refused = f"{summary.refused}" + (
        f" ({_by(summary.refused_by_problem)})" if summary.refused_by_problem else ""
    )
    table.add_row("refused", refused)
    errors = f"{summary.errors}" + (
        f" ({_by(summary.errors_by_kind)})" if summary.errors_by_kind else ""
    )
    table.add_row("errors", errors)
    if summary.retries or summary.retries_denied:
        retried = str(summary.retries)
        if run_budget := summary.retries_denied:
            retried += f" ({run_budget} more not allowed by the retry budget)"
        table.add_row("retries", retried)
    lag = ms(summary.max_send_lag_s)
    late = f"{summary.late_sends} later than {LATE_SEND_S * 1000:g} ms (max lag {lag} ms)"
    if summary.late_for_connection:
        late += (
            f"  [yellow]{summary.late_for_connection} waited for a connection: "
            "raise --connections[/yellow]"
        )
    elif summary.late_sends:
        late += "  [yellow]the client was busy: lower the rate[/yellow]"
    table.add_row("late sends", late)
    if summary.followed:
        table.add_row("fulfilled", fulfilled_text(summary))
        good = f"{_rate(summary.goodput_per_s)} fulfilled"
        if summary.limit_per_s is not None:
            good += f" (the service's limit: {_rate(summary.limit_per_s)})"
        if summary.goodput_note:
            good += f"\n[yellow]{summary.goodput_note}[/yellow]"
        table.add_row("goodput", good)
    return table


def latency_table(summary: Summary) -> Table:
    table = Table(title="latency (ms, from the moment each order was due)", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    for name in ("p50", "p90", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    rows = [
        ("accepted", summary.latency_accepted),
        ("refused", summary.latency_refused),
    ]
    if summary.followed:
        rows += [
            ("order → started", summary.start),
            ("order → fulfilled", summary.fulfilment),
            ("queue wait", summary.queue_wait),
        ]
    for name, p in rows:
        table.add_row(
            name,
            str(p.count),
            ms(p.p50_s),
            ms(p.p90_s),
            ms(p.p99_s),
            ms(p.p99_9_s),
            ms(p.max_s),
        )
    return table


def render_summary(run: LoadRun, summary: Summary | None = None) -> RenderableType:
    summary = summary or summarize(run)
    title = f"[bold]retail load[/bold] {run.url} {describe_run(run)}"
    parts: list[RenderableType] = [overview_table(summary, title=title), "", latency_table(summary)]
    if summary.by_priority:
        parts += ["", priority_table(summary)]
    return Group(*parts)


def priority_table(summary: Summary) -> Table:
    """Goodput, refusals and waits per priority."""
    table = Table(title="by priority", title_justify="left")
    for name in ("priority", "orders", "accepted", "refused", "degraded", "expired"):
        table.add_column(name, justify="left" if name == "priority" else "right")
    for name in ("fulfilled", "goodput/s", "wait p50 ms", "wait p99 ms", "refusal p99 ms"):
        table.add_column(name, justify="right")
    for name, row in (summary.by_priority or {}).items():
        table.add_row(
            name,
            str(row.orders),
            str(row.accepted),
            f"{row.refused} ({row.refused_share:.1%})",
            str(row.degraded),
            str(row.expired),
            str(row.fulfilled) if summary.followed else "-",
            "-" if row.goodput_per_s is None else f"{row.goodput_per_s:,.2f}",
            ms(row.queue_wait.p50_s),
            ms(row.queue_wait.p99_s),
            ms(row.latency_refused.p99_s),
        )
    return table


def accepted_text(summary: Summary) -> str:
    """`12 (full 10, degraded 2)`."""
    return (
        f"{summary.accepted} (full {summary.accepted_full}, degraded {summary.accepted_degraded})"
    )


def fulfilled_text(summary: Summary) -> str:
    """`10 (failed 1, cancelled 0, unfinished 1)` (and `expired N, ` when orders expired)."""
    return (
        f"{summary.fulfilled} (failed {summary.failed}, cancelled {summary.cancelled}, "
        + (f"expired {summary.expired}, " if summary.expired else "")
        + f"unfinished {summary.unfinished})"
    )


def describe_run(run: LoadRun) -> str:
    """`4/s for 10 s (fixed arrivals); reject mode, capacity 2, 1 s per order`."""
    config = run.config
    text = f"{_schedule_words(config.schedule.describe())} ({config.arrivals} arrivals)"
    if run.service is not None:
        text += f"; {run.service.describe()}"
    return text


def _schedule_words(described: str) -> str:
    """`4@10` reads `4/s for 10 s`; other schedules stay as written."""
    rate, at, seconds = described.partition("@")
    if at and "," not in described and ".." not in described and ":" not in described:
        return f"{rate}/s for {seconds} s"
    return described
