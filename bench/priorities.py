"""Priorities under overload: a real server against `retail simulate`, same arrivals.

A real server (`retail serve`, one process, SQLite, fair shares off so that the
simulator's one-customer model applies) with capacity `C = 8`, a fixed fulfilment time
`D = 1 s` and a critical reserve, takes open-loop Poisson arrivals (`bench.openloop`,
seeded) with a mix of 20 % critical, 50 % standard and 30 % sheddable orders:
`duration_s` at a multiple of the capacity rate `C / D`, then `recovery_s` at half of
it. The database then says when each order was stored, started and finished.

Figures (the overload phase: orders due before `duration_s`):

- critical accepted: the share of critical orders answered `202`;
- p99 wait: `started_at - created_at` of the orders that started, per priority;
- fulfilled/s: orders whose `finished_at` lies in `[t0 + 2 D, t0 + duration_s]`, over
  that window (as `bench.overload` counts it), and per priority;
- refusal p99: due time to `503` (the client's view, open loop), and send to `503`;
- recovery: the queue has drained at the first moment after the overload when no
  order waits. "Normal" is what the same orders get from a server that never saw the
  overload: the control run, the simulator fed the same arrivals from the end of the
  overload on with the overload's orders left out (at half the capacity rate some
  orders wait in normal operation too, M/D/8 at 0.5 a few percent, so a wait alone is
  no sign of a slow recovery). An order fares abnormally when it is refused where the
  control run takes it, waits more than 0.1 D longer than there, or goes the reduced
  path where there it starts at once in full. `recovery_s` is from the drain to the
  last abnormal order of the aftermath: the abnormal orders from the drain on until
  2 D of orders pass without one. Isolated abnormal orders after that (a busy machine
  starting an order late) are counted beside it, with the orders that wait over 0.1 D
  in the control run too. The target is 2 s.
- client send lag: due time to the request going out (connection included), of the
  refused orders: how much of the refusal time is the client's;
- Retry-After error (`retail.sim.report.retry_after_error_by_rank`, whole run): the
  median relative error of each `Retry-After` (and `Retry-After-Ms`) against the time a
  retry would first have been admitted: the next admission of an order of its priority
  or a lower one; for all orders and per priority (target: within 25 %).

The same scenario runs through `retail simulate` (the same due times and priorities,
from the same seed) and its figures are printed beside the live ones, with their
ratio; the target is agreement within 5 %. "Decided alike" compares the two order by
order: the share of each priority's orders both accepted or both refused.

Targets (issue 14), at 4x: critical accepted >= 99.5 % and its p99 wait <= 2 D;
fulfilled/s >= 0.97 C/D in queue (and auto) mode; at 8x: fulfilled/s >= 0.95 C/D and
refusal p99 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import ingest, overload
from bench.report import table
from retail.core.capacity import Limits
from retail.core.pipeline import Pipeline
from retail.core.types import OverloadMode, Priority
from retail.loadgen.mix import PRIORITIES, Mix
from retail.loadgen.schedule import Arrivals, Schedule
from retail.sim import report as sim_report
from retail.sim.engine import SimConfig, SimRun, simulate

MIX = "critical=0.2,standard=0.5,sheddable=0.3"
MODES = ("queue", "reject", "degrade", "auto")
# Room held for critical orders: queue places in queue, degrade and auto modes; in reject
# mode slots (of 8), where a reserve of 16 would leave standard orders nothing.
RESERVE = {"queue": 16, "degrade": 16, "auto": 16, "reject": 2}
RECOVERY_RATE = 0.5  # multiple of the capacity rate after the overload
# An order fares normally when it waits at most 0.1 D longer than the same order in a run
# that never saw the overload; the aftermath ends with 2 D of orders that all fare so.
NORMAL_TOLERANCE_D = 0.1
NORMAL_SPELL_D = 2.0
RECOVERY_TARGET_S = 2.0
QUEUE_LIMIT = 100
WARM_UP_SETTLE_S = 1.0


@dataclass(frozen=True)
class PriorityConfig(overload.OverloadConfig):
    """`duration_s` is the overload phase; `recovery_s` at half the capacity rate follows."""

    multiples: tuple[float, ...] = (4.0, 8.0)
    recovery_s: float = 30.0
    mix: str = MIX

    def schedule(self, multiple: float) -> Schedule:
        return Schedule.of(
            (multiple * self.limit_rate, multiple * self.limit_rate, self.duration_s),
            (RECOVERY_RATE * self.limit_rate, RECOVERY_RATE * self.limit_rate, self.recovery_s),
        )


@dataclass(frozen=True)
class Figures:
    """One scenario's figures, live or simulated (times in seconds)."""

    critical_accepted: float  # share of critical orders accepted
    critical_p99_wait_s: float | None
    p99_wait_s: float | None  # every priority
    fulfilled_rate: float  # in the window
    goodput_by_priority: dict[str, float]  # fulfilled/s in the window
    accepted_by_priority: dict[str, float]  # share accepted
    recovery: Recovery | None  # None: the queue never drained in the run
    # `retail.sim.report.retry_after_error_by_rank` of the whole run: "all", and per
    # priority (a retry admitted when an order of its priority or a lower one next is)
    retry_after_error: dict[str, dict[str, Any]]
    retry_after_ms_error: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovery is None else self.recovery.recovery_s


