"""`retail load` and `retail demo` (registered on the main CLI in `retail.cli`).

Heavy imports (httpx, matplotlib, the app) happen inside the commands, so other
commands start as fast as before.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from retail.loadgen.mix import (
    DEFAULT_RETRIES_PER_ORDER,
    DEFAULT_RETRY_BUDGET,
    Mix,
    parse_start_within,
)
from retail.loadgen.schedule import Arrivals

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from retail.loadgen.runner import LiveCounts, LoadConfig
    from retail.loadgen.sweep import Sweep
    from retail.loadgen.thresholds import Threshold

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_RATE = 10.0
DEFAULT_DURATION_S = 10.0
SCHEDULE_HELP = (
    "Rate over time instead of --rate: comma-separated RATE@SECONDS (constant) or "
    "FROM..TO@SECONDS (linear ramp) segments, optionally prefixed step: or ramp:; the last "
    "segment may omit @SECONDS to fill --duration. E.g. step:10@5,20@5 or ramp:5..40."
)


# What clients send and how they retry: the same options for `retail load` and
# `retail simulate` (`retail.loadgen.mix`).
MixOption = Annotated[
    str | None,
    typer.Option(
        help="Share of orders per priority, e.g. critical=0.2,standard=0.5,sheddable=0.3 "
        "(adds up to 1; drawn per order from --seed, the same in load and simulate). "
        "Default: no priority sent (standard).",
    ),
]
StartWithinOption = Annotated[
    float | None,
    typer.Option(help="Send every order with this deadline (start_within_s, seconds)."),
]
RetryOption = Annotated[
    bool,
    typer.Option(
        "--retry",
        help="Retry refused orders after their Retry-After plus up to 50 % jitter, "
        "within the retry budget (--retry-budget), up to --retries times (3 by default).",
    ),
]
RetryBudgetOption = Annotated[
    float,
    typer.Option(min=0, help="With --retry: retries at most this share of the orders sent."),
]


def client_settings(
    mix: str | None, start_within: float | None, retries: int | None, *, retry: bool
) -> tuple[Mix | None, float | None, int]:
    """The mix, the deadline and the retries per order from the options; `typer.Exit`
    with a clear message when one is wrong."""
    try:
        return (
            None if mix is None else Mix.parse(mix),
            parse_start_within(start_within),
            (DEFAULT_RETRIES_PER_ORDER if retry else 0) if retries is None else retries,
        )
    except ValueError as error:
        raise _fail(str(error)) from None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


THRESHOLD_FAILED_EXIT = 99  # as k6 exits when a threshold is crossed


def _unwritable(directory: Path) -> str | None:
    """Why files cannot be written into `directory` (made if missing), or None."""
    import tempfile

    if directory.exists() and not directory.is_dir():
        return f"{directory} is a file, not a directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".retail-probe-"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def _writable_dir(path: Path, option: str) -> None:
    """Fail now, before the run, if files cannot be written into `path`."""
    reason = _unwritable(path)
    if reason is not None:
        raise _fail(f"{option} {path}: cannot write there ({reason}); choose another directory")


def _writable_file(path: Path, option: str) -> None:
    """Fail now, before the run, if `path` cannot be written."""
    reason = "it is a directory" if path.is_dir() else _unwritable(path.parent)
    if reason is None and path.exists() and not os.access(path, os.W_OK):
        reason = "Permission denied"
    if reason is not None:
        raise _fail(f"{option} {path}: cannot write there ({reason}); choose another file")


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise _fail(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise _fail(f"{option}: expected at least one number")
    return values


def _client(url: str, connections: int, timeout_s: float) -> httpx.AsyncClient:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=url, limits=limits, timeout=httpx.Timeout(timeout_s, pool=timeout_s)
    )


async def _reachable(client: httpx.AsyncClient) -> None:
    import httpx

    try:
        response = await client.get("/capacity")
    except httpx.HTTPError as error:
        raise _fail(
            f"cannot reach {client.base_url} ({type(error).__name__}); is `retail serve` running?"
        ) from None
    if response.status_code != 200:
        raise _fail(
            f"{client.base_url}capacity answered {response.status_code}: is this a retail service?"
        )


async def _with_progress(
    console: Console, live: LiveCounts, description: str, work: asyncio.Task[object]
) -> None:
    """Show sending and following progress until `work` ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        sending = progress.add_task(description, total=live.planned or None, counts="")
        following = progress.add_task("following", total=None, counts="", visible=False)
        while True:
            progress.update(
                sending,
                total=live.planned,
                completed=live.sent,
                counts=(
                    f"accepted {live.accepted}  refused {live.refused}  errors {live.errors}  "
                    f"awaiting answer {live.in_flight}  late {live.late}"
                ),
            )
            if live.following:
                progress.update(
                    following,
                    visible=True,
                    total=live.following,
                    completed=live.finished,
                    counts="orders followed to their end",
                )
            if work.done():
                return
            await asyncio.sleep(0.1)


