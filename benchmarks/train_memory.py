"""Peak memory of one long-context training step: LongTune's step vs a plain transformers+peft step.

WHY: at 32K tokens the [tokens × vocab] logits (and their fp32 gradient) dwarf everything else,
so a naive `model(input_ids, labels=...)` step needs tens of GB for a model of 200 MB.
LongTune's trainer never builds those logits (gpu_runtime.loss.chunked_causal_lm_loss on the
decoder's hidden states), checkpoints activations per layer, runs each layer's MLP over
recomputed sequence slices (gpu_runtime.tiling) and attends per document (gpu_runtime.attention). This script measures what that buys, both arms in the same run.
The LongTune arm IS the trainer: gpu_runtime.train.build_model + CausalLMObjective +
train_step; the plain arm is what a user writes with transformers + peft. Both load the same
saved model, extend RoPE the same way and attach the same LoRA, so their losses must agree.

Each (arm, length) runs in a FRESH subprocess so its peak RSS belongs to that configuration
alone. The child reports its process peak (getrusage ru_maxrss) and its resident memory once
the model is loaded (the baseline); delta = peak − baseline is what the step itself needed.
The parent watches every child's RSS and kills it above a cap, and skips a plain run whose
predicted peak (extrapolated from the plain runs already measured) exceeds the budget.

Run:  python benchmarks/train_memory.py          (~10 min on 2 CPU cores)
      python benchmarks/train_memory.py --quick  (seconds; smoke test sizes)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/train_memory.py`
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_CACHE_DIR = REPO_ROOT / "var" / "bench-cache"
PLAIN, LONGTUNE = "plain", "longtune"
ARMS: tuple[str, ...] = (PLAIN, LONGTUNE)
MB = 1024 * 1024
RESULT_PREFIX = "TRAIN_MEMORY_RESULT "
LOSS_TOLERANCE = 1e-3  # fp32 on CPU, different reduction orders (chunks, per-document SDPA)


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ModelSpec:
    layers: int = 4
    hidden: int = 512
    mlp: int = 1376
    heads: int = 8
    vocab: int = 32000
    lora_r: int = 8
    original_context: int = 4096  # the base model's context; RoPE is extended from here


@dataclass(frozen=True)
class BenchmarkConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    lengths: tuple[int, ...] = (4096, 8192, 16384, 32768)
    loss_chunk_size: int = 1024
    mlp_chunk_size: int = 2048  # TrainConfig's default: the tiled MLP (gpu_runtime/tiling.py)
    plain_budget_mb: float = 20 * 1024  # skip a plain run predicted above this
    kill_above_mb: float = 21 * 1024  # hard cap on any child's RSS (the machine has 24 GiB, shared)
    target_ratio_at: int = 16384
    target_ratio: float = 6.0
    threads: int = 2
    seed: int = 0
    # glibc's default raises its mmap threshold (up to 32 MB) each time a large block is freed,
    # after which multi-MB activation buffers come from the heap and fragment it: measured
    # here, LongTune's 8K peak was 2.7 GB that way and 1.1 GB with a fixed 128 KiB threshold.
    # Both arms run with the same setting; 0 keeps glibc's default.
    malloc_mmap_threshold: int = 128 * 1024


def quick_config() -> BenchmarkConfig:
    """Smoke-test sizes: a 1-layer model that keeps the 32K vocabulary (the logits are the point)."""
    return BenchmarkConfig(
        model=ModelSpec(layers=1, hidden=64, mlp=128, heads=2, original_context=512),
        lengths=(1024, 2048),
        loss_chunk_size=128,
        mlp_chunk_size=256,
        plain_budget_mb=4 * 1024,
        kill_above_mb=6 * 1024,
        target_ratio_at=2048,
    )


# --------------------------------------------------------------------------- the model on disk
def model_cache_dir(config: BenchmarkConfig, cache_root: Path) -> Path:
    key = hashlib.sha256(
        json.dumps({**dataclasses.asdict(config.model), "seed": config.seed}).encode()
    ).hexdigest()[:12]
    return cache_root / f"train-memory-model-{key}"


def ensure_base_model(config: BenchmarkConfig, cache_root: Path) -> Path:
    """Save a seeded random Llama (built from a LlamaConfig) once; both arms load it from disk,
    the way the trainer loads any base model (gpu_runtime.registry)."""

    path = model_cache_dir(config, cache_root)
    if (path / "config.json").is_file():
        return path
    # Built in a fresh interpreter like every measurement: whatever the calling process did
    # before (a pytest session's earlier tests) cannot shape the weights file both arms load.
    spec_json = json.dumps(dataclasses.asdict(config))
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--build-base", spec_json, str(cache_root)],
        cwd=REPO_ROOT,
        env=child_environment(config),
        check=True,
    )
    return path


def build_base_model(config: BenchmarkConfig, cache_root: Path) -> Path:
    """Child side of ensure_base_model: write the seeded model to its cache directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = model_cache_dir(config, cache_root)
    spec = config.model
    # fork_rng: run_benchmark also runs in-process (the smoke test); reseeding the global RNG
    # here would silently change every later random draw of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=spec.vocab,
                hidden_size=spec.hidden,
                intermediate_size=spec.mlp,
                num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads,
                num_key_value_heads=spec.heads,
                max_position_embeddings=spec.original_context,
            )
        )
    partial = path.with_name(path.name + ".partial")
    model.save_pretrained(partial)
    partial.replace(path)
    return path