@dataclass(frozen=True)
class PriorityResult:
    mode: str
    multiple: float
    rate: float
    reserve: int
    sent: int
    errors: int
    live: Figures
    sim: Figures
    refusal_ms: tuple[float, float] | None  # p50, p99 from due
    refusal_sent_ms: tuple[float, float] | None  # p50, p99 from send
    send_lag_ms: tuple[float, float] | None  # p50, p99 due to send, of the refused orders
    limit_rate: float
    service_s: float  # live: mean started -> finished of fulfilled orders served in full
    load_average: float  # of the machine, when the run started
    # per priority: the share of the overload phase's orders that the live service and the
    # simulator decided alike (both accepted or both refused), order by order
    decided_alike: dict[str, float] | None = None


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Outcome:
    """What became of one order: its due time (s from t0), its wait (None: refused) and
    whether it went the reduced path."""

    due_s: float
    wait_s: float | None
    degraded: bool = False


@dataclass(frozen=True)
class Recovery:
    """How soon after the overload orders were treated as if it had never been."""

    drained_s: float  # the queue drained (no order waiting), from t0
    recovery_s: float  # from `drained_s` to the end of the aftermath; see `_recovery`
    late_after: int  # abnormal orders after the aftermath (isolated ones; `_abnormal`)
    after: int  # orders due after the aftermath
    normal_waits: int  # of those, orders that wait over 0.1 D in the control run too


def _drained(outcomes: Sequence[Outcome], overload_s: float) -> float | None:
    """The first moment after the overload when no order waits (None: never while orders
    still arrived)."""
    spans = sorted((o.due_s, o.due_s + o.wait_s) for o in outcomes if o.wait_s)
    drained = overload_s
    for begin, end in spans:
        if begin > drained:
            break  # nothing waits from `drained` to `begin`
        drained = max(drained, end)
    if not any(o.due_s >= drained for o in outcomes):
        return None
    return drained


def _abnormal(order: Outcome, normal: Outcome, delay_s: float) -> bool:
    """`order` fared worse than the same order in the run without the overload (`normal`):
    refused where it was taken, a wait longer by more than `NORMAL_TOLERANCE_D` (the
    server's own overhead, with the simulator as the control), or the reduced path where
    it started at once."""
    if normal.wait_s is None:
        return False  # refused there too (a sheddable order that would have waited)
    if order.wait_s is None:
        return True
    if order.wait_s > normal.wait_s + NORMAL_TOLERANCE_D * delay_s:
        return True
    return order.degraded and normal.wait_s == 0.0