def load(
    url: Annotated[str, typer.Option(help="The service's base URL.")] = DEFAULT_URL,
    rate: Annotated[
        float, typer.Option(min=0, help="Orders per second (a constant rate).")
    ] = DEFAULT_RATE,
    duration: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds of sending (default 10; with --sweep, 5 per step)."),
    ] = None,
    schedule: Annotated[str | None, typer.Option(help=SCHEDULE_HELP)] = None,
    max_orders: Annotated[
        int, typer.Option(min=0, help="Send at most this many orders, whatever the schedule.")
    ] = 10_000,
    sku: Annotated[
        list[str] | None, typer.Option(help="SKU to order; repeat to cycle through several.")
    ] = None,
    quantity: Annotated[int, typer.Option(min=1, help="Units per order.")] = 1,
    arrivals: Annotated[
        Arrivals, typer.Option(help="fixed: evenly spaced; poisson: random gaps, same mean rate.")
    ] = Arrivals.FIXED,
    seed: Annotated[int | None, typer.Option(help="Seed for poisson arrivals and jitter.")] = None,
    idempotency_keys: Annotated[
        bool, typer.Option(help="Send a unique Idempotency-Key with every order.")
    ] = False,
    retries: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Retry 503, 429, 409 (Idempotency-Key in use) and connection failures up "
            "to N times, waiting as Retry-After says (exponential backoff without it) "
            "[default: 0; 3 with --retry].",
            show_default=False,
        ),
    ] = None,
    mix: MixOption = None,
    start_within: StartWithinOption = None,
    retry: RetryOption = False,
    retry_budget: RetryBudgetOption = DEFAULT_RETRY_BUDGET,
    follow: Annotated[
        bool, typer.Option(help="Follow accepted orders to their end (needed for goodput).")
    ] = True,
    follow_timeout: Annotated[
        float, typer.Option(min=0, help="Stop following this many seconds after the last send.")
    ] = 60.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds one request may take.")] = 30.0,
    connections: Annotated[
        int,
        typer.Option(min=1, help="Connection limit; keep it above rate x latency."),
    ] = 500,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the full report (JSON) here.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write PNG charts into this directory.")] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            help="Sweep offered load from 0.5x to 4x the capacity rate in every overload mode."
        ),
    ] = False,
    sweep_factors: Annotated[
        str, typer.Option(help="Multiples of the capacity rate, for --sweep.")
    ] = "0.5,1,1.5,2,3,4",
    sweep_modes: Annotated[
        str, typer.Option(help="Overload modes, for --sweep.")
    ] = "queue,reject,degrade",
    admin_token: Annotated[
        str | None,
        typer.Option(envvar="RETAIL_ADMIN_TOKEN", help="Admin token, for --sweep to switch modes."),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Pass/fail criterion, repeatable: exit 99 when one is missed. E.g. "
            "'p99_start<2s', 'p99_http<200ms', 'refused<1%', 'goodput>=3.5'.",
        ),
    ] = None,
    summary_export: Annotated[
        Path | None,
        typer.Option(help="Write the summary and the thresholds' results (JSON) here."),
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML report with the charts here."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(help="Show a live progress bar [default: only on a terminal]."),
    ] = None,
) -> None:
    """Send orders open-loop at a fixed schedule and report what happened.

    Every order is sent at its due time however slowly answers come back, and every
    latency is measured from that due time. Accepted orders are followed to their end.
    """
    from rich.console import Console

    from retail.loadgen.runner import LoadConfig
    from retail.loadgen.schedule import Schedule, parse_schedule
    from retail.loadgen.thresholds import parse_threshold

    console = Console()
    show_progress = console.is_terminal if progress is None else progress
    try:
        thresholds = [parse_threshold(text) for text in threshold or ()]
    except ValueError as error:
        raise _fail(str(error)) from None
    if sweep and (thresholds or summary_export or html_file):
        raise _fail("--threshold, --summary-export and --html apply to one run, not to --sweep")
    for file, option in ((json_file, "--json"), (summary_export, "--summary-export")):
        if file is not None:
            _writable_file(file, option)
    if html_file is not None:
        _writable_file(html_file, "--html")
    if plot is not None:
        _writable_dir(plot, "--plot")
    sent_mix, deadline, retries_per_order = client_settings(mix, start_within, retries, retry=retry)
    seconds = duration if duration is not None else (5.0 if sweep else DEFAULT_DURATION_S)
    try:
        if schedule is not None:
            plan = parse_schedule(schedule, seconds)
        else:
            plan = Schedule.constant(rate, seconds)
        config = LoadConfig(
            schedule=plan,
            arrivals=arrivals,
            seed=seed,
            max_orders=max_orders,
            skus=tuple(sku or ("MUG-1",)),
            quantity=quantity,
            idempotency_keys=idempotency_keys,
            retries=retries_per_order,
            follow=follow or sweep,
            follow_timeout_s=follow_timeout,
            mix=sent_mix,
            start_within_s=deadline,
            retry=retry,
            retry_budget=retry_budget,
        )
    except ValueError as error:
        raise _fail(str(error)) from None
    if sweep:
        if admin_token is None:
            raise _fail("--sweep switches modes: pass --admin-token or set RETAIL_ADMIN_TOKEN")
        _sweep(
            console,
            url=url,
            config=config,
            admin_token=admin_token,
            factors=_numbers(sweep_factors, "--sweep-factors"),
            modes=tuple(m.strip() for m in sweep_modes.split(",") if m.strip()),
            step_s=seconds,
            connections=connections,
            timeout_s=timeout,
            json_file=json_file,
            plot=plot,
            show_progress=show_progress,
        )
        return
    _load(
        console,
        url=url,
        config=config,
        connections=connections,
        timeout_s=timeout,
        json_file=json_file,
        plot=plot,
        show_progress=show_progress,
        thresholds=thresholds,
        summary_export=summary_export,
        html_file=html_file,
    )


