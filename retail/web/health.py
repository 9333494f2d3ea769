"""Capacity snapshot, liveness and readiness.

Ready means this process can take orders: the database answers within
`ready_timeout_s` (and, on SQLite, the file it writes is still the one at its
path), the schema is at the code's head revision, and the worker pool runs. An
API-only process (`workers_enabled=false`) is ready without fulfilling orders
itself: it stores them for `retail worker` processes, and its pool still tracks
the load the capacity policy decides on.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request

from retail.runtime.services import Services
from retail.web.bounded import within
from retail.web.deps import ServicesDep
from retail.web.presenters import capacity_snapshot
from retail.web.problems import NOT_READY, problem, responses
from retail.web.schemas import CapacityRead

router = APIRouter()
log = logging.getLogger(__name__)
FILE_PATH = re.compile(r" /\S* ")  # a file path inside a message


@router.get("/capacity", tags=["capacity"], summary="Mode, limits, load and admission counters")
async def get_capacity(services: ServicesDep) -> CapacityRead:
    return capacity_snapshot(services)


@router.get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    summary="Ready to take orders: database reachable, schema at head, workers running",
    responses={503: {**responses(503)[503], "description": "Not ready; `detail` says why."}},
    response_model=None,
)
async def readyz(request: Request, services: ServicesDep) -> dict[str, str] | object:
    reasons = []
    timeout_s = services.settings.ready_timeout_s
    try:
        reasons.extend(
            await within(request.app, "readiness", lambda: database_problems(services), timeout_s)
        )
    except TimeoutError:
        reasons.append(f"database did not answer within {timeout_s:g} s")
    except Exception as error:
        # The driver's words (host, database name) go to the log, not to the prober.
        log.error(
            "not ready: database unreachable: %s: %s",
            type(error).__name__,
            error,
            extra={"cause": "readiness: database unreachable"},
        )
        reasons.append("database unreachable")
    if not services.pool.running:
        reasons.append("the worker pool is not running (stopping, or it crashed)")
    if reasons:
        return problem(NOT_READY, "; ".join(reasons), instance=None)
    fulfilment = "this process" if services.pool.claiming else "other processes (API only)"
    return {"status": "ready", "fulfilment": fulfilment}


async def database_problems(services: Services) -> list[str]:
    problems = await services.store.problems()
    for problem_ in problems:
        log.error("not ready: %s", problem_, extra={"cause": "readiness: database"})
    # The body says what is wrong; where (a file's path) stays in the log.
    return [FILE_PATH.sub(" ", problem_) for problem_ in problems]