def _recovery(
    outcomes: Sequence[Outcome], control: Sequence[Outcome], overload_s: float, delay_s: float
) -> Recovery | None:
    """The recovery after the overload, from every order's outcome and the outcome of the
    same order in the control run (the same arrivals from the overload's end on, the
    overload's own orders left out: `control_outcomes`), matched by due time.

    At half the capacity rate some orders wait in normal operation too (M/D/8 at 0.5: a
    few percent), and a busy machine adds late starts of its own, so neither a wait nor
    the last wait is evidence of a slow recovery. An order is abnormal when it fares
    worse than in the control run (`_abnormal`); the overload's aftermath is the run of
    abnormal orders from the drain on in which no `NORMAL_SPELL_D` service times pass
    without one. `recovery_s` is from the drain to the due time of its last order (0 if
    the first abnormal order comes later than that); abnormal orders after it are
    isolated ones, counted in `late_after`. None: the queue never drained while orders
    arrived.
    """
    drained = _drained(outcomes, overload_s)
    if drained is None:
        return None
    normal = {round(o.due_s, 6): o for o in control}
    pairs = [
        (o, normal[key])
        for o in outcomes
        if o.due_s >= drained and (key := round(o.due_s, 6)) in normal
    ]
    spell_s = NORMAL_SPELL_D * delay_s
    last = drained  # the drain, then the last abnormal order of the aftermath
    for order, unperturbed in pairs:
        if order.due_s - last > spell_s:
            break  # a normal spell: the aftermath is over
        if _abnormal(order, unperturbed, delay_s):
            last = order.due_s
    tolerance_s = NORMAL_TOLERANCE_D * delay_s
    rest = [(o, n) for o, n in pairs if o.due_s > last]
    return Recovery(
        drained_s=drained,
        recovery_s=last - drained,
        late_after=sum(1 for o, n in rest if _abnormal(o, n, delay_s)),
        after=len(rest),
        normal_waits=sum(1 for _, n in rest if (n.wait_s or 0.0) > tolerance_s),
    )


def _figures(
    *,
    orders: Sequence[tuple[str, bool]],  # (priority, accepted) per order of the overload phase
    started: Sequence[tuple[str, float, float]],  # (priority, accepted at, wait), all phases
    finished: Sequence[tuple[str, float]],  # (priority, finished at), from t0
    config: PriorityConfig,
    recovery: Recovery | None,
    retry_after_error: dict[str, dict[str, Any]],
    retry_after_ms_error: dict[str, dict[str, Any]],
) -> Figures:
    window = (2 * config.delay_s, config.duration_s)
    window_s = window[1] - window[0]
    in_window = [p for p, at in finished if window[0] <= at <= window[1]]
    during = [(p, wait) for p, at, wait in started if at < config.duration_s]
    accepted_share = {}
    for name in PRIORITIES:
        mine = [ok for p, ok in orders if p == name]
        accepted_share[name] = sum(mine) / len(mine) if mine else math.nan
    return Figures(
        critical_accepted=accepted_share["critical"],
        critical_p99_wait_s=_p99([w for p, w in during if p == "critical"]),
        p99_wait_s=_p99([w for _, w in during]),
        fulfilled_rate=len(in_window) / window_s,
        goodput_by_priority={n: in_window.count(n) / window_s for n in PRIORITIES},
        accepted_by_priority=accepted_share,
        recovery=recovery,
        retry_after_error=retry_after_error,
        retry_after_ms_error=retry_after_ms_error,
    )


async def _stored(
    database_url: str,
) -> list[tuple[str, str, float, float | None, float | None, str, str]]:
    """(priority, status, created_at, started_at, finished_at, service level, id) of every
    order, times in epoch seconds."""
    from retail.core.types import Priority
    from retail.store.sql.models import Order

    rows = await overload.order_rows(
        database_url,
        Order.priority,
        Order.status,
        Order.created_at,
        Order.started_at,
        Order.finished_at,
        Order.service_level,
        Order.id,
    )
    return [
        (
            Priority.of_rank(rank).value,
            status,
            created.timestamp(),
            None if started is None else started.timestamp(),
            None if finished is None else finished.timestamp(),
            level,
            str(order_id),
        )
        for rank, status, created, started, finished, level, order_id in rows
    ]


def _settings(mode: str, config: PriorityConfig) -> dict[str, object]:
    return {
        **overload.serve_settings("", mode, config),
        "critical_reserve": RESERVE[mode],
        "queue_limit": QUEUE_LIMIT,
        "fair_share": "false",
    }


