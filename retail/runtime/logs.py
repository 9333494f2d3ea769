"""Log lines: plain text or JSON, each tagged with the request it belongs to.

The HTTP middleware puts the request id in `request_id` (a context variable); every
line logged while that request is handled, and by tasks it starts, carries it. The
entry points (`retail serve`, `retail worker`, `retail.main`) call
`configure_logging`; the app itself never touches the logging configuration.

Lines are formatted and written by a thread of their own (`LogQueue`): the event loop
only makes the record and appends it to a deque, and the thread writes what has
gathered a few times a second, so a log line costs the request little and a slow
stderr (a pipe, a terminal) never blocks it. The lines logged per request and per
order are `Line` records (`log_line`), made without the caller lookup `Logger.info` does.

Structured fields go in `extra={"fields": {...}}`: JSON lines carry them as keys;
text lines carry what the message says, plus the request id.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from retail.config import LogFormat, LogLevel
from retail.core.events import OrderEvent
from retail.core.types import AutoLevel, OrderStatus

request_id: ContextVar[str | None] = ContextVar("retail_request_id", default=None)

transitions = logging.getLogger("retail.orders")
capacity_log = logging.getLogger("retail.capacity")

# Where each kind of event comes from: the lifecycle is fixed (see OrderStatus).
FROM_STATUS: dict[str, OrderStatus | None] = {
    "created": None,
    "started": OrderStatus.QUEUED,
    "cancelled": OrderStatus.QUEUED,
    "expired": OrderStatus.QUEUED,
}
# Step boundaries inside `processing`: logged at DEBUG; status changes at INFO.
STEP_KINDS = frozenset({"step_started", "step_completed"})


# Characters that could end or forge a line: C0 and C1 controls, DEL, Unicode line breaks.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
RATE_LIMIT_INTERVAL_S = 10.0


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape: one line stays one line."""
    if text.isprintable():  # no control character is printable: the common case, at once
        return text
    return CONTROL_CHARACTERS.sub(lambda m: ascii(m.group())[1:-1], text)


