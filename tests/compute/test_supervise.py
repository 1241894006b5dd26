"""scripts/supervise.sh, the restart loop scripts/run.sh runs every worker under: a worker
process that exits (a solo worker past a task's hard time limit ends itself) is started again,
and stopping the supervisor stops its worker. Real bash, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.fixtures.services import REPO_ROOT

SUPERVISE = REPO_ROOT / "scripts" / "supervise.sh"


def supervised(command: str, tmp_path: Path) -> subprocess.Popen:
    script = f'source "{SUPERVISE}"; supervise demo bash -c {command!r}'
    return subprocess.Popen(
        ["bash", "-c", script],
        env={**os.environ, "SUPERVISE_RESTART_SECONDS": "0.1"},
        stderr=(tmp_path / "supervise.log").open("wb"),
        start_new_session=True,
    )


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_worker_that_exits_is_started_again(tmp_path):
    runs = tmp_path / "runs"
    supervisor = supervised(f"echo $$ >> {runs}; exit 70", tmp_path)
    try:
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 3)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == 0
    pids = runs.read_text().split()
    assert len(set(pids)) == len(pids)  # a new process each time
    assert (
        "the demo worker exited with status 70; starting it again"
        in (tmp_path / "supervise.log").read_text()
    )


def test_stopping_the_supervisor_stops_its_worker_and_the_loop(tmp_path):
    pid_file = tmp_path / "pid"
    supervisor = supervised(f"echo $$ > {pid_file}; exec sleep 300", tmp_path)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
    worker = int(pid_file.read_text())
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(10) == 0

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, timeout=10)
    time.sleep(0.5)
    assert pid_file.read_text().strip() == str(worker)  # and nothing was started again


def test_run_sh_supervises_every_worker():
    run_sh = (REPO_ROOT / "scripts" / "run.sh").read_text()
    assert "source scripts/supervise.sh" in run_sh
    workers = [line for line in run_sh.splitlines() if "-m celery -A workers.celery_app" in line]
    assert len(workers) == 3 and all(line.startswith("supervise ") for line in workers)