def _sim_run(
    mode: str, config: PriorityConfig, schedule: Schedule, *, skip_before_s: float = 0.0
) -> SimRun:
    settings = _settings(mode, config)
    return simulate(
        SimConfig(
            limits=Limits(
                mode=OverloadMode(mode),
                capacity=config.capacity,
                queue_limit=QUEUE_LIMIT,
                critical_reserve=RESERVE[mode],
                target_wait_s=config.target_wait_s,
            ),
            pipeline=Pipeline.build(fulfilment_delay=str(settings["fulfilment_delay"])),
            schedule=schedule,
            arrivals=Arrivals.POISSON,
            seed=config.seed,
            mix=Mix.parse(config.mix),
            skip_before_s=skip_before_s,
        )
    )


def _sim_outcomes(run: SimRun) -> list[Outcome]:
    """Every order of a simulated run (no retries: an order is accepted at its due time)."""
    started = [
        Outcome(due_s=start - wait, wait_s=wait)
        for start, wait in zip(run.starts, run.waits, strict=True)
    ]
    refused = [Outcome(due_s=at, wait_s=None) for at in run.refused_at]
    return sorted(started + refused, key=lambda o: o.due_s)


def control_outcomes(mode: str, multiple: float, config: PriorityConfig) -> list[Outcome]:
    """The control run for the recovery: the arrivals after the overload, as in the whole
    schedule, through the simulator without the overload's orders (a server that never
    saw it)."""
    return _sim_outcomes(
        _sim_run(mode, config, config.schedule(multiple), skip_before_s=config.duration_s)
    )


def simulated(
    mode: str, multiple: float, config: PriorityConfig, control: Sequence[Outcome]
) -> Figures:
    """The scenario through `retail simulate`'s engine: the overload phase alone for the
    counts and waits of its orders (what comes after cannot change them), the whole
    schedule for the fulfilments in the window and the recovery."""

    def run(schedule: Schedule) -> SimRun:
        return _sim_run(mode, config, schedule)

    rate = multiple * config.limit_rate
    phase = run(Schedule.constant(rate, config.duration_s))
    whole = run(config.schedule(multiple))
    window = (2 * config.delay_s, config.duration_s)
    window_s = window[1] - window[0]
    goodput = {
        p.value: sum(1 for at in whole.by_priority[p.rank].ends if window[0] <= at <= window[1])
        / window_s
        for p in Priority
    }
    shares = {
        p.value: (c.accepted / c.orders if c.orders else math.nan)
        for p, c in zip(Priority, phase.by_priority, strict=True)
    }
    critical = phase.by_priority[Priority.CRITICAL.rank]
    by_priority = sim_report.by_priority(whole)
    return Figures(
        critical_accepted=shares["critical"],
        critical_p99_wait_s=_p99(critical.waits),
        p99_wait_s=_p99(phase.waits),
        fulfilled_rate=sum(goodput.values()),
        goodput_by_priority=goodput,
        accepted_by_priority=shares,
        recovery=_recovery(_sim_outcomes(whole), control, config.duration_s, config.delay_s),
        retry_after_error={
            "all": sim_report.run_retry_after_error(whole),
            **{name: figures["retry_after_error"] for name, figures in by_priority.items()},
        },
        retry_after_ms_error={
            "all": sim_report.run_retry_after_error(whole, fine=True),
            **{name: figures["retry_after_ms_error"] for name, figures in by_priority.items()},
        },
    )


def simulated_accepted(mode: str, multiple: float, config: PriorityConfig) -> set[float]:
    """The due times (rounded to the microsecond) of the orders the simulator accepts in
    the overload phase: every order is due at its own instant, so they name the orders."""
    run = _sim_run(mode, config, Schedule.constant(multiple * config.limit_rate, config.duration_s))
    return {round(at, 6) for at in run.accepted_at}


def decided_alike(
    orders: Sequence[tuple[str, float, bool]], sim_accepted: set[float]
) -> dict[str, float]:
    """Per priority, the share of `orders` (priority, due time, accepted live) that the
    simulator decided alike."""
    alike: dict[str, float] = {}
    for name in PRIORITIES:
        mine = [(round(due, 6) in sim_accepted) == ok for p, due, ok in orders if p == name]
        alike[name] = sum(mine) / len(mine) if mine else math.nan
    return alike


