"""What a finished run leaves behind, and how to load it back.

<output_dir>/
    metrics.csv               step,loss,lr,grad_norm,tokens_per_second,valid_loss (appended
                              live; valid_loss empty on steps without a validation pass)
    training_summary.json     steps, tokens, final loss, wall time, packing efficiency, config
    checkpoints/              see checkpoint.py
    final/                    the artifact (written on completion only):
        adapter_model.safetensors + adapter_config.json   (method "lora", peft format)
        model.safetensors                                 (method "full")
        config.json           with the RoPE extension: rope_parameters, raised
                              max_position_embeddings and the run's ContextSpec (longtune_context)
        tokenizer files, training_summary.json, metrics.csv

A LoRA artifact's config.json is the *extended* base config, so loading base weights with it
reproduces the scaling the adapter was trained under.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "training_summary.json"
ARTIFACT_DIR = "final"
METRICS_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens_per_second", "valid_loss")
OPTIONAL_COLUMNS = frozenset({"valid_loss"})  # written empty when a step has no value


class MetricsCSV:
    """Append-only metrics.csv; on resume, rows after the resumed step are dropped first (they
    belong to the interrupted attempt and will be produced again). Kept rows are rewritten
    under the current header, so a file from an older run (fewer columns) stays readable."""

    def __init__(self, path: str | Path, *, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = self._rows_up_to(resume_step) if resume_step > 0 else []
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=METRICS_COLUMNS, restval="", extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(kept)

    def _rows_up_to(self, step: int) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [row for row in rows if row.get("step") and int(row["step"]) <= step]

    def append(self, metrics: Mapping[str, Any]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([_cell(metrics, column) for column in METRICS_COLUMNS])


def _cell(metrics: Mapping[str, Any], column: str) -> Any:
    value = metrics.get(column) if column in OPTIONAL_COLUMNS else metrics[column]
    return "" if value is None else value


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """Rows of metrics.csv as numbers; an empty optional cell (e.g. valid_loss) is None."""
    with open(path, newline="") as handle:
        return [
            {key: _number(key, value) for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


def _number(key: str, value: str | None) -> float | None:
    if value is None or value == "":
        if key in OPTIONAL_COLUMNS:
            return None
        raise ValueError(f"metrics.csv: empty {key!r} cell")
    return int(value) if key == "step" else float(value)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_artifact(
    model: torch.nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    method: str,
    base_model: str,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    save_dtype: torch.dtype | None = None,
) -> Path:
    """Write the adapter (peft) or full weights + extended config + tokenizer into out_dir.

    `model` is the unwrapped PeftModel (lora) or PreTrainedModel (full). For FSDP, pass the
    gathered full `state_dict` (rank 0). Written into a temporary sibling and renamed, like
    checkpoints, so `final/` never exists half-written.
    """
    out = Path(out_dir)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if method == "lora":
        # Point the adapter at the registry location (local dir or s3://), not a cache path.
        model.peft_config["default"].base_model_name_or_path = base_model
        model.save_pretrained(tmp, safe_serialization=True)
        model.get_base_model().config.save_pretrained(tmp)
    else:
        weights = dict(state_dict) if state_dict is not None else model.state_dict()
        if save_dtype is not None:
            weights = {
                k: v.to(save_dtype) if v.is_floating_point() else v for k, v in weights.items()
            }
        model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def is_lora_artifact(artifact_dir: str | Path) -> bool:
    return (Path(artifact_dir) / "adapter_config.json").is_file()


def load_trained_model(
    artifact_dir: str | Path,
    *,
    base_model: str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    merge: bool = False,
):
    """(model, tokenizer) from a `final/` artifact, with the RoPE scaling it was trained under.

    LoRA: the base weights (registry location from adapter_config.json unless `base_model` is
    given) are loaded with the artifact's extended config.json, then the adapter on top;
    `merge=True` folds it in. Full: a plain from_pretrained of the directory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from gpu_runtime.registry import resolve_model_dir

    artifact = Path(artifact_dir)
    tokenizer = AutoTokenizer.from_pretrained(artifact, local_files_only=True)
    config = AutoConfig.from_pretrained(artifact, local_files_only=True)
    common = {
        "config": config,
        "attn_implementation": attn_implementation,
        "local_files_only": True,
    }
    if dtype is not None:
        common["dtype"] = dtype
    if not is_lora_artifact(artifact):
        return AutoModelForCausalLM.from_pretrained(artifact, **common), tokenizer

    from peft import PeftModel

    if base_model is None:
        adapter_config = json.loads((artifact / "adapter_config.json").read_text())
        base_model = adapter_config["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(resolve_model_dir(base_model), **common)
    model = PeftModel.from_pretrained(base, artifact)
    if merge:
        model = model.merge_and_unload()
    return model, tokenizer
