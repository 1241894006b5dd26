"""One torchrun rank of tests/gpu_runtime/test_sequence_parallel.py (not a test module itself).

Every rank computes the single-process reference itself (same seeded inputs, whole rows, the
ordinary per-document kernel) and its sequence-parallel share, and writes the largest
differences it saw to <out>/rank-<r>.json; the test asserts on them. One launch runs every
case so torch/transformers are imported once per rank.

    torchrun --nproc_per_node N tests/gpu_runtime/sequence_parallel_worker.py OUT MODEL_DIR
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gpu_runtime import sequence_parallel as sp
from gpu_runtime.attention import varlen_attention
from gpu_runtime.contract import RING, ULYSSES, TrainConfig
from gpu_runtime.distributed import init_distributed
from gpu_runtime.loss import IGNORE_INDEX
from gpu_runtime.train import CausalLMObjective, build_model, causal_lm_of

# Documents of mixed lengths; with 2 and 4 ranks several cross slice boundaries, one spans
# more than one slice, and row 1 ends in padding (its own "document", as packing.py makes it).
DOCUMENTS = ([5, 17, 2, 24], [30, 3, 9, 6])  # row lengths: 48 each
LENGTH = 48


def packed_position_ids() -> torch.Tensor:  # [2, 48], restarting at 0 per document
    return torch.stack([torch.cat([torch.arange(n) for n in row]) for row in DOCUMENTS])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def attention_cases(layout: sp.SequenceLayout) -> dict[str, float]:
    """Output and q/k/v gradients of Ulysses and ring, both slicings, against varlen."""
    results = {}
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, LENGTH, 8, generator=generator, dtype=torch.float64)  # GQA 4/2
    k = torch.randn(2, 2, LENGTH, 8, generator=generator, dtype=torch.float64)
    v = torch.randn(2, 2, LENGTH, 8, generator=generator, dtype=torch.float64)
    dout = torch.randn(2, LENGTH, 4, 8, generator=generator, dtype=torch.float64)
    positions = packed_position_ids()
    ref_inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    reference = varlen_attention(*ref_inputs, positions, scaling=0.3)  # [B, L, Hq, D]
    reference.backward(dout)
    cases = [
        (ULYSSES, sp.CONTIGUOUS, None),
        (ULYSSES, sp.ZIGZAG, None),
        (RING, sp.ZIGZAG, None),
        (RING, sp.CONTIGUOUS, None),
        (RING, sp.ZIGZAG, sp.MATH_KERNELS),
    ]
    for mode, slicing, kernels in cases:
        mode_layout = dataclasses.replace(layout, mode=mode)
        shard = sp.SequenceShard(mode_layout, positions, slicing)
        index = sp.slice_indices(LENGTH, layout.degree, layout.rank, slicing)
        local = [t[:, :, index].clone().requires_grad_(True) for t in (q, k, v)]
        if mode == ULYSSES:
            out = sp.ulysses_attention(*local, shard, scaling=0.3)
        else:
            out = sp.ring_attention(*local, shard, scaling=0.3, kernels=kernels)
        out.backward(dout[:, index])
        name = f"{mode}-{slicing}" + (f"-{kernels.name}" if kernels else "")
        results[f"{name}/out"] = max_diff(out, reference[:, index])
        for label, mine, ref in zip("qkv", local, ref_inputs, strict=True):
            results[f"{name}/d{label}"] = max_diff(mine.grad, ref.grad[:, :, index])
    return results


def objective_cases(layout: sp.SequenceLayout, model_dir: str) -> dict[str, float]:
    """Loss and every trainable gradient of one step, LoRA and full, Ulysses and ring, with
    RoPE scaling (yarn, 48 over a 32-token base), activation checkpointing, the tiled MLP and
    a chunked loss whose chunks do not align with the slices."""
    results = {}
    generator = torch.Generator().manual_seed(1)
    positions = packed_position_ids()
    input_ids = torch.randint(6, 500, (2, LENGTH), generator=generator)
    labels = input_ids.clone()
    labels[positions == 0] = IGNORE_INDEX  # packing's document-boundary convention
    labels[1, -6:] = IGNORE_INDEX  # the padding tail of row 1
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
    for method in ("lora", "full"):
        config = TrainConfig(
            base_model=model_dir,
            output_dir="/unused",
            context_length=LENGTH,
            method=method,
            lora_dropout=0.0,
            lora_train_embeddings_and_norms=True,
            loss_chunk_size=5,
            mlp_chunk_size=4,
            dtype="float32",
            sequence_parallel=layout.degree,
        )
        reference_grads, reference_loss = None, None
        for mode in (None, ULYSSES, RING):  # None: the single-process step on whole rows
            torch.manual_seed(0)  # the same LoRA initialisation every time
            model = build_model(config, torch.device("cpu"), torch.float32)
            causal_lm = causal_lm_of(model)
            objective = CausalLMObjective(causal_lm, config.loss_chunk_size)
            objective.train()
            if mode is None:
                local, shard = sp.prepare_batch(batch, None)
            else:
                mode_layout = sp.enable_sequence_parallel(causal_lm, layout, mode)
                local, shard = sp.prepare_batch(batch, mode_layout)
            summed = objective(
                local["input_ids"], local["position_ids"], local["targets"], sequence_shard=shard
            )
            counted = torch.tensor([float(sp.count_targets(local["targets"]))])
            total = summed.detach().reshape(1).clone()
            if mode is not None:
                dist.all_reduce(counted)
                dist.all_reduce(total)
            (summed / counted).backward()
            grads = {
                name: p.grad.detach().clone()
                for name, p in objective.named_parameters()
                if p.requires_grad
            }
            if mode is not None:
                for grad in grads.values():
                    dist.all_reduce(grad)
            loss = float(total / counted)
            if mode is None:
                reference_grads, reference_loss = grads, loss
                results[f"{method}/reference_loss"] = loss
                results[f"{method}/trainable"] = len(grads)
                continue
            results[f"{method}-{mode}/loss"] = abs(loss - reference_loss)
            results[f"{method}-{mode}/grad"] = max(
                max_diff(grads[name], reference_grads[name]) for name in reference_grads
            )
            results[f"{method}-{mode}/grad_scale"] = max(
                float(g.abs().max()) for g in reference_grads.values()
            )
            results[f"{method}-{mode}/grads"] = len(grads)
    return results


def main(out_dir: str, model_dir: str) -> int:
    torch.set_num_threads(1)
    ctx = init_distributed()
    layout = sp.init_sequence_layout(ctx, ctx.world_size)
    results = {"world_size": ctx.world_size, **attention_cases(layout)}
    results.update(objective_cases(layout, model_dir))
    Path(out_dir, f"rank-{ctx.rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(*sys.argv[1:3]))
