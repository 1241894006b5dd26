"""The training loop: packed long sequences → decoder → chunked loss → AdamW, resumably.

`train(config, data, callbacks, eval_data=None)` reads top to bottom as the recipe:
    1. join the process group (torchrun) or run alone          distributed.py
    2. tokenize + pack the data, plan each rank's rows          data.py
    3. load the base model RoPE-extended, attach LoRA or not    registry.py / rope.py / peft
    4. wrap it (DDP for LoRA, FSDP2 for full), AdamW + schedule
    5. resume from the newest checkpoint if there is one        checkpoint.py
    6. per step: micro-batches → hidden states → chunked loss → backward → clip → step
    7. validation loss every `eval_every_steps` and at the end     validation_loss.py
       callbacks (metrics, cancellation), periodic checkpoints
    8. write the artifact and summary                           output.py

The forward never calls `model(labels=...)`: that would build [tokens × vocab] logits, which at
long context outweigh everything else (benchmarks/results/train_memory.md). The decoder returns
hidden states and `chunked_causal_lm_loss` streams them through the LM head.
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from gpu_runtime.callbacks import CallbackList, StepMetrics
from gpu_runtime.checkpoint import (
    DataCursor,
    TrainerState,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from gpu_runtime.contract import ALL_LINEAR, ContextSpec, TrainConfig
from gpu_runtime.data import Batch, BatchPlan, collate, load_examples, pack_dataset
from gpu_runtime.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    gradient_sync,
    init_distributed,
    shutdown,
    wrap_for_training,
)
from gpu_runtime.loss import chunked_target_loss
from gpu_runtime.output import (
    ARTIFACT_DIR,
    METRICS_FILE,
    SUMMARY_FILE,
    MetricsCSV,
    save_artifact,
    write_json_atomic,
)
from gpu_runtime.registry import load_model, load_tokenizer
from gpu_runtime.sequence_parallel import (
    SequenceLayout,
    SequenceShard,
    count_targets,
    describe,
    enable_sequence_parallel,
    init_sequence_layout,
    prepare_batch,
)
from gpu_runtime.tiling import enable_tiled_mlp
from gpu_runtime.validation_loss import evaluate, rank_eval_batches

COMPLETED = "completed"
EPOCHS_DIR = "epochs"  # output_dir/epochs/step-<n>/: per-epoch artifacts (epoch_artifacts)
STOPPED = "stopped"


@dataclass
class TrainResult:
    status: str  # "completed" | "stopped"
    steps: int  # optimizer steps done in total (across resumes)
    total_steps: int
    tokens_seen: int  # tokens fed to the model, all ranks, padding included
    final_loss: float | None
    wall_time_s: float  # across resumes
    output_dir: Path
    artifact_dir: Path | None  # None when stopped
    checkpoint_dir: Path | None  # newest checkpoint, if any
    stop_reason: str | None = None
    valid_loss: float | None = None  # the last validation loss, when eval_data was given
    trained_tokens: int = 0  # tokens_seen without padding: what a job is billed for

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("output_dir", "artifact_dir", "checkpoint_dir"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


# --------------------------------------------------------------------------- building blocks


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: "auto" is bf16 on CUDA (tensor cores, no loss scaling) and fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)


def build_model(config: TrainConfig, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    """Base model RoPE-extended to config.context_length, with LoRA attached for method "lora".

    A config carrying a planned ContextSpec (``config.context``: a job's) is applied verbatim;
    one with only a length and a method is planned once, here, from the base's own config.

    With activation checkpointing, the decoder MLPs also run in `mlp_chunk_size`-token
    recomputed slices (tiling.py), which bounds the one layer that backward holds at a time.

    LoRA keeps the frozen base in the compute dtype (peft keeps adapters in fp32); full
    fine-tuning keeps fp32 master weights and computes in `compute_dtype` (autocast/FSDP).

    With ``config.parent_model`` the run starts from that earlier run's weights: full loads
    the parent's full weights (its config.json is the extended base config; the spec is
    re-applied from the base's original context, so a longer target extends further), LoRA
    loads the parent's adapter onto the base and keeps training it (``attach_lora``).
    """
    full_from_parent = config.method == "full" and config.parent_model is not None
    model = load_model(
        config.parent_model if full_from_parent else config.base_model,
        dtype=compute_dtype if config.method == "lora" else torch.float32,
        attn_implementation=config.attn_implementation,
        **(
            {"context": config.context}
            if config.context is not None
            else {"rope_method": config.rope_method, "target_context": config.context_length}
        ),
    )
    if config.activation_checkpointing:
        enable_activation_checkpointing(model)
        if config.mlp_chunk_size:
            enable_tiled_mlp(model, config.mlp_chunk_size)
    if config.method == "lora":
        model = attach_lora(model, config)
    return model.to(device)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in backward; non-reentrant, so frozen inputs (LoRA) work."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x spelling
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def attach_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """A fresh adapter from the config, or the parent's (``config.parent_model``), trainable."""
    from peft import LoraConfig, get_peft_model

    if config.parent_model is not None:
        return load_parent_adapter(model, config)
    targets = config.lora_target_modules
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else list(targets),
        modules_to_save=embedding_and_norm_names(model)
        if config.lora_train_embeddings_and_norms
        else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora_config)