def _warm_up(url: str, config: PriorityConfig) -> None:
    """One order per slot, fulfilled before the run: the first claims and writes of a
    fresh process are slower than the rest, and the simulator has no cold start."""
    body = {
        "customer_id": "warm-up",
        "priority": "critical",  # a critical order may take any slot, reserved ones too
        "items": [{"sku": overload.SKU, "quantity": 1}],
    }
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(config.capacity):
            client.post("/orders", json=body).raise_for_status()
    time.sleep(2 * config.delay_s + WARM_UP_SETTLE_S)


def _live_outcomes(
    sent: Sequence[overload.Sent],
    stored: Sequence[tuple[str, str, float, float | None, float | None, str, str]],
) -> list[Outcome]:
    """Every answered order of a live run: refused, or its stored wait and level (an
    accepted order that had not started when the run ended is left out)."""
    by_id = {row[6]: row for row in stored}
    outcomes = []
    for order in sent:
        if order.status == 503:
            outcomes.append(Outcome(due_s=order.due_s, wait_s=None))
            continue
        row = by_id.get((order.location or "").rsplit("/", 1)[-1])
        if row is None or row[3] is None:
            continue
        _, _, created, started, _, level, _ = row
        assert started is not None
        outcomes.append(
            Outcome(due_s=order.due_s, wait_s=started - created, degraded=level == "degraded")
        )
    return outcomes


def _retry_after_errors(
    sent: Sequence[overload.Sent], *, fine: bool = False
) -> dict[str, dict[str, Any]]:
    """The Retry-After error of the whole run, and per priority: a refused order's retry
    would first be admitted when the next order of its priority or a lower one was.
    `fine`: of the Retry-After-Ms."""
    errors = {"all": overload.retry_after_accuracy(list(sent), fine=fine)}
    for name in PRIORITIES:
        # Its own refusals; every admission (those of lower priorities count too).
        errors[name] = overload.retry_after_accuracy(
            [o for o in sent if o.status != 503 or (o.priority or "standard") == name],
            fine=fine,
        )
    return errors


def _median_error(error: dict[str, Any]) -> str:
    return f"{error['median']:.0%}" if error.get("count") else "-"


def run_one(workdir: Path, mode: str, multiple: float, config: PriorityConfig) -> PriorityResult:
    rate = multiple * config.limit_rate
    schedule = config.schedule(multiple)
    load_average = os.getloadavg()[0]
    with overload.fresh_server(
        workdir, f"serve-priorities-{mode}-{multiple:g}.log", _settings(mode, config)
    ) as (database_url, server):
        ingest.put_product(server.url, overload.SKU, overload.STOCK)
        _warm_up(server.url, config)
        t0, sent = overload.open_loop(
            server.url,
            rate=rate,
            duration_s=schedule.duration_s,
            seed=config.seed,
            out=workdir / f"openloop-priorities-{mode}-{multiple:g}.json",
            extra=(f"--mix={config.mix}", f"--schedule={schedule.describe()}"),
        )
        # Let the queue drain and the last orders finish (the run ends at half load).
        time.sleep(max(0.0, t0 + schedule.duration_s + 2 * config.delay_s - time.time()))
        stored = asyncio.run(_stored(database_url))
    stored = [row for row in stored if row[2] >= t0]  # the warm-up's orders left out
    during = [o for o in sent if o.due_s < config.duration_s]
    control = control_outcomes(mode, multiple, config)
    live = _figures(
        orders=[
            (o.priority or "standard", o.status is not None and 200 <= o.status < 300)
            for o in during
        ],
        started=[
            (priority, created - t0, started - created)
            for priority, _, created, started, _, _, _ in stored
            if started is not None
        ],
        finished=[
            (priority, finished - t0)
            for priority, status, _, _, finished, _, _ in stored
            if status == "fulfilled" and finished is not None
        ],
        config=config,
        recovery=_recovery(
            _live_outcomes(sent, stored), control, config.duration_s, config.delay_s
        ),
        retry_after_error=_retry_after_errors(sent),
        retry_after_ms_error=_retry_after_errors(sent, fine=True),
    )
    refused = [o for o in during if o.status == 503]
    full = [
        finished - started
        for _, status, _, started, finished, level, _ in stored
        if status == "fulfilled" and level == "full" and started is not None and finished
    ]
    sim = simulated(mode, multiple, config, control)
    alike = decided_alike(
        [
            (o.priority or "standard", o.due_s, o.status is not None and 200 <= o.status < 300)
            for o in during
        ],
        simulated_accepted(mode, multiple, config),
    )
    return PriorityResult(
        mode=mode,
        multiple=multiple,
        rate=rate,
        reserve=RESERVE[mode],
        sent=len(sent),
        errors=sum(1 for o in sent if o.status is None),
        live=live,
        sim=sim,
        refusal_ms=overload.percentiles_ms(overload._values([o.latency_s for o in refused])),
        refusal_sent_ms=overload.percentiles_ms(overload._values([o.from_send_s for o in refused])),
        send_lag_ms=overload.percentiles_ms(
            overload._values([None if o.sent_s is None else o.sent_s - o.due_s for o in refused])
        ),
        limit_rate=config.limit_rate,
        service_s=sum(full) / len(full) if full else math.nan,
        load_average=load_average,
        decided_alike=alike,
    )


