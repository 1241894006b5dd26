"""Per-epoch model snapshots (TrainConfig.epoch_artifacts): a servable artifact at the end of
every epoch but the last (whose artifact is final/), each loadable like final/ and different
from it; shorter packed rows (TrainConfig.sequence_length) give more steps per epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpu_runtime.output import load_trained_model
from gpu_runtime.tiny import build_tiny_model_dir
from gpu_runtime.train import is_epoch_end, train
from tests.gpu_runtime.test_train import ORIGINAL_CONTEXT, Recorder, make_config, repetitive_data


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("base") / "tiny"
    return str(build_tiny_model_dir(path, max_position_embeddings=ORIGINAL_CONTEXT))


def test_an_artifact_per_epoch_but_the_last(base_model, tmp_path):
    recorder = Recorder()
    config = make_config(
        base_model, tmp_path / "run", max_steps=None, num_epochs=3, epoch_artifacts=True
    )
    result = train(config, repetitive_data(8), [recorder])
    snapshots = [payload for name, payload in recorder.events if name == "epoch_artifact"]
    per_epoch = result.total_steps // 3
    assert [s["step"] for s in snapshots] == [per_epoch, 2 * per_epoch]
    assert [s["epoch"] for s in snapshots] == [1, 2]
    assert all(s["loss"] is not None for s in snapshots)
    first, _ = load_trained_model(snapshots[0]["path"])
    final, _ = load_trained_model(result.artifact_dir)
    assert Path(snapshots[0]["path"], "adapter_config.json").is_file()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(first(ids).logits, final(ids).logits)  # a real earlier state


def test_off_by_default_and_shorter_rows_give_more_steps(base_model, tmp_path):
    recorder = Recorder()
    full_rows = train(
        make_config(base_model, tmp_path / "a", max_steps=None), repetitive_data(8), [recorder]
    )
    assert not [name for name, _ in recorder.events if name == "epoch_artifact"]
    short = make_config(base_model, tmp_path / "b", max_steps=None, sequence_length=32)
    short_rows = train(short, repetitive_data(8), [])
    assert short_rows.total_steps > full_rows.total_steps
    packed = [p for n, p in recorder.events if n == "data_packed"][0]
    assert packed["sequence_length"] == 2 * ORIGINAL_CONTEXT  # rows of the whole context


def test_is_epoch_end():
    assert [s for s in range(1, 10) if is_epoch_end(s, 3, 9)] == [3, 6]
    assert not is_epoch_end(4, 4, 4)  # the last step: final/ is its artifact
