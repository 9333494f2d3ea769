"""`retail simulate` and `retail plan` (registered on the main CLI in `retail.cli`).

Service settings are read as `retail serve` reads them (`RETAIL_*`, `.env`, options on
top); arrivals are given as to `retail load`. matplotlib is imported only for `--plot`.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Annotated, Any

import typer

from retail.cli_support import Capacity, Delay, Mode, QueueLimit, fail, settings_or_exit
from retail.config import Settings
from retail.core.types import OverloadMode
from retail.loadgen.cli import (
    MixOption,
    RetryBudgetOption,
    RetryOption,
    StartWithinOption,
    client_settings,
)
from retail.loadgen.mix import DEFAULT_RETRY_BUDGET, PRIORITIES
from retail.loadgen.schedule import Arrivals, Schedule, parse_schedule

DEFAULT_RATE = 10.0
DEFAULT_DURATION_S = 10.0
SCHEDULE_HELP = (
    "Rate over time instead of --rate, as for `retail load`: RATE@SECONDS and "
    "FROM..TO@SECONDS segments, e.g. step:10@5,20@5 or ramp:5..40."
)
JSON_HELP = "Write the figures as JSON to this file (- for standard output)."

MaxQueueWait = Annotated[float | None, typer.Option(help="Seconds [RETAIL_MAX_QUEUE_WAIT_S].")]
StepDelays = Annotated[
    str | None, typer.Option(help="Per-step models, e.g. pick=exponential:1 [RETAIL_STEP_DELAYS].")
]
Decline = Annotated[float | None, typer.Option(help="[RETAIL_PAYMENT_DECLINE_PROBABILITY]")]
SkipSteps = Annotated[str | None, typer.Option(help="[RETAIL_DEGRADE_SKIP_STEPS]")]
DelayFactor = Annotated[float | None, typer.Option(help="[RETAIL_DEGRADE_DELAY_FACTOR]")]
CriticalReserve = Annotated[
    int | None,
    typer.Option(help="Room only critical orders may take [RETAIL_CRITICAL_RESERVE]."),
]
TargetWait = Annotated[
    float | None, typer.Option(help="Seconds, for --overload-mode auto [RETAIL_TARGET_WAIT_S].")
]


def _write_json(data: Any, target: str) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if target == "-":
        typer.echo(text, nl=False)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _clients(
    mix: str | None,
    start_within: float | None,
    retries: int | None,
    *,
    retry: bool,
    retry_budget: float,
) -> dict[str, Any]:
    """What the simulated clients send and how they retry (`SimConfig` fields)."""
    sent_mix, deadline, retries_per_order = client_settings(mix, start_within, retries, retry=retry)
    return {
        "mix": sent_mix,
        "start_within_s": deadline,
        "retries": retries_per_order,
        "retry_budget": retry_budget if retry else None,
    }


def _schedule(
    rate: float, duration: float | None, schedule: str | None, orders: int | None
) -> Schedule:
    try:
        if schedule is not None:
            return parse_schedule(schedule, duration or DEFAULT_DURATION_S)
        if duration is None and orders is not None:
            if rate <= 0:
                raise ValueError("--orders needs a --rate above 0")
            # Long enough for N orders whatever the draw: --orders ends the run.
            return Schedule.constant(rate, (orders + 10 * math.sqrt(orders) + 10) / rate)
        return Schedule.constant(rate, duration or DEFAULT_DURATION_S)
    except ValueError as error:
        raise fail(str(error), 2) from None


def simulate(
    overload_mode: Mode = None,
    capacity: Capacity = None,
    queue_limit: QueueLimit = None,
    max_queue_wait: MaxQueueWait = None,
    fulfilment_delay: Delay = None,
    step_delays: StepDelays = None,
    payment_decline_probability: Decline = None,
    degrade_skip_steps: SkipSteps = None,
    degrade_delay_factor: DelayFactor = None,
    target_wait: TargetWait = None,
    rate: Annotated[
        float, typer.Option(min=0, help="Orders per second (a constant rate).")
    ] = DEFAULT_RATE,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds of arrivals (default 10).")
    ] = None,
    schedule: Annotated[str | None, typer.Option(help=SCHEDULE_HELP)] = None,
    orders: Annotated[
        int | None, typer.Option(min=1, help="Simulate this many orders (the run ends there).")
    ] = None,
    arrivals: Annotated[
        Arrivals, typer.Option(help="fixed: evenly spaced; poisson: random gaps, same mean rate.")
    ] = Arrivals.FIXED,
    seed: Annotated[
        int | None, typer.Option(help="Seed for arrivals and delays (default: a random one).")
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="A refused order comes back after its Retry-After, up to N times "
            "(without --retry: exactly after it, with no budget).",
        ),
    ] = None,
    mix: MixOption = None,
    start_within: StartWithinOption = None,
    retry: RetryOption = False,
    retry_budget: RetryBudgetOption = DEFAULT_RETRY_BUDGET,
    critical_reserve: CriticalReserve = None,
    sweep: Annotated[
        bool,
        typer.Option(help="Run 0.5x to 4x the capacity rate in every overload mode (a table)."),
    ] = False,
    sweep_factors: Annotated[
        str, typer.Option(help="Multiples of the capacity rate, for --sweep.")
    ] = "0.5,0.75,1,1.25,1.5,2,3,4",
    sweep_modes: Annotated[str, typer.Option(help="Overload modes, for --sweep.")] = (
        "queue,reject,degrade"
    ),
    json_file: Annotated[str | None, typer.Option("--json", help=JSON_HELP)] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG chart to this file.")] = None,
) -> None:
    """Run the service's capacity policy on a virtual clock: no HTTP, no database, no waiting.

    The same admission, policy, dispatcher and delay models as `retail serve`, driven
    by simulated arrivals; prints the figures `retail load` prints. A run repeats
    exactly for the same seed.
    """
    from rich.console import Console

    from retail.core.capacity import Limits
    from retail.sim.engine import SimConfig
    from retail.sim.engine import simulate as run_simulation
    from retail.sim.report import render, summarize

    settings = settings_or_exit(
        overload_mode=overload_mode,
        capacity=capacity,
        queue_limit=queue_limit,
        max_queue_wait_s=max_queue_wait,
        fulfilment_delay=fulfilment_delay,
        step_delays=step_delays,
        payment_decline_probability=payment_decline_probability,
        degrade_skip_steps=degrade_skip_steps,
        degrade_delay_factor=degrade_delay_factor,
        critical_reserve=critical_reserve,
        target_wait_s=target_wait,
    )
    clients = _clients(mix, start_within, retries, retry=retry, retry_budget=retry_budget)
    console = Console(stderr=json_file == "-")
    run_seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    pipeline = settings.pipeline()
    if sweep:
        _sweep(
            console,
            settings=settings,
            factors=sweep_factors,
            modes=sweep_modes,
            duration=duration,
            orders=orders,
            arrivals=arrivals,
            seed=run_seed,
            clients=clients,
            json_file=json_file,
            plot=plot,
        )
        return
    config = SimConfig(
        limits=settings.limits(),
        pipeline=pipeline,
        schedule=_schedule(rate, duration, schedule, orders),
        arrivals=arrivals,
        seed=run_seed,
        max_orders=orders,
        **clients,
    )
    assert isinstance(config.limits, Limits)
    run = run_simulation(config)
    summary = summarize(run)
    console.print(render(summary))
    if json_file is not None:
        _write_json(summary, json_file)
    if plot is not None:
        from retail.sim.plots import plot_run

        console.print(f"chart: {plot_run(run, plot)}")


def _sweep(
    console: Any,
    *,
    settings: Settings,
    factors: str,
    modes: str,
    duration: float | None,
    orders: int | None,
    arrivals: Arrivals,
    seed: int,
    clients: dict[str, Any],
    json_file: str | None,
    plot: Path | None,
) -> None:
    import dataclasses

    from rich.table import Table

    from retail.core.types import ServiceLevel
    from retail.sim.engine import SimConfig
    from retail.sim.engine import simulate as run_simulation
    from retail.sim.report import ms, summarize

    try:
        multiples = [float(part) for part in factors.split(",") if part.strip()]
        mode_list = [OverloadMode(part.strip()) for part in modes.split(",") if part.strip()]
    except ValueError as error:
        raise fail(f"--sweep-factors / --sweep-modes: {error}", 2) from None
    pipeline = settings.pipeline()
    capacity_rate = settings.capacity / max(1e-9, pipeline.mean_s(ServiceLevel.FULL))
    table = Table(title=f"capacity rate {capacity_rate:.2f} orders/s", title_justify="left")
    for name in ("mode", "offered/s", "goodput/s", "refused", "degraded", "p99 wait ms"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    table.add_column("p99 order → fulfilled ms", justify="right")
    mix = clients.get("mix")
    shown = [name for name in PRIORITIES if mix is not None and mix.share(name)]
    for name in shown:
        table.add_column(f"{name} goodput/s", justify="right")
    if "critical" in shown:
        table.add_column("critical p99 wait ms", justify="right")
    points = []
    for mode in mode_list:
        for factor in multiples:
            rate = factor * capacity_rate
            config = SimConfig(
                limits=dataclasses.replace(settings.limits(), mode=mode),
                pipeline=pipeline,
                schedule=_schedule(rate, duration, None, orders),
                arrivals=arrivals,
                seed=seed,
                max_orders=orders,
                **clients,
            )
            summary = summarize(run_simulation(config), timeline=False)
            summary["factor"] = factor
            points.append(summary)
            rows = summary["by_priority"]
            per_priority = [
                f"{rows[name]['goodput_per_s']:.2f}" if name in rows else "-" for name in shown
            ]
            if "critical" in shown:
                per_priority.append(
                    ms(rows["critical"]["wait_s"]["p99"]) if "critical" in rows else "-"
                )
            table.add_row(
                mode.value,
                f"{summary['offered_rate']:.2f}",
                f"{summary['throughput_per_s']:.2f}",
                f"{summary['refused_share']:.1%}",
                str(summary["degraded"]),
                ms(summary["wait_s"]["p99"]),
                ms(summary["sojourn_s"]["p99"]),
                *per_priority,
            )
    console.print(table)
    if json_file is not None:
        _write_json({"capacity_rate": capacity_rate, "points": points}, json_file)
    if plot is not None:
        from retail.sim.plots import plot_priority_sweep, plot_sweep

        if shown:
            chart = plot_priority_sweep(points, capacity_rate, plot)
        else:
            chart = plot_sweep(points, capacity_rate, plot)
        console.print(f"chart: {chart}")


def plan(
    rate: Annotated[float, typer.Option(min=0, help="Offered orders per second.")],
    p99_wait: Annotated[
        float, typer.Option(min=0, help="Target: 99 % of orders wait at most this long (s).")
    ] = 2.0,
    max_refused: Annotated[
        float, typer.Option(min=0, max=1, help="Target: at most this share of orders refused.")
    ] = 0.01,
    overload_mode: Mode = None,
    fulfilment_delay: Delay = None,
    step_delays: StepDelays = None,
    payment_decline_probability: Decline = None,
    degrade_skip_steps: SkipSteps = None,
    degrade_delay_factor: DelayFactor = None,
    arrivals: Annotated[
        Arrivals, typer.Option(help="poisson (what the theory assumes) or fixed.")
    ] = Arrivals.POISSON,
    orders: Annotated[int, typer.Option(min=100, help="Orders per simulated check.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated checks.")] = 1,
    json_file: Annotated[str | None, typer.Option("--json", help=JSON_HELP)] = None,
) -> None:
    """The least capacity (and a queue limit) that meets the targets at a given load.

    Queueing theory gives the first guess (Erlang C for waits, Erlang B for refusals);
    simulating the service's own policy confirms it. Prints the recommended settings,
    the predicted figures and the neighbouring capacities.
    """
    from rich.console import Console
    from rich.table import Table

    from retail.sim.planner import UNBOUNDED_QUEUE, Targets, make_plan
    from retail.sim.report import ms

    settings = settings_or_exit(
        overload_mode=overload_mode,
        fulfilment_delay=fulfilment_delay,
        step_delays=step_delays,
        payment_decline_probability=payment_decline_probability,
        degrade_skip_steps=degrade_skip_steps,
        degrade_delay_factor=degrade_delay_factor,
    )
    try:
        result = make_plan(
            mode=settings.overload_mode,
            pipeline=settings.pipeline(),
            rate=rate,
            targets=Targets(p99_wait_s=p99_wait, max_refused=max_refused),
            arrivals=arrivals,
            orders=orders,
            seed=seed,
        )
    except ValueError as error:
        raise fail(str(error), 2) from None
    console = Console(stderr=json_file == "-")
    best = result.recommended
    limit = "unbounded" if best.queue_limit >= UNBOUNDED_QUEUE else str(best.queue_limit)
    theory_note = "exact" if result.exact_theory else "an estimate"
    console.print(
        f"[bold]retail plan[/bold] {result.mode.value} mode, {rate:g} orders/s, "
        f"{result.service_s:g} s per order ({result.offered_erlangs:.2f} Erlangs); targets: "
        f"p99 wait <= {p99_wait:g} s, refused <= {max_refused:.2%}\n"
        f"theory ({theory_note}) first guess: capacity {result.first_guess}; "
        f"simulated {result.simulated_orders:,} orders per check\n"
    )
    verdict = "meets the targets" if best.meets else "[red]misses a target[/red]"
    console.print(
        f"[bold]recommended:[/bold] RETAIL_OVERLOAD_MODE={result.mode.value} "
        f"RETAIL_CAPACITY={best.capacity}"
        + ("" if result.mode is OverloadMode.REJECT else f" RETAIL_QUEUE_LIMIT={limit}")
        + f"\npredicted: p99 wait {ms(best.p99_wait_s)} ms, mean wait "
        f"{ms(best.mean_wait_s)} ms, refused {best.refused_share:.2%}, "
        f"{best.throughput_per_s:.2f} fulfilled/s, utilisation {best.utilisation:.0%} "
        f"({verdict})\n"
    )
    table = Table(title="neighbouring capacities", title_justify="left")
    for name in ("capacity", "queue limit", "utilisation", "p99 wait ms (theory)"):
        table.add_column(name, justify="right")
    for name in ("p99 wait ms", "refused (theory)", "refused", "fulfilled/s", "meets"):
        table.add_column(name, justify="right")
    for row in result.rows:
        table.add_row(
            f"[bold]{row.capacity}[/bold]" if row is best else str(row.capacity),
            "-"
            if result.mode is OverloadMode.REJECT
            else ("unbounded" if row.queue_limit >= UNBOUNDED_QUEUE else str(row.queue_limit)),
            f"{row.utilisation:.0%}",
            "-" if row.theory_p99_wait_s is None else ms(row.theory_p99_wait_s),
            ms(row.p99_wait_s),
            "-" if row.theory_refused is None else f"{row.theory_refused:.2%}",
            f"{row.refused_share:.2%}",
            f"{row.throughput_per_s:.2f}",
            "yes" if row.meets else "no",
        )
    console.print(table)
    if json_file is not None:
        _write_json(result.to_json(), json_file)
