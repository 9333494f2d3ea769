"""PNG charts of simulated runs and plans, in the style of `retail.loadgen.plots`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from retail.loadgen.plots import (
    FAILED_COLOUR,
    MODE_COLOURS,
    PRIORITY_COLOURS,
    WAIT_COLOUR,
    WORK_COLOUR,
    save_figure,
)
from retail.sim.engine import SimRun

BINS = 120


def _per_second(times: Sequence[float], edges: list[float]) -> list[float]:
    width = edges[1] - edges[0]
    counts = [0] * (len(edges) - 1)
    for t in times:
        counts[min(len(counts) - 1, int((t - edges[0]) / width))] += 1
    return [n / width for n in counts]


def _p99_by_bin(starts: Sequence[float], waits: Sequence[float], edges: list[float]) -> list[float]:
    width = edges[1] - edges[0]
    bins: list[list[float]] = [[] for _ in range(len(edges) - 1)]
    for t, w in zip(starts, waits, strict=True):
        bins[min(len(bins) - 1, int((t - edges[0]) / width))].append(w)
    result = []
    for values in bins:
        values.sort()
        result.append(values[max(0, math.ceil(0.99 * len(values)) - 1)] if values else math.nan)
    return result


def plot_run(run: SimRun, path: Path) -> Path:
    """Orders per second, the queue, and the p99 wait over simulated time."""
    end = max(run.sim_seconds, run.duration_s, 1e-9)
    edges = [end * i / BINS for i in range(BINS + 1)]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    figure = Figure(figsize=(10, 8.4), layout="constrained")
    rates_ax, queue_ax, wait_ax = figure.subplots(3, 1, sharex=True)

    schedule = run.config.schedule
    offered = [schedule.rate_at(min(t, schedule.duration_s - 1e-9)) for t in mids]
    rates_ax.plot(mids, offered, color="grey", linestyle="--", linewidth=1, label="offered rate")
    rates_ax.plot(mids, _per_second(run.ends, edges), color=WORK_COLOUR, label="fulfilled/s")
    if run.refused_at:
        rates_ax.plot(
            mids, _per_second(run.refused_at, edges), color=FAILED_COLOUR, label="refused/s"
        )
    if run.config.mix is not None:
        for priority, counts in zip(PRIORITY_COLOURS, run.by_priority, strict=True):
            if counts.orders:
                rates_ax.plot(
                    mids,
                    _per_second(counts.ends, edges),
                    color=PRIORITY_COLOURS[priority],
                    linewidth=1,
                    label=f"{priority} fulfilled/s",
                )
    rates_ax.set_ylabel("orders/s")
    rates_ax.set_ylim(bottom=0)
    rates_ax.legend(loc="upper right", fontsize=8)
    rates_ax.grid(alpha=0.3)

    ts = [s.t_s for s in run.timeline]
    queue_ax.step(ts, [s.in_flight for s in run.timeline], where="post", color=WORK_COLOUR)
    queue_ax.step(ts, [s.queued for s in run.timeline], where="post", color=WAIT_COLOUR)
    queue_ax.axhline(run.config.limits.capacity, color="grey", linestyle=":", linewidth=1)
    queue_ax.legend(["in flight", "queued", "capacity"], loc="upper right", fontsize=8)
    queue_ax.set_ylabel("orders")
    queue_ax.set_ylim(bottom=0)
    queue_ax.grid(alpha=0.3)

    wait_ax.plot(mids, _p99_by_bin(run.starts, run.waits, edges), color=WAIT_COLOUR)
    wait_ax.set_ylabel("p99 wait for a slot (s)")
    wait_ax.set_xlabel("simulated time (s); dashed: end of arrivals")
    wait_ax.set_ylim(bottom=0)
    wait_ax.grid(alpha=0.3)
    for ax in (rates_ax, queue_ax, wait_ax):
        ax.axvline(run.duration_s, color="black", linewidth=0.8, linestyle="--")
    limits = run.config.limits
    figure.suptitle(
        f"retail simulate: {limits.mode.value}, capacity {limits.capacity}, queue limit "
        f"{limits.queue_limit}; {schedule.describe()} ({run.config.arrivals.value}), "
        f"{run.orders:,} orders"
    )
    return save_figure(figure, path)


def plot_sweep(points: Sequence[dict[str, Any]], capacity_rate: float, path: Path) -> Path:
    """Goodput and p99 wait against offered load, one line per mode.

    `points` are summaries (`report.summarize`) of runs at several offered rates.
    """
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    goodput_ax, p99_ax = figure.subplots(1, 2)
    modes = list(dict.fromkeys(p["settings"]["overload_mode"] for p in points))
    top = 0.0
    for mode in modes:
        mine = [p for p in points if p["settings"]["overload_mode"] == mode]
        offered = [p["offered_rate"] for p in mine]
        goodput = [p["throughput_per_s"] for p in mine]
        top = max(top, *offered, *goodput)
        colour = MODE_COLOURS.get(mode)
        goodput_ax.plot(offered, goodput, marker="o", color=colour, label=mode)
        p99_ax.plot(
            offered, [p["sojourn_s"]["p99"] or math.nan for p in mine], marker="o", color=colour
        )
    goodput_ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
    goodput_ax.legend([*modes, "goodput = offered"], fontsize=8)
    for ax in (goodput_ax, p99_ax):
        ax.axvline(capacity_rate, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("offered load (orders/s); dashed: capacity rate")
        ax.grid(alpha=0.3)
    goodput_ax.set_ylabel("goodput (orders fulfilled/s)")
    goodput_ax.set_title("Goodput against offered load")
    p99_ax.set_yscale("log")
    p99_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    p99_ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    p99_ax.set_ylabel("p99 order → fulfilled (s)")
    p99_ax.set_title("p99 time to fulfilment against offered load")
    first = points[0]["settings"]
    figure.suptitle(
        f"retail simulate: capacity {first['capacity']}, queue limit {first['queue_limit']}, "
        f"{first['full_service_s']:g} s per order ({capacity_rate:.2f} orders/s)"
    )
    return save_figure(figure, path)


def plot_priority_sweep(points: Sequence[dict[str, Any]], capacity_rate: float, path: Path) -> Path:
    """Goodput per priority against offered load: one panel per mode, a line per priority
    and the total (points with `by_priority`, from a sweep run with a mix)."""
    modes = list(dict.fromkeys(p["settings"]["overload_mode"] for p in points))
    figure = Figure(figsize=(4.2 * len(modes) + 0.6, 4.6), layout="constrained")
    axes = figure.subplots(1, len(modes), sharey=True, squeeze=False)[0]
    priorities = list(dict.fromkeys(name for p in points for name in p["by_priority"]))
    top = max(p["offered_rate"] for p in points)
    highest = max(max(p["throughput_per_s"] for p in points), capacity_rate)
    for ax, mode in zip(axes, modes, strict=True):
        mine = [p for p in points if p["settings"]["overload_mode"] == mode]
        offered = [p["offered_rate"] for p in mine]
        ax.plot(
            offered,
            [p["throughput_per_s"] for p in mine],
            color="black",
            linestyle="--",
            linewidth=1,
            label="all priorities",
        )
        for name in priorities:
            ax.plot(
                offered,
                [p["by_priority"].get(name, {}).get("goodput_per_s", 0.0) for p in mine],
                marker="o",
                color=PRIORITY_COLOURS.get(name),
                label=name,
            )
        ax.axhline(capacity_rate, color="grey", linestyle=":", linewidth=1)
        ax.axvline(capacity_rate, color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, top * 1.02)
        ax.set_ylim(0, highest * 1.08)
        ax.set_title(f"{mode} mode")
        ax.set_xlabel("offered load (orders/s); dotted: capacity rate")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("goodput (orders fulfilled/s)")
    axes[-1].legend(loc="upper left", fontsize=8)
    first = points[0]
    settings, arrivals = first["settings"], first["arrivals"]
    figure.suptitle(
        f"retail simulate: goodput per priority; capacity {settings['capacity']}, queue limit "
        f"{settings['queue_limit']}, {settings['full_service_s']:g} s per order\n"
        f"mix {arrivals['mix']}; critical reserve {settings.get('critical_reserve', 0)}"
    )
    return save_figure(figure, path)
