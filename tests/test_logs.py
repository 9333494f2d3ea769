"""Log lines: one per request and one per order transition, tagged with the request id;
plain text by default, JSON lines with `RETAIL_LOG_FORMAT=json`."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from retail.config import LogFormat, LogLevel
from retail.runtime.logs import (
    JsonFormatter,
    Line,
    LogQueue,
    RateLimit,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    log_line,
)
from tests.conftest import Running, StartApp, eventually, order_status, place
from tests.serving import follow, server_in

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


async def fulfilled(running: Running, order_id: str) -> None:
    async def done() -> bool:
        return await order_status(running.client, order_id) == "fulfilled"

    await eventually(done)


async def test_each_request_gets_one_line_with_its_request_id(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await place(running.client, headers={"X-Request-ID": "checkout-42"})
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "checkout-42"
    order_id = response.json()["id"]
    lines = [r for r in records(caplog, "retail.http") if r.request_id == "checkout-42"]
    assert len(lines) == 1
    line = lines[0]
    assert line.getMessage().startswith("POST /orders 202 ")
    assert f"order_id={order_id}" in line.getMessage()
    fields: dict[str, Any] = line.fields
    assert fields["method"] == "POST" and fields["path"] == "/orders" and fields["status"] == 202
    assert fields["order_id"] == order_id and fields["duration_ms"] >= 0


async def test_order_transitions_are_logged_with_the_order_id(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await place(running.client, headers={"X-Request-ID": "checkout-43"})
    order_id = response.json()["id"]
    await fulfilled(running, order_id)
    mine = [r for r in records(caplog, "retail.orders") if r.fields["order_id"] == order_id]
    moves = [(r.fields["from_status"], r.fields["to_status"], r.fields["event"]) for r in mine]
    assert moves == [
        (None, "queued", "created"),
        ("queued", "processing", "started"),
        ("processing", "fulfilled", "fulfilled"),
    ]
    # The order was created by that request: its first line says so.
    assert mine[0].request_id == "checkout-43"
    assert mine[0].getMessage() == f"order {order_id} new -> queued (created)"
    assert mine[1].request_id is None  # the worker, not a request, started it


async def test_steps_are_logged_at_debug(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="retail.orders")
    order_id = (await place(running.client)).json()["id"]
    await fulfilled(running, order_id)
    steps = [
        (r.fields["event"], r.fields["step"])
        for r in records(caplog, "retail.orders")
        if r.fields["order_id"] == order_id and r.levelno == logging.DEBUG
    ]
    assert steps[:2] == [("step_started", "reserve"), ("step_completed", "reserve")]
    assert steps[-1] == ("step_completed", "ship")
    assert len(steps) == 12


async def test_a_failed_order_says_why(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = await start_app(payment_decline_probability=1.0)
    order_id = (await place(running.client)).json()["id"]

    async def failed() -> bool:
        return await order_status(running.client, order_id) == "failed"

    await eventually(failed)
    last = [r for r in records(caplog, "retail.orders") if r.fields["order_id"] == order_id][-1]
    assert last.getMessage() == (
        f"order {order_id} processing -> failed step=payment (failed): payment declined"
    )


@pytest.mark.parametrize(
    "given",
    ["", "has spaces", "x" * 129, 'quote"d', "ünïcode", "-leading-dash"],
    ids=["empty", "spaces", "too-long", "quote", "non-ascii", "leading-dash"],
)
async def test_an_unusable_request_id_is_replaced(
    running: Running, caplog: pytest.LogCaptureFixture, given: str
) -> None:
    caplog.set_level(logging.INFO)
    response = await running.client.get("/healthz", headers=[(b"X-Request-ID", given.encode())])
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert HEX_ID.match(generated)
    assert [r.request_id for r in records(caplog, "retail.http")] == [generated]


async def test_every_answer_carries_a_request_id(running: Running) -> None:
    answers = [
        await running.client.get("/healthz"),
        await running.client.get("/orders/not-a-uuid"),
        await running.client.get("/no/such/page"),
        await running.client.post("/orders", content=b"x" * 100_000),
    ]
    assert [a.status_code for a in answers] == [200, 422, 404, 413]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(HEX_ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def written(capsys: pytest.CaptureFixture[str]) -> str:
    """What was logged to stderr, once the log thread has written every line so far."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "retail", False):
            handler.flush()
    return capsys.readouterr().err


