"""The compute layer: every way work reaches the Celery queues goes through here.

- ``tasks``: the name of every Celery task (platform code sends by NAME, never importing a
  workers task module; the ``@app.task`` decorators in workers/ use the same constants);
- ``queues``: queue names and routing an org's work to the shared pool or to its
  ``DedicatedCapacity`` (``models``);
- ``broker``: the one ``send`` that publishes a task, and the queue-depth probe of the sweep;
- ``lifecycle``: the generic GPU-work lifecycle (attempt fencing, heartbeats, progress with a
  cooperative cancel flag, the watchdog re-queue, the re-dispatch of lost messages) that
  fine-tuning jobs use and any new kind of GPU work reuses;
- ``sweep`` and ``schedule``: the periodic re-dispatch sweep and the celery beat schedule.

Adding a new kind of GPU work (evaluation jobs will follow this):

1. its model inherits ``GpuWork`` (and declares ``org``, ``public_id``, ``status`` whose
   choices include ``WorkStatus``) with an org-scoped manager; an event model and recorder;
2. a task name in ``tasks`` and a ``GpuWorkLifecycle(model=..., task=..., record_event=...,
   label=...)`` in the app, bound once;
3. creation sets ``queue`` from ``queues.training_queue_for(org)`` (or a routing function
   added there) and calls ``lifecycle.dispatch`` on commit;
4. the workers/ task claims, heartbeats (workers.heartbeat), reports progress (reading the
   cancel flag) and finishes through the lifecycle; its watchdog task calls
   ``requeue_stale`` and ``publish``, scheduled in ``schedule``;
5. the app's ``ready()`` registers ``lifecycle.sweep_lost_messages`` with
   ``sweep.register_redispatch``.
"""
