"""Markdown tables for the benchmark results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.fulfilment import (
    ACCEPT_P99_TARGET_MS,
    FULFILLED_TARGET,
    REFUSAL_P99_TARGET_MS,
    FulfilmentConfig,
    FulfilmentResult,
)
from bench.ingest import IngestResult
from bench.overload import (
    OverloadConfig,
    OverloadResult,
    SaturationResult,
    degrade_over_queue,
    rss_growth,
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f}"


def _target(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ingest_table(results: Sequence[IngestResult], connections: int, duration_s: float) -> str:
    rows = []
    for r in results:
        d = r.durability
        base, retail = r.baseline.wrk, r.retail.wrk
        rows.append(
            [
                r.backend
                + (" + Idempotency-Key" if r.keys else "")
                + (", defaults (workers on, logs info)" if r.defaults else ""),
                f"{base.rate:,.0f}",
                f"{base.p50_ms:.1f} / {base.p99_ms:.1f}",
                f"{r.baseline.cpu_us:,.0f}",
                f"{retail.rate_of(202):,.0f}",
                f"{retail.p50_ms:.1f} / {retail.p99_ms:.1f}",
                f"{r.retail.cpu_us:,.0f}",
                f"**{r.ratio:.2f}**",
                f"{r.cpu_ratio:.2f}",
                "ok" if d.ok else "**FAILED**",
                f"{d.accepted:,} / {d.stored:,} / {d.missing}",
            ]
        )
    text = table(
        [
            "database",
            "baseline req/s",
            "baseline p50 / p99 ms",
            "baseline CPU µs/req",
            "retail orders/s",
            "retail p50 / p99 ms",
            "retail CPU µs/order",
            "ratio",
            "CPU ratio",
            "durable",
            "202s seen / stored / missing",
        ],
        rows,
    )
    verdicts = []
    sqlite = [r.ratio for r in results if r.backend == "SQLite" and not r.keys and not r.defaults]
    if sqlite:
        verdicts.append(
            f"Target ratio >= 0.5 on SQLite, workers off: {_target(min(sqlite) >= 0.5)} "
            f"({min(sqlite):.2f})."
        )
    defaults = [r.ratio for r in results if r.backend == "SQLite" and r.defaults]
    if defaults:
        verdicts.append(
            f"Target ratio >= 0.6 on SQLite with the defaults: "
            f"{_target(min(defaults) >= 0.6)} ({min(defaults):.2f})."
        )
    verdict = " ".join(verdicts)
    return (
        f"## Ingest: POST /orders, wrk closed loop, {connections} connections, "
        f"{duration_s:g} s per run\n\n{text}\n\n{verdict}\n"
    )


def auto_notes(runs: Sequence[OverloadResult]) -> list[str]:
    """Auto mode against queue mode at the same load, and every mode's Retry-After error."""
    notes = []
    by = {(r.mode, r.multiple): r for r in runs}
    for r in runs:
        queue = by.get(("queue", r.multiple))
        if r.mode != "auto" or queue is None or not r.wait_ms or not queue.wait_ms:
            continue
        capacity_rate = r.capacity / r.delay_s
        notes.append(
            f"- auto at {r.multiple:g}x: wait p99 {r.wait_ms[1] / 1000:.2f} s vs queue's "
            f"{queue.wait_ms[1] / 1000:.2f} s ({_target(r.wait_ms[1] <= queue.wait_ms[1])}), "
            f"fulfilled/s {r.fulfilled_rate:.2f} vs queue's {queue.fulfilled_rate:.2f} "
            f"({_target(r.fulfilled_rate >= queue.fulfilled_rate)}), "
            f"{r.fulfilled_rate / capacity_rate:.3f} of C/D (target >= 0.97: "
            f"{_target(r.fulfilled_rate >= 0.97 * capacity_rate)})"
        )
    for r in runs:
        error, fine = r.retry_after_error, r.retry_after_ms_error
        if error.get("count"):
            notes.append(
                f"- Retry-After, {r.mode} at {r.multiple:g}x: median error {error['median']:.0%} "
                f"over {error['count']} refusals (given {error['median_retry_after_s']:g} s, "
                f"first acceptance after {error['median_first_admitted_s']:.2f} s, medians; "
                f"target <= 25 %: {_target(error['median'] <= 0.25)})"
                + (
                    f"; Retry-After-Ms median error {fine['median']:.0%} (given "
                    f"{fine['median_retry_after_s']:.3f} s; target <= 25 %: "
                    f"{_target(fine['median'] <= 0.25)})"
                    if fine.get("count")
                    else ""
                )
            )
    return notes


