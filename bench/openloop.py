"""A lean open-loop load generator for `POST /orders`, run as its own process.

    python -m bench.openloop http://127.0.0.1:8000 --rate 32 --duration 20 --seed 1 --out run.json

Every order's due time is fixed before the run (`retail.loadgen.schedule`, Poisson
arrivals); each is sent at its due time on an idle keep-alive connection (a new one
when none is idle), whatever earlier answers are doing. Latency is measured from the
due time, so a late send counts against the run, and also from the moment the
request was written. Plain asyncio streams and a minimal HTTP/1.1 client, in a
process of their own with the garbage collector paused: the client adds as little
of its own delay as it can, so the figures are the server's.

With `--mix critical=0.2,...` every order carries the priority `retail load` would
give it for the same seed (`retail.loadgen.mix`); `--schedule` takes a rate over time
as `retail load` does (e.g. `32@20,4@30`) instead of `--rate` and `--duration`.

The output is JSON: `started_epoch` (wall clock at due time 0) and one record per
order: `due_s`, `sent_s`, `answered_s` (seconds from the start), `status`, `location`,
`priority`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from retail.loadgen.mix import Mix
from retail.loadgen.schedule import Arrivals, Schedule, due_times, parse_schedule

MAX_CONNECTIONS = 512
IDLE_REUSE_S = 2.0


@dataclass
class Record:
    due_s: float
    sent_s: float | None = None
    answered_s: float | None = None
    status: int | None = None
    location: str | None = None
    error: str | None = None
    priority: str | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None


def request_bytes(host: str, sku: str, index: int, priority: str | None = None) -> bytes:
    extra = f',"priority":"{priority}"' if priority else ""
    body = (
        f'{{"customer_id":"openloop-{index % 1000}","items":[{{"sku":"{sku}","quantity":1}}]'
        f"{extra}}}"
    )
    data = body.encode()
    head = (
        f"POST /orders HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


class Connections:
    """Keep-alive connections; one idle longer than the server keeps it (uvicorn: 5 s)
    is closed rather than reused, so no request races the server closing it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < IDLE_REUSE_S and not reader.at_eof():
                return reader, writer
            self.drop(writer)
        if self.opened >= MAX_CONNECTIONS:
            raise RuntimeError(f"more than {MAX_CONNECTIONS} requests outstanding")
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    def put(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle.append((reader, writer, time.monotonic()))

    def drop(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self.opened -= 1

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


async def run(
    url: str,
    *,
    rate: float,
    duration_s: float,
    seed: int,
    sku: str,
    mix: Mix | None = None,
    schedule: Schedule | None = None,
) -> tuple[float, list[Record]]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("the benchmarks only ever load 127.0.0.1")
    host, port = parts.hostname, parts.port or 80
    plan = schedule or Schedule.constant(rate, duration_s)
    dues = due_times(plan, Arrivals.POISSON, seed=seed)
    priorities = mix.assign(len(dues), seed) if mix else [None] * len(dues)
    records = [
        Record(due, priority=priority) for due, priority in zip(dues, priorities, strict=True)
    ]
    connections = Connections(host, port)

    async def send(index: int, start: float) -> None:
        record = records[index]
        writer = None
        try:
            reader, writer = await connections.get()
            record.sent_s = time.perf_counter() - start
            writer.write(request_bytes(parts.netloc, sku, index, record.priority))
            status, headers = await read_response(reader)
            record.answered_s = time.perf_counter() - start
            record.status, record.location = status, headers.get("location")
            record.retry_after = headers.get("retry-after")
            record.retry_after_ms = headers.get("retry-after-ms")
            if headers.get("connection", "").lower() == "close":
                connections.drop(writer)
            else:
                connections.put(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            record.error = type(error).__name__
            record.answered_s = time.perf_counter() - start
            if writer is not None:
                connections.drop(writer)

    tasks = set()
    start = time.perf_counter()
    started_epoch = time.time()
    for index, due in enumerate(dues):
        delay = start + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(index, start))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while tasks:
                await asyncio.wait(set(tasks))
    connections.close()
    return started_epoch, records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=0.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds")
    parser.add_argument("--schedule", help="rate over time instead (RATE@SECONDS,...)")
    parser.add_argument("--mix", help="priorities, e.g. critical=0.2,standard=0.5,sheddable=0.3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sku", default="MUG-1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        from uvloop import run as run_loop
    except ImportError:  # pragma: no cover
        run_loop = asyncio.run
    gc.collect()
    gc.disable()  # a run holds a few thousand small records at most
    started_epoch, records = run_loop(
        run(
            args.url,
            rate=args.rate,
            duration_s=args.duration,
            seed=args.seed,
            sku=args.sku,
            mix=Mix.parse(args.mix) if args.mix else None,
            schedule=parse_schedule(args.schedule) if args.schedule else None,
        )
    )
    gc.enable()
    args.out.write_text(
        json.dumps({"started_epoch": started_epoch, "orders": [asdict(r) for r in records]})
    )


if __name__ == "__main__":
    main()
