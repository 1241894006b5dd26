"""Task names and sending: one constant per task, one ``send`` that publishes by name, the
beat schedule read from compute."""

from __future__ import annotations

import pytest

from longtune.compute import broker, queues, schedule, tasks
from workers.celery_app import app

TASK_NAMES = {value for name, value in vars(tasks).items() if name.isupper()}


def test_every_longtune_task_is_a_compute_constant_and_back():
    """The decorators in workers/ use the constants: a task named by a literal that compute
    does not know, or a constant without a task, fails here."""
    app.loader.import_default_modules()
    registered = {name for name in app.tasks if name.startswith("longtune.")}
    assert registered == TASK_NAMES


def test_send_publishes_by_name_to_the_given_queue(monkeypatch):
    sent = []
    monkeypatch.setattr(app.conf, "task_always_eager", False)
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue: sent.append((name, args, queue)) or "msg"
    )
    assert broker.send(tasks.TRAIN, (7, 2), "gpu.acme") == "msg"
    assert sent == [("longtune.finetuning.train", [7, 2], "gpu.acme")]


def test_send_runs_the_task_in_process_when_eager(monkeypatch):
    """send_task ignores task_always_eager; send keeps the eager mode that dev and tests use."""
    monkeypatch.setattr(app.conf, "task_always_eager", True)
    result = broker.send(tasks.PING, ["eager"], queues.CPU)
    assert result.get()["payload"] == "eager"


def test_the_beat_schedule_is_computes(settings):
    assert app.conf.beat_schedule == schedule.beat_schedule()
    planned = schedule.beat_schedule()
    assert {entry["task"] for entry in planned.values()} == {
        tasks.FINETUNE_WATCHDOG,
        tasks.INFERENCE_WATCHDOG,
        tasks.EVALUATION_WATCHDOG,
        tasks.REDISPATCH_SWEEP,
        tasks.BILLING_SEND_METER_EVENTS,  # billing: the outbox and the dunning sweep
        tasks.BILLING_DUNNING_SWEEP,
    }
    assert all(entry["options"]["queue"] == queues.CPU for entry in planned.values())
    assert planned["finetuning-watchdog"]["schedule"] == 30.0  # the defaults of before
    assert planned["inference-watchdog"]["schedule"] == 30.0
    settings.COMPUTE_REDISPATCH_INTERVAL_SECONDS = 7.5  # settings.py reads them from the env
    settings.FINETUNE_WATCHDOG_INTERVAL_SECONDS = 2
    tuned = schedule.beat_schedule()
    assert tuned["compute-redispatch"]["schedule"] == 7.5
    assert tuned["finetuning-watchdog"]["schedule"] == 2.0


def test_redispatch_threshold_is_tunable(settings):
    from longtune.compute.conf import compute_conf

    assert compute_conf().redispatch_after_seconds == 600
    settings.COMPUTE_REDISPATCH_AFTER_SECONDS = 9  # settings.py reads it from the env
    assert compute_conf().redispatch_after_seconds == 9


def test_the_celery_app_declares_the_static_queues():
    assert {q.name for q in app.conf.task_queues} == set(queues.STATIC_QUEUES)
    assert app.conf.task_default_queue == queues.CPU


@pytest.mark.parametrize("hosts", [queues.TRAINING, queues.SERVING, queues.BOTH])
def test_conventional_dedicated_names(hosts):
    prefix = {"training": "gpu", "serving": "inference", "both": "gpu"}[hosts]
    assert queues.dedicated_queue_name("acme", hosts) == f"{prefix}.acme"
