"""Billing rows: the org's Stripe account state, the meter-event outbox, received webhooks.

``BillingAccount`` is one row per org, created on first need (``accounts.account_for``); it
holds the Stripe customer/subscription, the dunning state and the monthly budget.
``MeterEvent`` is the durable outbox: one row per ledger row (``identifier`` = the ledger row's
stable public id, unique), sent by the beat task, never from a request.
``WebhookEvent`` stores each Stripe event id once, so a replay is answered without effect.
"""

from __future__ import annotations

from django.db import models

from longtune.api.ids import PublicIdField
from longtune.events import OrgEvent
from longtune.tenancy.models import Organization
from longtune.tenancy.scoping import OrgOwnedModelMixin, OrgScopedManager


class BillingState(models.TextChoices):
    ACTIVE = "active"  # billable work allowed
    PAST_DUE = "past_due"  # a payment failed; still allowed until grace_until
    SUSPENDED = "suspended"  # grace over: new jobs and endpoint starts refused (402)


class BillingAccount(OrgOwnedModelMixin, models.Model):
    public_id = PublicIdField(prefix="bacct_")
    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing")
    stripe_customer_id = models.CharField(max_length=100, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True)
    subscription_status = models.CharField(max_length=40, blank=True)  # Stripe's own status
    subscription_price_id = models.CharField(max_length=100, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # ``created`` of the newest Stripe event applied to the subscription: an older event
    # delivered late never overwrites a newer state.
    subscription_event_created = models.BigIntegerField(default=0)
    invoice_event_created = models.BigIntegerField(default=0)  # the same, for invoice events
    state = models.CharField(
        max_length=20, choices=BillingState.choices, default=BillingState.ACTIVE
    )
    grace_until = models.DateTimeField(null=True, blank=True)
    monthly_budget_cents = models.PositiveBigIntegerField(null=True, blank=True)
    hard_cap = models.BooleanField(
        default=False, help_text="Refuse new billable work once the budget is spent."
    )
    credit_cents = models.PositiveBigIntegerField(default=0, help_text="Granted by staff.")
    budget_alert_period = models.CharField(max_length=7, blank=True)  # "2026-12"
    budget_alert_percent = models.PositiveSmallIntegerField(default=0)  # highest alert sent
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.org_id} {self.state} {self.stripe_customer_id or '-'}"


class MeterEvent(OrgOwnedModelMixin, models.Model):
    """One Stripe Billing Meter event waiting to be (or already) sent."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=40)  # a registered source name (sources.py)
    source_pk = models.BigIntegerField()  # the ledger row's pk, for the collector's anti-join
    identifier = models.CharField(max_length=100, unique=True)  # Stripe's dedupe key
    meter = models.CharField(max_length=40)  # prices.METERS
    value = models.PositiveBigIntegerField()
    timestamp = models.DateTimeField()  # when the usage happened (the ledger row's time)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Stripe accepted the event, then rejected it asynchronously (a meter error report).
    stripe_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "source_pk", "meter"], name="meter_event_once"
            )
        ]
        indexes = [models.Index(fields=["org", "meter", "timestamp"])]

    def __str__(self) -> str:
        return f"{self.identifier} {self.meter}={self.value}"


class WebhookEvent(models.Model):
    """A Stripe event received once (not org-owned: it arrives before we know the org)."""

    stripe_event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    created = models.BigIntegerField()  # the event's own ``created`` (seconds)
    org_public_id = models.CharField(max_length=40, blank=True)  # the org it applied to
    outcome = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.stripe_event_id} {self.type}"


class BillingEvent(OrgEvent):
    """An org-visible billing event: dunning transitions, budget alerts, plan changes."""

    public_id = PublicIdField(prefix="bevt_")
    kind = models.CharField(max_length=40)
