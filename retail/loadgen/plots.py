"""PNG charts of load runs, sweeps and the demo (matplotlib, no display needed).

Figures are built with `matplotlib.figure.Figure` and saved by the Agg renderer, so
nothing touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from retail.loadgen.demo import DemoRound
from retail.loadgen.report import describe_run
from retail.loadgen.runner import LoadRun, OrderResult
from retail.loadgen.sweep import Sweep
from retail.loadgen.timeline import Span, span_of

MAX_TIMELINE_ROWS = 400
DPI = 110
WAIT_COLOUR = "#f2b134"
NEVER_STARTED_COLOUR = "#fab005"
START_COLOUR = "#e8590c"
FULFIL_COLOUR = "#1c7ed6"
WORK_COLOUR = "#2f9e44"
DEGRADED_COLOUR = "#7950f2"
FAILED_COLOUR = "#e03131"
MODE_COLOURS = {"queue": "#1c7ed6", "reject": "#e03131", "degrade": "#7950f2"}
PRIORITY_COLOURS = {"critical": "#c0392b", "standard": "#2f6db5", "sheddable": "#9aa5b1"}
PRIORITY_BINS = 40


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def nice_log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks covering [low, high] (and one step beyond each end), so a log axis
    is labelled wherever its data lie: near 1 s there is always a `1`."""
    if low <= 0 or high <= 0:
        return []
    ticks: list[float] = []
    exponent = math.floor(math.log10(low)) - 1
    while True:
        for mantissa in (1, 2, 5):
            value = round(mantissa * 10.0**exponent, 12)
            if value >= low / 2.5 and value <= high * 2.5:
                ticks.append(value)
        if 10.0**exponent > high * 2.5:
            return ticks
        exponent += 1


