"""Celery tasks. Thin: load state from the DB, call gpu_runtime or a pure module, write back."""

from __future__ import annotations

import os
import socket

from longtune.compute import tasks
from workers.celery_app import app


@app.task(name=tasks.PING)  # task_default_queue: cpu
def ping(payload: str = "pong") -> dict:
    """Round-trip check used by health checks and the broker integration test."""
    return {"payload": payload, "hostname": socket.gethostname(), "pid": os.getpid()}
