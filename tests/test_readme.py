"""The README's configuration table stays true to the settings."""

from __future__ import annotations

import re
from pathlib import Path

from retail.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
NOT_SETTINGS = {"RETAIL_TEST_POSTGRES_URL"}


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = set(re.findall(r"^\| `(RETAIL_[A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    expected = {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    assert rows == expected


def test_every_variable_the_readme_mentions_exists() -> None:
    mentioned = set(re.findall(r"\bRETAIL_[A-Z0-9_]+\b", README)) - NOT_SETTINGS
    known = {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    assert mentioned <= known, mentioned - known