def load_parent_adapter(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The parent run's adapter on ``model`` (the RoPE-extended base), trainable: its weights
    at step 0 are exactly the parent's. The adapter's shape (rank, alpha, targets) is the
    parent's, so the config must agree (the API refuses a conflicting ``lora`` first; this
    guards library callers); only the dropout, a training-time choice, is the config's."""
    from peft import LoraConfig, PeftModel

    from gpu_runtime.registry import resolve_model_dir

    directory = resolve_model_dir(config.parent_model)  # type: ignore[arg-type]
    saved = LoraConfig.from_pretrained(str(directory))
    targets = config.lora_target_modules
    saved_targets = (
        [saved.target_modules] if isinstance(saved.target_modules, str) else saved.target_modules
    )
    mismatches = []
    if saved.r != config.lora_r:
        mismatches.append(
            f"lora_r: the parent adapter has rank {saved.r}, this run asks for {config.lora_r}"
        )
    if float(saved.lora_alpha) != float(config.lora_alpha):
        mismatches.append(
            f"lora_alpha: the parent adapter has {saved.lora_alpha}, this run asks for "
            f"{config.lora_alpha}"
        )
    # "all-linear" is resolved to module names when an adapter is attached (peft saves those).
    if targets != [ALL_LINEAR] and sorted(saved_targets) != sorted(targets):
        mismatches.append(
            f"lora_target_modules: the parent adapter targets {sorted(saved_targets)}, this run "
            f"asks for {sorted(targets)}"
        )
    if mismatches:
        raise ValueError(mismatches[0])
    saved.lora_dropout = config.lora_dropout
    saved.inference_mode = False
    return PeftModel.from_pretrained(model, str(directory), config=saved, is_trainable=True)


def embedding_and_norm_names(model: nn.Module) -> list[str]:
    """Leaf names of the input embedding and every norm layer (LongLoRA's trainable extras)."""
    embedding = model.get_input_embeddings()
    names = set()
    for name, module in model.named_modules():
        is_norm = type(module).__name__.lower().endswith(("rmsnorm", "layernorm"))
        if module is embedding or is_norm:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PeftModel (LoRA layers already injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CausalLMObjective(nn.Module):
    """decoder → final hidden states → chunked LM loss, as ONE module.

    DDP and FSDP hook into a module's forward, so the whole objective (not just the decoder)
    is what they wrap. Returns the SUM of token losses so the caller can normalise by the
    number of target tokens over every micro-batch and rank (an exact token-weighted mean).

    It takes next-token `targets` (shifted on the whole row: `sequence_parallel.prepare_batch`)
    rather than labels, so one code path serves a whole row and a sequence-parallel slice; the
    `sequence_shard` (None: whole rows) reaches every attention call through transformers'
    keyword arguments.
    """

    def __init__(self, causal_lm: nn.Module, chunk_size: int) -> None:
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_size = chunk_size

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, l]  (l = L, or L/N on a sequence-parallel rank)
        position_ids: torch.Tensor,  # [B, l], restarting at 0 per document
        targets: torch.Tensor,  # [B, l], what each position predicts (-100: nothing)
        sequence_shard: SequenceShard | None = None,
    ) -> torch.Tensor:  # scalar: summed loss over counted tokens
        decoder = self.causal_lm.get_decoder()
        extra = {"sequence_shard": sequence_shard} if sequence_shard is not None else {}
        hidden = decoder(
            input_ids=input_ids, position_ids=position_ids, use_cache=False, **extra
        ).last_hidden_state  # [B, l, H]
        head = self.causal_lm.get_output_embeddings()
        mean, counted = chunked_target_loss(
            hidden, head.weight, targets, chunk_size=self.chunk_size, lm_head_bias=head.bias
        )
        return mean * counted


