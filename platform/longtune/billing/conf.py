"""Billing knobs as one typed object, read from Django settings (``BILLING_*``, ``STRIPE_*``).

Billing is OFF unless a Stripe API key is set: the embedded default (and every test that does
not opt in) computes the ledger, costs and budgets but never talks to Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class BillingConf:
    stripe_api_key: str
    stripe_webhook_secret: str
    stripe_api_base: str  # "" = Stripe's own; tests point it at the fake server
    stripe_meter_events_base: str  # the v2 meter event stream host; "" = Stripe's own
    webhook_tolerance_seconds: int
    grace_period_seconds: int  # past_due -> suspended after this long without payment
    outbox_batch_size: int  # events per meter event stream request (Stripe allows 100)
    outbox_max_batches: int  # batches per beat tick
    outbox_lookback_days: int  # how far back the collector looks for unmetered ledger rows
    outbox_backoff_base_seconds: float
    outbox_backoff_max_seconds: float
    outbox_interval_seconds: float  # beat period of the send task
    dunning_interval_seconds: float
    price_ids: dict[str, str]  # price key (prices.PRICE_KEYS) -> Stripe price id
    meter_event_names: dict[str, str]  # meter key -> Stripe meter event_name
    checkout_success_url: str
    checkout_cancel_url: str
    portal_return_url: str
    public_url: str  # the dashboard's base URL, for links in emails

    @property
    def enabled(self) -> bool:
        return bool(self.stripe_api_key)


def billing_conf() -> BillingConf:
    return BillingConf(
        stripe_api_key=settings.STRIPE_API_KEY,
        stripe_webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        stripe_api_base=settings.STRIPE_API_BASE,
        stripe_meter_events_base=settings.STRIPE_METER_EVENTS_BASE,
        webhook_tolerance_seconds=int(settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS),
        grace_period_seconds=int(settings.BILLING_GRACE_PERIOD_SECONDS),
        outbox_batch_size=int(settings.BILLING_OUTBOX_BATCH_SIZE),
        outbox_max_batches=int(settings.BILLING_OUTBOX_MAX_BATCHES),
        outbox_lookback_days=int(settings.BILLING_OUTBOX_LOOKBACK_DAYS),
        outbox_backoff_base_seconds=float(settings.BILLING_OUTBOX_BACKOFF_BASE_SECONDS),
        outbox_backoff_max_seconds=float(settings.BILLING_OUTBOX_BACKOFF_MAX_SECONDS),
        outbox_interval_seconds=float(settings.BILLING_OUTBOX_INTERVAL_SECONDS),
        dunning_interval_seconds=float(settings.BILLING_DUNNING_INTERVAL_SECONDS),
        price_ids=dict(settings.STRIPE_PRICE_IDS),
        meter_event_names=dict(settings.STRIPE_METER_EVENT_NAMES),
        checkout_success_url=settings.BILLING_CHECKOUT_SUCCESS_URL,
        checkout_cancel_url=settings.BILLING_CHECKOUT_CANCEL_URL,
        portal_return_url=settings.BILLING_PORTAL_RETURN_URL,
        public_url=settings.LONGTUNE_PUBLIC_URL,
    )