def _retry_after(error: dict[str, Any]) -> str:
    if not error.get("count"):
        return "-"
    return f"{error['median']:.0%} ({error['within_target']:.0%}, {error['early']:.0%})"


def overload_runs_table(runs: Sequence[OverloadResult]) -> str:
    """One row per open-loop run: what was sent, fulfilled, refused, how fast, memory."""
    rows = []
    for r in runs:
        limit = r.limit_rate
        rows.append(
            [
                r.mode,
                f"{r.multiple:g}x ({r.rate:g}/s)",
                f"{r.sent} / {r.accepted} / {r.refused} / {r.errors}",
                f"{r.fulfilled_rate:.2f}",
                f"{r.service_s:.3f}",
                "-" if limit is None else f"{limit:.2f}",
                "-" if r.of_limit is None else f"{r.of_limit:.3f}",
                f"{r.replay_rate:.2f}" if r.mode == "reject" else "-",
                _ms(r.refusal_ms),
                _ms(r.refusal_sent_ms),
                _ms(r.accept_ms),
                _ms(r.wait_ms),
                f"{_retry_after(r.retry_after_error)} / {_retry_after(r.retry_after_ms_error)}",
                f"{r.rss_kib[2] / 1024:.0f} ({rss_growth(r):.2f})" if r.rss_kib[2] else "-",
            ]
        )
    return table(
        [
            "mode",
            "offered",
            "sent / accepted / refused / errors",
            "fulfilled/s",
            "mean service s",
            "limit/s",
            "of limit",
            "replayed loss system/s",
            "503 p50 / p99 ms from due",
            "from send",
            "202 p50 / p99 ms from due",
            "wait p50 / p99 ms",
            "Retry-After / Retry-After-Ms error: median (within 25 %, early)",
            "peak RSS MiB (end/25 %)",
        ],
        rows,
    )