def build_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )


def lr_multiplier(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Factor on the base LR for 0-based optimizer step `step`: linear warmup, then decay."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def multiplier(step: int) -> float:
        return lr_multiplier(
            step, warmup=config.warmup_steps, total=total_steps, schedule=config.lr_schedule
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


# --------------------------------------------------------------------------- one step


@dataclass
class StepOutcome:
    loss: float
    grad_norm: float
    tokens: int  # fed this step, all ranks
    real_tokens: int = 0  # of which not padding


def forward_context(config: TrainConfig, ctx: DistContext, compute_dtype: torch.dtype):
    """Autocast on CUDA for low-precision compute (FSDP2 casts itself), and optional
    offload of saved activations to (pinned) CPU memory."""
    stack = contextlib.ExitStack()
    fsdp_handles_precision = ctx.distributed and config.method == "full"
    if ctx.device.type == "cuda" and compute_dtype != torch.float32 and not fsdp_handles_precision:
        stack.enter_context(torch.autocast("cuda", dtype=compute_dtype))
    if config.offload_activations:
        stack.enter_context(torch.autograd.graph.save_on_cpu(pin_memory=ctx.device.type == "cuda"))
    return stack


def train_step(
    wrapped: nn.Module,
    micro_batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    ctx: DistContext,
    compute_dtype: torch.dtype,
    layout: SequenceLayout | None = None,
) -> StepOutcome:
    """Accumulate over micro-batches, then clip and step. The loss is normalised by the
    number of target tokens over ALL micro-batches and ranks, so the update equals one big
    batch's token-mean gradient however the rows are split (DDP/FSDP average over ranks,
    hence the × world_size).

    With a sequence-parallel `layout` each rank feeds its slice of the rows; the slices
    partition every row's targets, so the same counts and the same world-wide gradient
    average give the same update as whole rows on one rank."""
    prepared = [prepare_batch(batch, layout) for batch in micro_batches]
    local_targets = sum(count_targets(inputs["targets"]) for inputs, _ in prepared)
    local_real = sum(
        int(inputs["real_tokens"].sum()) if "real_tokens" in inputs else inputs["input_ids"].numel()
        for inputs, _ in prepared
    )
    counts = all_reduce_sum(torch.tensor([local_targets, local_real], device=ctx.device), ctx)
    global_targets, global_real = (int(c) for c in counts.tolist())
    scale = ctx.world_size / max(global_targets, 1)
    loss_sum = torch.zeros((), device=ctx.device)
    for index, (inputs, shard) in enumerate(prepared):
        inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in inputs.items()}
        with gradient_sync(wrapped, enabled=index == len(prepared) - 1):
            with forward_context(config, ctx, compute_dtype):
                summed = wrapped(
                    inputs["input_ids"],
                    inputs["position_ids"],
                    inputs["targets"],
                    sequence_shard=shard,
                )
            (summed * scale).backward()
        loss_sum += summed.detach().float()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    total_loss = all_reduce_sum(loss_sum, ctx).item()
    tokens = sum(inputs["input_ids"].numel() for inputs, _ in prepared) * ctx.world_size
    return StepOutcome(
        loss=total_loss / max(global_targets, 1),
        grad_norm=float(grad_norm),
        tokens=tokens,
        real_tokens=global_real,
    )


# --------------------------------------------------------------------------- checkpoints


_STATE_OPTIONS = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def write_checkpoint(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    config: TrainConfig,
    ctx: DistContext,
) -> Path | None:
    """Collective: every rank contributes (FSDP gathers shards, RNGs are per rank); rank 0 writes."""
    weights = get_model_state_dict(objective, options=_STATE_OPTIONS)
    optim_state = get_optimizer_state_dict(objective, optimizer, options=_STATE_OPTIONS)
    rng_states = gather_objects(capture_rng_state(), ctx)
    path = None
    if ctx.is_main:
        path = save_checkpoint(
            config.checkpoints_dir,
            state,
            weights=weights,
            optimizer=optim_state,
            scheduler=scheduler.state_dict(),
            rng_states=rng_states,
            keep=config.keep_checkpoints,
        )
    barrier(ctx)
    return path


def find_resume_checkpoint(config: TrainConfig) -> Path | None:
    if config.resume_from:
        return Path(config.resume_from)
    if config.auto_resume:
        return latest_checkpoint(config.checkpoints_dir)
    return None


def restore_checkpoint(
    path: Path,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    ctx: DistContext,
) -> TrainerState:
    """Weights, optimizer, scheduler, then RNG last (model building consumed random numbers)."""
    checkpoint = load_checkpoint(path)
    saved = checkpoint.state.extra.get("config", {})
    for field_name in ("method", "context_length", "base_model"):
        if field_name in saved and saved[field_name] != getattr(config, field_name):
            raise ValueError(
                f"{field_name}: checkpoint {checkpoint.path} was trained with "
                f"{saved[field_name]!r}, this run asks for {getattr(config, field_name)!r}"
            )
    load_options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(objective, checkpoint.weights, options=load_options)
    set_optimizer_state_dict(objective, optimizer, checkpoint.optimizer, options=load_options)
    scheduler.load_state_dict(checkpoint.scheduler)
    if ctx.rank < len(checkpoint.rng_states):
        restore_rng_state(checkpoint.rng_states[ctx.rank])
    else:  # more ranks than when saved: a fresh but deterministic stream
        seed_everything(config.seed + ctx.rank)
    return checkpoint.state


# --------------------------------------------------------------------------- the run


def train(
    config: TrainConfig,
    data: str | Path | Iterable[dict[str, Any]],
    callbacks: Iterable[Any] = (),
    eval_data: str | Path | Iterable[dict[str, Any]] | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on `data` (a JSONL path or example dicts).

    Works alone or under torchrun. Callbacks: see callbacks.py (rank 0 only; on_step may stop
    the run, which then returns status "stopped" after writing a checkpoint). With `eval_data`
    (same forms as `data`), the validation loss is computed every `config.eval_every_steps`
    steps and at the last step, and reported as `StepMetrics.valid_loss`, the metrics.csv
    `valid_loss` column and the summary's `valid_loss`.
    """
    ctx = init_distributed()
    try:
        hooks = CallbackList(callbacks, enabled=ctx.is_main)
        result = _run(config, data, hooks, ctx, eval_data)
        # Leave together (shutdown says why): rank 0 still writes the summary after the last
        # collective. The likely cause of a 2-rank FSDP resume's SIGSEGV in CI.
        barrier(ctx)
        return result
    finally:
        shutdown(ctx)


def should_evaluate(step: int, total_steps: int, every: int) -> bool:
    """Evaluate at the last step, and every `every` steps when `every` > 0."""
    return step == total_steps or (every > 0 and step % every == 0)


def _run(
    config: TrainConfig, data: Any, hooks: CallbackList, ctx: DistContext, eval_data: Any = None
) -> TrainResult:
    attempt_started = time.perf_counter()
    output_dir = Path(config.output_dir)
    if ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    compute_dtype = resolve_dtype(config.dtype, ctx.device)
    if config.world_size is not None and config.world_size != ctx.world_size:
        raise ValueError(
            f"data_parallel: the run was planned for {config.data_parallel} data × "
            f"{config.sequence_parallel} sequence ranks = {config.world_size} processes, "
            f"it was launched with {ctx.world_size}"
        )
    # data × sequence grid: the rows are sharded over data ranks; a sequence group shares them.
    layout = init_sequence_layout(ctx, config.sequence_parallel)

    tokenizer = load_tokenizer(config.base_model)
    rows, packing = pack_dataset(
        load_examples(data),
        tokenizer,
        config.row_length,
        train_on_inputs=config.train_on_inputs,
    )
    plan = BatchPlan(
        num_rows=len(rows),
        micro_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        world_size=layout.data_parallel,
        rank=layout.data_rank,
        seed=config.seed,
    )
    total_steps = config.max_steps or plan.steps_per_epoch * config.num_epochs
    eval_batches, eval_packing = None, None
    if eval_data is not None:
        eval_rows, eval_packing = pack_dataset(
            load_examples(eval_data),
            tokenizer,
            config.row_length,
            train_on_inputs=config.train_on_inputs,
        )
        eval_batches = rank_eval_batches(eval_rows, config.micro_batch_size, ctx, layout)
    hooks.event(
        "data_packed",
        **asdict(packing),
        sequence_length=config.row_length,
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=total_steps,
        validation_sequences=eval_packing.sequences if eval_packing else None,
    )

    model = build_model(config, ctx.device, compute_dtype)
    causal_lm = causal_lm_of(model)
    layout = enable_sequence_parallel(causal_lm, layout, config.sequence_parallel_mode)
    objective = CausalLMObjective(causal_lm, config.loss_chunk_size)
    # The objective as this run trains it: under DDP (LoRA) or FSDP2 (full), or itself alone.
    wrapped = wrap_for_training(objective, ctx, method=config.method, compute_dtype=compute_dtype)
    optimizer = build_optimizer(objective, config)
    scheduler = build_scheduler(optimizer, config, total_steps)
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    hooks.event(
        "model_ready",
        method=config.method,
        trainable_parameters=trainable,
        context=getattr(causal_lm.config, ContextSpec.CONFIG_KEY, None),
        attn_implementation=causal_lm.config._attn_implementation,
        world_size=ctx.world_size,
        **describe(layout),
    )

    state = TrainerState(step=0, cursor=DataCursor(), world_size=ctx.world_size)
    resume_path = find_resume_checkpoint(config)
    if resume_path is not None:
        state = restore_checkpoint(resume_path, objective, optimizer, scheduler, config, ctx)
        hooks.event("resumed", path=str(resume_path), step=state.step, epoch=state.cursor.epoch)
    state.world_size = ctx.world_size
    state.extra["config"] = config.to_dict()
    metrics_csv = (
        MetricsCSV(output_dir / METRICS_FILE, resume_step=state.step) if ctx.is_main else None
    )
    wall_before = state.wall_time_s

    def wall_time() -> float:
        return wall_before + time.perf_counter() - attempt_started

    hooks.event("training_started", step=state.step, total_steps=total_steps)
    wrapped.train()
    last_loss: float | None = None
    last_valid_loss: float | None = None
    stop_reason: str | None = None
    checkpoint_path: Path | None = None
    while state.step < total_steps:
        step_started = time.perf_counter()
        row_indices, next_cursor = plan.step_rows(state.cursor)
        micro_batches = [collate([rows[i] for i in indices]) for indices in row_indices]
        lr = scheduler.get_last_lr()[0]
        outcome = train_step(wrapped, micro_batches, optimizer, config, ctx, compute_dtype, layout)
        scheduler.step()
        state.step += 1
        state.cursor = next_cursor
        state.tokens_seen += outcome.tokens
        state.trained_tokens += outcome.real_tokens
        last_loss = outcome.loss
        elapsed = time.perf_counter() - step_started  # the step alone, not the validation pass
        valid_loss = None
        if eval_batches is not None and should_evaluate(
            state.step, total_steps, config.eval_every_steps
        ):
            valid_loss = evaluate(
                wrapped,
                eval_batches,
                ctx,
                lambda: forward_context(config, ctx, compute_dtype),
                layout,
            ).loss
            last_valid_loss = valid_loss
        metrics = StepMetrics(
            step=state.step,
            total_steps=total_steps,
            loss=outcome.loss,
            lr=lr,
            grad_norm=outcome.grad_norm,
            tokens_per_second=outcome.tokens / elapsed if elapsed > 0 else 0.0,
            peak_memory_bytes=peak_memory_bytes(ctx.device),
            epoch=next_cursor.epoch,
            valid_loss=valid_loss,
            trained_tokens=state.trained_tokens,
        )
        if metrics_csv is not None:
            metrics_csv.append(metrics.to_dict())
        stop_reason = broadcast_object(hooks.step(metrics), ctx)
        periodic = config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0
        if stop_reason or (periodic and state.step < total_steps):
            state.wall_time_s = wall_time()
            checkpoint_path = write_checkpoint(objective, optimizer, scheduler, state, config, ctx)
            if checkpoint_path is not None:
                hooks.checkpoint(state.step, checkpoint_path)
        if stop_reason:
            break
        if config.epoch_artifacts and is_epoch_end(state.step, plan.steps_per_epoch, total_steps):
            path = write_artifact(
                model, objective, tokenizer, config, ctx, compute_dtype,
                artifact_dir=epoch_artifact_dir(config, state.step),
            )  # fmt: skip
            hooks.event(
                "epoch_artifact",
                step=state.step,
                epoch=state.step // plan.steps_per_epoch,
                path=str(path),
                loss=last_loss,
                valid_loss=valid_loss,
            )

    state.wall_time_s = wall_time()
    status = STOPPED if stop_reason else COMPLETED
    artifact_dir = None
    if status == COMPLETED:
        artifact_dir = write_artifact(model, objective, tokenizer, config, ctx, compute_dtype)
    summary = {
        "status": status,
        "stop_reason": stop_reason,
        "steps": state.step,
        "total_steps": total_steps,
        "tokens_seen": state.tokens_seen,
        "trained_tokens": state.trained_tokens,
        "final_loss": last_loss,
        "valid_loss": last_valid_loss,
        "validation_packing": asdict(eval_packing) if eval_packing else None,
        "wall_time_s": state.wall_time_s,
        "packing": asdict(packing),
        "trainable_parameters": trainable,
        "world_size": ctx.world_size,
        **describe(layout),
        "context": getattr(causal_lm.config, ContextSpec.CONFIG_KEY, None),
        "config": config.to_dict(),
    }
    if ctx.is_main:
        write_summary(output_dir, artifact_dir, summary)
    barrier(ctx)
    hooks.event(status, **{k: summary[k] for k in ("steps", "final_loss", "stop_reason")})
    return TrainResult(
        status=status,
        steps=state.step,
        total_steps=total_steps,
        tokens_seen=state.tokens_seen,
        final_loss=last_loss,
        wall_time_s=state.wall_time_s,
        output_dir=output_dir,
        artifact_dir=artifact_dir,
        checkpoint_dir=checkpoint_path or latest_checkpoint(config.checkpoints_dir),
        stop_reason=stop_reason,
        valid_loss=last_valid_loss,
        trained_tokens=state.trained_tokens,
    )


def is_epoch_end(step: int, steps_per_epoch: int, total_steps: int) -> bool:
    """Step ``step`` (1-based) closes an epoch that is not the run's last."""
    return step < total_steps and step % steps_per_epoch == 0


def epoch_artifact_dir(config: TrainConfig, step: int) -> Path:
    return Path(config.output_dir) / EPOCHS_DIR / f"step-{step:08d}"


def write_artifact(
    model: nn.Module,
    objective: nn.Module,
    tokenizer: Any,
    config: TrainConfig,
    ctx: DistContext,
    compute_dtype: torch.dtype,
    artifact_dir: Path | None = None,
) -> Path:
    """Rank 0 writes `final/` (or ``artifact_dir``: an epoch's snapshot); under FSDP every
    rank first helps gather the full weights."""
    full_state = None
    if config.method == "full" and ctx.distributed:
        gathered = get_model_state_dict(
            objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        prefix = "causal_lm."
        full_state = {k.removeprefix(prefix): v for k, v in gathered.items()}
    artifact_dir = artifact_dir or Path(config.output_dir) / ARTIFACT_DIR
    if ctx.is_main:
        save_artifact(
            model,
            tokenizer,
            artifact_dir,
            method=config.method,
            base_model=config.base_model,
            state_dict=full_state,
            save_dtype=compute_dtype if config.method == "full" else None,
        )
    barrier(ctx)
    return artifact_dir


def write_summary(output_dir: Path, artifact_dir: Path | None, summary: dict[str, Any]) -> None:
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    if artifact_dir is not None:
        write_json_atomic(artifact_dir / SUMMARY_FILE, summary)
        (artifact_dir / METRICS_FILE).write_bytes((output_dir / METRICS_FILE).read_bytes())
