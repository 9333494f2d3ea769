"""Locust users for `retail`: shoppers who place orders and follow them to the end.

    pip install locust
    locust -f examples/locustfile.py --host http://127.0.0.1:8000
    locust -f examples/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 20 --spawn-rate 5 --run-time 30s

Each `Shopper` runs one task a second (`constant_throughput`): three times in four it
places an order with its own `Idempotency-Key`, otherwise it polls one of its accepted
orders once that order's `Retry-After` has passed, until the order is fulfilled.
Locust reports answers by name:

- `POST /orders` succeeds on `201`/`202`; a `503` (shed by the capacity policy) is
  reported as a failure whose message names the overload mode's answer, so the
  failures tab shows how much load was refused;
- `GET /orders/[id]` follows placed orders; `order fulfilled` is a pseudo-request whose
  response time is the time from placing the order to its fulfilment;
- one `CapacityWatcher` reads `GET /capacity` once a second (in flight, queued).

Locust users are closed-loop: a user waits for each answer before its next request, so
when the service slows down the offered load drops with it. `retail load` keeps sending
at the scheduled rate and measures latency from each order's due time.
"""

from __future__ import annotations

import random
import time
import uuid

from locust import HttpUser, constant, constant_throughput, events, task

SKUS = ("MUG-1", "TEE-M")
TERMINAL = {"fulfilled", "failed", "cancelled"}


class Shopper(HttpUser):
    wait_time = constant_throughput(1)
    weight = 20

    def on_start(self) -> None:
        self.customer = f"locust-{uuid.uuid4().hex[:8]}"
        # order id -> (time placed, earliest time worth polling)
        self.pending: dict[str, tuple[float, float]] = {}

    @task(3)
    def place_order(self) -> None:
        body = {
            "customer_id": self.customer,
            "items": [{"sku": random.choice(SKUS), "quantity": 1}],
        }
        placed = time.monotonic()
        with self.client.post(
            "/orders",
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
            name="POST /orders",
            catch_response=True,
        ) as response:
            if response.status_code in (201, 202):
                order = response.json()
                if order["status"] not in TERMINAL:
                    retry = float(response.headers.get("Retry-After", "1"))
                    self.pending[order["id"]] = (placed, placed + retry)
                response.success()
            elif response.status_code == 503:
                problem = response.json()
                response.failure(f"503 shed ({problem.get('mode', 'over capacity')})")
            else:
                response.failure(f"{response.status_code} {response.text[:120]}")

    @task(1)
    def follow_an_order(self) -> None:
        now = time.monotonic()
        due = [order_id for order_id, (_, at) in self.pending.items() if at <= now]
        if not due:
            return
        order_id = due[0]
        placed, _ = self.pending[order_id]
        with self.client.get(
            f"/orders/{order_id}", name="GET /orders/[id]", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
                return
            order = response.json()
            response.success()
        if order["status"] in TERMINAL:
            del self.pending[order_id]
            events.request.fire(
                request_type="ORDER",
                name=f"order {order['status']}",
                response_time=(time.monotonic() - placed) * 1000,
                response_length=0,
                exception=None if order["status"] == "fulfilled" else Exception("not fulfilled"),
                context={},
            )
        else:
            retry = float(response.headers.get("Retry-After", "1"))
            self.pending[order_id] = (placed, time.monotonic() + retry)


class CapacityWatcher(HttpUser):
    wait_time = constant(1)
    fixed_count = 1

    @task
    def capacity(self) -> None:
        self.client.get("/capacity", name="GET /capacity")
