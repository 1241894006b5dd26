"""How the outside world watches and steers a training run.

A callback is any object with some of `on_step`, `on_checkpoint`, `on_event` (see
`TrainCallback`); missing methods are skipped. Callbacks run on rank 0 only (that is where a
worker streams metrics to the database); a stop decision is broadcast to every rank.

Stop signal (cancellation): from `on_step`, either return `Control.STOP` or raise
`StopTraining(reason)`. The run stops cleanly at that step boundary: the optimizer step has
been taken, a checkpoint is written, and `train()` returns a `TrainResult` with
status "stopped". Any other exception from a callback propagates and fails the run.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable


class Control(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


class StopTraining(Exception):  # noqa: N818 - it is a signal, not an error
    """Raise from `on_step` to stop the run cleanly at the current step boundary."""

    def __init__(self, reason: str = "stopped by callback") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step reports. `loss` is the token-weighted mean over all ranks."""

    step: int  # 1-based optimizer step just completed
    total_steps: int
    loss: float
    lr: float  # learning rate used for this step
    grad_norm: float  # before clipping
    tokens_per_second: float  # all ranks' tokens (padding included) / step wall time
    peak_memory_bytes: int  # CUDA max allocated, or the process's max RSS on CPU
    epoch: int  # 0-based epoch this step's data came from
    # Token-weighted mean loss on the validation data, on steps where it was evaluated
    # (every `eval_every_steps` and the last step) when train() got eval_data; else None.
    valid_loss: float | None = None
    trained_tokens: int = 0  # cumulative non-padding tokens trained on, all ranks (billing)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class TrainCallback(Protocol):
    def on_step(self, metrics: StepMetrics) -> Control | None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None: ...


class CallbackList:
    """Fan-out to callbacks; turns the two stop spellings into one (stop, reason) answer."""

    def __init__(self, callbacks: Iterable[Any] = (), *, enabled: bool = True) -> None:
        self.callbacks = list(callbacks)
        self.enabled = enabled  # False on ranks != 0

    def step(self, metrics: StepMetrics) -> str | None:
        """Returns a stop reason, or None to continue."""
        if not self.enabled:
            return None
        reason = None
        for callback in self.callbacks:
            hook = getattr(callback, "on_step", None)
            if hook is None:
                continue
            try:
                answer = hook(metrics)
            except StopTraining as stop:
                reason = reason or stop.reason
                continue
            if answer is Control.STOP:
                reason = reason or f"{type(callback).__name__} returned Control.STOP"
        return reason

    def checkpoint(self, step: int, path: Path) -> None:
        self._call("on_checkpoint", step, path)

    def event(self, name: str, **payload: Any) -> None:
        self._call("on_event", name, payload)

    def _call(self, method: str, *args: Any) -> None:
        if not self.enabled:
            return
        for callback in self.callbacks:
            hook = getattr(callback, method, None)
            if hook is not None:
                hook(*args)


class StopWhen:
    """Stop when `should_stop()` turns true (e.g. a worker polling the job's cancel flag)."""

    def __init__(self, should_stop: Callable[[], bool], reason: str = "cancelled") -> None:
        self.should_stop = should_stop
        self.reason = reason

    def on_step(self, metrics: StepMetrics) -> Control | None:
        if self.should_stop():
            raise StopTraining(self.reason)
        return None


# The stop reason rank 0 gives itself when its controller's end of the control pipe closed
# (the worker that launched the run died): the run stops at that step boundary, checkpointed.
CONTROLLER_GONE = "controller_gone"


class JsonLinesLogger:
    """One JSON object per step/event/checkpoint on a stream (the CLI's progress output).

    With ``control`` (a readable text stream: the CLI's stdin under ``--control-stdin``) the
    run is in lock-step with whoever reads the records: after each record rank 0 waits for
    one reply line, a JSON object; a step's reply may carry ``{"stop": reason}``, which stops
    every rank at this step boundary exactly as an in-process callback's StopTraining does.
    So a launcher (gpu_runtime.launcher) can drive the in-process callbacks of a multi-process
    run with the same semantics: the checkpoint a callback uploads still exists while it
    uploads, and a cancel decided at step N stops the run at step N. End of file on
    ``control``, or a broken ``stream``, stops the run (CONTROLLER_GONE): a run never outlives
    its launcher by more than one step."""

    def __init__(self, stream: TextIO | None = None, control: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.control = control

    def _write(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Write one record; under a controller, the controller's reply (None when the
        controller is gone: end of file on ``control``, or our stdout pipe broken)."""
        try:
            self.stream.write(json.dumps(record, default=str) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            if self.control is None:
                raise
            return None  # its reading end closed with it: stop at the next step boundary
        if self.control is None:
            return {}
        line = self.control.readline()
        if not line:
            return None
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError(f"controller reply must be a JSON object, got {line!r}")
        return reply

    def on_step(self, metrics: StepMetrics) -> None:
        reply = self._write({"type": "step", **metrics.to_dict()})
        if reply is None:
            raise StopTraining(CONTROLLER_GONE)
        if reply.get("stop"):
            raise StopTraining(str(reply["stop"]))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self._write({"type": "checkpoint", "step": step, "path": str(path)})

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._write({"type": "event", "name": name, **payload})
