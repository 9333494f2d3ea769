"""The running app keeps its long-lived objects out of the collector's full passes.

A full (generation 2) collection walks every tracked object; with the app, its
database engines and its routes built, that stops the event loop for tens of
milliseconds, and every request then in flight waits. The lifespan freezes what is
built at start-up (`gc.freeze`), so full passes walk only what came after, and
unfreezes it at shutdown so a process that starts many apps (a test run) still
collects them.
"""

from __future__ import annotations

import gc
from pathlib import Path

from retail.web.app import create_app
from tests.conftest import make_settings


async def test_startup_objects_are_frozen_while_the_app_runs(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