class RateLimit(logging.Filter):
    """At most one line per `cause` every `interval_s`; the next one says how many were
    left out. Records without a `cause` attribute pass untouched."""

    def __init__(self, interval_s: float = RATE_LIMIT_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        cause = getattr(record, "cause", None)
        if not isinstance(cause, str):
            return True
        left_out = self.passes(cause, time.monotonic())
        if left_out is None:
            return False
        if left_out:
            record.msg = f"{record.msg}{left_out_note(left_out)}"
        return True

    def passes(self, cause: str, now: float) -> int | None:
        """None if a line of `cause` is left out now; else how many were left out before it.

        For callers that decide before making the record (`now`: monotonic seconds).
        """
        last = self.last.get(cause)
        if last is not None and now - last < self.interval_s:
            self.suppressed[cause] = self.suppressed.get(cause, 0) + 1
            return None
        if len(self.last) > 1000:  # causes are a few fixed strings; never grow without bound
            self.last.clear()
        self.last[cause] = now
        return self.suppressed.pop(cause, 0)


def left_out_note(count: int) -> str:
    return f" (and {count} more like it, not logged)" if count else ""


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` attribute (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """One line per record (control characters in values escaped), a traceback below it.

    A `Line` without a traceback is written straight from its facts (`format_line`);
    every other record, through `logging.Formatter` (`format_record`). Both give the
    same text for the same record.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")  # one tuple: read and replaced at once

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # As the standard formatter writes it, the date and time made once per second.
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        return f"{cached[1]},{int(record.msecs):03d}"  # the default_msec_format

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if (
            record.__class__ is Line
            and self.__class__ is TextFormatter
            and not (record.exc_info or record.exc_text or record.stack_info)
        ):
            return self.format_line(record)
        return self.format_record(record)

    def format_line(self, record: logging.LogRecord) -> str:
        """The line of a record without traceback or stack, made directly."""
        message = escape_controls(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        return with_request_id(line, getattr(record, "request_id", None))

    def format_record(self, record: logging.LogRecord) -> str:
        """Any record, through `logging.Formatter`."""
        return with_request_id(super().format(record), getattr(record, "request_id", None))


def with_request_id(text: str, rid: object) -> str:
    """`text` with ` request_id=...` at the end of its first line (above a traceback)."""
    if rid is None:
        return text
    if "\n" not in text:
        return f"{text} request_id={rid}"
    first, newline, rest = text.partition("\n")
    return f"{first} request_id={rid}{newline}{rest}"


# `json.dumps(entry, default=str)` without making an encoder for every line.
JSON_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),  # json.dumps escapes every control character
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return JSON_ENCODER.encode(entry)


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format is LogFormat.JSON else TextFormatter()


def configure_logging(
    log_format: LogFormat,
    level: LogLevel = LogLevel.INFO,
    *,
    access_log: bool = True,
    logger: str = "",
) -> None:
    """Write log lines to stderr in `log_format`.

    `logger=""` (the root) takes every line, the server's and the libraries' too: for
    processes `retail` runs itself. `logger="retail"` takes only the service's lines and
    leaves the rest to a server that configured its own logging (`uvicorn retail.main:app`).
    Replaces only what an earlier call installed. `access_log=False` drops the request lines.
    """
    target = logging.getLogger(logger or None)
    for existing in list(target.handlers):
        if getattr(existing, "retail", False):
            target.removeHandler(existing)
            existing.close()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(formatter(log_format))
    handler = LogQueue(writer)
    handler.retail = True  # type: ignore[attr-defined]
    # Filters run in the thread that logs: the request id is its context variable.
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RateLimit())
    target.addHandler(handler)
    target.setLevel(level.value.upper())
    if logger:
        target.propagate = False  # the server's handlers would print it a second time
    logging.getLogger("retail.http").setLevel(logging.NOTSET if access_log else logging.WARNING)


# The log thread wakes at most this often while lines keep coming: it writes every line
# waiting then, in one write, so a busy service costs it a few wake-ups a second, not
# one per line.
GATHER_S = 0.05


class LogQueue(logging.Handler):
    """Hands records to a thread that formats and writes them with `writer`.

    The caller only appends the record to a deque (no lock, no wake-up unless the
    thread sleeps); the thread writes what has gathered every `GATHER_S`, in one
    write and one flush for a stream. `flush()` waits until every line handed on so
    far is written; `close()` (and the process's exit) writes what is left and stops
    the thread.
    """

    def __init__(self, writer: logging.Handler) -> None:
        super().__init__()
        self._plain_filters: list[Any] | None = []  # filters a `Line` passes untouched
        self._writer = writer
        self._lines: deque[logging.LogRecord | threading.Event] = deque()
        self._wake = threading.Event()  # lines are waiting
        self._hurry = threading.Event()  # someone waits for them: write at once
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="retail-log-writer", daemon=True)
        self._thread.start()
        self._pid = os.getpid()  # a forked child has the deque but not the thread
        atexit.register(self.close)

    def handle(self, record: logging.LogRecord) -> bool:
        # As Handler.handle, without its lock: appending to a deque needs none.
        # The filters installed by `configure_logging` pass a `Line` untouched when it
        # has no `cause` (`RateLimit`): it always has a request id (`RequestIdFilter`).
        # Other records, and every record once other filters are added, go through them.
        filters = self.filters
        if (
            filters
            and not (
                record.__class__ is Line
                and "cause" not in record.__dict__
                and filters == self._plain_filters
            )
            and not self.filter(record)
        ):
            return False
        self.emit(record)
        return True

    def addFilter(self, filter: Any) -> None:
        super().addFilter(filter)
        self._note_filters()

    def removeFilter(self, filter: Any) -> None:
        super().removeFilter(filter)
        self._note_filters()

    def _note_filters(self) -> None:
        plain = all(type(f) in (RequestIdFilter, RateLimit) for f in self.filters)
        self._plain_filters = list(self.filters) if plain else None

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(record)
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                self._hurry.wait(GATHER_S)  # let lines gather, unless someone waits
            self._hurry.clear()
            self._wake.clear()  # a line appended from here on wakes the next round
            self._drain()
            if self._closing and not self._lines:
                return

    def _drain(self) -> None:
        lines = self._lines
        writer = self._writer
        stream = writer.stream if isinstance(writer, logging.StreamHandler) else None
        terminator = getattr(writer, "terminator", "\n")
        format_record = writer.format
        if type(writer).format is logging.Handler.format and writer.formatter is not None:
            format_record = writer.formatter.format  # what Handler.format calls, at once
        out: list[str] = []
        while lines:
            item = lines.popleft()
            if isinstance(item, threading.Event):  # flush(): everything before it is written
                self._write(stream, out)
                out = []
                item.set()
            elif stream is None:
                writer.handle(item)
            else:
                try:
                    out.append(format_record(item) + terminator)
                except Exception:
                    writer.handleError(item)
        self._write(stream, out)

    def _write(self, stream: Any, out: list[str]) -> None:
        if not out:
            return
        try:
            stream.write("".join(out))
            stream.flush()
        except Exception:
            # As StreamHandler reports a failed write (to stderr, once per failure).
            if logging.raiseExceptions and sys.stderr:
                print(f"--- Logging error: {len(out)} lines not written", file=sys.stderr)

    def flush(self) -> None:
        if self._closing or os.getpid() != self._pid or not self._thread.is_alive():
            return
        written = threading.Event()
        self._lines.append(written)
        self._hurry.set()
        self._wake.set()
        written.wait()

    def close(self) -> None:
        if not self._closing and os.getpid() == self._pid:
            self._closing = True
            self._hurry.set()
            self._wake.set()
            self._thread.join()  # writes what is waiting first
        atexit.unregister(self.close)
        super().close()


class Line(logging.LogRecord):
    """A record made without looking up its caller: the service's own lines.

    `logging.Logger.info` finds the calling frame and reads the thread and process
    names for every record; the formatters here use none of that, so a line logged
    once per request or order is made with the facts it needs set directly. It has
    every attribute a LogRecord has, so any handler can take it: what is the same for
    every line of a thread (its id and name, the process's) is copied from a template
    made once per thread (again when the thread is renamed, and in a forked child).
    """

    def __init__(
        self,
        name: str,
        level: int,
        msg: str,
        args: tuple[object, ...],
        request_id: str | None,
        fields: dict[str, object],
    ) -> None:
        created = time.time()
        per_thread = _per_thread
        try:
            template: dict[str, object] = per_thread.template
            if per_thread.thread.name is not template["threadName"]:
                template = _line_template()
        except AttributeError:
            template = _line_template()
        facts = template.copy()  # every key there already: no dict growth below
        facts["name"] = name
        facts["msg"] = msg
        facts["args"] = args
        facts["levelname"] = logging.getLevelName(level)
        facts["levelno"] = level
        facts["created"] = created
        facts["msecs"] = int((created - int(created)) * 1000) + 0.0
        facts["relativeCreated"] = (created - _LOGGING_STARTED) * 1000
        facts["request_id"] = request_id
        facts["fields"] = fields
        self.__dict__ = facts


_LINE_CONSTANTS: dict[str, object] = {
    "name": "",
    "msg": "",
    "args": (),
    "levelname": "",
    "levelno": 0,
    "pathname": __file__,
    "filename": os.path.basename(__file__),
    "module": "logs",
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": None,
    "created": 0.0,
    "msecs": 0.0,
    "relativeCreated": 0.0,
    "thread": None,
    "threadName": None,
    "processName": "MainProcess",
    "process": None,
    "taskName": None,
    "request_id": None,
    "fields": None,
}
_LOGGING_STARTED: float = logging._startTime  # type: ignore[attr-defined]
_per_thread = threading.local()


def _line_template() -> dict[str, object]:
    """The facts every `Line` of the calling thread starts from; kept for the thread."""
    thread = threading.current_thread()
    template = dict(_LINE_CONSTANTS)
    template["thread"] = threading.get_ident()
    template["threadName"] = thread.name
    template["process"] = os.getpid()
    processes = sys.modules.get("multiprocessing")
    if processes is not None:  # as LogRecord names it
        template["processName"] = processes.current_process().name
    _per_thread.thread = thread
    _per_thread.template = template
    return template


def _forget_line_templates() -> None:
    global _per_thread
    _per_thread = threading.local()  # a forked child: another process id (and name)


os.register_at_fork(after_in_child=_forget_line_templates)


def log_line(
    logger: logging.Logger,
    level: int,
    msg: str,
    *args: object,
    request_id: str | None,
    fields: dict[str, object],
) -> None:
    """`logger.log(level, msg, *args, extra=...)` for lines logged per request or order,
    at a fraction of the cost; the caller has checked `logger.isEnabledFor(level)`."""
    logger.handle(Line(logger.name, level, msg, args, request_id, fields))


def flush_logs() -> None:
    """Write every line handed to the log thread so far: before a signal ends the process
    (uvicorn raises the stop signal again once it has shut down, and a process ended by
    a signal runs no exit handlers)."""
    for name in (None, "retail"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()


def log_transition(notice: OrderEvent) -> None:
    """One line per order event: order id, from and to status, step."""
    kind = notice.kind
    level = logging.DEBUG if kind in STEP_KINDS else logging.INFO
    if not transitions.isEnabledFor(level):
        return
    source = FROM_STATUS.get(kind, OrderStatus.PROCESSING)
    from_status = source._value_ if source is not None else None  # `.value`, read directly
    to_status = notice.status._value_
    detail = notice.detail
    step_name = notice.step or (detail.get("step") if detail else None)  # a failure's step
    reason = detail.get("reason") if detail and kind == "failed" else None
    order_id = str(notice.order_id)
    fields: dict[str, object] = {
        "order_id": order_id,
        "event": kind,
        "from_status": from_status,
        "to_status": to_status,
        "step": step_name,
    }
    if reason:
        fields["reason"] = reason
    log_line(
        transitions,
        level,
        "order %s %s -> %s%s (%s)%s",
        order_id,
        from_status or "new",
        to_status,
        f" step={step_name}" if step_name else "",
        kind,
        f": {reason}" if reason else "",
        request_id=request_id.get(),
        fields=fields,
    )


def log_level_switch(before: AutoLevel, after: AutoLevel, wait_s: float) -> None:
    """One line each time `auto` mode changes level, with the predicted wait behind it."""
    capacity_log.info(
        "auto mode: %s -> %s (predicted wait %.2f s)",
        before.value,
        after.value,
        wait_s,
        extra={
            "request_id": request_id.get(),
            "fields": {
                "event": "auto_level",
                "from_level": before.value,
                "to_level": after.value,
                "predicted_wait_s": round(wait_s, 3),
            },
        },
    )