@pytest.fixture
def configured() -> Iterator[Callable[..., None]]:
    """`configure_logging` as the entry points call it; undone after the test."""
    root = logging.getLogger()
    level = root.level
    yield configure_logging
    for handler in list(root.handlers):
        if getattr(handler, "retail", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.getLogger("retail.http").setLevel(logging.NOTSET)


async def test_text_lines(
    running: Running, configured: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    configured(LogFormat.TEXT, LogLevel.INFO)
    response = await place(running.client, headers={"X-Request-ID": "text-1"})
    order_id = response.json()["id"]
    await fulfilled(running, order_id)
    lines = written(capsys).splitlines()
    request = [line for line in lines if " retail.http: POST /orders 202 " in line]
    assert len(request) == 1
    assert request[0].endswith(f"order_id={order_id} request_id=text-1")
    assert any(
        line.endswith(f"retail.orders: order {order_id} new -> queued (created) request_id=text-1")
        for line in lines
    )
    assert any(f"order {order_id} processing -> fulfilled (fulfilled)" in line for line in lines)


async def test_json_lines(
    running: Running, configured: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    configured(LogFormat.JSON, LogLevel.INFO)
    response = await place(running.client, headers={"X-Request-ID": "json-1"})
    order_id = response.json()["id"]
    await fulfilled(running, order_id)
    entries = [json.loads(line) for line in written(capsys).splitlines()]
    request = [e for e in entries if e["logger"] == "retail.http" and e["method"] == "POST"]
    assert len(request) == 1
    assert request[0]["request_id"] == "json-1"
    assert request[0]["order_id"] == order_id
    assert request[0]["status"] == 202 and request[0]["path"] == "/orders"
    assert request[0]["level"] == "info" and request[0]["time"].endswith("+00:00")
    moves = [
        (e["from_status"], e["to_status"])
        for e in entries
        if e["logger"] == "retail.orders" and e["order_id"] == order_id
    ]
    assert moves == [(None, "queued"), ("queued", "processing"), ("processing", "fulfilled")]


async def test_no_access_log_keeps_the_other_lines(
    running: Running, configured: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    configured(LogFormat.TEXT, LogLevel.INFO, access_log=False)
    order_id = (await place(running.client)).json()["id"]
    await fulfilled(running, order_id)
    err = written(capsys)
    assert "retail.http" not in err
    assert f"order {order_id} new -> queued (created)" in err


@pytest.mark.slow
def test_retail_serve_writes_json_lines(tmp_path: Path) -> None:
    with server_in(tmp_path, log_format="json", fulfilment_delay=0) as server:
        response = httpx.post(
            f"{server.url}/orders",
            json={"customer_id": "alice", "items": [{"sku": "MUG-1", "quantity": 1}]},
            headers={"X-Request-ID": "process-1"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        assert response.headers["x-request-id"] == "process-1"
        order_id = response.json()["id"]
        assert follow(server.url, response.headers["location"])["status"] == "fulfilled"
        code, _ = server.terminate()
    entries = [json.loads(line) for line in server.output().splitlines()]  # every line
    assert code in {0, -15}
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # the server's lines too
    request = [e for e in entries if e.get("request_id") == "process-1"]
    assert [(e["logger"], e.get("event")) for e in request] == [
        ("retail.orders", "created"),
        ("retail.http", None),
    ]
    assert request[1]["order_id"] == order_id
    assert {e.get("event") for e in entries if e.get("order_id") == order_id} >= {
        "created",
        "started",
        "fulfilled",
    }


def test_the_log_thread_writes_every_line_in_order() -> None:
    stream = io.StringIO()
    writer = logging.StreamHandler(stream)
    writer.setFormatter(logging.Formatter("%(name)s %(message)s %(request_id)s"))
    handler = LogQueue(writer)
    logger = logging.getLogger("retail.test-log-thread")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(500):
            log_line(logger, logging.INFO, "line %d", n, request_id=f"r{n}", fields={"n": n})
        handler.flush()  # waits for the lines, though the thread gathers them for a while
        assert stream.getvalue().splitlines() == [
            f"retail.test-log-thread line {n} r{n}" for n in range(500)
        ]
        log_line(logger, logging.INFO, "last", request_id=None, fields={})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()  # writes what is left
    assert stream.getvalue().splitlines()[-1] == "retail.test-log-thread last None"


def test_a_line_is_a_whole_log_record() -> None:
    """What `log_line` makes carries what `Logger.info` would give every handler."""
    line = Line("retail.http", logging.INFO, "%s %d", ("GET", 200), "rid-1", {"status": 200})
    made = logging.getLogger("retail.http").makeRecord(
        "retail.http", logging.INFO, __file__, 1, "%s %d", ("GET", 200), None
    )
    assert set(vars(made)) <= set(vars(line))
    assert line.getMessage() == "GET 200" and line.levelname == "INFO"
    assert line.request_id == "rid-1" and line.fields == {"status": 200}
    assert abs(line.created - made.created) < 60 and line.process == made.process
    text = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(process)d %(thread)d %(threadName)s "
        "%(processName)s %(filename)s %(lineno)d %(relativeCreated)d: %(message)s"
    ).format(line)
    assert text.endswith(": GET 200")


# --- the direct paths for `Line` records give what the general paths give --------------


def reference_json(record: logging.LogRecord) -> str:
    """A JSON line as `json.dumps` writes the entry (the general path, spelled out)."""
    entry: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    if getattr(record, "request_id", None) is not None:
        entry["request_id"] = record.request_id
    if isinstance(getattr(record, "fields", None), dict):
        entry.update(record.fields)
    if record.exc_info:
        entry["exception"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(entry, default=str)


def as_log_record(line: Line) -> logging.LogRecord:
    """The same facts in a record `Logger.makeRecord` makes."""
    record = logging.getLogger(line.name).makeRecord(
        line.name,
        line.levelno,
        __file__,
        1,
        line.msg,
        line.args,
        line.exc_info,
        extra={"request_id": line.request_id, "fields": line.fields},
    )
    record.created, record.msecs = line.created, line.msecs
    return record


LINES = [
    Line(
        "retail.http",
        logging.INFO,
        "%s %s %d %.1fms%s%s",
        ("POST", "/orders", 202, 1.25, " order_id=abc", ""),
        "rid-1",
        {
            "method": "POST",
            "path": "/orders",
            "status": 202,
            "duration_ms": 1.25,
            "order_id": "abc",
        },
    ),
    Line(
        "retail.orders",
        logging.INFO,
        "order %s %s -> %s%s (%s)%s",
        ("o-1", "new", "queued", "", "created", ""),
        None,
        {
            "order_id": "o-1",
            "event": "created",
            "from_status": None,
            "to_status": "queued",
            "step": None,
        },
    ),
    Line(
        "retail.http",
        logging.INFO,
        "%s %s %d",
        ("GET", "/x\n2026 INFO forged\r\x00\x1b[31m\x7f\x85\u2028\u2029 ünï ✓", 404),
        "rid-2",
        {"path": '/x\n\u2028"quoted"\\ ünï', "ok": True, "no": False, "big": 10**20, "tiny": -0.0},
    ),
    Line(
        "retail.http",
        logging.WARNING,
        "%s %s%s",
        ("GET", "/", " (and 3 more like it, not logged)"),
        "rid-3",
        {},
    ),
    Line("retail.odd\nname", 25, "no args %s", (), "rid-4", {"n": float("nan")}),
    Line(
        "retail.odd",
        logging.INFO,
        "fields",
        (),
        "rid-5",
        {"message": "a field named like a key", 3: "a key not a string", "l": [1, "x"]},
    ),
    Line("retail.odd", logging.INFO, "fields", (), None, {"request_id": "from the fields"}),
    Line("retail.odd", logging.INFO, "no fields", (), "rid-6", None),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("line", LINES, ids=range(len(LINES)))
def test_a_line_is_written_as_any_record_would_be(line: Line) -> None:
    text, as_json = TextFormatter(), JsonFormatter()
    record = as_log_record(line)
    assert text.format(line) == text.format_record(as_log_record(line)) == text.format(record)
    if "\n" not in line.name:  # one line stays one line, whatever the message holds
        assert "\n" not in text.format(line)
    assert as_json.format(line) == as_json.format(record) == reference_json(line)
    assert json.loads(as_json.format(line), parse_constant=str)["logger"] == line.name


def test_a_line_with_a_traceback_has_it_below() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        line = Line("retail.http", logging.ERROR, "failed %s", ("x",), "rid-7", {"a": 1})
        line.exc_info = sys.exc_info()
    text = TextFormatter().format(line)
    first, *rest = text.splitlines()
    assert first.endswith(" ERROR retail.http: failed x request_id=rid-7")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "thing"
    assert text == TextFormatter().format(as_log_record(line))
    as_json = JsonFormatter().format(line)
    assert as_json == reference_json(line) == JsonFormatter().format(as_log_record(line))
    assert json.loads(as_json)["exception"].endswith("ValueError: bad\nthing")


def test_lines_pass_the_filters_that_could_change_them() -> None:
    stream = io.StringIO()
    writer = logging.StreamHandler(stream)
    writer.setFormatter(TextFormatter())
    handler = LogQueue(writer)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RateLimit(interval_s=3600))
    logger = logging.getLogger("retail.test-line-filters")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(3):
            line = Line(logger.name, logging.INFO, "refused %d", (n,), "rid", {})
            line.cause = "refused"  # type: ignore[attr-defined]
            logger.handle(line)
        logger.handle(Line(logger.name, logging.INFO, "refused %d", (3,), "rid", {}))
        handler.addFilter(lambda record: not record.getMessage().endswith("4"))
        for n in (4, 5):
            logger.handle(Line(logger.name, logging.INFO, "plain %d", (n,), None, {}))
        handler.flush()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    messages = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert messages == ["refused 0 request_id=rid", "refused 3 request_id=rid", "plain 5"]


def test_a_line_names_the_thread_that_made_it() -> None:
    made: list[Line] = []

    def make() -> None:
        made.append(Line("retail.x", logging.INFO, "a", (), None, {}))
        threading.current_thread().name = "renamed"
        made.append(Line("retail.x", logging.INFO, "b", (), None, {}))

    thread = threading.Thread(target=make, name="maker")
    thread.start()
    thread.join()
    here = Line("retail.x", logging.INFO, "c", (), None, {})
    assert [(line.threadName, line.thread) for line in made] == [
        ("maker", thread.ident),
        ("renamed", thread.ident),
    ]
    assert (here.threadName, here.thread) == (
        threading.current_thread().name,
        threading.get_ident(),
    )
    assert made[0].__dict__ is not made[1].__dict__


def test_plain_lines_take_the_direct_path() -> None:
    for line in LINES[:4]:
        assert TextFormatter().format_line(line) == TextFormatter().format_record(line)
