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
"""
