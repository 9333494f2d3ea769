"""The no-database floor: `POST /orders` with the same request model, answered 202.

Everything `retail` does before it touches the database for an order, and nothing
after: FastAPI parses and validates the body into `OrderCreate` (strict types, SKU
pattern, line limits), the service's own checks run (line count, quantity per line,
one line per SKU; `retail.core.orders.validate_items` with the default settings),
and the answer is `202` with a small JSON body; errors are the same RFC 9457
problems. No lifespan, no database, no middleware. Serve it with one uvicorn worker:

    uv run uvicorn bench.baseline:app --host 127.0.0.1 --port 8001 --no-access-log
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from retail.config import Settings
from retail.core.orders import validate_items
from retail.web import problems
from retail.web.schemas import OrderCreate


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(_env_file=None)  # type: ignore[call-arg]
    app = FastAPI(title="retail baseline")
    problems.install(app)

    @app.post("/orders", status_code=202)
    async def place_order(order_in: OrderCreate) -> dict[str, Any]:
        items = validate_items(
            [(item.sku, item.quantity) for item in order_in.items],
            max_lines=settings.max_order_lines,
            max_quantity=settings.max_line_quantity,
        )
        return {"status": "accepted", "customer_id": order_in.customer_id, "lines": len(items)}

    return app


app = create_app()
