"""Sequence parallelism over gloo: a row split over 2 or 4 ranks trains exactly like one rank.

Three levels, all on real torch.distributed process groups started by torchrun:
  - attention: Ulysses and ring (both slicings, the math and CPU-flash ring kernels) against the
    single-process per-document kernel, outputs and q/k/v gradients (float64);
  - one objective step: loss and every trainable gradient, LoRA and full, with RoPE scaling,
    activation checkpointing, the tiled MLP and the chunked loss (sequence_parallel_worker.py);
  - the training CLI: loss curves of sequence-parallel runs (1-D, and 2-D data × sequence under
    FSDP) equal the single-process run on the same rows, and a checkpoint written by one world
    size resumes on another.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpu_runtime import sequence_parallel as sp
from gpu_runtime.contract import RING, ULYSSES, TrainConfig, resolve_sequence_parallel_mode
from gpu_runtime.loss import IGNORE_INDEX, shift_labels
from gpu_runtime.tiny import build_tiny_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sequence_parallel_worker.py")
SAVED_TENSORS_WORKER = Path(__file__).with_name("saved_tensors_worker.py")
STEPS = 3


# --------------------------------------------------------------------------- pure units


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
@pytest.mark.parametrize("slicing", [sp.CONTIGUOUS, sp.ZIGZAG])
def test_slices_partition_the_row(degree, slicing):
    length = 48
    slices = [sp.slice_indices(length, degree, rank, slicing) for rank in range(degree)]
    assert all(len(s) == length // degree for s in slices)
    assert torch.cat(slices).sort().values.tolist() == list(range(length))


def test_zigzag_gives_every_rank_the_same_causal_work():
    """Under a causal mask token t attends t + 1 keys; zig-zag balances the sum, contiguous not."""

    def work(slicing: str) -> list[int]:
        return [int((sp.slice_indices(64, 4, r, slicing) + 1).sum()) for r in range(4)]

    assert len(set(work(sp.ZIGZAG))) == 1
    contiguous = work(sp.CONTIGUOUS)
    assert contiguous[-1] > 5 * contiguous[0]


def test_uneven_rows_are_refused():
    with pytest.raises(ValueError, match="does not split"):
        sp.slice_chunks(50, 4, 0, sp.ZIGZAG)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "degree", "expected"),
    [
        (32, 8, 8, ULYSSES),  # Llama-3-8B on 8 ranks
        (64, 8, 8, ULYSSES),  # Llama-3-70B
        (32, 8, 16, ULYSSES),  # KV heads replicated to 2 ranks each
        (4, 2, 8, RING),  # fewer query heads than ranks
        (12, 4, 8, RING),  # 12 heads do not split over 8
        (32, 8, 1, ULYSSES),
    ],
)
def test_auto_mode_rule(heads, kv_heads, degree, expected):
    assert resolve_sequence_parallel_mode("auto", degree, heads, kv_heads) == expected
    if degree > 1:  # one rank holds the whole row: no scheme to choose
        assert resolve_sequence_parallel_mode(RING, degree, heads, kv_heads) == RING


def test_explicit_ulysses_that_the_heads_do_not_allow_names_the_field():
    with pytest.raises(ValueError, match="^sequence_parallel_mode: 'ulysses' needs"):
        resolve_sequence_parallel_mode(ULYSSES, 8, 4, 2)


def test_config_carries_and_validates_sequence_parallel_fields():
    config = TrainConfig(
        base_model="m",
        output_dir="o",
        context_length=1 << 20,
        sequence_parallel=8,
        sequence_parallel_mode="ring",
    )
    again = TrainConfig.from_json(config.to_json())
    assert again == config and again.sequence_parallel == 8
    assert TrainConfig(base_model="m", output_dir="o", context_length=8).sequence_parallel == 1
    bad = [
        ({"sequence_parallel": 0}, "sequence_parallel"),
        ({"sequence_parallel": True}, "sequence_parallel"),
        ({"sequence_parallel": 2.0}, "sequence_parallel"),
        ({"sequence_parallel": 4, "context_length": 100}, "context_length"),
        ({"sequence_parallel_mode": "megatron"}, "sequence_parallel_mode"),
    ]
    for overrides, field in bad:
        values = {"base_model": "m", "output_dir": "o", "context_length": 64, **overrides}
        with pytest.raises(ValueError, match=f"^{field}:"):
            TrainConfig(**values)


@pytest.mark.parametrize("mode", [ULYSSES, RING])
def test_shards_hold_the_whole_rows_targets_shifted_before_the_cut(mode):
    """The slices' targets, put back in row order, are the whole row's shifted labels: the last
    token of a slice keeps its target (the next slice's first token)."""
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1, 0, 1]])
    labels = torch.arange(100, 116)[None].clone()
    labels[positions == 0] = IGNORE_INDEX
    batch = {
        "input_ids": torch.arange(16)[None],
        "labels": labels,
        "position_ids": positions,
        "real_tokens": torch.tensor([14]),  # the last 2 tokens are padding
    }
    row = torch.empty(16, dtype=torch.long)
    real = 0
    for rank in range(4):
        layout = sp.SequenceLayout(4, rank, 1, 0, mode=mode)
        local, shard = sp.prepare_batch(batch, layout)
        index = sp.slice_indices(16, 4, rank, shard.slicing)
        assert local["input_ids"][0].tolist() == index.tolist()
        assert local["position_ids"][0].tolist() == positions[0, index].tolist()
        row[index] = local["targets"][0]
        real += int(local["real_tokens"].sum())
        assert shard.slicing == (sp.ZIGZAG if mode == RING else sp.CONTIGUOUS)
    assert row.tolist() == shift_labels(labels)[0].tolist()
    assert real == 14


