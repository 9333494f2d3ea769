"""bench/fleet.py reads the notice delays from a scrape the way Prometheus would."""

from __future__ import annotations

from bench.fleet import _histogram_ms

SCRAPE = """# TYPE retail_fleet_notice_delay_seconds histogram
retail_fleet_notice_delay_seconds_bucket{le="0.001"} 10.0
retail_fleet_notice_delay_seconds_bucket{le="0.01"} 60.0
retail_fleet_notice_delay_seconds_bucket{le="0.05"} 99.0
retail_fleet_notice_delay_seconds_bucket{le="0.1"} 100.0
retail_fleet_notice_delay_seconds_bucket{le="+Inf"} 100.0
retail_fleet_notice_delay_seconds_count 100.0
"""


def test_the_bucket_that_holds_a_quantile_bounds_it() -> None:
    assert _histogram_ms(SCRAPE, 0.5) == (10.0, 100)
    assert _histogram_ms(SCRAPE, 0.99) == (50.0, 100)
    assert _histogram_ms(SCRAPE, 1.0) == (100.0, 100)


def test_no_notices_no_quantile() -> None:
    bound, count = _histogram_ms("", 0.5)
    assert count == 0
    assert bound != bound  # NaN