def _log_y(ax: Axes, values: Sequence[float]) -> None:
    """A log y axis with 1-2-5 ticks labelled as plain numbers (1, 2, 5, 10, not 10^0)."""
    ax.set_yscale("log")
    positive = [v for v in values if v > 0]
    if positive:
        low, high = min(positive), max(positive)
        ticks = nice_log_ticks(low, high)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        inside = [t for t in ticks if t <= low] or ticks[:1]
        above = [t for t in ticks if t >= high] or ticks[-1:]
        ax.set_ylim(max(inside), min(above))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _integer_y(ax: Axes) -> None:
    """Order counts are whole numbers: no 2.5 orders on the axis."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def order_span(order: OrderResult) -> Span | None:
    return span_of(
        order.events,
        created=order.created_at,
        started=order.started_at,
        finished=order.finished_at,
        outcome=order.order_status if order.finished_at is not None else None,
    )


# --- one load run --------------------------------------------------------------------------


def plot_latency(run: LoadRun, path: Path) -> Path:
    figure = Figure(figsize=(10, 4.8), layout="constrained")
    ax = figure.add_subplot()
    groups: dict[str, tuple[list[float], list[float], str, str]] = {
        "accepted (full)": ([], [], WORK_COLOUR, "o"),
        "accepted (degraded)": ([], [], DEGRADED_COLOUR, "o"),
        "refused": ([], [], FAILED_COLOUR, "x"),
        "error": ([], [], "black", "+"),
    }
    for order in run.orders:
        latency = order.latency_s
        if latency is None:
            continue
        if order.outcome == "accepted":
            key = "accepted (degraded)" if order.service_level == "degraded" else "accepted (full)"
        else:
            key = order.outcome
        xs, ys, _, _ = groups[key]
        xs.append(order.due_s)
        ys.append(latency * 1000)
    waits: dict[str, tuple[list[float], list[float], str, str]] = {
        "time to start": ([], [], START_COLOUR, "^"),
        "time to fulfil": ([], [], FULFIL_COLOUR, "s"),
    }
    for order in run.orders:
        for key, value in (
            ("time to start", order.start_s),
            ("time to fulfil", order.fulfilment_s),
        ):
            if value is not None:
                waits[key][0].append(order.due_s)
                waits[key][1].append(value * 1000)
    values: list[float] = []
    for label, (xs, ys, colour, marker) in groups.items():
        if xs:
            ax.scatter(
                xs, ys, s=9, c=colour, marker=marker, label=f"HTTP answer, {label}: {len(xs)}"
            )
            values += ys
    for label, (xs, ys, colour, marker) in waits.items():
        if xs:
            ax.scatter(
                xs,
                ys,
                s=12,
                facecolors="none",
                edgecolors=colour,
                marker=marker,
                label=f"{label}: {len(xs)}",
            )
            values += ys
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        _log_y(ax, positive)
    ax.set_xlabel("due time (s from start)")
    ax.set_ylabel("from due (ms)")
    ax.set_title(
        f"Latency: HTTP answer, time to start, time to fulfil — {describe_run(run)}", fontsize=10
    )
    ax.grid(alpha=0.3)
    rate_ax = ax.twinx()
    schedule = run.config.schedule
    steps = 200
    ts = [schedule.duration_s * i / steps for i in range(steps + 1)]
    rate_ax.plot(
        ts,
        [schedule.rate_at(min(t, schedule.duration_s - 1e-9)) for t in ts],
        color="grey",
        linestyle="--",
        linewidth=1,
        label="offered rate",
    )
    rate_ax.set_ylabel("offered rate (orders/s)", color="grey")
    rate_ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = rate_ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles + more_handles,
            labels + more_labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=5,
            fontsize=8,
            frameon=False,
        )
    return save_figure(figure, path)


def plot_load(run: LoadRun, path: Path) -> Path:
    figure = Figure(figsize=(10, 4), layout="constrained")
    ax = figure.add_subplot()
    samples = run.samples
    if samples:
        ts = [s.t_s for s in samples]
        ax.step(
            ts, [s.in_flight for s in samples], where="post", label="in flight", color=WORK_COLOUR
        )
        ax.step(ts, [s.queued for s in samples], where="post", label="queued", color=WAIT_COLOUR)
        ax.step(
            ts,
            [s.capacity for s in samples],
            where="post",
            label="capacity",
            color="black",
            linestyle="--",
            linewidth=1.2,
            zorder=3,
        )
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no samples of GET /capacity",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.axvline(run.config.schedule.duration_s, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("time (s from start); dashed: end of sending")
    ax.set_ylabel("orders")
    title = "Orders in flight and queued (GET /capacity)"
    if run.service is not None:
        title += f" — {run.service.describe()}"
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    _integer_y(ax)
    ax.grid(alpha=0.3)
    return save_figure(figure, path)


def _gantt(
    ax: Axes,
    rows: Sequence[tuple[str, Span, str | None]],
    origin: float,
    end: float | None = None,
) -> None:
    """One row per order: waiting (created → started), then fulfilment (→ finished).
    An order that never started waits, hatched, until `end` (the end of the run)."""
    for y, (_, span, level) in enumerate(rows):
        created = span.created - origin
        if span.started is None and span.finished is None and end is not None:
            ax.broken_barh(
                [(created, max(0.0, end - span.created))],
                (y - 0.4, 0.8),
                facecolor="white",
                edgecolor=NEVER_STARTED_COLOUR,
                hatch="////",
                linewidth=0.5,
            )
        elif span.started is not None:
            ax.broken_barh(
                [(created, span.started - span.created)], (y - 0.4, 0.8), color=WAIT_COLOUR
            )
            if span.finished is None and end is not None:
                ax.broken_barh(
                    [(span.started - origin, max(0.0, end - span.started))],
                    (y - 0.4, 0.8),
                    color=WORK_COLOUR,
                    alpha=0.35,
                )
            if span.finished is not None:
                colour = (
                    FAILED_COLOUR
                    if span.outcome in ("failed", "cancelled")
                    else DEGRADED_COLOUR
                    if level == "degraded"
                    else WORK_COLOUR
                )
                ax.broken_barh(
                    [(span.started - origin, span.finished - span.started)],
                    (y - 0.4, 0.8),
                    color=colour,
                )
        elif span.finished is not None:
            ax.broken_barh(
                [(created, span.finished - span.created)], (y - 0.4, 0.8), color=FAILED_COLOUR
            )
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def timeline_rows(run: LoadRun) -> list[tuple[str, Span, str | None]]:
    """Every accepted order, in due order, including those that never started (their
    span has no start; an order without server times is placed at its answer)."""
    rows = []
    for order in run.orders:
        if order.outcome != "accepted":
            continue
        span = order_span(order)
        if span is None:
            answered = order.answered_s if order.answered_s is not None else order.due_s
            span = Span(run.started_epoch + answered, None, None, None)
        rows.append((str(order.index), span, order.service_level))
    return rows


def plot_timeline(run: LoadRun, path: Path) -> Path:
    rows = timeline_rows(run)
    shown = rows[:MAX_TIMELINE_ROWS]
    waiting = sum(1 for _, span, _ in rows if span.started is None and span.finished is None)
    height = min(18.0, max(3.0, 1.5 + 0.04 * len(shown)))
    figure = Figure(figsize=(10, height), layout="constrained")
    ax = figure.add_subplot()
    if shown:
        _gantt(ax, shown, run.started_epoch, end=run.started_epoch + run.elapsed_s)
        _integer_y(ax)
    else:
        ax.text(0.5, 0.5, "no accepted orders", ha="center", va="center", transform=ax.transAxes)
    more = f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
    never = f"; {waiting} never started (hatched)" if waiting else ""
    ax.set_title(
        f"Order timelines{more} — {describe_run(run)}\nwaiting (orange), fulfilment "
        f"(green; degraded purple, failed red; pale: still running at the end){never}",
        fontsize=10,
    )
    ax.set_xlabel("time (s from start)")
    ax.set_ylabel("order (in due order)")
    return save_figure(figure, path)


def plot_priorities(run: LoadRun, path: Path) -> Path:
    """Per priority: orders fulfilled and refused per second over the run, and each
    order's wait in the queue by the moment it was due."""
    figure = Figure(figsize=(10, 6.4), layout="constrained")
    rate_ax, wait_ax = figure.subplots(2, 1, sharex=True)
    names = [name for name in PRIORITY_COLOURS if any(o.priority == name for o in run.orders)]
    finished = [o.finished_at - run.started_epoch for o in run.orders if o.finished_at]
    end = max([run.config.schedule.duration_s, *finished, 1e-9])
    width = end / PRIORITY_BINS
    mids = [(i + 0.5) * width for i in range(PRIORITY_BINS)]

    def per_second(times: list[float]) -> list[float]:
        counts = [0] * PRIORITY_BINS
        for t in times:
            counts[min(PRIORITY_BINS - 1, max(0, int(t / width)))] += 1
        return [n / width for n in counts]

    for name in names:
        mine = [o for o in run.orders if o.priority == name]
        colour = PRIORITY_COLOURS[name]
        done = [
            o.finished_at - run.started_epoch
            for o in mine
            if o.order_status == "fulfilled" and o.finished_at is not None
        ]
        rate_ax.plot(mids, per_second(done), color=colour, label=f"{name} fulfilled/s")
        refused = [o.due_s for o in mine if o.outcome == "refused"]
        if refused:
            rate_ax.plot(
                mids, per_second(refused), color=colour, linestyle=":", label=f"{name} refused/s"
            )
        waited = [(o.due_s, o.wait_s) for o in mine if o.wait_s is not None]
        wait_ax.scatter(
            [due for due, _ in waited], [w for _, w in waited], s=6, color=colour, label=name
        )
    for ax in (rate_ax, wait_ax):
        ax.axvline(run.config.schedule.duration_s, color="black", linewidth=0.8, linestyle="--")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    rate_ax.set_ylabel("orders/s")
    rate_ax.set_title(f"By priority — {describe_run(run)}", fontsize=10)
    wait_ax.set_ylabel("wait in the queue (s)")
    wait_ax.set_xlabel("time (s from start; waits by due time); dashed: end of sending")
    return save_figure(figure, path)


