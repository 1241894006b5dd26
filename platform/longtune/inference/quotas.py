"""Usage numbers for the quotas the inference app consumes, registered with tenancy.quotas.

``max_endpoints`` is reserved atomically at creation/start (``reserve_quota``: the org row
lock orders concurrent creates). ``monthly_inference_tokens`` is checked by the gateway
before a request is proxied: a request is refused once the month's metered tokens reach the
limit (counted in Redis at metering time, ``token_meter``). It is a soft limit by design — the prompt is tokenized on the replica, so the request
that crosses the line is served in full (at most one request's tokens over).
"""

from __future__ import annotations

from longtune.inference import token_meter
from longtune.inference.models import ACTIVE_ENDPOINT_STATUSES, Endpoint
from longtune.tenancy.models import Organization
from longtune.tenancy.quotas import (
    QuotaExceeded,
    effective_quota,
    register_usage_provider,
)


def active_endpoint_count(org: Organization) -> int:
    return (
        Endpoint.objects.for_org(org)
        .live()
        .filter(status__in=ACTIVE_ENDPOINT_STATUSES, stop_requested=False)
        .count()
    )


def inference_tokens_this_month(org: Organization) -> int:
    """The ledger's figure (``GET /v1/organization``): the usage rows summed."""
    return token_meter.ledger_tokens(org)


def check_inference_tokens(org: Organization) -> None:
    """429 ``quota_exceeded`` (param ``monthly_inference_tokens``) once the month is used up.

    On the gateway's hot path: the month's usage is one Redis GET (inference/token_meter.py),
    not a sum over the month's rows."""
    limit = effective_quota(org).monthly_inference_tokens
    used = token_meter.used_this_month(org)
    if used >= limit:
        raise QuotaExceeded("monthly_inference_tokens", limit=limit, used=used, requested=1)


def register_usage_providers() -> None:
    register_usage_provider("max_endpoints", active_endpoint_count)
    register_usage_provider("monthly_inference_tokens", inference_tokens_this_month)
