"""The one place a ``stripe.StripeClient`` is built (API key and base addresses from conf).

Tests point both base addresses (``api`` and ``meter_events``) at the fake Stripe server in
tests/fixtures; production leaves them empty (Stripe's own hosts).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

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


logger = logging.getLogger("longtune.billing")
P = ParamSpec("P")
R = TypeVar("R")


class StripeUnavailable(ApiError):
    """Stripe could not do what a request needed (down, rate-limited, or it refused our call):
    the client's request was fine, so 502, never a 500; nothing was changed here."""

    def __init__(self) -> None:
        super().__init__(
            status=502,
            code="stripe_unavailable",
            message="Stripe could not be reached or refused the request; try again later.",
        )


def stripe_errors_as_502(func: Callable[P, R]) -> Callable[P, R]:
    """For the request path (checkout, portal, invoices): a ``stripe.StripeError`` becomes
    ``StripeUnavailable``, logged with Stripe's own message (which is not shown)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except stripe.StripeError as error:
            logger.warning("Stripe call %s failed: %s", func.__name__, error)
            raise StripeUnavailable() from error

    return wrapper


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
