"""Paced reads: every interval while they are quick, spaced out once they are slow."""

from __future__ import annotations

import pytest

from retail.runtime.pacing import Paced


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("took_s", "next_after_s"),
    [
        (0.001, 0.5),  # a short queue: every poll interval
        (0.1, 5.0),  # 100 ms to count a deep queue: 2 % of 5 s
        (2.0, 10.0),  # however slow, at least every 10 s
    ],
)
def test_the_next_read_is_due_after_the_interval_or_its_share(
    took_s: float, next_after_s: float
) -> None:
    clock = Ticking()
    pace = Paced(clock, 0.5, share=0.02, max_interval_s=10.0)
    assert pace.due()
    with pace.running():
        clock.now += took_s
    clock.now = 100.0 + next_after_s - 0.01
    assert not pace.due()
    clock.now = 100.0 + next_after_s
    assert pace.due()


def test_a_failed_read_is_retried_after_the_interval() -> None:
    clock = Ticking()
    pace = Paced(clock, 0.5)
    with pytest.raises(OSError, match="database gone"), pace.running():
        raise OSError("database gone")
    assert not pace.due()
    clock.now += 0.5
    assert pace.due()
