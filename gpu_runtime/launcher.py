"""Run `train` in N processes under torchrun and drive the caller's callbacks from rank 0.

Why: a job planned past one device (data × sequence ranks, gpu_runtime/memory_planner.py)
needs `torchrun --standalone --nproc_per_node N -m gpu_runtime train`, but the worker's
callbacks (progress, metrics events, checkpoint uploads, the cancel flag) live in the worker
process. `launch` keeps ONE callback path: the CLI's rank 0 writes every record as a JSON line
(callbacks.JsonLinesLogger) and, under `--control-stdin`, waits for our reply before going on;
here each line becomes the same `on_step` / `on_checkpoint` / `on_event` call `train()` makes
in-process (through the same CallbackList), and a StopTraining raised by a callback goes back
as `{"stop": reason}`, which rank 0 broadcasts: every rank stops at that step boundary with a
checkpoint, as in-process.

Processes: torchrun runs in a session of its own and starts every rank in a session of its
own too (torch.distributed.elastic does), so a process-group kill cannot reach the ranks.
`terminate` therefore signals torchrun (SIGTERM: it stops its ranks) and then SIGKILLs every
descendant still alive after a grace period, from a snapshot of the process tree refreshed on
every record. Any exception while the run is live (a soft time limit raised by SIGALRM while
we wait for a line, a worker shutdown, a failing callback) terminates the whole tree before it
propagates. If the launcher itself is SIGKILLed, rank 0 finds its control pipe at end of file
(or its stdout pipe broken) at the next record and stops the run at the next step boundary,
with a checkpoint (callbacks.CONTROLLER_GONE).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gpu_runtime.callbacks import CallbackList, StepMetrics
from gpu_runtime.contract import TrainConfig

logger = logging.getLogger("gpu_runtime.launcher")

CONFIG_FILE = "launch-config.json"
LOG_FILE = "launch.log"  # torchrun's and the ranks' stderr


class LaunchError(RuntimeError):
    """The multi-process run ended without a result (its log's tail is in the message)."""


@dataclass(frozen=True)
class LaunchSpec:
    """How to start the ranks. ``world_size`` processes on this machine (gloo on CPU, NCCL on
    CUDA: gpu_runtime.distributed chooses); ``terminate_grace_seconds`` is how long torchrun
    gets to stop its ranks before every process of the run is killed."""

    world_size: int
    work_dir: Path  # where the config file and the run's log are written
    terminate_grace_seconds: float = 20.0
    env: Mapping[str, str] | None = None  # the ranks' environment (default: ours)

    def __post_init__(self) -> None:
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ValueError(f"world_size: must be an integer >= 1, got {self.world_size!r}")


def torchrun_command(
    spec: LaunchSpec, config_path: Path, data: Path, eval_data: Path | None
) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m gpu_runtime train ...` with this
    interpreter (``python -m torch.distributed.run`` is torchrun's own entry point)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(spec.world_size),
        "-m", "gpu_runtime", "train",
        "--config", str(config_path), "--data", str(data), "--control-stdin",
    ]  # fmt: skip
    if eval_data is not None:
        command += ["--eval-data", str(eval_data)]
    return command


class _Run:
    """One live torchrun process tree."""

    def __init__(self, command: list[str], spec: LaunchSpec) -> None:
        self.spec = spec
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = spec.work_dir / LOG_FILE
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(spec.env) if spec.env is not None else None,
            text=True,
            bufsize=1,
            start_new_session=True,  # signals meant for the worker do not reach the ranks
        )
        self.known: dict[int, Any] = {}  # pid -> psutil.Process: torchrun and its ranks

    @property
    def pid(self) -> int:
        return self.proc.pid

    def refresh_tree(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            for process in (root, *root.children(recursive=True)):
                self.known.setdefault(process.pid, process)
        except psutil.NoSuchProcess:
            pass

    def reply(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(dict(message)) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # rank 0 is gone; its exit status says why
            pass

    def lines(self) -> Iterable[str]:
        assert self.proc.stdout is not None
        yield from self.proc.stdout

    def alive(self) -> list[Any]:
        """The processes of this run still running (zombies count as gone)."""
        import psutil

        living = []
        for process in self.known.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    living.append(process)
            except psutil.NoSuchProcess:
                continue
        return living

    def terminate(self) -> None:
        """SIGTERM torchrun (it stops its ranks), then SIGKILL whatever is left."""
        import psutil

        self.refresh_tree()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.spec.terminate_grace_seconds
        while self.alive() and time.monotonic() < deadline:
            self.proc.poll()  # reap torchrun as soon as it exits
            time.sleep(0.1)
        for process in self.alive():
            logger.warning("killing training process %s (pid %s)", process.name(), process.pid)
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.close()

    def close(self) -> None:
        try:
            self.proc.wait(timeout=self.spec.terminate_grace_seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        self.log.close()

    def log_tail(self, size: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]


def _step_metrics(record: Mapping[str, Any]) -> StepMetrics:
    names = {f.name for f in fields(StepMetrics)}
    return StepMetrics(**{k: v for k, v in record.items() if k in names})


def _relay(record: Mapping[str, Any], hooks: CallbackList, run: _Run) -> None:
    """One rank-0 record -> the callbacks, then the reply rank 0 is waiting for."""
    kind = record.get("type")
    if kind == "step":
        run.reply({"stop": hooks.step(_step_metrics(record))})
    elif kind == "checkpoint":
        hooks.checkpoint(int(record["step"]), Path(record["path"]))
        run.reply({})
    elif kind == "event":
        payload = {k: v for k, v in record.items() if k not in ("type", "name")}
        hooks.event(str(record["name"]), **payload)
        run.reply({})


def _result(record: Mapping[str, Any]) -> Any:
    from gpu_runtime.train import TrainResult

    data = {k: v for k, v in record.items() if k != "type"}
    for key in ("output_dir", "artifact_dir", "checkpoint_dir"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    return TrainResult(**data)


def launch(
    config: TrainConfig,
    data: str | Path,
    callbacks: Iterable[Any],
    spec: LaunchSpec,
    *,
    eval_data: str | Path | None = None,
    on_started: Any = None,
) -> Any:
    """`train(config, data, callbacks, eval_data)` in ``spec.world_size`` processes; returns
    rank 0's TrainResult. ``on_started(pid)`` is called once torchrun runs (the launcher's
    process id, for the job's events). Raises LaunchError when the run exits without one."""
    if config.world_size is not None and config.world_size != spec.world_size:
        raise ValueError(
            f"world_size: the config is planned for {config.world_size} processes, "
            f"the launch asks for {spec.world_size}"
        )
    config_path = spec.work_dir / CONFIG_FILE
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(config.to_json())
    hooks = CallbackList(callbacks)
    command = torchrun_command(
        spec, config_path, Path(data), Path(eval_data) if eval_data is not None else None
    )
    run = _Run(command, spec)
    result = None
    try:
        run.refresh_tree()
        if on_started is not None:
            on_started(run.pid)
        for line in run.lines():
            run.refresh_tree()
            record = _parse(line)
            if record is None:
                continue
            if record.get("type") == "result":
                result = _result(record)
            else:
                _relay(record, hooks, run)
    except BaseException:
        run.terminate()
        raise
    run.close()
    leftovers = run.alive()
    for process in leftovers:  # a rank that outlived torchrun: never leave one behind
        process.kill()
    if result is None or run.proc.returncode != 0:
        raise LaunchError(
            f"torchrun exited with status {run.proc.returncode} "
            f"{'after' if result else 'without'} a result; log tail:\n{run.log_tail()}"
        )
    return result


def _parse(line: str) -> dict[str, Any] | None:
    """A rank-0 record, or None for anything else a library printed to stdout."""
    line = line.strip()
    if not line.startswith("{"):
        if line:
            logger.info("training stdout: %s", line[:500])
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        logger.info("training stdout: %s", line[:500])
        return None
    return record if isinstance(record, dict) and "type" in record else None