def plot_run(run: LoadRun, directory: Path) -> list[Path]:
    """latency.png, load.png and timeline.png in `directory`; priorities.png too when
    orders were sent with a priority."""
    paths = [
        plot_latency(run, directory / "latency.png"),
        plot_load(run, directory / "load.png"),
        plot_timeline(run, directory / "timeline.png"),
    ]
    if any(order.priority is not None for order in run.orders):
        paths.append(plot_priorities(run, directory / "priorities.png"))
    return paths


# --- a sweep --------------------------------------------------------------------------------


def plot_sweep(sweep: Sweep, path: Path) -> Path:
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    goodput_ax, p99_ax = figure.subplots(1, 2)
    modes = list(dict.fromkeys(point.mode for point in sweep.points))
    top = 0.0
    for mode in modes:
        points = [p for p in sweep.points if p.mode == mode]
        offered = [p.summary.offered_rate for p in points]
        goodput = [p.summary.goodput_per_s or 0.0 for p in points]
        top = max(top, *offered, *goodput)
        colour = MODE_COLOURS.get(mode)
        goodput_ax.plot(offered, goodput, marker="o", color=colour, label=mode)
        p99 = [(p.summary.offered_rate, p.summary.fulfilment.p99_s) for p in points]
        p99_ax.plot(
            [x for x, y in p99 if y is not None],
            [y for _, y in p99 if y is not None],
            marker="o",
            color=colour,
            label=mode,
        )
    goodput_ax.plot(
        [0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="goodput = offered"
    )
    goodput_ax.axhline(
        sweep.capacity_rate,
        color="black",
        linestyle="-.",
        linewidth=0.8,
        label=f"full-service limit {sweep.capacity_rate:.2f}/s",
    )
    for ax in (goodput_ax, p99_ax):
        ax.axvline(sweep.capacity_rate, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("offered load (orders/s); dashed: capacity rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    goodput_ax.set_ylabel("goodput (orders fulfilled/s)")
    goodput_ax.set_title("Goodput against offered load")
    p99_ax.set_ylabel("p99 order → fulfilled (s, log scale)")
    _log_y(
        p99_ax,
        [p.summary.fulfilment.p99_s for p in sweep.points if p.summary.fulfilment.p99_s],
    )
    p99_ax.set_title("p99 time to fulfilment against offered load")
    figure.suptitle(
        f"capacity {sweep.capacity}, {sweep.full_service_s:g} s per order "
        f"({sweep.capacity_rate:.2f} orders/s), {sweep.step_s:g} s per step"
    )
    return save_figure(figure, path)


# --- the demo --------------------------------------------------------------------------------


def plot_demo(rounds: Sequence[DemoRound], path: Path) -> Path:
    figure = Figure(figsize=(6 * max(1, len(rounds)), 3.2), layout="constrained")
    axes = figure.subplots(1, max(1, len(rounds)), sharex=True, squeeze=False)[0]
    for ax, round_ in zip(axes, rounds, strict=False):
        rows = [(c.name, c.span, c.service_level) for c in round_.customers if c.span]
        placed = round_.customers[0].placed_at if round_.customers else 0.0
        _gantt(ax, rows, placed)
        ax.set_yticks(range(len(rows)), [name for name, _, _ in rows])
        for y, customer in enumerate(c for c in round_.customers if c.span):
            if customer.finished_s is not None:
                ax.annotate(
                    f"waited {customer.waited_s or 0.0:.1f} s",
                    (customer.finished_s, y),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
        ax.set_title(round_.title, fontsize=10)
        ax.set_xlabel("seconds after the orders were placed")
    last = max((r.last_finished_s for r in rounds), default=1.0)
    axes[0].set_xlim(0, last * 1.35 or 1.0)
    figure.suptitle(
        "Alice, Bob and Charlie order at the same moment: waiting (orange), being fulfilled (green)"
    )
    return save_figure(figure, path)
