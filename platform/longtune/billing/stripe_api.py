"""The one place a ``stripe.StripeClient`` is built (API key and base addresses from conf).

Tests point both base addresses (``api`` and ``meter_events``) at the fake Stripe server in
tests/fixtures; production leaves them empty (Stripe's own hosts).
"""

from __future__ import annotations

import stripe

from longtune.api.errors import ApiError
from longtune.billing.conf import billing_conf


class BillingDisabled(ApiError):
    def __init__(self) -> None:
        super().__init__(
            status=409,
            code="billing_disabled",
            message="Billing is not enabled on this installation (no Stripe API key is set).",
        )


def stripe_client() -> stripe.StripeClient:
    conf = billing_conf()
    if not conf.enabled:
        raise BillingDisabled()
    bases: dict[str, str] = {}
    if conf.stripe_api_base:
        bases["api"] = conf.stripe_api_base
    if conf.stripe_meter_events_base:
        bases["meter_events"] = conf.stripe_meter_events_base
    return stripe.StripeClient(
        conf.stripe_api_key, base_addresses=bases or None, max_network_retries=0
    )