# --------------------------------------------------------------------------- child: one step
def plain_step(model_dir: Path, tokens: int, config: BenchmarkConfig, input_ids) -> dict:
    """What a user writes with transformers + peft: full logits, no checkpointing.

    Same weights, same RoPE extension (the default method to `tokens`), same LoRA as LongTune.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from gpu_runtime.rope import DEFAULT_ROPE_METHOD, apply_rope_scaling

    model_config = apply_rope_scaling(
        AutoConfig.from_pretrained(model_dir), DEFAULT_ROPE_METHOD, tokens
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, config=model_config, dtype=torch.float32, attn_implementation="sdpa"
    )
    r = config.model.lora_r
    lora = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    baseline = settled_rss_mb()
    started = time.perf_counter()
    loss = model(input_ids=input_ids, labels=input_ids).loss  # logits [1, N, vocab]
    loss.backward()
    grads_present = all(p.grad is not None for p in trainable)
    optimizer.step()
    return {
        "baseline_mb": baseline,
        "seconds": time.perf_counter() - started,
        "loss": loss.item(),
        "grads_present": grads_present,
        "attn_implementation": model.get_base_model().config._attn_implementation,
        "activation_checkpointing": model.get_base_model().is_gradient_checkpointing
        and model.get_base_model().training,
    }


def longtune_step(model_dir: Path, tokens: int, config: BenchmarkConfig, input_ids) -> dict:
    """The trainer's own pieces (gpu_runtime.train): build_model (RoPE-extended load,
    activation checkpointing, LoRA) → CausalLMObjective (decoder hidden states → chunked loss)
    → train_step (backward, clip, AdamW step), on one packed row holding one document."""
    import torch

    from gpu_runtime import train as trainer
    from gpu_runtime.contract import TrainConfig
    from gpu_runtime.distributed import DistContext, wrap_for_training

    train_config = TrainConfig(
        base_model=str(model_dir),
        output_dir=str(model_dir / "unused-output"),  # train_step writes nothing
        context_length=tokens,
        lora_r=config.model.lora_r,
        lora_alpha=2 * config.model.lora_r,
        lora_dropout=0.0,
        attn_implementation="auto",
        activation_checkpointing=True,
        loss_chunk_size=config.loss_chunk_size,
        mlp_chunk_size=config.mlp_chunk_size,
        dtype="float32",
    )
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    model = trainer.build_model(train_config, ctx.device, torch.float32)
    causal_lm = trainer.causal_lm_of(model)
    objective = trainer.CausalLMObjective(causal_lm, train_config.loss_chunk_size)
    wrapped = wrap_for_training(objective, ctx, method="lora", compute_dtype=torch.float32)
    optimizer = trainer.build_optimizer(objective, train_config)
    wrapped.train()  # as trainer._run does: HF only checkpoints layers in training mode
    trainable = [p for p in objective.parameters() if p.requires_grad]
    batch = {
        "input_ids": input_ids,  # [1, N]
        "position_ids": torch.arange(tokens)[None],  # [1, N]: one document fills the row
        "labels": input_ids,  # [1, N], aligned (the loss shifts)
    }

    baseline = settled_rss_mb()
    started = time.perf_counter()
    # Keep the gradients for the check below: train_step zeroes them after its optimizer step.
    grads_seen: list[bool] = []
    hooks = [
        p.register_post_accumulate_grad_hook(lambda _: grads_seen.append(True)) for p in trainable
    ]
    outcome = trainer.train_step(wrapped, [batch], optimizer, train_config, ctx, torch.float32)
    seconds = time.perf_counter() - started
    for hook in hooks:
        hook.remove()
    return {
        "baseline_mb": baseline,
        "seconds": seconds,
        "loss": outcome.loss,
        "grads_present": len(grads_seen) == len(trainable),
        "attn_implementation": causal_lm.config._attn_implementation,
        # HF recomputes layers only in training mode: both must hold for checkpointing to act
        "activation_checkpointing": causal_lm.is_gradient_checkpointing and causal_lm.training,
    }


def settled_rss_mb() -> float:
    """Resident memory now, after a collection (what the loaded model and its state occupy)."""
    import gc

    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_child(arm: str, tokens: int, config: BenchmarkConfig, model_dir: Path) -> dict:
    """One configuration, measured in this (fresh) process."""
    import torch

    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    input_ids = torch.randint(config.model.vocab, (1, tokens), generator=generator)  # [1, N]
    step = longtune_step if arm == LONGTUNE else plain_step
    result = step(model_dir, tokens, config, input_ids)
    return {"arm": arm, "tokens": tokens, "peak_mb": peak_rss_mb(), **result}


# --------------------------------------------------------------------------- parent
@dataclass
class Measurement:
    arm: str
    tokens: int
    peak_mb: float | None = None
    baseline_mb: float | None = None
    seconds: float | None = None
    loss: float | None = None
    attn_implementation: str | None = None
    activation_checkpointing: bool | None = None
    skipped: str | None = None  # why it was not run / did not finish

    @property
    def delta_mb(self) -> float | None:
        if self.peak_mb is None or self.baseline_mb is None:
            return None
        return self.peak_mb - self.baseline_mb


def predict_peak_mb(measured: Sequence[Measurement], tokens: int) -> float | None:
    """Linear extrapolation of the peak from the two longest runs of the same arm (None if <2)."""
    done = sorted((m for m in measured if m.peak_mb is not None), key=lambda m: m.tokens)
    if len(done) < 2:
        return None
    a, b = done[-2], done[-1]
    slope = (b.peak_mb - a.peak_mb) / (b.tokens - a.tokens)
    return b.peak_mb + slope * (tokens - b.tokens)


def watch_memory(process: subprocess.Popen, kill_above_mb: float) -> float | None:
    """Poll the child's RSS until it exits; kill it above the cap and return that RSS (MB)."""
    import psutil

    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss / MB
        except psutil.NoSuchProcess:
            return None
        if rss > kill_above_mb:
            process.kill()
            process.wait()
            return rss
        time.sleep(0.2)
    return None


