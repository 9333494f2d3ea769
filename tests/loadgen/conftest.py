"""The app under uvicorn on a free 127.0.0.1 port, for `retail load` to run against."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from retail.web.app import create_app
from tests.conftest import make_settings
from tests.serving import serve_in_thread

Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """`with serve(capacity=1) as url:` the app with these settings on a fresh SQLite file."""

    def start(**settings: object) -> AbstractContextManager[str]:
        url = f"sqlite+aiosqlite:///{tmp_path / 'retail.db'}"
        return serve_in_thread(create_app(make_settings(url, **settings)))

    return start
