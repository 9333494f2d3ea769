"""Place a few orders and follow each one to the end, printing its timeline.

    uv run python examples/place_orders.py --count 3 --customer alice

The client does what a well-behaved client of `retail` does:

- sends an `Idempotency-Key` with every order, so a retry never orders twice;
- on `503` (over capacity) waits `Retry-After` seconds and retries with the same key;
- polls each order's `Location`, waiting `Retry-After` seconds between polls;
- prints the order's events (`GET /orders/{id}/events`) once it has finished.

Exit status: 0 when every order was fulfilled, 1 otherwise, 2 when the service
cannot be reached (one line says so, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx

TERMINAL = {"fulfilled", "failed", "cancelled"}
MAX_ATTEMPTS = 5
MAX_WAIT_S = 600.0


def retry_after_s(response: httpx.Response, default_s: float = 1.0) -> float:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return default_s


def place_order(client: httpx.Client, customer: str, sku: str, quantity: int) -> str:
    """Place one order; the URL path of the stored order (its `Location`)."""
    body = {"customer_id": customer, "items": [{"sku": sku, "quantity": quantity}]}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    for _ in range(MAX_ATTEMPTS):
        response = client.post("/orders", json=body, headers=headers)
        if response.status_code == 503:
            wait = retry_after_s(response)
            print(f"  over capacity: {response.json()['detail']} Retrying in {wait:g} s.")
            time.sleep(wait)
            continue
        if response.status_code not in (201, 202):
            problem = response.json()
            sys.exit(f"order refused ({response.status_code}): {problem['detail']}")
        order = response.json()
        where = f", queue position {order['queue_position']}" if order["queue_position"] else ""
        print(
            f"placed {order['id']}: {response.status_code} {order['status']}, "
            f"{order['service_level']} service{where}"
        )
        location: str = response.headers["Location"]
        return location
    sys.exit(f"still over capacity after {MAX_ATTEMPTS} attempts; try again later")


def follow(client: httpx.Client, location: str) -> dict[str, Any]:
    """Poll the order until it is finished, as often as `Retry-After` suggests."""
    deadline = time.monotonic() + MAX_WAIT_S
    while True:
        response = client.get(location)
        response.raise_for_status()
        order: dict[str, Any] = response.json()
        if order["status"] in TERMINAL or time.monotonic() > deadline:
            return order
        time.sleep(retry_after_s(response))


def print_timeline(client: httpx.Client, order: dict[str, Any]) -> None:
    events = client.get(f"/orders/{order['id']}/events").json()
    start = datetime.fromisoformat(events[0]["at"])
    outcome = order["status"]
    if order["failure_reason"]:
        outcome += f" ({order['failure_reason']})"
    print(f"order {order['id']} for {order['customer_id']}: {outcome}")
    for event in events:
        offset = (datetime.fromisoformat(event["at"]) - start).total_seconds()
        step = f" {event['step']}" if event["step"] else ""
        print(f"  +{offset:7.3f}s  {event['kind']}{step}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--count", type=int, default=3, help="how many orders to place")
    parser.add_argument("--customer", default="example", help="customer_id of the orders")
    parser.add_argument("--sku", default="MUG-1", help="what to order")
    parser.add_argument("--quantity", type=int, default=1, help="units per order")
    args = parser.parse_args()

    with httpx.Client(base_url=args.url, timeout=30) as client:
        try:
            # Place them all first, so they are fulfilled (or queued) side by side.
            locations = [
                place_order(client, args.customer, args.sku, args.quantity)
                for _ in range(args.count)
            ]
            orders = [follow(client, location) for location in locations]
            for order in orders:
                print_timeline(client, order)
        except httpx.TransportError as error:
            print(
                f"cannot reach {args.url} ({type(error).__name__}): is `retail serve` running?",
                file=sys.stderr,
            )
            return 2
    fulfilled = sum(order["status"] == "fulfilled" for order in orders)
    print(f"{fulfilled} of {len(orders)} orders fulfilled")
    return 0 if fulfilled == len(orders) else 1


if __name__ == "__main__":
    sys.exit(main())
