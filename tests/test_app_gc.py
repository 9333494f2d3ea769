"""The running app keeps its long-lived objects out of the collector's full passes, and
its threads' waits for the GIL short.

A full (generation 2) collection walks every tracked object; with the app, its
database engines and its routes built, that stops the event loop for tens of
milliseconds, and every request then in flight waits. The lifespan freezes what is
built at start-up (`gc.freeze`), so full passes walk only what came after, and
unfreezes it at shutdown so a process that starts many apps (a test run) still
collects them.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from retail.web.app import GIL_SWITCH_INTERVAL_S, create_app
from tests.conftest import make_settings


async def test_startup_objects_are_frozen_while_the_app_runs(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_threads_get_the_gil_back_quickly_while_the_app_runs(tmp_path: Path) -> None:
    # The SQLite writer thread waits up to one switch interval for the GIL after each
    # statement while the event loop is busy: the app shortens it, and puts it back.
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"))
    before = sys.getswitchinterval()
    async with app.router.lifespan_context(app):
        assert sys.getswitchinterval() == min(before, GIL_SWITCH_INTERVAL_S) <= 0.001
    assert sys.getswitchinterval() == before
