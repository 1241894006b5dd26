"""Model-level guarantees: append-only audit log, scoping guards, public ids, quotas."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from longtune.api.ids import PublicIdField, looks_like_public_id, new_public_id
from longtune.api.viewsets import OrgScopedViewSet
from longtune.tenancy import audit
from longtune.tenancy.models import (
    ApiKey,
    AuditLogEntry,
    AuditLogIsAppendOnly,
    Organization,
    OrgQuota,
)
from longtune.tenancy.quotas import PLAN_QUOTAS, QuotaExceeded, effective_quota, reserve_quota
from tests.conftest import api_client


@pytest.mark.django_db
def test_audit_log_refuses_update_and_delete(org_a):
    entry = audit.record(org=org_a.org, action="quota.changed", target=org_a.org)
    entry.metadata = {"tampered": True}
    with pytest.raises(AuditLogIsAppendOnly):
        entry.save()
    with pytest.raises(AuditLogIsAppendOnly):
        entry.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditLogEntry.objects.unscoped_across_orgs().filter(pk=entry.pk).update(action="x")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditLogEntry.objects.for_org(org_a.org).delete()
    assert AuditLogEntry.objects.unscoped_across_orgs().get(pk=entry.pk).metadata == {}


def test_public_ids():
    value = new_public_id("ftjob-")
    assert value.startswith("ftjob-") and looks_like_public_id(value)
    assert not looks_like_public_id("key_\x00") and not looks_like_public_id("../etc")
    with pytest.raises(ValueError):
        PublicIdField(prefix="bad prefix")


@pytest.mark.django_db
def test_for_org_refuses_none():
    with pytest.raises(ValueError):
        ApiKey.objects.for_org(None)


def test_base_viewset_owns_get_queryset():
    with pytest.raises(ImproperlyConfigured):

        class Sneaky(OrgScopedViewSet):  # noqa: F841
            model = ApiKey

            def get_queryset(self):
                return ApiKey.objects.unscoped_across_orgs().all()

    with pytest.raises(ImproperlyConfigured):

        class AlsoSneaky(OrgScopedViewSet):  # noqa: F841
            queryset = ApiKey.objects.unscoped_across_orgs().all()


@pytest.mark.django_db
def test_effective_quota_merges_plan_and_override(make_org):
    handle = make_org("Quota Co", plan="pro")
    assert effective_quota(handle.org) == PLAN_QUOTAS["pro"]
    OrgQuota.objects.create(org=handle.org, max_concurrent_jobs=9, requests_per_minute=None)
    org = Organization.objects.get(pk=handle.org.pk)
    quota = effective_quota(org)
    assert quota.max_concurrent_jobs == 9
    assert quota.requests_per_minute == PLAN_QUOTAS["pro"].requests_per_minute


@pytest.mark.django_db
def test_org_throttle_uses_the_quota(org_a, org_b):
    OrgQuota.objects.create(org=org_a.org, requests_per_minute=3)
    client = api_client(org_a.owner_secret)
    codes = [client.get("/v1/organization").status_code for _ in range(4)]
    if codes != [200, 200, 200, 429]:  # a minute boundary passed mid-test: counts restarted
        codes = [client.get("/v1/organization").status_code for _ in range(4)]
    assert codes[-1] == 429, codes
    limited = client.get("/v1/organization")
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert api_client(org_b.owner_secret).get("/v1/organization").status_code == 200  # per org


@pytest.mark.django_db(transaction=True)
def test_reserve_quota_serializes_concurrent_checks(make_org):
    """Two requests race for the last slot; the org row lock lets exactly one win."""
    handle = make_org("Race Co")
    OrgQuota.objects.create(org=handle.org, max_concurrent_jobs=2)  # 1 key exists, 1 slot left
    results: list[str] = []

    def take_last_slot() -> None:
        try:
            with reserve_quota(handle.org) as reservation:
                used = ApiKey.objects.for_org(handle.org).count()
                time.sleep(0.3)  # widen the race window: without the lock both would see used=1
                reservation.check("max_concurrent_jobs", used=used, requested=1)
                ApiKey.objects.create(
                    org=handle.org,
                    role="member",
                    key_hash=new_public_id("h_"),
                    last_four="0000",
                    created_by=handle.owner,
                    scopes=["read"],
                )
            results.append("ok")
        except QuotaExceeded:
            results.append("exceeded")
        finally:
            connection.close()

    threads = [threading.Thread(target=take_last_slot) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["exceeded", "ok"]
    assert ApiKey.objects.for_org(handle.org).count() == 2
