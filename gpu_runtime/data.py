"""Training data for one run: examples → packed rows → per-rank micro-batches, resumably.

Tokenizing and packing are deterministic, so every rank builds the same list of packed rows
and a resumed run rebuilds exactly the rows it had. Each epoch visits the rows in a
permutation drawn from (seed, epoch) alone. An optimizer step consumes one *global batch* of
G = micro_batch × world_size × accumulation rows; the rank r, micro-step m slice of it is
rows [(m·W + r)·B, (m·W + r + 1)·B). The cursor (epoch, rows consumed) is therefore all a
checkpoint needs to continue the same stream — and the same G rows form step s whether they
are spread over ranks or over accumulation micro-steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpu_runtime.checkpoint import DataCursor
from gpu_runtime.formats import tokenize_example
from gpu_runtime.packing import PackedSequence, PackingStats, pack_examples, packing_stats

Batch = dict[str, torch.Tensor]  # input_ids / labels / position_ids [B, L]; real_tokens [B]


def load_examples(data: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A list of example dicts from a JSONL path or any iterable of dicts."""
    if isinstance(data, str | Path):
        return list(read_jsonl(data))
    examples = list(data)
    for number, example in enumerate(examples, start=1):
        if not isinstance(example, dict):
            raise ValueError(
                f"example {number}: expected a JSON object, got {type(example).__name__}"
            )
    return examples


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number}: expected a JSON object")
            yield record


def pack_dataset(
    examples: Iterable[dict[str, Any]],
    tokenizer: Any,
    seq_len: int,
    *,
    train_on_inputs: bool = False,
) -> tuple[list[PackedSequence], PackingStats]:
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    tokenized = (
        _tokenize_numbered(number, example, tokenizer, train_on_inputs)
        for number, example in enumerate(examples, start=1)
    )
    rows = list(pack_examples(tokenized, seq_len, pad_token_id=pad_id))
    return rows, packing_stats(rows)


def _tokenize_numbered(number: int, example: dict[str, Any], tokenizer: Any, train_on_inputs: bool):
    try:
        return tokenize_example(example, tokenizer, train_on_inputs=train_on_inputs)
    except ValueError as exc:
        raise ValueError(f"example {number}: {exc}") from exc


@dataclass(frozen=True)
class BatchPlan:
    """Which packed rows a rank feeds at each optimizer step."""

    num_rows: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the data packs into {self.num_rows} sequences, fewer than one optimizer step "
                f"needs (micro_batch_size × gradient_accumulation_steps × world_size = "
                f"{self.global_batch_rows}); add data or lower those settings"
            )

    @property
    def global_batch_rows(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        # The incomplete last global batch is dropped: every step has the same size.
        return self.num_rows // self.global_batch_rows

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def step_rows(self, cursor: DataCursor) -> tuple[list[list[int]], DataCursor]:
        """Row indices for this rank's micro-batches of the step at `cursor`, and the next cursor."""
        if cursor.index + self.global_batch_rows > self.steps_per_epoch * self.global_batch_rows:
            cursor = DataCursor(epoch=cursor.epoch + 1, index=0)
        order = self.epoch_order(cursor.epoch)
        start, batch = cursor.index, self.micro_batch_size
        micro = []
        for m in range(self.gradient_accumulation_steps):
            offset = start + (m * self.world_size + self.rank) * batch
            micro.append(order[offset : offset + batch])
        return micro, DataCursor(epoch=cursor.epoch, index=start + self.global_batch_rows)


def collate(rows: list[PackedSequence]) -> Batch:
    """Stack packed rows into [B, L] tensors; no attention_mask (documents come from positions)."""
    return {
        "input_ids": torch.stack([r.input_ids for r in rows]),
        "labels": torch.stack([r.labels for r in rows]),
        "position_ids": torch.stack([r.position_ids for r in rows]),
        # [B] tokens that are not padding: what a job is billed for ("trained tokens")
        "real_tokens": torch.tensor([r.num_real_tokens for r in rows]),
    }
