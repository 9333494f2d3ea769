"""Percentiles from the log-bucketed histogram, against samples with known answers."""

from __future__ import annotations

import math
import random

import pytest

from retail.loadgen.histogram import LatencyHistogram


def test_uniform_one_to_a_thousand_ms() -> None:
    histogram = LatencyHistogram.from_values([ms / 1000 for ms in range(1, 1001)])
    summary = histogram.summary()
    assert summary.count == 1000
    assert summary.p50_s == pytest.approx(0.500, rel=0.002)
    assert summary.p90_s == pytest.approx(0.900, rel=0.002)
    assert summary.p99_s == pytest.approx(0.990, rel=0.002)
    assert summary.p99_9_s == pytest.approx(0.999, rel=0.002)
    assert summary.min_s == 0.001 and summary.max_s == 1.0
    assert summary.mean_s == pytest.approx(0.5005)


def test_every_value_is_reported_within_the_histogram_precision() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-3, 2) for _ in range(5000))  # µs to minutes
    histogram = LatencyHistogram.from_values(values)
    for percent in (1, 10, 50, 75, 90, 99, 99.9, 100):
        exact = values[max(1, math.ceil(round(len(values) * percent / 100, 6))) - 1]
        reported = histogram.percentile(percent)
        assert reported == pytest.approx(exact, rel=0.001, abs=1e-6), percent


def test_buckets_tile_the_range_without_gaps() -> None:
    histogram = LatencyHistogram(bits=4)
    previous_end = 0
    for value in range(0, 5000):
        low, width = histogram.bounds(histogram.index(value))
        assert low <= value < low + width
        assert width <= max(1, low >> 3)  # at most 1/2**(bits-1) of its values
    for index in range(histogram.index(4999) + 1):
        low, width = histogram.bounds(index)
        assert low == previous_end
        previous_end = low + width


def test_merge_adds_counts_and_extremes() -> None:
    low = LatencyHistogram.from_values([0.001, 0.002])
    high = LatencyHistogram.from_values([1.0, 2.0])
    low.merge(high)
    assert low.count == 4
    assert low.summary().min_s == 0.001 and low.summary().max_s == 2.0
    assert low.percentile(50) == pytest.approx(0.002, rel=0.001)


def test_an_empty_histogram_reports_nothing() -> None:
    summary = LatencyHistogram().summary()
    assert summary.count == 0
    assert summary.p99_s is None and summary.max_s is None and summary.mean_s is None
    assert LatencyHistogram().to_json()["buckets"] == []


def test_json_buckets_add_up() -> None:
    values = [0.0005 * k for k in range(1, 300)]
    data = LatencyHistogram.from_values(values).to_json()
    assert data["unit"] == "us"
    assert sum(n for _, _, n in data["buckets"]) == len(values) == data["count"]
    assert data["min_us"] == 500 and data["max_us"] == 149_500
