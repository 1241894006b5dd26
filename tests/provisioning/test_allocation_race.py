"""Bookings racing for the last accelerators of a pool: exactly as many as fit are admitted
(PostgreSQL, one connection per thread; the pool starts empty, so there is no row to lock)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from longtune.provisioning.inventory import CapacityExceeded
from longtune.provisioning.models import DedicatedInstance
from tests.provisioning.helpers import book

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
RACERS = 6


def test_concurrent_bookings_never_over_allocate(make_org, postgres_url):
    assert connection.vendor == "postgresql"
    orgs = [make_org(f"Racer {i}").org for i in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(org) -> None:
        try:
            barrier.wait()
            book(org, accelerator_type="h100_80gb", pool="us-east", accelerators_per_replica=8)
            outcome = "booked"
        except CapacityExceeded:
            outcome = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(org,)) for org in orgs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["booked"] * 2 + ["refused"] * (RACERS - 2)  # 16 = 2 x 8
    assert DedicatedInstance.objects.unscoped_across_orgs().count() == 2
