"""Load runs made up for the report's tests: orders with the figures a test names."""

from __future__ import annotations

from retail.loadgen.runner import LoadConfig, LoadRun, OrderResult, ServiceInfo
from retail.loadgen.schedule import Schedule

T0 = 1_900_000_000.0  # server clock, epoch seconds


def order(index: int, *, spacing_s: float = 0.5, **fields: object) -> OrderResult:
    """Order `index`, due and sent every `spacing_s`, with `fields` set on its result."""
    result = OrderResult(
        index=index, due_s=index * spacing_s, sku="MUG-1", started_s=index * spacing_s
    )
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def load_run(
    orders: list[OrderResult],
    *,
    config: LoadConfig | None = None,
    run_id: str = "t",
    elapsed_s: float = 5.0,
    service: ServiceInfo | None = None,
) -> LoadRun:
    """A run started at T0 that sent `orders` (by default 10/s for 1 s)."""
    return LoadRun(
        url="http://127.0.0.1:8000/",
        config=config or LoadConfig(schedule=Schedule.constant(10, 1.0)),
        run_id=run_id,
        customer=f"load-{run_id}",
        started_epoch=T0,
        elapsed_s=elapsed_s,
        orders=orders,
        samples=[],
        service=service,
    )
