"""Quotas: plan defaults in code, staff overrides in OrgQuota, and the reservation pattern.

``effective_quota(org)`` merges the two. Usage numbers come from the apps that own the
resources: each registers a usage provider at startup, e.g. in ``FinetuningConfig.ready()``::

    register_usage_provider("max_concurrent_jobs", lambda org: Job.objects.for_org(org).active().count())

Checking a quota and consuming it must be ONE atomic step, otherwise two concurrent requests
both see "1 slot left" and both take it. ``reserve_quota`` is that step::

    with reserve_quota(org) as reservation:           # BEGIN; SELECT ... FROM org FOR UPDATE
        running = Job.objects.for_org(org).active().count()
        reservation.check("max_concurrent_jobs", used=running, requested=1)  # 429 if over
        Job.objects.create(org=org, ...)               # the consumption, same transaction
                                                       # COMMIT releases the row lock

Every request reserving against the same org serializes on the org row lock
(``select_for_update``) until the transaction ends; other orgs are unaffected. On SQLite the
settings open transactions with BEGIN IMMEDIATE, which serializes writers the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

from django.db import transaction

from longtune.api.errors import ApiError
from longtune.tenancy.models import Organization, OrgQuota, Plan

GIB = 1024**3


@dataclass(frozen=True)
class Quota:
    max_concurrent_jobs: int
    monthly_training_tokens: int
    storage_bytes: int
    requests_per_minute: int
    max_endpoints: int  # endpoints pending/loading/ready at once
    monthly_inference_tokens: int  # prompt + completion tokens metered this calendar month

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


QUOTA_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Quota))

PLAN_QUOTAS: dict[str, Quota] = {
    Plan.FREE: Quota(
        max_concurrent_jobs=1,
        monthly_training_tokens=10_000_000,
        storage_bytes=5 * GIB,
        requests_per_minute=60,
        max_endpoints=2,
        monthly_inference_tokens=1_000_000,
    ),
    Plan.PRO: Quota(
        max_concurrent_jobs=4,
        monthly_training_tokens=1_000_000_000,
        storage_bytes=200 * GIB,
        requests_per_minute=600,
        max_endpoints=20,
        monthly_inference_tokens=500_000_000,
    ),
    Plan.ENTERPRISE: Quota(
        max_concurrent_jobs=32,
        monthly_training_tokens=50_000_000_000,
        storage_bytes=10 * 1024 * GIB,
        requests_per_minute=6000,
        max_endpoints=200,
        monthly_inference_tokens=50_000_000_000,
    ),
}


def _override_row(org: Organization) -> OrgQuota | None:
    try:
        return org.quota  # cached when the caller used select_related("quota")
    except OrgQuota.DoesNotExist:
        return None


def effective_quota(org: Organization) -> Quota:
    """The plan's defaults with any non-NULL staff override applied."""
    base = PLAN_QUOTAS.get(org.plan, PLAN_QUOTAS[Plan.FREE])
    override = _override_row(org)
    if override is None:
        return base
    values = {name: getattr(override, name) for name in QUOTA_NAMES}
    return Quota(**{name: base.as_dict()[name] if v is None else v for name, v in values.items()})


# --- usage -------------------------------------------------------------------------------------

UsageProvider = Callable[[Organization], int]
_USAGE_PROVIDERS: dict[str, UsageProvider] = {}


def register_usage_provider(quota_name: str, provider: UsageProvider) -> None:
    if quota_name not in QUOTA_NAMES:
        raise KeyError(f"unknown quota {quota_name!r}; known: {QUOTA_NAMES}")
    _USAGE_PROVIDERS[quota_name] = provider


def current_usage(org: Organization) -> dict[str, int | None]:
    """Usage per quota; None where no app has registered a provider yet."""
    usage: dict[str, int | None] = {name: None for name in QUOTA_NAMES}
    for name, provider in _USAGE_PROVIDERS.items():
        usage[name] = int(provider(org))
    return usage


# --- reservation ------------------------------------------------------------------------------


class QuotaExceeded(ApiError):
    def __init__(self, quota_name: str, *, limit: int, used: int, requested: int) -> None:
        super().__init__(
            status=429,
            type="insufficient_quota",
            code="quota_exceeded",
            param=quota_name,
            message=(
                f"Quota {quota_name} exceeded: {used} used + {requested} requested > limit {limit}. "
                "Ask support to raise it or upgrade the plan."
            ),
        )
        self.quota_name = quota_name


@dataclass
class QuotaReservation:
    org: Organization  # the freshly locked row
    quota: Quota

    def check(self, quota_name: str, *, used: int, requested: int) -> None:
        limit = getattr(self.quota, quota_name)
        if used + requested > limit:
            raise QuotaExceeded(quota_name, limit=limit, used=used, requested=requested)


@contextmanager
def reserve_quota(org: Organization) -> Iterator[QuotaReservation]:
    """Open a transaction holding the org row lock; check and consume inside it."""
    with transaction.atomic():
        locked = Organization.objects.select_for_update().get(pk=org.pk)
        yield QuotaReservation(org=locked, quota=effective_quota(locked))