# Only these variables reach a measured child: the figure must not depend on what the caller's
# environment happens to hold (a pytest session's settings, thread or allocator knobs).
CHILD_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def child_environment(config: BenchmarkConfig) -> dict[str, str]:
    env = {key: os.environ[key] for key in CHILD_ENV_KEEP if key in os.environ}
    if config.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(config.malloc_mmap_threshold)
    return env


def measure_in_subprocess(
    arm: str, tokens: int, config: BenchmarkConfig, model_dir: Path
) -> Measurement:
    """Run one configuration in a fresh interpreter; kill it if its RSS passes the cap."""
    spec = json.dumps(dataclasses.asdict(config))
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--child", arm, str(tokens), spec, str(model_dir)]
    # stderr goes to a file: a chatty child must not block on a full pipe while we poll.
    with tempfile.TemporaryFile(mode="w+") as stderr_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_environment(config),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
        try:
            killed_at = watch_memory(process, config.kill_above_mb)
            stdout, _ = process.communicate()
        finally:
            if process.poll() is None:  # the parent is being stopped: take the child along
                process.kill()
                process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read()
    if killed_at is not None:
        return Measurement(arm, tokens, skipped=f"killed at {killed_at / 1024:.1f} GB RSS")
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"{arm} at {tokens} tokens failed (exit {process.returncode}):\n{stderr[-3000:]}"
        )
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if not result["grads_present"] or not result["loss"] > 0:
        raise RuntimeError(f"{arm} at {tokens} tokens did not train: {result}")
    return Measurement(
        arm,
        tokens,
        peak_mb=result["peak_mb"],
        baseline_mb=result["baseline_mb"],
        seconds=result["seconds"],
        loss=result["loss"],
        attn_implementation=result["attn_implementation"],
        activation_checkpointing=result["activation_checkpointing"],
    )