def overload_tables(
    runs: Sequence[OverloadResult],
    saturations: Sequence[SaturationResult],
    config: OverloadConfig,
) -> str:
    main = overload_runs_table(runs)
    notes = []
    for r in runs:
        if r.of_limit is not None:
            notes.append(
                f"- {r.mode} at {r.multiple:g}x: {r.of_limit:.3f} of the limit, "
                f"target >= 0.95: {_target(r.of_limit >= 0.95)}"
            )
    for r in runs:
        if r.mode == "reject" and r.refusal_ms is not None and r.refusal_sent_ms is not None:
            notes.append(
                f"- reject at {r.multiple:g}x: refusal p99 {r.refusal_ms[1]:.1f} ms from due "
                f"(target <= 5 ms: {_target(r.refusal_ms[1] <= 5)}), "
                f"{r.refusal_sent_ms[1]:.1f} ms from send ({_target(r.refusal_sent_ms[1] <= 5)})"
            )
    for multiple, ratio in degrade_over_queue(list(runs)).items():
        notes.append(
            f"- degrade over queue at {multiple:g}x: {ratio:.2f}, target >= 1.3: "
            f"{_target(ratio >= 1.3)}"
        )
    notes += auto_notes(runs)
    rows = []
    for s in saturations:
        rows += [
            [
                "baseline POST /orders (no database)",
                f"{s.baseline.wrk.rate:,.0f}",
                f"{s.baseline.wrk.p50_ms:.1f} / {s.baseline.wrk.p99_ms:.1f}",
                f"{s.baseline.cpu_us:,.0f}",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(s.baseline.wrk.statuses.items())),
            ],
            [
                "retail POST /orders, reject mode, "
                + (
                    "defaults (capacity 8, 1 s orders, fair shares, logs info)"
                    if s.defaults
                    else "all slots held, logs warning"
                ),
                f"{s.refusal_rate:,.0f}",
                f"{s.refusals.wrk.p50_ms:.1f} / {s.refusals.wrk.p99_ms:.1f}",
                f"{s.refusals.cpu_us:,.0f}",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(s.refusals.wrk.statuses.items())),
            ],
        ]
        target = 2.0 if s.defaults else 1.0
        notes.append(
            f"- refusals/s over baseline answers/s{' with the defaults' if s.defaults else ''}: "
            f"{s.ratio:.2f} (CPU ratio {s.cpu_ratio:.2f}), target >= {target:g}: "
            f"{_target(s.ratio >= target)}"
        )
    sat = table(["endpoint", "answers/s", "p50 / p99 ms", "server CPU µs/answer", "statuses"], rows)
    return (
        f"## Overload: capacity {config.capacity}, fixed fulfilment {config.delay_s:g} s "
        f"(limit {config.limit_rate:g} orders/s), Poisson arrivals, "
        f"{config.duration_s:g} s per run, SQLite\n\n{main}\n\n"
        f"## Refusing at saturation: wrk, 64 connections\n\n{sat}\n\n"
        "Targets:\n\n" + "\n".join(notes) + "\n"
    )


def fulfilment_tables(
    results: Sequence[FulfilmentResult], refusals: OverloadResult, config: FulfilmentConfig
) -> str:
    rows = [
        [
            r.backend,
            f"{r.offered_rate:.1f}",
            f"{r.run.fulfilled_rate:.1f}",
            f"**{r.of_offered:.3f}**",
            _ms(r.run.accept_ms),
            f"{r.run.service_s * 1000:.0f}",
            f"{r.run.errors}",
            _target(r.ok),
        ]
        for r in results
    ]
    fulfilment = table(
        [
            "database",
            "offered orders/s",
            "fulfilled/s",
            "fulfilled / offered",
            "202 p50 / p99 ms",
            "mean service ms",
            "errors",
            f"target (>= {FULFILLED_TARGET}, 202 p99 <= {ACCEPT_P99_TARGET_MS:g} ms)",
        ],
        rows,
    )
    refusal_p99 = refusals.refusal_ms[1] if refusals.refusal_ms else float("inf")
    refusing = table(
        [
            "capacity / D",
            "offered orders/s",
            "fulfilled/s (of Erlang-B)",
            "503 p50 / p99 ms (from due)",
            "503 p50 / p99 ms (from send)",
            f"target (p99 <= {REFUSAL_P99_TARGET_MS:g} ms)",
        ],
        [
            [
                f"{refusals.capacity} / {refusals.delay_s:g} s",
                f"{refusals.rate:.0f}",
                f"{refusals.fulfilled_rate:.1f} ({refusals.of_limit or 0:.3f})",
                _ms(refusals.refusal_ms),
                _ms(refusals.refusal_sent_ms),
                _target(refusal_p99 <= REFUSAL_P99_TARGET_MS),
            ]
        ],
    )
    return (
        f"## Fulfilment: capacity {config.capacity}, {config.delay_s:g} s orders, "
        f"{config.rate:g} orders/s offered, {config.duration_s:g} s\n\n{fulfilment}\n\n"
        f"## Refusals while fulfilment runs: reject mode, {config.refusal_multiple:g}x\n\n"
        f"{refusing}\n"
    )
