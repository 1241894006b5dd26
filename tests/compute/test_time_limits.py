"""Every Celery task has its time limits from one table (compute/time_limits.py), and the
worker's Celery app carries them; serving is the one kind without a clock."""

from __future__ import annotations

import pytest

from longtune.compute import tasks
from longtune.compute.time_limits import (
    TASK_KINDS,
    TaskKind,
    TimeLimit,
    limit_for_kind,
    task_time_limits,
)

TASK_NAMES = {value for name, value in vars(tasks).items() if name.isupper()}


def test_every_task_name_has_a_kind_and_every_kind_but_serving_a_limit():
    assert set(TASK_KINDS) == TASK_NAMES
    limits = task_time_limits()
    for name, kind in TASK_KINDS.items():
        assert (limits[name] is None) == (kind == TaskKind.SERVING), name


def test_the_worker_app_applies_the_limits_to_every_registered_task():
    from workers.celery_app import app

    app.loader.import_default_modules()
    registered = {name for name in app.tasks if name.startswith("longtune.")}
    assert registered == TASK_NAMES  # no task escapes the table
    for name, limit in task_time_limits().items():
        task = app.tasks[name]
        if limit is None:
            assert task.soft_time_limit is None and task.time_limit is None, name
        else:
            assert (task.soft_time_limit, task.time_limit) == (
                limit.soft_seconds,
                limit.hard_seconds,
            ), name


def test_limits_come_from_settings(settings):
    settings.SCRUB_TIME_LIMIT_SECONDS = 120
    settings.TASK_HARD_TIME_LIMIT_GRACE_SECONDS = 15
    assert limit_for_kind(TaskKind.SCRUB) == TimeLimit(120.0, 135.0)


def test_a_hard_limit_past_the_visibility_timeout_is_refused(settings):
    # The message would be redelivered while the first delivery still runs.
    settings.GPU_WORK_TIME_LIMIT_SECONDS = settings.CELERY_VISIBILITY_TIMEOUT
    with pytest.raises(ValueError, match="visibility timeout"):
        limit_for_kind(TaskKind.GPU_WORK)


def test_soft_must_be_below_hard():
    with pytest.raises(ValueError):
        TimeLimit(10, 10)


def test_solo_and_thread_pools_are_the_ones_celery_does_not_time():
    from workers.time_limits import pool_times_tasks

    assert not pool_times_tasks("solo") and not pool_times_tasks("threads")
    assert pool_times_tasks("prefork")


def test_a_time_limit_is_recognised_through_the_wrappers_libraries_put_around_it():
    from botocore.exceptions import HTTPClientError
    from celery.exceptions import SoftTimeLimitExceeded

    from longtune.compute.time_limits import is_time_limit
    from longtune.datasets.tokenizer_source import TokenizerUnavailable

    limit = SoftTimeLimitExceeded("soft time limit exceeded")
    assert is_time_limit(limit)
    assert is_time_limit(HTTPClientError(error=limit))  # botocore keeps it in kwargs["error"]
    try:
        try:
            raise limit
        except SoftTimeLimitExceeded as exc:
            raise TokenizerUnavailable("cannot load") from exc
    except TokenizerUnavailable as wrapped:
        assert is_time_limit(wrapped)
    assert not is_time_limit(HTTPClientError(error=ConnectionError("reset")))
    assert not is_time_limit(ValueError("bad"))
    assert not is_time_limit(None)


@pytest.mark.django_db(transaction=True)
def test_a_limit_landing_mid_query_leaves_a_connection_the_handler_discards():
    """The soft limit's signal can arrive while psycopg waits on PostgreSQL's answer (it did,
    in CI: the job then could not be failed). The handler's cleanup closes that connection, and
    the write that fails the work goes through on a fresh one."""
    import signal

    from celery.exceptions import SoftTimeLimitExceeded
    from django.db import connection, transaction
    from psycopg.pq import TransactionStatus

    from longtune.compute.time_limits import discard_interrupted_connections
    from workers.time_limits import _raise_soft_limit

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert discard_interrupted_connections() == 0  # an idle connection is left open
    idle = connection.connection
    assert idle is not None and not idle.closed

    previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(SoftTimeLimitExceeded):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(10)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert connection.connection.info.transaction_status == TransactionStatus.ACTIVE

    assert discard_interrupted_connections() == 1
    with transaction.atomic():  # what failing the work does; it raised before the cleanup
        with connection.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
    assert connection.connection is not idle