Measure = Callable[[str, int], Measurement]


def run_all(config: BenchmarkConfig, measure: Measure, log=print) -> list[Measurement]:
    """Every (length, arm), shortest first, so the plain arm's growth is known before its
    longest run; a plain run predicted above the budget is skipped, not attempted."""
    results: list[Measurement] = []
    for tokens in config.lengths:
        for arm in ARMS:
            same_arm = [m for m in results if m.arm == arm]
            predicted = predict_peak_mb(same_arm, tokens)
            if arm == PLAIN and predicted is not None and predicted > config.plain_budget_mb:
                reason = f"not run: > {predicted / 1024:.0f} GB predicted"
                results.append(Measurement(arm, tokens, skipped=reason))
                log(f"{arm:8s} {tokens:6d} tokens: {reason}")
                continue
            measurement = measure(arm, tokens)
            results.append(measurement)
            log(
                f"{arm:8s} {tokens:6d} tokens: peak {fmt_mb(measurement.peak_mb)} "
                f"(delta {fmt_mb(measurement.delta_mb)}) in {fmt_s(measurement.seconds)}"
                + (f" [{measurement.skipped}]" if measurement.skipped else "")
            )
    return results


# --------------------------------------------------------------------------- report
def fmt_mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MB"


def fmt_loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def lookup(results: Sequence[Measurement], arm: str, tokens: int) -> Measurement:
    return next(m for m in results if m.arm == arm and m.tokens == tokens)


def peak_ratio(results: Sequence[Measurement], tokens: int) -> float | None:
    plain, tuned = lookup(results, PLAIN, tokens), lookup(results, LONGTUNE, tokens)
    if plain.peak_mb is None or tuned.peak_mb is None:
        return None
    return plain.peak_mb / tuned.peak_mb


def linearity(results: Sequence[Measurement], config: BenchmarkConfig) -> float | None:
    """LongTune delta at the longest length over delta at half of it: ≈ 2 when memory is linear."""
    longest = config.lengths[-1]
    half = longest // 2
    if half not in config.lengths:
        return None
    long_delta = lookup(results, LONGTUNE, longest).delta_mb
    half_delta = lookup(results, LONGTUNE, half).delta_mb
    if long_delta is None or half_delta is None or half_delta <= 0:
        return None
    return long_delta / half_delta


