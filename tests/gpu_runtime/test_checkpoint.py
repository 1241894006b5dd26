"""Checkpoints are atomic, complete and restore every piece of training state."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from gpu_runtime import checkpoint as ckpt
from gpu_runtime.checkpoint import (
    DataCursor,
    TrainerState,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _optimizer_state(seed: int) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return dict(layer.state_dict()), optimizer.state_dict()


def _save(root, step: int, seed: int = 0):
    weights, optimizer = _optimizer_state(seed)
    state = TrainerState(
        step=step, cursor=DataCursor(epoch=1, index=4 * step), tokens_seen=100 * step
    )
    path = save_checkpoint(
        root,
        state,
        weights=weights,
        optimizer=optimizer,
        scheduler={"last_epoch": step},
        rng_states=[capture_rng_state()],
    )
    return path, weights, optimizer


def test_round_trip_restores_weights_optimizer_state_and_cursor(tmp_path):
    path, weights, optimizer = _save(tmp_path, step=3)

    loaded = load_checkpoint(path)

    assert loaded.state.step == 3
    assert loaded.state.cursor == DataCursor(epoch=1, index=12)
    assert loaded.state.tokens_seen == 300
    assert loaded.scheduler == {"last_epoch": 3}
    for name, tensor in weights.items():
        assert torch.equal(loaded.weights[name], tensor)
    saved_exp_avg = optimizer["state"][0]["exp_avg"]
    assert torch.equal(loaded.optimizer["state"][0]["exp_avg"], saved_exp_avg)
    assert json.loads((path / ckpt.META_FILE).read_text())["step"] == 3


def test_latest_symlink_points_at_the_newest_and_loads(tmp_path):
    _save(tmp_path, step=1)
    newest, _, _ = _save(tmp_path, step=2)

    assert os.readlink(tmp_path / ckpt.LATEST) == newest.name
    assert latest_checkpoint(tmp_path) == newest
    assert load_checkpoint(tmp_path / ckpt.LATEST).state.step == 2
    assert load_checkpoint(tmp_path).state.step == 2  # a checkpoints root resolves to newest


def test_crash_while_writing_leaves_previous_checkpoint_valid(tmp_path, monkeypatch):
    previous, _, _ = _save(tmp_path, step=1)

    def crash_midway(path, payload):
        path.write_bytes(b"half a pickle")  # a partial file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_training_state", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, step=2)

    assert [p.name for p in tmp_path.iterdir() if p.name != ckpt.LATEST] == [previous.name]
    assert list_checkpoints(tmp_path) == [previous]
    assert load_checkpoint(tmp_path / ckpt.LATEST).state.step == 1


def test_a_killed_writer_leaves_only_an_invisible_tmp_dir_that_is_cleaned(tmp_path):
    previous, _, _ = _save(tmp_path, step=1)
    stale = tmp_path / ".tmp-step-000002-deadbeef"  # SIGKILL before the rename
    stale.mkdir()
    (stale / ckpt.WEIGHTS_FILE).write_bytes(b"partial")

    assert latest_checkpoint(tmp_path) == previous
    assert load_checkpoint(tmp_path).state.step == 1

    _save(tmp_path, step=2)
    assert not stale.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001", "step-000002"]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    _save(tmp_path, step=5, seed=0)
    path, weights, _ = _save(tmp_path, step=5, seed=1)

    loaded = load_checkpoint(path)
    assert torch.equal(loaded.weights["weight"], weights["weight"])
    assert len(list_checkpoints(tmp_path)) == 1


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        weights, optimizer = _optimizer_state(step)
        save_checkpoint(
            tmp_path,
            TrainerState(step=step, cursor=DataCursor()),
            weights=weights,
            optimizer=optimizer,
            scheduler={},
            rng_states=[capture_rng_state()],
            keep=2,
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]


def test_rng_state_restores_python_torch_and_numpy_streams():
    np = pytest.importorskip("numpy")
    state = capture_rng_state()
    expected = (random.random(), torch.rand(3), np.random.rand())

    random.random(), torch.rand(5), np.random.rand()  # drift
    restore_rng_state(state)

    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])
    assert np.random.rand() == expected[2]


def test_incomplete_checkpoint_dir_is_refused(tmp_path):
    path, _, _ = _save(tmp_path, step=1)
    (path / ckpt.STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=ckpt.STATE_FILE):
        load_checkpoint(path)
