"""The price table: what each plan costs per month and per unit of metered usage.

It is the product's own source of truth for cost, used with Stripe off (the embedded default
shows "cost so far" from it) and with Stripe on (the Stripe Prices behind ``STRIPE_PRICE_*``
are configured to the same numbers; Stripe invoices, this table estimates). Money is
``Decimal`` dollars: float cents drift when 100,000 small requests are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from longtune.tenancy.models import Plan
from longtune.tenancy.quotas import PLAN_QUOTAS, Quota

CENT = Decimal("0.01")

# What is metered, and the unit its rate is quoted per.
TRAINING_TOKENS = "training_tokens"
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
# Dedicated-instance time is metered in whole minutes (Stripe meter values are integers; a
# minute keeps a partial first or last hour exact enough) and priced per hour (60 minutes).
INSTANCE_MINUTES = "instance_minutes"
METERS: tuple[str, ...] = (TRAINING_TOKENS, PROMPT_TOKENS, COMPLETION_TOKENS, INSTANCE_MINUTES)
UNIT_SIZE: dict[str, int] = {
    TRAINING_TOKENS: 1_000_000,
    PROMPT_TOKENS: 1_000_000,
    COMPLETION_TOKENS: 1_000_000,
    INSTANCE_MINUTES: 60,
}
UNIT_LABEL: dict[str, str] = {
    TRAINING_TOKENS: "1M training tokens",
    PROMPT_TOKENS: "1M prompt tokens",
    COMPLETION_TOKENS: "1M completion tokens",
    INSTANCE_MINUTES: "dedicated-instance hour",
}
# Stripe price keys: one subscription price per paid plan plus one metered price per meter.
PRICE_KEYS: tuple[str, ...] = (Plan.PRO, Plan.ENTERPRISE, *METERS)


@dataclass(frozen=True)
class PlanPrice:
    plan: str
    monthly_fee: Decimal
    rates: dict[str, Decimal]  # meter -> dollars per UNIT_SIZE[meter]

    @property
    def quota(self) -> Quota:
        """The plan's quota defaults (tenancy.quotas): upgrading the plan raises them."""
        return PLAN_QUOTAS[self.plan]


PRICE_TABLE: dict[str, PlanPrice] = {
    Plan.FREE: PlanPrice(
        Plan.FREE,
        Decimal("0"),
        {
            TRAINING_TOKENS: Decimal("4.00"),
            PROMPT_TOKENS: Decimal("0.30"),
            COMPLETION_TOKENS: Decimal("0.90"),
            INSTANCE_MINUTES: Decimal("3.50"),
        },
    ),
    Plan.PRO: PlanPrice(
        Plan.PRO,
        Decimal("49.00"),
        {
            TRAINING_TOKENS: Decimal("3.00"),
            PROMPT_TOKENS: Decimal("0.20"),
            COMPLETION_TOKENS: Decimal("0.60"),
            INSTANCE_MINUTES: Decimal("2.90"),
        },
    ),
    Plan.ENTERPRISE: PlanPrice(
        Plan.ENTERPRISE,
        Decimal("999.00"),
        {
            TRAINING_TOKENS: Decimal("2.00"),
            PROMPT_TOKENS: Decimal("0.12"),
            COMPLETION_TOKENS: Decimal("0.40"),
            INSTANCE_MINUTES: Decimal("2.20"),
        },
    ),
}


def plan_price(plan: str) -> PlanPrice:
    return PRICE_TABLE.get(plan, PRICE_TABLE[Plan.FREE])


def usage_cost(plan: str, meter: str, quantity: int | Decimal) -> Decimal:
    """Unrounded dollars for ``quantity`` raw units (tokens, hours) of ``meter``."""
    rate = plan_price(plan).rates[meter]
    return rate * Decimal(quantity) / UNIT_SIZE[meter]


@dataclass(frozen=True)
class CostLine:
    meter: str
    quantity: int
    unit: str
    unit_price: Decimal
    amount: Decimal  # rounded to cents


@dataclass(frozen=True)
class Cost:
    plan: str
    subscription: Decimal
    lines: tuple[CostLine, ...]

    @property
    def usage_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0"))

    @property
    def total(self) -> Decimal:
        return self.subscription + self.usage_total


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def period_cost(
    plan: str, usage: dict[str, int], amounts: dict[str, Decimal] | None = None
) -> Cost:
    """The bill for one period: the plan's fee plus each meter's usage, rounded per line (as
    Stripe rounds each invoice line). ``amounts`` are unrounded dollars of meters whose source
    prices its own rows (dedicated-instance minutes at each contract's hourly price): that
    line's amount is the source's, and its unit price the average rate actually charged."""
    price = plan_price(plan)
    lines = []
    for meter in METERS:
        quantity = int(usage.get(meter, 0))
        if amounts is not None and meter in amounts:
            raw = amounts[meter]
            unit_price = (
                round_cents(raw * UNIT_SIZE[meter] / quantity) if quantity else price.rates[meter]
            )
        else:
            raw, unit_price = usage_cost(plan, meter, quantity), price.rates[meter]
        lines.append(
            CostLine(
                meter=meter,
                quantity=quantity,
                unit=UNIT_LABEL[meter],
                unit_price=unit_price,
                amount=round_cents(raw),
            )
        )
    return Cost(plan=plan, subscription=price.monthly_fee, lines=tuple(lines))


def training_cost_estimate(plan: str, tokens: int) -> str:
    """A job's price before it runs: ``estimated_tokens`` at the plan's training rate, as a
    dollar string ("1.23", exact, like every amount in the API)."""
    return f"{round_cents(usage_cost(plan, TRAINING_TOKENS, int(tokens or 0))):.2f}"