def _load(
    console: Console,
    *,
    url: str,
    config: LoadConfig,
    connections: int,
    timeout_s: float,
    json_file: Path | None,
    plot: Path | None,
    show_progress: bool,
    thresholds: list[Threshold],
    summary_export: Path | None,
    html_file: Path | None,
) -> None:
    from retail.loadgen.report import render_summary, summarize, write_json
    from retail.loadgen.runner import LiveCounts, LoadRun, run_load
    from retail.loadgen.thresholds import check_all

    async def main() -> LoadRun:
        async with _client(url, connections, timeout_s) as client:
            await _reachable(client)
            live = LiveCounts()
            work = asyncio.create_task(run_load(config, client=client, live=live))
            if show_progress:
                await _with_progress(console, live, "sending", work)
            return await work

    run = asyncio.run(main())
    summary = summarize(run)
    console.print(render_summary(run, summary))
    results = check_all(thresholds, summary)
    if results:
        console.print("")
        console.print("[bold]thresholds[/bold]")
        for result in results:
            colour = "green" if result.passed else "red"
            console.print(f"  [{colour}]{result.describe()}[/{colour}]", highlight=False)
    if json_file is not None:
        write_json(run, json_file)
        console.print(f"report: {json_file}")
    if summary_export is not None:
        export = {
            "schema": "retail.loadgen.summary/1",
            "url": run.url,
            "config": run.config.to_json(),
            "service": None if run.service is None else run.service.to_json(),
            "summary": summary.to_json(),
            "thresholds": [result.to_json() for result in results],
        }
        summary_export.write_text(json.dumps(export, indent=2) + "\n")
        console.print(f"summary: {summary_export}")
    if plot is not None:
        from retail.loadgen.plots import plot_run

        for path in plot_run(run, plot):
            console.print(f"chart: {path}")
    if html_file is not None:
        from retail.loadgen.html import write_html

        console.print(f"html report: {write_html(run, summary, results, html_file)}")
    failed = [result for result in results if not result.passed]
    if failed:
        listed = "; ".join(result.describe() for result in failed)
        typer.echo(f"Error: {len(failed)} of {len(results)} thresholds missed: {listed}", err=True)
        raise typer.Exit(THRESHOLD_FAILED_EXIT)


