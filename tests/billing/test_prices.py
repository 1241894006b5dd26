"""The price table: plans follow the quota defaults; costs are exact Decimal dollars."""

from __future__ import annotations

from decimal import Decimal

from longtune.billing import prices
from longtune.tenancy.models import Plan
from longtune.tenancy.quotas import PLAN_QUOTAS


def test_every_plan_has_a_price_and_its_quota_defaults():
    assert set(prices.PRICE_TABLE) == set(Plan.values)
    for plan, price in prices.PRICE_TABLE.items():
        assert price.quota == PLAN_QUOTAS[plan]
        assert set(price.rates) == set(prices.METERS)
    assert (
        prices.PRICE_TABLE[Plan.PRO].quota.max_concurrent_jobs
        > PLAN_QUOTAS[Plan.FREE].max_concurrent_jobs
    )


def test_usage_cost_is_per_million_tokens_and_per_instance_hour_of_minutes():
    assert prices.usage_cost(Plan.PRO, prices.TRAINING_TOKENS, 1_000_000) == Decimal("3.00")
    assert prices.usage_cost(Plan.PRO, prices.TRAINING_TOKENS, 2_500_000) == Decimal("7.50")
    assert prices.usage_cost(Plan.PRO, prices.PROMPT_TOKENS, 500_000) == Decimal("0.10")
    assert prices.usage_cost(Plan.PRO, prices.INSTANCE_MINUTES, 180) == Decimal("8.70")  # 3 h
    assert prices.usage_cost(Plan.PRO, prices.INSTANCE_MINUTES, 30) == Decimal("1.45")


def test_period_cost_rounds_each_line_and_adds_the_fee():
    cost = prices.period_cost(
        Plan.PRO,
        {
            prices.TRAINING_TOKENS: 1_234_567,
            prices.PROMPT_TOKENS: 10,
            prices.COMPLETION_TOKENS: 2_000_000,
        },
    )
    lines = {line.meter: line for line in cost.lines}
    assert lines[prices.TRAINING_TOKENS].amount == Decimal("3.70")  # 3.703701 -> 3.70
    assert lines[prices.PROMPT_TOKENS].amount == Decimal("0.00")
    assert lines[prices.COMPLETION_TOKENS].amount == Decimal("1.20")
    assert lines[prices.INSTANCE_MINUTES].quantity == 0
    assert cost.usage_total == Decimal("4.90")
    assert cost.total == Decimal("53.90")


def test_many_small_requests_sum_exactly():
    """100,000 requests of 7 prompt tokens cost exactly 0.7M tokens' worth (no float drift)."""
    total = sum(prices.usage_cost(Plan.FREE, prices.PROMPT_TOKENS, 7) for _ in range(100_000))
    assert total == prices.usage_cost(Plan.FREE, prices.PROMPT_TOKENS, 700_000) == Decimal("0.21")


def test_an_unknown_plan_is_priced_as_free():
    assert prices.plan_price("legacy") is prices.PRICE_TABLE[Plan.FREE]
