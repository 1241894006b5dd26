"""gpu_runtime.launcher: a 2-process gloo run under a real torchrun drives in-process callbacks.

The callbacks here are plain objects in the test process, exactly as the worker's JobCallbacks
are in the Celery worker: they must see every step, event and checkpoint of rank 0 while the
run waits for them (the checkpoint directory still exists while on_checkpoint runs), stop every
rank at the step boundary where they raise StopTraining, and any other exception must end the
whole process tree (torchrun and both ranks) before it reaches the caller.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from gpu_runtime.callbacks import StopTraining
from gpu_runtime.contract import TrainConfig
from gpu_runtime.launcher import LaunchError, LaunchSpec, launch
from gpu_runtime.tiny import build_tiny_model_dir

pytestmark = pytest.mark.integration
STEPS = 4


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return build_tiny_model_dir(
        tmp_path_factory.mktemp("launch-base") / "tiny", seed=1, max_position_embeddings=32
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("launch-data") / "data.jsonl"
    with path.open("w") as handle:
        for i in range(16):
            handle.write(json.dumps({"text": f"The river light {i} is warm in the city."}) + "\n")
    return path


def _config(tmp_path: Path, base_model: Path, **extra) -> TrainConfig:
    fields = {
        "base_model": str(base_model),
        "output_dir": str(tmp_path / "out"),
        "context_length": 64,
        "max_steps": STEPS,
        "lora_dropout": 0.0,
        "checkpoint_every_steps": 2,
        "mlp_chunk_size": 8,
        "loss_chunk_size": 24,
        "sequence_parallel": 2,
        "data_parallel": 1,
    }
    return TrainConfig(**(fields | extra))


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


class Recorder:
    """Callbacks as the worker's: they record, and may stop or fail at a given step."""

    def __init__(self, stop_at: int | None = None, fail_at: int | None = None) -> None:
        self.stop_at, self.fail_at = stop_at, fail_at
        self.steps: list[int] = []
        self.events: list[tuple[str, dict]] = []
        self.checkpoints: list[tuple[int, bool]] = []  # (step, directory existed meanwhile)
        self.tree: set[int] = set()  # torchrun and its ranks, seen from the first step
        self.pid: int | None = None

    def started(self, pid: int) -> None:
        self.pid = pid

    def on_step(self, metrics) -> None:
        self.steps.append(metrics.step)
        if self.pid is not None and not self.tree:
            root = psutil.Process(self.pid)
            self.tree = {root.pid, *(p.pid for p in root.children(recursive=True))}
        if metrics.step == self.fail_at:
            raise RuntimeError("the worker's time limit")
        if metrics.step == self.stop_at:
            raise StopTraining("cancelled")

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path.is_dir() and any(path.iterdir())))

    def on_event(self, name: str, payload) -> None:
        self.events.append((name, dict(payload)))


def _running(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def _launch(tmp_path, base_model, data, recorder, **extra):
    spec = LaunchSpec(world_size=2, work_dir=tmp_path / "launch", env=_env())
    return launch(
        _config(tmp_path, base_model, **extra), data, [recorder], spec, on_started=recorder.started
    )


def test_two_process_run_feeds_every_callback_and_returns_rank_zero_result(
    tmp_path, base_model, data
):
    recorder = Recorder()
    result = _launch(tmp_path, base_model, data, recorder)

    assert result.status == "completed" and result.steps == STEPS
    assert result.artifact_dir is not None and (result.artifact_dir / "config.json").is_file()
    assert recorder.steps == list(range(1, STEPS + 1))
    ready = dict(recorder.events)["model_ready"]
    assert ready["world_size"] == 2 and ready["sequence_parallel"] == 2
    assert ready["sequence_parallel_mode"] == "ulysses"  # 4 query / 2 KV heads split over 2
    assert [name for name, _ in recorder.events][-1] == "completed"
    assert recorder.checkpoints == [(2, True)]  # lock-step: it existed while we looked
    assert len(recorder.tree) == 3  # torchrun + 2 ranks
    assert _running(recorder.tree) == []


def test_stop_from_a_callback_stops_every_rank_at_that_step(tmp_path, base_model, data):
    recorder = Recorder(stop_at=1)
    result = _launch(tmp_path, base_model, data, recorder)

    assert result.status == "stopped" and result.stop_reason == "cancelled"
    assert result.steps == 1 and recorder.steps == [1]
    assert recorder.checkpoints == [(1, True)]  # the stop checkpoint, as in-process
    assert result.artifact_dir is None
    assert _running(recorder.tree) == []


def test_a_failing_callback_ends_the_whole_process_tree(tmp_path, base_model, data):
    recorder = Recorder(fail_at=1)
    with pytest.raises(RuntimeError, match="time limit"):
        _launch(tmp_path, base_model, data, recorder)
    assert len(recorder.tree) == 3
    assert _running(recorder.tree) == []


def test_a_run_that_dies_raises_with_its_log(tmp_path, base_model, data):
    recorder = Recorder()
    broken = Path(tmp_path / "missing-model")
    config = TrainConfig(
        base_model=str(broken), output_dir=str(tmp_path / "out"), context_length=64,
        sequence_parallel=2, data_parallel=1,
    )  # fmt: skip
    spec = LaunchSpec(world_size=2, work_dir=tmp_path / "launch", env=_env())
    with pytest.raises(LaunchError, match="missing-model"):
        launch(config, data, [recorder], spec)


def test_a_launch_of_another_world_than_planned_is_refused(tmp_path, base_model, data):
    spec = LaunchSpec(world_size=4, work_dir=tmp_path / "launch", env=_env())
    with pytest.raises(ValueError, match="planned for 2 processes"):
        launch(_config(tmp_path, base_model), data, [], spec)


def test_rank_zero_stops_with_a_checkpoint_when_its_launcher_is_gone(tmp_path, base_model, data):
    """What a SIGKILLed worker leaves: both pipes of the control channel close. Rank 0 sees it
    at the next step boundary, every rank writes the stop checkpoint, torchrun exits."""
    import subprocess

    from gpu_runtime.checkpoint import latest_checkpoint, step_dir_name
    from gpu_runtime.launcher import torchrun_command

    config = _config(tmp_path, base_model, checkpoint_every_steps=0)
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    spec = LaunchSpec(world_size=2, work_dir=tmp_path)
    proc = subprocess.Popen(
        torchrun_command(spec, config_path, data, None),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=_env(), text=True, start_new_session=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:  # answer every record until the first step, then vanish
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("type") == "step":
                break
            if record:
                proc.stdin.write("{}\n")
                proc.stdin.flush()
        tree = {proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))}
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert len(tree) == 3 and _running(tree) == []
    checkpoints = tmp_path / "out" / "checkpoints"
    steps = sorted(p.name for p in checkpoints.iterdir() if not p.is_symlink())
    assert steps == [step_dir_name(1)]  # the stop checkpoint: periodic ones were off
    assert latest_checkpoint(checkpoints).name == step_dir_name(1)