def _sweep(
    console: Console,
    *,
    url: str,
    config: LoadConfig,
    admin_token: str,
    factors: tuple[float, ...],
    modes: tuple[str, ...],
    step_s: float,
    connections: int,
    timeout_s: float,
    json_file: Path | None,
    plot: Path | None,
    show_progress: bool,
) -> None:
    from retail.loadgen.sweep import SweepConfig, SweepError, run_sweep, sweep_table

    try:
        sweep_config = SweepConfig(
            base=config, admin_token=admin_token, modes=modes, factors=factors, step_s=step_s
        )
    except ValueError as error:
        raise _fail(str(error)) from None

    async def main() -> Sweep:
        async with _client(url, connections, timeout_s) as client:
            await _reachable(client)
            steps: list[LiveCounts] = []

            def on_step(mode: str, factor: float, rate: float, live: LiveCounts) -> None:
                console.print(f"[bold]{mode}[/bold] at {factor:g}x capacity ({rate:.2f} orders/s)")
                steps.append(live)

            work = asyncio.create_task(run_sweep(sweep_config, client=client, on_step=on_step))
            if show_progress:
                await _watch_sweep(console, steps, work)
            return await work

    import httpx

    try:
        result = asyncio.run(main())
    except SweepError as error:
        raise _fail(str(error)) from None
    except httpx.HTTPError as error:
        raise _fail(
            f"lost the service during the sweep ({type(error).__name__}: {error})"
        ) from None
    console.print(sweep_table(result))
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        console.print(f"report: {json_file}")
    if plot is not None:
        from retail.loadgen.plots import plot_sweep

        console.print(f"chart: {plot_sweep(result, plot / 'sweep.png')}")


async def _watch_sweep(
    console: Console, steps: list[LiveCounts], work: asyncio.Task[Sweep]
) -> None:
    """A status line for the sweep's current step, until the sweep ends."""
    from rich.live import Live

    with Live(console=console, transient=True, refresh_per_second=8) as display:
        while not work.done():
            if steps:
                live = steps[-1]
                display.update(
                    f"  sent {live.sent}/{live.planned}  accepted {live.accepted}  refused "
                    f"{live.refused}  errors {live.errors}  followed to their end "
                    f"{live.finished}/{live.following}"
                )
            await asyncio.sleep(0.125)


def demo(
    capacity: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Capacities to compare, one round each (default: 1 and 3)."),
    ] = None,
    fulfilment_delay: Annotated[
        str, typer.Option(help="Seconds per order (or a delay model, as RETAIL_FULFILMENT_DELAY).")
    ] = "2",
    plot: Annotated[
        Path | None, typer.Option(help="Write demo.png (timelines side by side) here.")
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the timelines (JSON) here.")
    ] = None,
) -> None:
    """Alice, Bob and Charlie order at the same moment: capacity 1 against capacity 3.

    Starts a private service (temporary SQLite database, free 127.0.0.1 port), plays one
    round per capacity and shows who waited how long: synchronous against asynchronous.
    """
    from rich.console import Console

    from retail.loadgen.demo import DemoError, render_demo, run_demo

    console = Console()
    if json_file is not None:
        _writable_file(json_file, "--json")
    if plot is not None:
        _writable_dir(plot, "--plot")
    capacities = tuple(capacity or (1, 3))
    console.print(
        f"Starting a private service: fulfilment takes {fulfilment_delay} s per order; "
        f"one round per capacity ({', '.join(map(str, capacities))})…"
    )
    try:
        rounds = run_demo(capacities=capacities, fulfilment_delay=fulfilment_delay)
    except DemoError as error:
        raise _fail(str(error)) from None
    console.print(render_demo(rounds))
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps({"rounds": [r.to_json() for r in rounds]}, indent=2) + "\n")
        console.print(f"timelines: {json_file}")
    if plot is not None:
        from retail.loadgen.plots import plot_demo

        console.print(f"chart: {plot_demo(rounds, plot / 'demo.png')}")