def run(
    config: PriorityConfig | None = None, *, workdir: Path | None = None
) -> list[PriorityResult]:
    return overload.each_scenario(run_one, config or PriorityConfig(), workdir)


# --- the tables ---------------------------------------------------------------------


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _both(live: float | None, sim: float | None, text: str = "{:.2f}") -> str:
    """`live / sim (ratio)`."""
    if live is None or sim is None or math.isnan(live) or math.isnan(sim):
        return f"{_s(live)} / {_s(sim)}"
    ratio = f" ({live / sim:.3f})" if sim else ""
    return f"{text.format(live)} / {text.format(sim)}{ratio}"


def _recovery_text(recovery: Recovery | None) -> str:
    if recovery is None:
        return "- (never drained)"
    return (
        f"{recovery.recovery_s:.2f} ({recovery.late_after} / {recovery.after}; "
        f"{recovery.normal_waits})"
    )


def _ok(ok: bool) -> str:
    return "yes" if ok else "**no**"


def tables(results: Sequence[PriorityResult], config: PriorityConfig) -> str:
    limit = config.limit_rate
    head = (
        f"### Priorities: C={config.capacity}, D={config.delay_s:g} s, mix {config.mix}, "
        f"{config.duration_s:g} s of overload then {config.recovery_s:g} s at "
        f"{RECOVERY_RATE:g}x; critical reserve {RESERVE} (places; slots in reject mode); "
        f"queue limit {QUEUE_LIMIT}; fair shares off\n"
    )
    queue_at = {r.multiple: r.live for r in results if r.mode == "queue"}
    targets_rows = []
    for r in results:
        live = r.live
        four = r.multiple == 4
        checks = []
        if four:
            checks.append(
                f"critical >= 99.5 %: {_ok(live.critical_accepted >= 0.995)}; "
                f"critical p99 <= 2 D: "
                f"{_ok((live.critical_p99_wait_s or 0) <= 2 * config.delay_s)}"
            )
            if r.mode in ("queue", "auto"):
                checks.append(f">= 0.97 C/D: {_ok(live.fulfilled_rate >= 0.97 * limit)}")
            queue = queue_at.get(r.multiple)
            if r.mode == "auto" and queue is not None:
                no_worse = (live.p99_wait_s or 0) <= (queue.p99_wait_s or 0)
                checks.append(
                    f"p99 wait <= queue's at no less goodput: "
                    f"{_ok(no_worse and live.fulfilled_rate >= queue.fulfilled_rate)}"
                )
        else:
            p99 = r.refusal_ms[1] if r.refusal_ms else None
            checks.append(
                f">= 0.95 C/D: {_ok(live.fulfilled_rate >= 0.95 * limit)}; "
                f"refusal p99 <= 5 ms: {_ok(p99 is not None and p99 <= 5)}"
            )
        if live.recovery_s is not None:
            checks.append(f"recovery <= 2 s: {_ok(live.recovery_s <= RECOVERY_TARGET_S)}")
        targets_rows.append(
            [
                r.mode,
                f"{r.multiple:g}x ({r.rate:.0f}/s), load {r.load_average:.1f}",
                _pct(live.critical_accepted),
                _s(live.critical_p99_wait_s),
                _s(live.p99_wait_s),
                f"{live.fulfilled_rate:.2f} ({live.fulfilled_rate / limit:.3f} C/D)",
                f"{r.service_s:.3f}",
                " / ".join(f"{live.goodput_by_priority[n]:.2f}" for n in PRIORITIES),
                "-" if r.refusal_ms is None else f"{r.refusal_ms[1]:.1f}",
                "-" if r.refusal_sent_ms is None else f"{r.refusal_sent_ms[1]:.1f}",
                "-" if r.send_lag_ms is None else f"{r.send_lag_ms[1]:.1f}",
                _recovery_text(live.recovery),
                " / ".join(
                    f"{_median_error(live.retry_after_error.get(k, {}))} "
                    f"({_median_error(r.sim.retry_after_error.get(k, {}))})"
                    for k in ("all", *PRIORITIES)
                ),
                " / ".join(
                    f"{_median_error(live.retry_after_ms_error.get(k, {}))} "
                    f"({_median_error(r.sim.retry_after_ms_error.get(k, {}))})"
                    for k in ("all", *PRIORITIES)
                ),
                "; ".join(checks),
            ]
        )
    live_table = table(
        [
            "mode",
            "load",
            "critical accepted",
            "critical p99 wait s",
            "p99 wait s",
            "fulfilled/s",
            "mean service s",
            "goodput/s crit / std / shed",
            "refusal p99 ms (from due)",
            "(from send)",
            "client send lag p99 ms",
            "recovery s (abnormal / orders after it; waits > 0.1 D unperturbed)",
            "Retry-After median error all / crit / std / shed (simulated)",
            "Retry-After-Ms, the same",
            "targets",
        ],
        targets_rows,
    )
    sim_rows = []
    for r in results:
        live, sim = r.live, r.sim
        agree = [
            (live.fulfilled_rate, sim.fulfilled_rate),
            (live.critical_accepted, sim.critical_accepted),
            *((live.goodput_by_priority[n], sim.goodput_by_priority[n]) for n in PRIORITIES),
        ]
        worst = max(
            (abs(a / b - 1) for a, b in agree if b and not math.isnan(a) and not math.isnan(b)),
            default=0.0,
        )
        sim_rows.append(
            [
                r.mode,
                f"{r.multiple:g}x",
                _both(live.fulfilled_rate, sim.fulfilled_rate),
                _both(live.critical_accepted, sim.critical_accepted, "{:.3f}"),
                _both(live.critical_p99_wait_s, sim.critical_p99_wait_s),
                _both(live.p99_wait_s, sim.p99_wait_s),
                " / ".join(
                    _both(live.goodput_by_priority[n], sim.goodput_by_priority[n])
                    for n in PRIORITIES
                ),
                f"{worst:.1%} ({_ok(worst <= 0.05)})",
                f"{_s(live.recovery_s)} / {_s(sim.recovery_s)}",
                " / ".join(_pct(r.decided_alike[n]) for n in PRIORITIES)
                if r.decided_alike
                else "-",
            ]
        )
    sim_table = table(
        [
            "mode",
            "load",
            "fulfilled/s live / sim (ratio)",
            "critical accepted",
            "critical p99 wait s",
            "p99 wait s",
            "goodput/s crit / std / shed",
            "largest gap in counts (<= 5 %)",
            "recovery s",
            "decided alike crit / std / shed",
        ],
        sim_rows,
    )
    return (
        f"{head}\nLive server:\n\n{live_table}\n\nThe same scenario in `retail simulate` "
        f"(live / simulated, ratio):\n\n{sim_table}\n"
    )
