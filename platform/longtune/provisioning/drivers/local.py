"""The ``local`` driver: an instance's replicas are real ``celery worker`` processes on this
machine, consuming only the instance's queue.

State lives in pid files (``var/provisioning/<instance>/replica-<n>.pid``), so any supervisor
process — not only the one that started them — can see, restart and stop them. A pid counts
as the replica only while that process is alive, not a zombie, and its command line names the
instance (a recycled pid is not mistaken for it). Drain sends SIGTERM once (Celery's warm
shutdown: stop consuming, finish the running task, exit) and marks the replica stopping so it
is not restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from longtune.config import REPO_ROOT
from longtune.provisioning.drivers import DriverError
from longtune.provisioning.models import DedicatedInstance

INSTANCE_ENV = "LONGTUNE_DEDICATED_INSTANCE"  # read by workers/provisioning.py
_CHILDREN: dict[int, subprocess.Popen] = {}  # this process's own children, reaped on poll


def instance_dir(instance: DedicatedInstance) -> Path:
    return Path(settings.VAR_DIR) / "provisioning" / instance.public_id


def worker_name(instance: DedicatedInstance, replica: int) -> str:
    return f"{instance.public_id}-r{replica}@%h"


def worker_command(instance: DedicatedInstance, replica: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", instance.capacity.queue, "-P", "solo", "-c", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        "-n", worker_name(instance, replica),
    ]  # fmt: skip


def _alive(pid: int, instance: DedicatedInstance) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: its exit status is the truth. (Its /proc cmdline is still the
        # parent's between fork and exec, so the check below would call a just-started
        # worker dead.)
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return instance.public_id.encode() in cmdline


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LocalDriver:
    name = "local"

    def _pidfile(self, instance: DedicatedInstance, replica: int) -> Path:
        return instance_dir(instance) / f"replica-{replica}.pid"

    def _live(self, instance: DedicatedInstance) -> dict[int, int]:
        """replica -> pid of every replica process alive now."""
        live: dict[int, int] = {}
        for path in sorted(instance_dir(instance).glob("replica-*.pid")):
            pid = _read_pid(path)
            if pid is not None and _alive(pid, instance):
                live[int(path.stem.removeprefix("replica-"))] = pid
        return live

    def _start(self, instance: DedicatedInstance, replica: int) -> int:
        folder = instance_dir(instance)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"replica-{replica}.stopping").unlink(missing_ok=True)
        log = (folder / f"replica-{replica}.log").open("ab")
        try:
            proc = subprocess.Popen(
                worker_command(instance, replica),
                cwd=REPO_ROOT,
                env={**os.environ, INSTANCE_ENV: instance.public_id, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"could not start a worker process: {exc}") from exc
        finally:
            log.close()
        _CHILDREN[proc.pid] = proc
        self._pidfile(instance, replica).write_text(f"{proc.pid}\n")
        return proc.pid

    def apply(self, instance: DedicatedInstance) -> str:
        live = self._live(instance)
        for replica in range(instance.replicas):
            if replica not in live:  # never started, or died: (re)start it
                self._start(instance, replica)
        for replica, pid in live.items():
            if replica >= instance.replicas:  # scaled down: warm shutdown of the extra ones
                self._term(instance, replica, pid)
        return str(instance_dir(instance))

    def _term(self, instance: DedicatedInstance, replica: int, pid: int) -> None:
        marker = instance_dir(instance) / f"replica-{replica}.stopping"
        if marker.exists():
            return  # SIGTERM once: a second one could turn Celery's warm shutdown cold
        marker.write_text(f"{pid}\n")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def drain(self, instance: DedicatedInstance) -> None:
        for replica, pid in self._live(instance).items():
            self._term(instance, replica, pid)

    def drained(self, instance: DedicatedInstance) -> bool:
        return not self._live(instance)

    def destroy(self, instance: DedicatedInstance) -> None:
        for pid in self._live(instance).values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        folder = instance_dir(instance)
        for path in folder.glob("replica-*.pid"):
            path.unlink(missing_ok=True)
        for path in folder.glob("replica-*.stopping"):
            path.unlink(missing_ok=True)

    def running(self, instance: DedicatedInstance) -> int:
        return len(self._live(instance))

    def pids(self, instance: DedicatedInstance) -> dict[int, int]:
        return self._live(instance)
