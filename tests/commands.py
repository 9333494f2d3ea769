"""`retail …` as a person types it: the command line run in this process, on a wide terminal."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner, Result

from retail.cli import app

WIDE = {"COLUMNS": "160"}


def retail(*words: str | Path, env: Mapping[str, str] | None = None) -> Result:
    """Run `retail` with `words`: a string is split as a shell splits it, a path is one word.

    `retail(f"load --url {url} --rate 20 --json", tmp_path / "run.json")`
    """
    args = [
        part
        for word in words
        for part in ([str(word)] if isinstance(word, Path) else shlex.split(word))
    ]
    return CliRunner().invoke(app, args, env={**WIDE, **(env or {})})
