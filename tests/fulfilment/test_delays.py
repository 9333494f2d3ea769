"""Delay models and the step pipeline: parsing, means, seeding, degrade and line scaling."""

from __future__ import annotations

import random
import statistics

import pytest

from retail.config import Settings
from retail.core.delays import Exponential, Fixed, Lognormal, Uniform, parse_delay
from retail.core.pipeline import STEP_NAMES, Pipeline
from retail.core.types import ServiceLevel


@pytest.mark.parametrize(
    ("spec", "model"),
    [
        ("2", Fixed(2.0)),
        ("0", Fixed(0.0)),
        ("fixed:1.5", Fixed(1.5)),
        (" Uniform:1,3 ", Uniform(1.0, 3.0)),
        ("exponential:0.5", Exponential(0.5)),
        ("lognormal:2,0.25", Lognormal(2.0, 0.25)),
    ],
)
def test_specs_parse_and_print_back(spec: str, model: object) -> None:
    parsed = parse_delay(spec)
    assert parsed == model
    assert parse_delay(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("soon", "arguments must be numbers"),
        ("-1", "finite and >= 0"),
        ("fixed:nan", "finite and >= 0"),
        ("gamma:2", "unknown model 'gamma'"),
        ("uniform:1", "uniform takes 2 number(s)"),
        ("uniform:3,1", "low must not exceed high"),
        ("lognormal:1", "lognormal takes 2 number(s)"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="delay") as error:
        parse_delay(spec)
    assert message in str(error.value)


@pytest.mark.parametrize("spec", ["fixed:2", "uniform:1,3", "exponential:2", "lognormal:2,0.5"])
def test_samples_average_to_the_stated_mean(spec: str) -> None:
    model = parse_delay(spec)
    rng = random.Random(7)
    samples = [model.sample(rng) for _ in range(20_000)]
    assert model.mean_s == pytest.approx(2.0)
    assert statistics.fmean(samples) == pytest.approx(model.mean_s, rel=0.05)
    assert min(samples) >= 0


def pipeline(**settings: object) -> Pipeline:
    values = {"fulfilment_delay": "2", "fulfilment_seed": 42, **settings}
    return Settings(_env_file=None, **values).pipeline()  # type: ignore[call-arg]


def test_the_total_is_split_over_the_steps() -> None:
    plan = pipeline().plan(order_seq=1, line_count=1, level=ServiceLevel.FULL)
    assert [s.name for s in plan.steps] == list(STEP_NAMES)
    assert plan.total_s == pytest.approx(2.0)
    assert {s.name: s.delay_s for s in plan.steps}["payment"] == pytest.approx(0.3)
    assert plan.skipped == ()


def test_degraded_orders_skip_optional_steps_and_run_faster() -> None:
    full = pipeline()
    plan = full.plan(order_seq=1, line_count=1, level=ServiceLevel.DEGRADED)
    assert plan.skipped == ("fraud_check",)
    assert "fraud_check" not in [s.name for s in plan.steps]
    # 2 s without fraud_check's 20 %, at half speed.
    assert plan.total_s == pytest.approx(0.8)
    assert full.mean_s(ServiceLevel.DEGRADED) == pytest.approx(0.8)


def test_delays_grow_with_extra_lines() -> None:
    pipe = pipeline(delay_per_extra_line=0.5)
    assert pipe.plan(order_seq=1, line_count=3, level=ServiceLevel.FULL).total_s == pytest.approx(
        4.0
    )
    assert pipe.mean_s(ServiceLevel.FULL, line_count=3) == pytest.approx(4.0)


def test_a_seeded_plan_repeats_so_a_resumed_order_gets_the_same_one() -> None:
    spec = {"fulfilment_delay": "exponential:1", "payment_decline_probability": 0.5}
    first, again = pipeline(**spec), pipeline(**spec)
    plans = [first.plan(order_seq=n, line_count=1, level=ServiceLevel.FULL) for n in range(50)]
    assert plans == [
        again.plan(order_seq=n, line_count=1, level=ServiceLevel.FULL) for n in range(50)
    ]
    # Different orders get different draws, and about half are declined.
    assert len({plan.total_s for plan in plans}) == 50
    assert 10 < sum(plan.payment_declined for plan in plans) < 40


def test_per_step_models_replace_their_share() -> None:
    pipe = pipeline(step_delays={"ship": "5"})
    plan = pipe.plan(order_seq=1, line_count=1, level=ServiceLevel.FULL)
    delays = {s.name: s.delay_s for s in plan.steps}
    assert delays["ship"] == 5
    assert delays["pick"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"step_delays": {"teleport": "1"}}, "unknown step"),
        ({"degrade_skip_steps": ["payment"]}, "cannot be skipped"),
    ],
)
def test_bad_pipeline_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipeline(**settings)
