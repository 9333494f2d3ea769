"""`retail load --html FILE`: one self-contained HTML page with the run's figures.

The summary, the latency table, the thresholds and the charts (PNG, embedded as
`data:` URIs), so the file can be attached to a build or mailed as it is.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from retail.loadgen.report import Summary, accepted_text, describe_run, fulfilled_text, ms
from retail.loadgen.runner import LoadRun
from retail.loadgen.thresholds import ThresholdResult

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { padding: .25rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #2f9e44; } .failed { color: #e03131; font-weight: bold; }
.note { color: #b35c00; }
img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; }
"""


def _row(*cells: str, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _overview(summary: Summary) -> str:
    rows = [
        ("offered", f"{summary.orders} orders in {summary.duration_s:g} s"),
        ("accepted", accepted_text(summary)),
        ("refused", str(summary.refused)),
        ("errors", str(summary.errors)),
        ("late sends", str(summary.late_sends)),
    ]
    if summary.followed:
        rows.append(("fulfilled", fulfilled_text(summary)))
        goodput = f"{summary.goodput_per_s or 0.0:.2f}/s"
        if summary.limit_per_s is not None:
            goodput += f" (the service's limit: {summary.limit_per_s:.2f}/s)"
        rows.append(("goodput", goodput))
    body = "".join(_row(html.escape(k), html.escape(v)) for k, v in rows)
    note = (
        f'<p class="note">{html.escape(summary.goodput_note)}</p>' if summary.goodput_note else ""
    )
    return f"<table>{body}</table>{note}"


def _latencies(summary: Summary) -> str:
    rows = [("accepted (HTTP answer)", summary.latency_accepted)]
    rows.append(("refused (HTTP answer)", summary.latency_refused))
    if summary.followed:
        rows += [
            ("order → started", summary.start),
            ("order → fulfilled", summary.fulfilment),
            ("queue wait", summary.queue_wait),
        ]
    head = _row("ms, from the moment each order was due", "count", "p50", "p90", "p99", "max")
    head = head.replace("<td>", "<th>").replace("</td>", "</th>")
    body = "".join(
        _row(
            html.escape(name),
            str(p.count),
            ms(p.p50_s),
            ms(p.p90_s),
            ms(p.p99_s),
            ms(p.max_s),
        )
        for name, p in rows
    )
    return f"<table>{head}{body}</table>"


def _thresholds(results: Sequence[ThresholdResult]) -> str:
    if not results:
        return ""
    items = "".join(
        f'<li class="{"ok" if r.passed else "failed"}">{html.escape(r.describe())}</li>'
        for r in results
    )
    return f"<h2>Thresholds</h2><ul>{items}</ul>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem)
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def render_html(
    run: LoadRun,
    summary: Summary,
    results: Sequence[ThresholdResult],
    charts: Sequence[Path],
) -> str:
    title = f"retail load {run.url}"
    images = "".join(_image(path) for path in charts)
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(describe_run(run))}</p>"
        f"{_overview(summary)}"
        f"<h2>Latency</h2>{_latencies(summary)}"
        f"{_thresholds(results)}"
        f"<h2>Charts</h2>{images}"
        "</body></html>\n"
    )


def write_html(
    run: LoadRun,
    summary: Summary,
    results: Sequence[ThresholdResult],
    path: Path,
) -> Path:
    """The page at `path`, with the charts drawn into a temporary directory first."""
    import tempfile

    from retail.loadgen.plots import plot_run

    with tempfile.TemporaryDirectory(prefix="retail-load-html-") as directory:
        charts = plot_run(run, Path(directory))
        text = render_html(run, summary, results, charts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