def results_table(results: Sequence[Measurement], config: BenchmarkConfig) -> str:
    rows = [
        "| tokens | plain peak | plain delta | plain step | LongTune peak | LongTune delta "
        "| LongTune delta / 1K tokens | LongTune step | plain / LongTune (peak) "
        "| loss plain / LongTune |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tokens in config.lengths:
        plain, tuned = lookup(results, PLAIN, tokens), lookup(results, LONGTUNE, tokens)
        ratio = peak_ratio(results, tokens)
        per_k = None if tuned.delta_mb is None else tuned.delta_mb / (tokens / 1024)
        rows.append(
            f"| {tokens:,} | {plain.skipped or fmt_mb(plain.peak_mb)} | {fmt_mb(plain.delta_mb)} "
            f"| {fmt_s(plain.seconds)} | {tuned.skipped or fmt_mb(tuned.peak_mb)} "
            f"| {fmt_mb(tuned.delta_mb)} | {fmt_mb(per_k)} | {fmt_s(tuned.seconds)} "
            f"| {'—' if ratio is None else f'{ratio:.1f}×'} "
            f"| {fmt_loss(plain.loss)} / {fmt_loss(tuned.loss)} |"
        )
    return "\n".join(rows)


def max_loss_gap(results: Sequence[Measurement]) -> float | None:
    """Largest |plain − LongTune| loss over lengths where both ran. LoRA's B starts at zero, so
    both arms compute the base model's loss on the same tokens: a gap means a different
    objective (wrong shift, wrong positions, attention leaking), not just different memory."""
    gaps = [
        abs(plain.loss - tuned.loss)
        for plain in results
        if plain.arm == PLAIN and plain.loss is not None
        for tuned in results
        if tuned.arm == LONGTUNE and tuned.tokens == plain.tokens and tuned.loss is not None
    ]
    return max(gaps) if gaps else None


def verdict_lines(results: Sequence[Measurement], config: BenchmarkConfig) -> list[str]:
    lines = []
    gap = max_loss_gap(results)
    if gap is not None:
        same = "same objective" if gap < LOSS_TOLERANCE else "DIFFERENT objective"
        lines.append(f"- Loss check: max |plain − LongTune| = {gap:.2e} → {same}")
    tuned = [m for m in results if m.arm == LONGTUNE and m.attn_implementation]
    if tuned:
        attn = sorted({m.attn_implementation for m in tuned})
        checkpointed = all(m.activation_checkpointing for m in tuned)
        lines.append(
            f"- LongTune runs used attention {', '.join(attn)}; activation checkpointing "
            f"{'on' if checkpointed else 'OFF in some runs'}"
        )
    ratio = peak_ratio(results, config.target_ratio_at)
    if ratio is None:
        lines.append(
            f"- Target ≥ {config.target_ratio:g}× lower peak at {config.target_ratio_at:,}: "
            "not measured (an arm did not run)"
        )
    else:
        met = "MET" if ratio >= config.target_ratio else "NOT MET"
        lines.append(
            f"- Target ≥ {config.target_ratio:g}× lower peak at {config.target_ratio_at:,} tokens: "
            f"{ratio:.1f}× → {met}"
        )
    growth = linearity(results, config)
    longest = config.lengths[-1]
    if growth is None:
        lines.append("- Linearity: not measured")
    else:
        # 2.0 = linear in tokens; ≥ 3 would mean a quadratic term (e.g. an [L, L] mask) dominates.
        met = "MET" if growth <= 2.5 else "NOT MET"
        lines.append(
            f"- Linearity: LongTune delta({longest:,}) / delta({longest // 2:,}) = {growth:.2f} "
            f"(2.0 = linear, 4.0 = quadratic) → {met}"
        )
    return lines


def draw_chart(results: Sequence[Measurement], config: BenchmarkConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arm, label, marker in (
        (PLAIN, "plain transformers + peft", "o"),
        (LONGTUNE, "LongTune step", "s"),
    ):
        done = [m for m in results if m.arm == arm and m.peak_mb is not None]
        ax.plot(
            [m.tokens for m in done], [m.peak_mb / 1024 for m in done], marker=marker, label=label
        )
        for m in results:
            if m.arm == arm and m.skipped:
                ax.annotate(
                    m.skipped,
                    (m.tokens, 0),
                    textcoords="offset points",
                    xytext=(-60, 10),
                    fontsize=7,
                )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(config.lengths), [f"{t // 1024}K" for t in config.lengths])
    ax.set_xlabel("tokens in the training step (batch 1)")
    ax.set_ylabel("process peak RSS (GB)")
    m = config.model
    ax.set_title(
        f"One LoRA r={m.lora_r} step, Llama {m.layers}×{m.hidden}, vocab {m.vocab}: peak memory"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reproduce_command(argv: Sequence[str]) -> str:
    return " ".join(["python benchmarks/train_memory.py", *(shlex.quote(a) for a in argv)])


def markdown_report(
    results: Sequence[Measurement],
    config: BenchmarkConfig,
    argv: Sequence[str],
    total_seconds: float,
    image_name: str,
) -> str:
    import torch

    m = config.model
    return "\n".join(
        [
            "# Peak memory of one training step (forward + backward)",
            "",
            f"Model: Llama {m.layers} layers, hidden {m.hidden}, MLP {m.mlp}, {m.heads} heads, "
            f"vocab {m.vocab}, fp32, LoRA r={m.lora_r} on all linear layers, batch 1. "
            "Each cell ran in a fresh process; peak = process peak RSS (ru_maxrss), "
            "delta = peak − RSS with the model loaded.",
            "Allocator: glibc, "
            + (
                f"`MALLOC_MMAP_THRESHOLD_={config.malloc_mmap_threshold}` in both arms (a fixed "
                "threshold; glibc's default one lets freed activation buffers fragment the heap)"
                if config.malloc_mmap_threshold
                else "default settings"
            )
            + ". Both arms load the same saved model, RoPE-extended to the step's length with the "
            "default method, with the same LoRA, and end with an AdamW step on the LoRA weights.",
            "- plain: `peft_model(input_ids, labels=input_ids).loss.backward()` with SDPA, "
            "no checkpointing.",
            "- LongTune: gpu_runtime.train's own `build_model` (activation checkpointing, "
            "use_reentrant=False; decoder MLPs in recomputed slices of "
            f"{config.mlp_chunk_size} tokens; attention `select_attention_implementation('auto')`) → "
            "`CausalLMObjective` (decoder hidden states → `chunked_causal_lm_loss`, chunk "
            f"{config.loss_chunk_size}) → `train_step`, on one packed row (position ids of one "
            "document filling it). CPU offload of activations (`offload_activations`) is a "
            "no-op on CPU and is off here.",
            "",
            results_table(results, config),
            "",
            *verdict_lines(results, config),
            "",
            f"![peak memory vs length]({image_name})",
            "",
            f"Total time: {total_seconds / 60:.1f} min, {config.threads} CPU threads per run "
            f"(torch {torch.__version__}).",
            "",
            f"Reproduce: `{reproduce_command(argv)}`",
            "",
        ]
    )


# --------------------------------------------------------------------------- entry point
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    parser.add_argument(
        "--lengths", type=int, nargs="+", help="token counts (default 4096 8192 16384 32768)"
    )
    parser.add_argument("--threads", type=int, help="torch threads per run (default 2)")
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        help="glibc MALLOC_MMAP_THRESHOLD_ for both arms (default 131072; 0 = glibc default)",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    return parser.parse_args(argv)


def run_benchmark(argv: Sequence[str]) -> tuple[list[Measurement], Path]:
    args = parse_args(argv)
    config = quick_config() if args.quick else BenchmarkConfig()
    if args.lengths:
        config = dataclasses.replace(config, lengths=tuple(sorted(args.lengths)))
    if args.threads:
        config = dataclasses.replace(config, threads=args.threads)
    if args.malloc_mmap_threshold is not None:
        config = dataclasses.replace(config, malloc_mmap_threshold=args.malloc_mmap_threshold)
    started = time.perf_counter()
    model_dir = ensure_base_model(config, args.cache_dir)

    def measure(arm: str, tokens: int) -> Measurement:
        return measure_in_subprocess(arm, tokens, config, model_dir)

    results = run_all(config, measure, log=lambda line: print(line, flush=True))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    image_name = "train_memory.png"
    draw_chart(results, config, args.output_dir / image_name)
    report = markdown_report(results, config, argv, time.perf_counter() - started, image_name)
    report_path = args.output_dir / "train_memory.md"
    report_path.write_text(report)
    print()
    print(report)
    return results, report_path


def config_from_json(spec: str) -> BenchmarkConfig:
    raw = json.loads(spec)
    return BenchmarkConfig(
        **{**raw, "model": ModelSpec(**raw["model"]), "lengths": tuple(raw["lengths"])}
    )


def child_main(arm: str, tokens: str, spec: str, model_dir: str) -> int:
    config = config_from_json(spec)
    result = run_child(arm, int(tokens), config, Path(model_dir))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        return child_main(*argv[1:5])
    if argv and argv[0] == "--build-base":
        build_base_model(config_from_json(argv[1]), Path(argv[2]))
        return 0
    # SIGTERM (kill PID) unwinds like Ctrl-C, so a running child is killed too, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_benchmark(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
