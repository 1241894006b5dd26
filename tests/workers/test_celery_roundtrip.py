"""A real Celery worker process, a real Redis broker: a task goes out and its result comes back."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_worker_process_returns_task_result(start_worker, redis_url):
    from workers.celery_app import app
    from workers.tasks import ping

    assert app.conf.broker_url == redis_url, "the suite must talk to the real Redis broker"
    worker = start_worker(queues="cpu")

    result = ping.apply_async(args=["hello"], queue="cpu")
    payload = result.get(timeout=60)

    assert payload["payload"] == "hello"
    assert payload["pid"] == worker.proc.pid  # -P solo: the task ran in the worker process itself
    assert payload["pid"] != os.getpid()


def test_celery_reliability_settings():
    """acks_late + reject_on_worker_lost + prefetch 1 is what makes crash recovery possible."""
    from django.conf import settings

    from workers.celery_app import app

    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert {q.name for q in app.conf.task_queues} >= {"cpu", "gpu", "inference"}
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > settings.LONGEST_JOB_SECONDS
