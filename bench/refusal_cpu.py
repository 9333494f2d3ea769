"""Refusal CPU, in-process: `POST /orders` refused before its body, through the ASGI app.

    uv run python -m bench.refusal_cpu [--requests 20000] [--rounds 5] [--door] [--window]

No server, no sockets: reject mode, capacity 1, its one slot held for the whole run
(one order of a very long fulfilment), fair shares off, logs at warning; then every
request is refused before its body is read (`503`). After a round of warm-up, prints
the process's CPU microseconds per refusal for each round, and the least and the
median: the app's own share of a refusal (`bench overload`'s saturation run gives the
figure over HTTP). With `--door`, each refusal is asked of the door `retail serve`'s HTTP
protocol asks first (`RetailApp.refuse_at_door`), from the request's headers alone.
With `--window`, the slot is held by an order admitted and never claimed (no workers)
and fair shares are on: every request is read so that they see its customer, as in the
moments under load between an order's acceptance and its claim; with `--door` too, the
door asks for the body and refuses on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

from bench.ingest_cpu import _request


async def _run(requests: int, rounds: int, door: bool, window: bool) -> list[float]:
    from retail.web.app import create_app
    from retail.web.protocol import READ_BODY

    app = create_app()
    body = json.dumps({"customer_id": "bench", "items": [{"sku": "MUG-1", "quantity": 1}]})
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    per_refusal = []
    async with app.router.lifespan_context(app):
        assert await _request(app, "POST", "/orders", body.encode(), headers) == 202
        services = app.state.services
        for _ in range(200):  # the worker takes the slot: every refusal comes before the body
            if window or services.admission.dispatcher.running:
                break
            await asyncio.sleep(0.01)
        else:
            raise SystemExit("the order was never claimed")
        for _ in range(requests):  # warm-up, not measured
            await _request(app, "POST", "/orders", body.encode(), headers)
        for _ in range(rounds):
            started = time.process_time()
            if door and window:
                for _ in range(requests):
                    assert app.refuse_at_door(b"POST", b"/orders", headers) is READ_BODY
                    answer = app.refuse_at_door(b"POST", b"/orders", headers, body.encode())
                    assert isinstance(answer, tuple) and answer[0] == 503, answer
            elif door:
                for _ in range(requests):
                    answer = app.refuse_at_door(b"POST", b"/orders", headers)
                    assert isinstance(answer, tuple) and answer[0] == 503, answer
            else:
                for _ in range(requests):
                    status = await _request(app, "POST", "/orders", body.encode(), headers)
                    assert status == 503, status
            per_refusal.append((time.process_time() - started) / requests * 1e6)
    return per_refusal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="refusals per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--door", action="store_true", help="refused at the door (RetailApp.refuse_at_door)"
    )
    parser.add_argument(
        "--window",
        action="store_true",
        help="the slot held by an order not yet claimed, fair shares on: every request read",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="retail-refusal-cpu-")
    os.environ.update(
        {
            "RETAIL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/retail.db",
            "RETAIL_OVERLOAD_MODE": "reject",
            "RETAIL_CAPACITY": "1",
            "RETAIL_FULFILMENT_DELAY": "3600",
            "RETAIL_FAIR_SHARE": "true" if args.window else "false",
            "RETAIL_WORKERS_ENABLED": "false" if args.window else "true",
            "RETAIL_LOG_LEVEL": "warning",
            "RETAIL_SEED_DEMO_CATALOGUE": "true",
        }
    )
    sys.stderr = open(f"{workdir}/server.log", "w")  # noqa: SIM115 - for the whole run
    rounds = asyncio.run(_run(args.requests, args.rounds, args.door, args.window))
    print(
        "cpu_us_per_refusal="
        + " ".join(f"{r:.1f}" for r in rounds)
        + f" min={min(rounds):.1f} median={statistics.median(rounds):.1f}"
    )


if __name__ == "__main__":
    main()
