"""Heartbeats from a background thread while the task's own thread is busy for minutes.

WHY: a training step at 150K tokens or loading a model's weights can take minutes; a worker
that writes nothing for that long looks dead to the watchdogs (fine-tuning and inference),
which would then re-queue work that is still running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection

logger = logging.getLogger("longtune.workers")


class BackgroundHeartbeat:
    """``with BackgroundHeartbeat(beat, ..., every_seconds=5):`` calls every beat each period.

    A beat that returns False (its row moved on: the attempt was superseded, the endpoint
    stopped) is not called again; the thread ends when no beat is left or the block exits.
    A failing beat is logged and ends the thread: a DB hiccup must not kill the real work.
    """

    def __init__(
        self, *beats: Callable[[], object], every_seconds: float, name: str = "heartbeat"
    ) -> None:
        self.beats, self.every = list(beats), every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> BackgroundHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while self.beats and not self._stop.wait(self.every):
                self.beats = [beat for beat in self.beats if beat() is not False]
        except Exception:  # noqa: BLE001 - see the class docstring
            logger.exception("%s failed", self._thread.name)
        finally:
            connection.close()  # this thread's own DB connection
