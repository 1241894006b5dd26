"""The shapes of /v1/billing responses and requests (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from longtune.api.fields import ObjectTypeField, UnixTimestampField, public_id_field
from longtune.billing import prices
from longtune.billing.models import BillingAccount, BillingEvent, BillingState
from longtune.billing.usage import PeriodSummary
from longtune.tenancy.models import Plan


class CostLineSerializer(serializers.Serializer):
    meter = serializers.ChoiceField(choices=prices.METERS)
    quantity = serializers.IntegerField(
        help_text="Raw units: tokens, or minutes of dedicated-instance time (instance_minutes)."
    )
    unit = serializers.CharField(help_text="What unit_price is quoted per.")
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    subscription_fee = serializers.DecimalField(max_digits=12, decimal_places=2)
    usage = CostLineSerializer(many=True)
    usage_cost = serializers.DecimalField(max_digits=14, decimal_places=2)
    credit = serializers.DecimalField(max_digits=14, decimal_places=2)
    cost_so_far = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="Fee + usage - credit, in USD."
    )


class BudgetSerializer(serializers.Serializer):
    monthly_budget = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    hard_cap = serializers.BooleanField()
    used_percent = serializers.IntegerField(allow_null=True)


class BillingSerializer(serializers.Serializer):
    object = ObjectTypeField("billing")
    enabled = serializers.BooleanField(help_text="False: Stripe is off; costs are computed only.")
    plan = serializers.ChoiceField(choices=Plan.choices)
    state = serializers.ChoiceField(choices=BillingState.choices)
    grace_until = serializers.DateTimeField(allow_null=True)
    subscription_status = serializers.CharField(allow_null=True)
    current_period = PeriodSerializer()
    budget = BudgetSerializer()

    @staticmethod
    def payload(
        *, enabled: bool, plan: str, account: BillingAccount, summary: PeriodSummary
    ) -> dict[str, Any]:
        return {
            "enabled": enabled,
            "plan": plan,
            "state": account.state,
            "grace_until": account.grace_until,
            "subscription_status": account.subscription_status or None,
            "current_period": {
                "start": summary.start,
                "end": summary.end,
                "subscription_fee": summary.cost.subscription,
                "usage": [line.__dict__ for line in summary.cost.lines],
                "usage_cost": summary.cost.usage_total,
                "credit": summary.credit,
                "cost_so_far": summary.amount_due,
            },
            "budget": {
                "monthly_budget": summary.budget,
                "hard_cap": account.hard_cap,
                "used_percent": summary.budget_used_percent,
            },
        }


# The plans Checkout sells (the OpenAPI enum "PaidPlanEnum", settings.ENUM_NAME_OVERRIDES).
PAID_PLAN_CHOICES = [(Plan.PRO, "Pro"), (Plan.ENTERPRISE, "Enterprise")]


class CheckoutRequestSerializer(serializers.Serializer):
    plan = serializers.ChoiceField(choices=PAID_PLAN_CHOICES)


class RedirectSerializer(serializers.Serializer):
    url = serializers.URLField()


class InvoiceSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.CharField(allow_null=True)
    currency = serializers.CharField()
    amount_due = serializers.IntegerField(help_text="In the currency's smallest unit.")
    amount_paid = serializers.IntegerField()
    created = serializers.IntegerField(help_text="Unix seconds.")
    hosted_invoice_url = serializers.URLField(allow_null=True)


class InvoiceListSerializer(serializers.Serializer):
    object = ObjectTypeField("list")
    data = InvoiceSerializer(many=True)


class WebhookReceivedSerializer(serializers.Serializer):
    received = serializers.BooleanField()
    duplicate = serializers.BooleanField()


class BillingEventSerializer(serializers.ModelSerializer):
    """A billing event of the org: dunning transitions, budget alerts, plan and subscription
    changes (newest first)."""

    object = ObjectTypeField("billing.event")
    id = public_id_field()
    created_at = UnixTimestampField()

    class Meta:
        model = BillingEvent
        fields = ["object", "id", "kind", "level", "message", "data", "created_at"]


class BudgetUpdateSerializer(serializers.Serializer):
    """PATCH /v1/billing: the org's monthly budget (USD, null = none) and its hard cap."""

    monthly_budget = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, allow_null=True, required=False
    )
    hard_cap = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = (
            set(self.initial_data) - set(self.fields)
            if isinstance(self.initial_data, dict)
            else set()
        )
        if unknown:
            raise serializers.ValidationError({sorted(unknown)[0]: "Unknown parameter."})
        if not attrs:
            raise serializers.ValidationError("Give monthly_budget and/or hard_cap.")
        return attrs