def test_a_degree_that_does_not_divide_the_world_names_the_field():
    from gpu_runtime.distributed import DistContext

    ctx = DistContext(0, 3, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="^sequence_parallel: 2 does not divide the world size 3"):
        sp.init_sequence_layout(ctx, 2)
    layout = sp.init_sequence_layout(ctx, 1)  # no groups to create: works without a process group
    assert (layout.enabled, layout.data_parallel, layout.data_rank) == (False, 3, 0)


def test_validation_rows_are_shared_by_data_rank_not_by_sequence_rank():
    """4 ranks as 2 data × 2 sequence: both ranks of a sequence group evaluate the same rows
    (each its slice), and the two groups split the rows between them."""
    from gpu_runtime.distributed import DistContext
    from gpu_runtime.packing import PackedSequence
    from gpu_runtime.validation_loss import rank_eval_batches

    rows = [
        PackedSequence(
            input_ids=torch.full((8,), i),
            labels=torch.full((8,), i),
            position_ids=torch.arange(8),
            num_documents=1,
            num_real_tokens=8,
        )
        for i in range(4)
    ]
    seen = {}
    for rank in range(4):
        ctx = DistContext(rank, 4, rank, torch.device("cpu"))
        layout = sp.SequenceLayout(2, rank % 2, 2, rank // 2, mode=ULYSSES)
        batches = rank_eval_batches(rows, 1, ctx, layout)
        seen[rank] = [int(b["input_ids"][0, 0]) for b in batches]
    assert seen[0] == seen[1] == [0, 2] and seen[2] == seen[3] == [1, 3]


def test_block_pairs_follow_documents_and_causality():
    """Rank 0 of 2, zig-zag (chunks 0 and 3 of 4-token chunks): a document crossing chunks
    1→2 is unseen by rank 0's chunk 0 queries; chunk 3 sees its own document's earlier keys."""
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    layout0 = sp.SequenceLayout(2, 0, 1, 0, mode=RING)
    shard = sp.SequenceShard(layout0, positions)
    # rank 0 holds tokens 0-3 (doc 1) and 12-15 (doc 2); rank 1 holds 4-7 and 8-11.
    own = shard.block_pairs(0)
    assert (0, 0, 4, 0, 4, True) in own  # chunk 0 with itself
    assert (0, 4, 8, 4, 8, True) in own  # chunk 3 with itself
    assert len(own) == 2  # doc 1 and doc 2 never meet
    other = shard.block_pairs(1)
    # rank 1's local tokens 0-1 are doc 1 (global 4-5), after rank 0's chunk 0: not visible
    # to it; rank 1's doc-2 tokens (global 6-7 and 8-11, local 2-4 and 4-8) precede chunk 3:
    # fully visible, one pair per chunk.
    assert other == [(0, 4, 8, 2, 4, False), (0, 4, 8, 4, 8, False)]


# --------------------------------------------------------------------------- torchrun helpers


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def _torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
    ]
    done = subprocess.run(
        launcher + args, env=_env(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """4 query / 2 KV heads, pre-trained (nominally) at 32 tokens: rows of 48–64 are a RoPE
    extension (yarn), so scaling composes with the slices too."""
    return build_tiny_model_dir(
        tmp_path_factory.mktemp("sp-base") / "tiny", seed=1, max_position_embeddings=32
    )


def _worker_results(tmp_path: Path, base_model: Path, nproc: int) -> list[dict]:
    _torchrun(nproc, [str(WORKER), str(tmp_path), str(base_model)])
    return [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(nproc)]


def _check_worker_results(results: list[dict], nproc: int) -> None:
    assert len(results) == nproc
    for rank, result in enumerate(results):
        assert result["world_size"] == nproc
        attention = {
            k: v for k, v in result.items() if k.rsplit("/", 1)[-1] in {"out", "dq", "dk", "dv"}
        }
        assert len(attention) == 5 * 4  # every scheme × slicing × (output, 3 gradients)
        worst = max(attention, key=attention.get)
        assert attention[worst] < 1e-12, (rank, worst, attention[worst])  # float64
        for method in ("lora", "full"):
            assert result[f"{method}/reference_loss"] > 1.0
            for mode in (ULYSSES, RING):
                key = f"{method}-{mode}"
                assert result[f"{key}/grads"] == result[f"{method}/trainable"] > 0
                assert result[f"{key}/loss"] < 1e-5, (rank, key)
                # float32, summed over ranks in another order: 1e-6 of the largest gradient
                assert result[f"{key}/grad"] < 1e-6 * max(result[f"{key}/grad_scale"], 1.0)


def test_two_ranks_attention_and_step_match_one_process(tmp_path, base_model):
    _check_worker_results(_worker_results(tmp_path, base_model, 2), 2)


@pytest.mark.slow
def test_four_ranks_attention_and_step_match_one_process(tmp_path, base_model):
    """4 ranks: Ulysses replicates the 2 KV heads; ring runs a 4-step ring."""
    _check_worker_results(_worker_results(tmp_path, base_model, 4), 4)


@pytest.mark.parametrize("nproc", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_ulysses_saves_what_the_memory_planner_counts(tmp_path, nproc):
    """The bytes autograd saves for one HF Llama layer (fp32) in one process on L/N tokens
    are the planner's per-layer inventory; under Ulysses over N ranks the head-sharded
    q/k/v/out replace the sequence-sharded tensors byte for byte, so the difference is
    exactly the planner's Ulysses term (0 at 2 ranks; at 4 the 2 KV heads are replicated)."""
    from gpu_runtime import memory_planner as mp

    _torchrun(nproc, [str(SAVED_TENSORS_WORKER), str(tmp_path)])
    for rank in range(nproc):
        record = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert record["world_size"] == nproc
        shape = mp.ModelShape(layers=1, vocab=16, **record["shape"])
        unit = record["tokens"] * shape.hidden * 4  # one fp32 [L/N x hidden]
        extra = mp._ulysses_replicated_kv_units(shape, nproc) * unit
        # One process: the planner's inventory of a layer (its input = the checkpoint, the
        # attention half, the untiled MLP) + what it leaves to other terms or neglects: RoPE's
        # cos/sin [t x head_dim] (shared by all layers), the kernel's fp32 log-sum-exp
        # [heads x t] (attention_workspace), the two norms' rsqrt [t x 1].
        setup = mp.TrainingSetup(
            context_length=record["tokens"], lora_dropout=0.0, compute_dtype="float32"
        )
        inventory = 1 + mp._attention_saved_units(shape, setup, 4.0)
        inventory += mp._mlp_saved_units(shape, setup, 4.0)
        small = record["tokens"] * 4 * (2 * shape.head_dim + shape.heads + 2)
        assert record["single_saved_bytes"] == inventory * unit + small, record
        # bf16: the layer input itself is saved by no one (its fp32 copy is, in the inventory);
        # cos/sin are bf16, the log-sum-exp and rsqrt stay fp32
        bf16 = dataclasses.replace(setup, compute_dtype="bfloat16")
        inventory = mp._attention_saved_units(shape, bf16, 2.0)
        inventory += mp._mlp_saved_units(shape, bf16, 2.0)
        small = record["tokens"] * (2 * shape.head_dim * 2 + (shape.heads + 2) * 4)
        assert record["single_bf16_saved_bytes"] == inventory * (unit // 2) + small, record
        assert record["ulysses_saved_bytes"] - record["single_saved_bytes"] == extra, record
    assert (extra > 0) == (nproc > shape.kv_heads)


# --------------------------------------------------------------------------- the training CLI


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, base_model) -> Path:
    root = tmp_path_factory.mktemp("sp-train")
    lengths = [3, 9, 5, 14, 2, 7, 11, 4]  # words: documents of mixed lengths, packed 64 a row
    with open(root / "data.jsonl", "w") as handle:
        for i in range(24):
            words = " ".join(["river", "light", "warm", "city"] * 4)[: 6 * lengths[i % 8]]
            handle.write(json.dumps({"text": f"The {words} {i}."}) + "\n")
    return root


def _config(workspace: Path, base_model: Path, name: str, **extra) -> Path:
    config = {
        "base_model": str(base_model),
        "output_dir": str(workspace / name),
        "context_length": 64,
        "max_steps": STEPS,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "checkpoint_every_steps": 2,
        "mlp_chunk_size": 8,
        "loss_chunk_size": 24,
        **extra,
    }
    path = workspace / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def _records(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _train(workspace: Path, config: Path, nproc: int) -> list[dict]:
    args = ["-m", "gpu_runtime", "train", "--config", str(config)]
    args += ["--data", str(workspace / "data.jsonl")]
    if nproc == 1:
        done = subprocess.run(
            [sys.executable, *args],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return _records(done)
    return _records(_torchrun(nproc, args))


def _losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if r["type"] == "step"]


def _ready(records: list[dict]) -> dict:
    return next(r for r in records if r.get("name") == "model_ready")


def test_sequence_parallel_lora_run_matches_single_process_and_resumes_on_one_rank(
    workspace, base_model
):
    """World 2 = one sequence group (Ulysses, contiguous slices), LoRA under DDP; then the
    step-2 checkpoint it wrote resumes on ONE process without sequence parallelism."""
    single = _train(workspace, _config(workspace, base_model, "lora-single"), 1)
    split = _train(workspace, _config(workspace, base_model, "lora-sp2", sequence_parallel=2), 2)
    ready = _ready(split)
    assert ready["world_size"] == 2 and ready["sequence_parallel"] == 2
    assert ready["data_parallel"] == 1
    assert ready["sequence_parallel_mode"] == ULYSSES  # 4 query / 2 KV heads split over 2
    assert ready["attn_implementation"] == sp.SEQUENCE_PARALLEL_ATTENTION
    results = [r for r in split if r["type"] == "result"]
    assert len(results) == 1 and results[0]["status"] == "completed"
    assert len(_losses(split)) == STEPS
    assert _losses(split) == pytest.approx(_losses(single), abs=1e-5, rel=0)
    assert _losses(split)[-1] < _losses(split)[0]
    single_tokens = [r["trained_tokens"] for r in single if r["type"] == "result"]
    assert results[0]["trained_tokens"] == single_tokens[0]  # slices add up to whole rows
    summary = json.loads((workspace / "lora-sp2" / "training_summary.json").read_text())
    assert summary["sequence_parallel"] == 2 and summary["world_size"] == 2

    # Resume at another world size: the 2-rank checkpoint of step 2, continued by 1 process.
    resumed_dir = workspace / "lora-resume-1"
    shutil.copytree(workspace / "lora-sp2" / "checkpoints", resumed_dir / "checkpoints")
    again = _train(workspace, _config(workspace, base_model, "lora-resume-1"), 1)
    resumed = next(r for r in again if r.get("name") == "resumed")
    assert resumed["step"] == 2
    assert _losses(again) == pytest.approx(_losses(split)[2:], abs=1e-5, rel=0)


@pytest.mark.slow
def test_two_d_full_fsdp_ring_run_matches_single_process_and_resumes_on_four_ranks(
    workspace, base_model
):
    """World 4 = 2 data × 2 sequence ranks, full fine-tuning under FSDP2 with ring attention
    (zig-zag slices), against 1 process accumulating the same 2 rows per step; then its step-2
    checkpoint resumes on 4 ranks laid out differently: one sequence group of 4."""
    single = _train(
        workspace,
        _config(workspace, base_model, "full-single", method="full", gradient_accumulation_steps=2),
        1,
    )
    grid = _train(
        workspace,
        _config(
            workspace,
            base_model,
            "full-2x2",
            method="full",
            sequence_parallel=2,
            sequence_parallel_mode="ring",
        ),
        4,
    )
    ready = _ready(grid)
    assert (ready["world_size"], ready["data_parallel"], ready["sequence_parallel"]) == (4, 2, 2)
    assert ready["sequence_parallel_mode"] == RING and ready["sequence_slicing"] == sp.ZIGZAG
    assert _losses(grid) == pytest.approx(_losses(single), abs=1e-5, rel=0)
    assert (workspace / "full-2x2" / "final" / "model.safetensors").is_file()

    # 4 ranks again, now one sequence group of 4 (data_parallel 1, accumulation 2: the same
    # 2 rows per step), resuming the 2×2 checkpoint of step 2 and redoing step 3.
    resumed_dir = workspace / "full-resume-4"
    shutil.copytree(workspace / "full-2x2" / "checkpoints", resumed_dir / "checkpoints")
    again = _train(
        workspace,
        _config(
            workspace,
            base_model,
            "full-resume-4",
            method="full",
            sequence_parallel=4,
            sequence_parallel_mode="ring",
            gradient_accumulation_steps=2,
        ),
        4,
    )
    assert next(r for r in again if r.get("name") == "resumed")["step"] == 2
    assert _ready(again)["sequence_parallel"] == 4
    assert _losses(again) == pytest.approx(_losses(grid)[2:], abs=1e-5, rel=0)


# --------------------------------------------------------------------------- GPU (NCCL)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and sp.flash_attn_available()),
    reason="needs CUDA and flash-attn",
)
def test_nccl_world_of_one_with_flash_kernels_matches_varlen(monkeypatch):
    """One GPU: an NCCL group of one, Ulysses (its all-to-alls over NCCL, flash-attn varlen
    inside) and ring (flash-attn block kernels and their backward) against the plain varlen
    kernel on the same packed rows, bf16."""
    import torch.distributed as dist

    from gpu_runtime.attention import varlen_attention

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        generator = torch.Generator(device="cuda").manual_seed(0)

        def make(heads: int) -> torch.Tensor:
            shape = (2, heads, 64, 64)
            return torch.randn(shape, generator=generator, device="cuda", dtype=torch.bfloat16)

        q, k, v = make(8), make(2), make(2)
        dout = torch.randn(2, 64, 8, 64, generator=generator, device="cuda", dtype=torch.bfloat16)
        positions = torch.cat([torch.arange(n) for n in (10, 30, 24)])[None].expand(2, -1).cuda()
        ref_inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
        reference = varlen_attention(*ref_inputs, positions)
        reference.backward(dout)
        for mode in (ULYSSES, RING):
            layout = sp.SequenceLayout(1, 0, 1, 0, dist.group.WORLD, (0,), mode=mode)
            shard = sp.SequenceShard(layout, positions)
            mine = [t.clone().requires_grad_(True) for t in (q, k, v)]
            if mode == ULYSSES:
                out = sp.ulysses_attention(*mine, shard)
            else:
                assert sp.ring_kernels_for(q) is sp.FLASH_KERNELS
                out = sp.ring_attention(*mine, shard)
            out.backward(dout)
            torch.testing.assert_close(out.float(), reference.float(), rtol=2e-2, atol=2e-2)
            for got, want in zip(mine, ref_inputs, strict=True):
                torch.testing.assert_close(
                    got.grad.float(), want.grad.float(), rtol=3e-2, atol=3e-2
                )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_ring_kernels_match_the_math_kernels_in_16_and_32_bits(dtype):
    """One ring block through torch's CPU flash kernels, forward and backward (given the
    final out/lse as the ring does), against the math reference; bf16's backward used to
    raise because the log-sum-exp was cast to bf16."""
    generator = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, 2, 64, 16, generator=generator) for _ in range(4))
    scale = 16**-0.5
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {}
    low = [t.to(dtype) for t in (q, k, v, dout)]
    for causal in (True, False):
        out, lse = sp.CPU_KERNELS.forward(*low[:3], causal, scale)
        ref_out, ref_lse = sp.MATH_KERNELS.forward(q, k, v, causal, scale)
        torch.testing.assert_close(out, ref_out, **tolerance)
        torch.testing.assert_close(lse, ref_lse, **tolerance)
        grads = sp.CPU_KERNELS.backward(low[3], *low[:3], out, lse, causal, scale)
        ref = sp.MATH_KERNELS.backward(dout, q, k, v, ref_out, ref_lse, causal, scale)
        for got, want in zip(grads, ref, strict=True):
            torch.testing.assert_close(got, want, **tolerance)
