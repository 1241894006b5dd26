"""Atomic training checkpoints: a directory appears complete or not at all.

Layout under `<output_dir>/checkpoints/`:
    step-000100/
        trainable.safetensors   trainable weights only (LoRA adapter + modules_to_save, or all)
        training_state.pt       optimizer, scheduler, RNG states of every rank
        trainer_state.json      step, data cursor, tokens seen, wall time (human readable)
    latest -> step-000100       convenience symlink, swapped atomically

Why atomic: a worker can be killed (preemption, OOM, cancel) at any instant. Everything is
written into a hidden `.tmp-*` sibling, fsynced, then renamed into place with os.replace, so
a reader sees either the previous checkpoint or the new one, never half of one. Step
directories are the source of truth; `latest` is only a pointer for humans and `resume_from`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"
WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "trainer_state.json"
_PREFIX = "step-"
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class DataCursor:
    """Where the data stream stands: `index` global packed sequences consumed in `epoch`."""

    epoch: int = 0
    index: int = 0


@dataclass
class TrainerState:
    step: int
    cursor: DataCursor
    tokens_seen: int = 0
    trained_tokens: int = 0  # tokens_seen without padding
    wall_time_s: float = 0.0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerState:
        return cls(
            step=int(data["step"]),
            cursor=DataCursor(**data["cursor"]),
            tokens_seen=int(data.get("tokens_seen", 0)),
            trained_tokens=int(data.get("trained_tokens", 0)),
            wall_time_s=float(data.get("wall_time_s", 0.0)),
            world_size=int(data.get("world_size", 1)),
            extra=dict(data.get("extra", {})),
        )


@dataclass
class Checkpoint:
    path: Path
    state: TrainerState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng_states: list[dict[str, Any]]  # indexed by rank


# --------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step can draw from (dropout, shuffles in user code)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # numpy is optional; torch does not need it
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain lists: torch.load(weights_only=True) refuses numpy arrays.
    state["numpy"] = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples all the way down; serialisation may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


# --------------------------------------------------------------------------- listing


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:06d}"


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith(_PREFIX) and child.is_dir() and not child.is_symlink():
            try:
                found.append((int(child.name[len(_PREFIX) :]), child))
            except ValueError:
                continue
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


# --------------------------------------------------------------------------- writing


def save_checkpoint(
    checkpoints_dir: str | Path,
    state: TrainerState,
    *,
    weights: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    rng_states: list[dict[str, Any]],
    keep: int | None = None,
) -> Path:
    """Write a checkpoint for `state.step` atomically and return its final directory."""
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(root)
    final = root / step_dir_name(state.step)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_weights(tmp / WEIGHTS_FILE, weights)
        _write_training_state(
            tmp / STATE_FILE,
            {"optimizer": dict(optimizer), "scheduler": dict(scheduler), "rng": rng_states},
        )
        _write_json(tmp / META_FILE, state.to_dict())
        _fsync_dir(tmp)
        _replace_dir(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(root, final.name)
    if keep is not None:
        prune_checkpoints(root, keep)
    return final


def prune_checkpoints(checkpoints_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _write_weights(path: Path, weights: Mapping[str, torch.Tensor]) -> None:
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in weights.items()}
    save_file(tensors, str(path))
    _fsync_file(path)


def _write_training_state(path: Path, payload: dict[str, Any]) -> None:
    with open(path, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename tmp → final. A directory cannot be os.replace'd over a non-empty one, so an
    existing checkpoint of the same step (re-run after resume) is first moved aside."""
    if final.exists():
        aside = final.with_name(f"{_TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _point_latest(root: Path, target_name: str) -> None:
    link_tmp = root / f"{_TMP_PREFIX}latest-{uuid.uuid4().hex[:8]}"
    os.symlink(target_name, link_tmp)
    os.replace(link_tmp, root / LATEST)  # rename(2) over the old link: atomic
    _fsync_dir(root)


def _remove_stale_tmp_dirs(root: Path) -> None:
    """Leftovers of a writer that died mid-checkpoint (only one writer runs: rank 0)."""
    for child in root.iterdir():
        if child.name.startswith(_TMP_PREFIX):
            if child.is_symlink() or child.is_file():
                child.unlink(missing_ok=True)
            else:
                shutil.rmtree(child, ignore_errors=True)


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint directory (or the `latest` symlink, or a checkpoints root)."""
    path = Path(path)
    if path.is_dir() and not (path / META_FILE).exists():
        newest = latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"no checkpoint found in {path}")
        path = newest
    path = path.resolve()
    for name in (WEIGHTS_FILE, STATE_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is missing {name}")
    state = TrainerState.from_dict(json.loads((path / META_FILE).read_text()))
    payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return Checkpoint(
        path=path,
        state=state,
        weights=load_file(str(path / WEIGHTS_FILE)),
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        rng_states=list(payload["rng"]),
    )
