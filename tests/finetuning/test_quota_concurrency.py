"""100 simultaneous job submissions against a concurrent-jobs limit of N admit exactly N.

Each thread drives the whole request stack (auth, throttle, view, quota reservation) through
its own test client and therefore its own PostgreSQL connection; real Redis: the N admitted
jobs are exactly the N messages published to the org's queue. (In-process clients rather than
sockets: the live test server's listen backlog of 10 resets a burst of 100 connections.)
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from longtune.finetuning.models import FineTuningJob
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.helpers import give_dedicated_queue, make_base_model, make_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SUBMISSIONS = 100
LIMIT = 7


def test_concurrent_submissions_admit_exactly_the_limit(
    live_server, make_org, postgres_url, redis_url
):
    import redis

    handle = make_org("Race", plan="pro")
    OrgQuota.objects.create(org=handle.org, max_concurrent_jobs=LIMIT, requests_per_minute=100_000)
    queue = give_dedicated_queue(handle.org)
    make_base_model()
    file = make_file(handle.org)
    secret = handle.key()
    body = {
        "model": "tiny-test",
        "training_file": file.public_id,
        "hyperparameters": {"n_epochs": 1},
    }
    barrier = threading.Barrier(SUBMISSIONS)
    answers: list[tuple[int, str | None, str | None]] = []
    lock = threading.Lock()

    def submit() -> None:
        client = api_client(secret)
        try:
            barrier.wait()
            response = client.post("/v1/fine_tuning/jobs", body, format="json")
        finally:
            connection.close()  # this thread's own connection
        error = response.json().get("error") or {}
        with lock:
            answers.append((response.status_code, error.get("code"), error.get("param")))

    threads = [threading.Thread(target=submit) for _ in range(SUBMISSIONS)]
    assert connection.vendor == "postgresql"
    broker = redis.Redis.from_url(redis_url)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        counts = Counter(answers)
        assert counts == {
            (201, None, None): LIMIT,
            (429, "quota_exceeded", "max_concurrent_jobs"): SUBMISSIONS - LIMIT,
        }, counts
        assert FineTuningJob.objects.for_org(handle.org).active().count() == LIMIT
        assert FineTuningJob.objects.for_org(handle.org).count() == LIMIT
        assert broker.llen(queue) == LIMIT  # one training message per admitted job
    finally:
        broker.delete(queue)
