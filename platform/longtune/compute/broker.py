"""The only code that talks to the broker: publish a task by name, probe a queue's depth.

Why by name: the web process must not import a workers task module (the bridge to torch);
it only needs the Celery app (configuration, ``workers.celery_app``) to publish a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _app():
    from workers.celery_app import app  # configuration only; imported lazily (it sets up Django)

    return app


def send(task: str, args: Sequence[Any], queue: str) -> Any:
    """Publish ``task`` (a ``compute.tasks`` name) with ``args`` to ``queue``.

    ``send_task`` ignores ``task_always_eager``, so in eager mode (a development setting, and
    tests that run a task in-process) the Celery app loads its own task modules and the task
    runs here, as ``apply_async`` would run it.
    """
    app = _app()
    if app.conf.task_always_eager:
        app.loader.import_default_modules()
        return app.tasks[task].apply_async(args=list(args), queue=queue)
    return app.send_task(task, args=list(args), queue=queue)


def queue_depth(queue: str) -> int:
    """Messages waiting in ``queue`` (not counting ones a worker has taken); a queue the
    broker does not know holds none."""
    app = _app()
    with app.connection_for_read() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except conn.channel_errors:
            return 0


def queue_is_empty(queue: str) -> bool:
    return queue_depth(queue) == 0
