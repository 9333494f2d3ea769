"""The dashboard at `/`: one HTML page with plain JavaScript, served from package files.

It reads `/ws` for capacity snapshots and order transitions, seeds its order list
from `GET /orders`, switches the mode with `PUT /admin/capacity` and fires bursts of
`POST /orders`: everything it shows or does goes through the public API.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_PACKAGE = ("retail", "static")

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    page = resources.files("retail").joinpath("static", "index.html").read_text("utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[STATIC_PACKAGE]), name="static")
