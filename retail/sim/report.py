"""A simulated run's figures: the same as `retail load` reports, as a table and as JSON.

Definitions (as in `retail.loadgen.report`):

- orders: distinct orders (a retry is the same order again); offered rate: orders / the
  arrivals' window (`duration_s`);
- accepted: admitted (full or degraded); refused: refused on the last attempt
  (`refused_share` = refused / orders); `refusals` counts every `503`, retried ones too;
- wait: from the attempt that was accepted to the start of fulfilment (the server's
  queue wait); sojourn: from the order's first due time to `fulfilled` (the client's
  "order → fulfilled", retries included), for fulfilled orders;
- throughput: orders fulfilled per second over the longer of the arrivals' window and the
  span from the first to the last fulfilment (the goodput of `retail load`).

- per priority (`by_priority`, with `--mix`): the same counts for the orders of each
  priority, `goodput_per_s` (fulfilled per second over the same window), `refused_share`
  (of that priority's orders), and `wait_s` of its started orders; `expired`: accepted
  orders whose start deadline (`--start-within`) passed while they waited.

Percentiles are nearest-rank over every order (no histogram buckets: exact).

JSON (`--json`), schema `retail.sim.report/1`:

    {"schema", "orders", "attempts", "accepted", "degraded", "refused", "refusals",
     "fulfilled", "failed", "expired", "retries_denied", "offered_rate", "duration_s",
     "throughput_per_s", "refused_share", "max_queued",
     "wait_s": STATS, "sojourn_s": STATS, "retry_after_error": RETRY_AFTER_ERROR,
     "retry_after_ms_error": RETRY_AFTER_ERROR, "sim_seconds", "wall_seconds",
     "settings": {"overload_mode", "capacity", "queue_limit", "max_queue_wait_s",
                  "critical_reserve", "target_wait_s", "full_service_s",
                  "degraded_service_s"},
     "arrivals": {"schedule", "arrivals", "seed", "max_orders", "retries", "mix",
                  "start_within_s", "retry_budget"},
     "by_priority": {"critical" | "standard" | "sheddable": {"orders", "accepted",
                     "degraded", "refused", "refused_share", "expired", "fulfilled",
                     "goodput_per_s", "wait_s": STATS, "sojourn_s": STATS,
                     "retry_after_error": RETRY_AFTER_ERROR,
                     "retry_after_ms_error": RETRY_AFTER_ERROR}},
     "timeline": [[t_s, in_flight, queued], ...]}

    STATS = {"count", "mean", "p50", "p90", "p99", "p99_9", "max"}  (null when empty)
    RETRY_AFTER_ERROR: see `retry_after_error`

How far a `Retry-After` is from the truth (`retry_after_error`): for each `503`, the
time until an order sent after it (of any attempt) was first admitted is when a retry
would first have been admitted; the error is |Retry-After - that| / that. `retail
simulate` and the overload benchmark measure it the same way, on the same data: when
each refusal and each acceptance happened. With priorities, the time is until an order
of the same priority or a lower one was first admitted (what admits a sheddable order
admits a standard one; room that comes back goes to higher priorities first).
`retry_after_ms_error` is the same for the `Retry-After-Ms` given beside it (the
estimate in milliseconds, where whole seconds cannot say a fraction of one).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from retail.core.types import Priority, ServiceLevel
from retail.sim.engine import SimRun

SCHEMA = "retail.sim.report/1"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99_9": 0.999}


def nearest_rank(ordered: list[float], q: float) -> float:
    """The smallest value with at least `q` of all values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stats(values: Iterable[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, **dict.fromkeys(QUANTILES), "max": None}
    return {
        "count": len(ordered),
        "mean": math.fsum(ordered) / len(ordered),
        **{name: nearest_rank(ordered, q) for name, q in QUANTILES.items()},
        "max": ordered[-1],
    }


ACCURATE_WITHIN = 0.25  # the target: a median relative error within this


def retry_after_error(
    refusals: Iterable[tuple[float, float]], admitted_at: Sequence[float]
) -> dict[str, Any]:
    """How far each `Retry-After` was from the time a retry would first have been admitted.

    `refusals`: (when, Retry-After in seconds) of each `503`; `admitted_at`: when each
    accepted order was admitted, sorted. A refusal after which nothing was admitted any
    more says nothing (`unresolved`). The figures: `count` (refusals measured), the
    median and p90 relative error, the share within `ACCURATE_WITHIN`, the share told to
    come back too early (before anything was admitted again), and the medians of the
    Retry-After given and of the time to the first admission.
    """
    return retry_after_error_by_rank(
        ((at, retry_after, 0) for at, retry_after in refusals),
        ((at, 0) for at in admitted_at),
    )


def retry_after_error_by_rank(
    refusals: Iterable[tuple[float, float, int]], admitted: Iterable[tuple[float, int]]
) -> dict[str, Any]:
    """`retry_after_error` with priorities: (when, Retry-After, priority rank) of each
    refusal, (when, priority rank) of each admission. A retry of a refused order would
    first have been admitted when an order of its priority or a lower one next was (what
    admits an order admits a more important one too), not when any order was."""
    times: dict[int, list[float]] = {}
    for at, rank in admitted:
        times.setdefault(rank, []).append(at)
    at_or_below: dict[int, list[float]] = {}
    errors: list[float] = []
    given: list[float] = []
    actual: list[float] = []
    early = unresolved = 0
    for at, retry_after, rank in refusals:
        admitted_at = at_or_below.get(rank)
        if admitted_at is None:
            admitted_at = at_or_below[rank] = sorted(
                t for r, ts in times.items() if r >= rank for t in ts
            )
        index = bisect.bisect_right(admitted_at, at)
        if index == len(admitted_at):
            unresolved += 1
            continue
        first_s = admitted_at[index] - at
        errors.append(abs(retry_after - first_s) / first_s)
        given.append(retry_after)
        actual.append(first_s)
        early += retry_after < first_s
    if not errors:
        return {"count": 0, "unresolved": unresolved}
    errors.sort()
    return {
        "count": len(errors),
        "unresolved": unresolved,
        "median": nearest_rank(errors, 0.5),
        "p90": nearest_rank(errors, 0.9),
        "within_target": sum(e <= ACCURATE_WITHIN for e in errors) / len(errors),
        "early": early / len(errors),
        "median_retry_after_s": nearest_rank(sorted(given), 0.5),
        "median_first_admitted_s": nearest_rank(sorted(actual), 0.5),
    }


def run_retry_after_error(
    run: SimRun, *, rank: int | None = None, fine: bool = False
) -> dict[str, Any]:
    """`retry_after_error_by_rank` of a run: every refusal, or those of one priority
    (`rank`); of the Retry-After given, or (`fine`) of the Retry-After-Ms."""
    per = run.by_priority
    ranks = range(len(per)) if rank is None else (rank,)
    return retry_after_error_by_rank(
        (
            (at, retry_after, r)
            for r in ranks
            for at, retry_after in zip(
                per[r].refusal_at,
                per[r].refusal_retry_after_ms if fine else per[r].refusal_retry_after,
                strict=True,
            )
        ),
        ((at, r) for r, counts in enumerate(per) for at in counts.accepted_at),
    )


def throughput(run: SimRun, fulfilled: int | None = None) -> float:
    """Fulfilled per second (`fulfilled`: of one priority) over the run's window."""
    fulfilled = run.fulfilled if fulfilled is None else fulfilled
    if run.first_fulfilled_s is None or run.last_fulfilled_s is None:
        return 0.0
    window = max(run.duration_s, run.last_fulfilled_s - run.first_fulfilled_s)
    return fulfilled / window if window > 0 else float(fulfilled)


def by_priority(run: SimRun) -> dict[str, Any]:
    """The figures per priority, for the priorities that had orders."""
    result: dict[str, Any] = {}
    for priority in Priority:
        counts = run.by_priority[priority.rank]
        if not counts.orders:
            continue
        result[priority.value] = {
            "orders": counts.orders,
            "accepted": counts.accepted,
            "degraded": counts.degraded,
            "refused": counts.refused,
            "refused_share": counts.refused / counts.orders,
            "expired": counts.expired,
            "fulfilled": counts.fulfilled,
            "goodput_per_s": throughput(run, counts.fulfilled),
            "wait_s": stats(counts.waits),
            "sojourn_s": stats(counts.sojourns),
            # a retry of this priority is admitted when one of it or a lower one next is
            "retry_after_error": run_retry_after_error(run, rank=priority.rank),
            "retry_after_ms_error": run_retry_after_error(run, rank=priority.rank, fine=True),
        }
    return result


def summarize(run: SimRun, *, timeline: bool = True) -> dict[str, Any]:
    config = run.config
    limits = config.limits
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "orders": run.orders,
        "attempts": run.attempts,
        "accepted": run.accepted,
        "degraded": run.degraded,
        "refused": run.refused,
        "refusals": run.refusals,
        "fulfilled": run.fulfilled,
        "failed": run.failed,
        "expired": run.expired,
        "retries_denied": run.retries_denied,
        "offered_rate": run.orders / run.duration_s if run.duration_s > 0 else 0.0,
        "duration_s": run.duration_s,
        "throughput_per_s": throughput(run),
        "refused_share": run.refused / run.orders if run.orders else 0.0,
        "max_queued": run.max_queued,
        "wait_s": stats(run.waits),
        "sojourn_s": stats(run.sojourns),
        "retry_after_error": run_retry_after_error(run),
        "retry_after_ms_error": run_retry_after_error(run, fine=True),
        "sim_seconds": run.sim_seconds,
        "wall_seconds": run.wall_seconds,
        "settings": {
            "overload_mode": limits.mode.value,
            "capacity": limits.capacity,
            "queue_limit": limits.queue_limit,
            "max_queue_wait_s": limits.max_queue_wait_s,
            "critical_reserve": limits.critical_reserve,
            "target_wait_s": limits.target_wait_s,
            "full_service_s": config.pipeline.mean_s(ServiceLevel.FULL),
            "degraded_service_s": config.pipeline.mean_s(ServiceLevel.DEGRADED),
        },
        "arrivals": {
            "schedule": config.schedule.describe(),
            "arrivals": config.arrivals.value,
            "seed": config.seed,
            "max_orders": config.max_orders,
            "retries": config.retries,
            "mix": None if config.mix is None else config.mix.describe(),
            "start_within_s": config.start_within_s,
            "retry_budget": config.retry_budget,
        },
        "by_priority": by_priority(run),
    }
    if timeline:
        summary["timeline"] = [[s.t_s, s.in_flight, s.queued] for s in run.timeline]
    return summary


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(summary: dict[str, Any]) -> RenderableType:
    """The summary as `retail load` prints it: an overview, then the latency table."""
    settings, arrivals = summary["settings"], summary["arrivals"]
    title = (
        f"[bold]retail simulate[/bold] {settings['overload_mode']}, capacity "
        f"{settings['capacity']}, queue limit {settings['queue_limit']}, "
        f"{settings['full_service_s']:g} s per order; {arrivals['schedule']} "
        f"({arrivals['arrivals']}, seed {arrivals['seed']})"
    )
    overview = Table(title=title, show_header=False, box=None, padding=(0, 2), title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    accepted, degraded = summary["accepted"], summary["degraded"]
    overview.add_row(
        "offered",
        f"{summary['orders']} orders in {summary['duration_s']:g} s = "
        f"{summary['offered_rate']:,.2f}/s",
    )
    overview.add_row("accepted", f"{accepted} (full {accepted - degraded}, degraded {degraded})")
    overview.add_row(
        "refused", f"{summary['refused']} ({summary['refused_share']:.2%} of the orders)"
    )
    if arrivals["retries"]:
        retried = f"{summary['attempts'] - summary['orders']} (503 answers: {summary['refusals']}"
        if arrivals.get("retry_budget") is not None:
            retried += (
                f"; budget {arrivals['retry_budget']:.0%} of the orders, "
                f"{summary['retries_denied']} retries it did not allow"
            )
        overview.add_row("retries", retried + ")")
    fulfilled = f"{summary['fulfilled']} (failed {summary['failed']}"
    if arrivals.get("start_within_s") is not None:
        fulfilled += f", expired {summary['expired']}"
    overview.add_row("fulfilled", fulfilled + ")")
    overview.add_row("goodput", f"{summary['throughput_per_s']:,.2f}/s fulfilled")
    overview.add_row("max queued", str(summary["max_queued"]))
    error = summary.get("retry_after_error") or {}
    if error.get("count"):
        overview.add_row(
            "Retry-After",
            f"{_error_text(error)} over {error['count']} refusals: given "
            f"{error['median_retry_after_s']:g} s, first admission after "
            f"{error['median_first_admitted_s']:.2f} s (medians)",
        )
    fine = summary.get("retry_after_ms_error") or {}
    if fine.get("count"):
        overview.add_row(
            "Retry-After-Ms",
            f"{_error_text(fine)}: given {fine['median_retry_after_s']:.3f} s (median)",
        )
    overview.add_row(
        "simulated",
        f"{summary['sim_seconds']:,.1f} s in {summary['wall_seconds']:.2f} s of wall time",
    )
    latency = Table(title="latency (ms)", title_justify="left")
    latency.add_column("")
    latency.add_column("count", justify="right")
    for name in ("mean", "p50", "p90", "p99", "p99.9", "max"):
        latency.add_column(name, justify="right")
    for name, key in (("queue wait", "wait_s"), ("order → fulfilled", "sojourn_s")):
        row = summary[key]
        latency.add_row(
            name,
            str(row["count"]),
            *(ms(row[k]) for k in ("mean", "p50", "p90", "p99", "p99_9", "max")),
        )
    parts: list[RenderableType] = [overview, "", latency]
    if arrivals.get("mix"):
        parts += ["", priority_table(summary["by_priority"])]
    return Group(*parts)


def priority_table(rows: dict[str, Any]) -> Table:
    """Goodput, refusals and waits per priority (the same columns as `retail load`'s)."""
    table = Table(title="by priority", title_justify="left")
    for name in ("priority", "orders", "accepted", "refused", "degraded", "expired"):
        table.add_column(name, justify="left" if name == "priority" else "right")
    columns = ("fulfilled", "goodput/s", "wait p50 ms", "wait p99 ms", "Retry-After error s / ms")
    for name in columns:
        table.add_column(name, justify="right")
    for name, row in rows.items():
        table.add_row(
            name,
            str(row["orders"]),
            str(row["accepted"]),
            f"{row['refused']} ({row['refused_share']:.1%})",
            str(row["degraded"]),
            str(row["expired"]),
            str(row["fulfilled"]),
            f"{row['goodput_per_s']:,.2f}",
            ms(row["wait_s"]["p50"]),
            ms(row["wait_s"]["p99"]),
            f"{_median_error(row.get('retry_after_error') or {})} / "
            f"{_median_error(row.get('retry_after_ms_error') or {})}",
        )
    return table


def _error_text(error: dict[str, Any]) -> str:
    """How far a retry hint was from the truth, in words (`retry_after_error`'s figures)."""
    return (
        f"median error {error['median']:.0%} (p90 {error['p90']:.0%}, "
        f"{error['within_target']:.0%} within {ACCURATE_WITHIN:.0%})"
    )


def _median_error(error: dict[str, Any]) -> str:
    """The median Retry-After error, or "-" without a refusal it could be measured on."""
    return f"{error['median']:.0%}" if error.get("count") else "-"
