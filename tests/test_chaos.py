"""The chaos script, with tiny bounds: a kill -9 cycle under load loses and repeats nothing."""

from __future__ import annotations

import pytest

from bench.chaos import run
from tests.conftest import postgres_url


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_chaos_smoke(database: str) -> None:
    base = None
    if database == "postgres":
        base = postgres_url()
        if base is None:
            pytest.skip("PostgreSQL tests need RETAIL_TEST_POSTGRES_URL")
    tally = run(postgres_url=base, cycles=1, cycle_s=1.0, clients=2, rate_hz=10, slow=2)
    assert tally.kills == 1
    assert tally.accepted > 0
    assert tally.stored >= tally.accepted
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.unfinished == 0
    if database == "postgres":
        assert tally.dropped_connections == 1
