"""Context extension at toy scale: the Position Interpolation paper's passkey experiment.

WHY: LongTune's core promise is "train at L, serve at 4L" through RoPE scaling. This script
decides which scaling method is the default (gpu_runtime.rope.DEFAULT_ROPE_METHOD) by running
every method under identical conditions on a task whose answer is unambiguous: retrieve a
5-digit passkey hidden at some depth of a long filler sequence.

Protocol (calibrated in docs/context-extension-calibration.md):
  1. Train a tiny Llama (4 layers, hidden 128) from scratch at L = 128 on the passkey task.
     The weights are cached under var/bench-cache/ keyed by every hyper-parameter.
  2. For each arm, take a copy of the SAME base weights, apply
     gpu_runtime.rope.apply_rope_scaling(config, method, 4L) and measure accuracy at 4L
     (before fine-tuning), fine-tune for the SAME budget (steps, batch, lr, seed, data)
     at 4L, then measure accuracy at 4L again and back at L (forgetting).
  No per-arm tuning: the arms differ only in their RoPE config.

Run:  python benchmarks/context_extension.py          (~15 min on 2 CPU cores)
      python benchmarks/context_extension.py --quick  (seconds; smoke test sizes)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/context_extension.py`
    sys.path.insert(0, str(REPO_ROOT))

from gpu_runtime.rope import DEFAULT_ROPE_METHOD, apply_rope_scaling  # noqa: E402

IGNORE_INDEX = -100
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_CACHE_DIR = REPO_ROOT / "var" / "bench-cache"


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class PasskeyTask:
    """Token layout of the passkey task: digits 0-9, a KEY and a QUERY marker, filler tokens."""

    num_digits: int = 5
    key_token: int = 10
    query_token: int = 11
    first_filler: int = 12
    vocab_size: int = 32

    @property
    def block_len(self) -> int:
        """`KEY d1..d5` (or `QUERY d1..d5`): one marker + the digits."""
        return 1 + self.num_digits


@dataclass(frozen=True)
class ModelSpec:
    layers: int = 4
    hidden: int = 128
    heads: int = 4
    mlp: int = 256
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class BaseTraining:
    """Pre-training of the toy base model at context L (variable lengths: the curriculum that works)."""

    context: int = 128
    lengths: tuple[int, ...] = (32, 64, 128)
    batch: int = 32
    lr: float = 2e-3
    steps: int = 3000
    warmup: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Extension:
    """The fine-tuning budget every arm gets at the target context (identical across arms)."""

    target: int = 512
    steps: int = 200
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 20
    seed: int = 1


@dataclass(frozen=True)
class Evaluation:
    depths: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
    trials: int = 100  # in total, spread evenly over the depths
    seed: int = 1234

    @property
    def trials_per_depth(self) -> int:
        return max(1, self.trials // len(self.depths))


@dataclass(frozen=True)
class Arm:
    """One way of going from L to 4L: a RoPE method, with or without fine-tuning."""

    name: str
    method: str
    fine_tune: bool = True


ALL_ARMS: tuple[Arm, ...] = (
    Arm("extrapolation (no change)", "none", fine_tune=False),
    Arm("direct fine-tuning, no scaling", "none"),
    Arm("linear PI", "linear"),
    Arm("NTK (static theta)", "ntk"),
    Arm("dynamic NTK", "dynamic"),
    Arm("YaRN", "yarn"),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    task: PasskeyTask = field(default_factory=PasskeyTask)
    model: ModelSpec = field(default_factory=ModelSpec)
    base: BaseTraining = field(default_factory=BaseTraining)
    extension: Extension = field(default_factory=Extension)
    evaluation: Evaluation = field(default_factory=Evaluation)
    arms: tuple[Arm, ...] = ALL_ARMS


def quick_config() -> BenchmarkConfig:
    """Smoke-test sizes: every code path runs in seconds; the numbers mean nothing."""
    return BenchmarkConfig(
        model=ModelSpec(layers=1, hidden=32, heads=2, mlp=64),
        base=BaseTraining(context=32, lengths=(16, 32), batch=4, steps=6, warmup=2),
        extension=Extension(target=128, steps=3, batch=2, warmup=1),
        evaluation=Evaluation(trials=10),
    )


# --------------------------------------------------------------------------- data
def passkey_batch(
    task: PasskeyTask,
    batch: int,
    length: int,
    generator: torch.Generator,
    depth: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random filler with `KEY d1..d5` at `depth` (random if None) and `QUERY d1..d5` at the end.

    Returns input_ids [B, T] and labels [B, T]; labels are IGNORE_INDEX except on the five answer
    digits (HF shifts labels inside the loss, so label t is predicted from position t-1).
    """
    block = task.block_len
    if length < 2 * block:
        raise ValueError(f"sequence length {length} cannot hold a key and a query ({2 * block})")
    num_filler = task.vocab_size - task.first_filler
    ids = task.first_filler + torch.randint(num_filler, (batch, length), generator=generator)
    digits = torch.randint(10, (batch, task.num_digits), generator=generator)  # [B, 5]
    last_key_start = length - 2 * block  # key block must end before the query block
    if depth is None:
        starts = torch.randint(last_key_start + 1, (batch,), generator=generator)
    else:
        starts = torch.full((batch,), round(depth * last_key_start))
    rows = torch.arange(batch)
    ids[rows, starts] = task.key_token
    for i in range(task.num_digits):
        ids[rows, starts + 1 + i] = digits[:, i]
    ids[:, length - block] = task.query_token
    ids[:, length - task.num_digits :] = digits
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, length - task.num_digits :] = digits
    return ids, labels


# --------------------------------------------------------------------------- model
def base_llama_config(spec: ModelSpec, task: PasskeyTask, context: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=task.vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.mlp,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=context,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        attn_implementation="sdpa",
    )


def build_model(config: LlamaConfig, state_dict: dict[str, torch.Tensor] | None = None):
    model = LlamaForCausalLM(config)
    if state_dict is not None:
        # RoPE inv_freq buffers are non-persistent: they come from `config`, not the weights.
        model.load_state_dict(state_dict, strict=True)
    return model


@torch.no_grad()
def passkey_accuracy(
    model, task: PasskeyTask, length: int, evaluation: Evaluation
) -> dict[float, float]:
    """Exact-match accuracy (all five digits) per depth; greedy decoding ≡ teacher-forced argmax
    when every digit is right, so one forward pass per batch suffices."""
    model.eval()
    generator = torch.Generator().manual_seed(evaluation.seed + length)
    by_depth: dict[float, float] = {}
    for depth in evaluation.depths:
        ids, _ = passkey_batch(task, evaluation.trials_per_depth, length, generator, depth)
        # logits for the last block: positions T-6..T-1; T-6..T-2 predict the 5 digits
        logits = model(input_ids=ids, logits_to_keep=task.block_len).logits  # [B, 6, V]
        predicted = logits[:, : task.num_digits].argmax(-1)  # [B, 5]
        correct = (predicted == ids[:, -task.num_digits :]).all(dim=-1)  # [B]
        by_depth[depth] = correct.float().mean().item()
    return by_depth


def mean(values: dict[float, float]) -> float:
    return sum(values.values()) / len(values)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    model,
    task: PasskeyTask,
    *,
    steps: int,
    batch: int,
    lengths: Sequence[int],
    lr: float,
    warmup: int,
    seed: int,
    cosine: bool,
    log_every: int = 0,
) -> float:
    """AdamW on the passkey task; returns the mean loss over the last 10% of steps.

    Base training cycles through `lengths` (a curriculum of mixed lengths); extension uses one.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def schedule(step: int) -> float:
        if cosine:
            return warmup_cosine(step, warmup, steps)
        return min(1.0, (step + 1) / max(1, warmup))  # PI paper: linear warm-up, then constant

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    tail: list[float] = []
    for step in range(steps):
        length = lengths[int(torch.randint(len(lengths), (1,), generator=generator))]
        ids, labels = passkey_batch(task, batch, length, generator)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f}", flush=True)
    model.eval()
    return sum(tail) / len(tail)


# --------------------------------------------------------------------------- base model cache
def cache_key(config: BenchmarkConfig) -> str:
    """Hash of everything that determines the base weights (so a change retrains)."""
    payload = {
        "task": dataclasses.asdict(config.task),
        "model": dataclasses.asdict(config.model),
        "base": dataclasses.asdict(config.base),
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def base_model_state(
    config: BenchmarkConfig, cache_dir: Path, retrain: bool
) -> tuple[dict[str, torch.Tensor], dict[str, float | bool]]:
    """Train (or load) the base model at L. Returns its state dict and training facts."""
    path = cache_dir / f"context_extension-base-{cache_key(config)}.pt"
    if path.exists() and not retrain:
        saved = torch.load(path, weights_only=True)
        return saved["state_dict"], {**saved["facts"], "cached": True}
    base = config.base
    model = build_model(base_llama_config(config.model, config.task, base.context))
    started = time.perf_counter()
    print(f"training base model at L={base.context} for {base.steps} steps ...", flush=True)
    final_loss = train(
        model,
        config.task,
        steps=base.steps,
        batch=base.batch,
        lengths=base.lengths,
        lr=base.lr,
        warmup=base.warmup,
        seed=base.seed,
        cosine=True,
        log_every=max(1, base.steps // 10) if base.steps >= 100 else 0,
    )
    facts = {"final_loss": final_loss, "train_seconds": time.perf_counter() - started}
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "facts": facts}, path)
    return model.state_dict(), {**facts, "cached": False}


# --------------------------------------------------------------------------- arms
@dataclass
class ArmResult:
    arm: Arm
    short_before: float
    long_before: float
    long_before_by_depth: dict[float, float]
    long_after: float | None = None
    long_after_by_depth: dict[float, float] | None = None
    short_after: float | None = None
    seconds: float = 0.0

    @property
    def long_final_by_depth(self) -> dict[float, float]:
        return self.long_after_by_depth or self.long_before_by_depth


def run_arm(arm: Arm, config: BenchmarkConfig, base_state: dict[str, torch.Tensor]) -> ArmResult:
    started = time.perf_counter()
    task, ext, evaluation = config.task, config.extension, config.evaluation
    short = config.base.context
    base_config = base_llama_config(config.model, task, short)
    model = build_model(apply_rope_scaling(base_config, arm.method, ext.target), base_state)
    long_before = passkey_accuracy(model, task, ext.target, evaluation)
    result = ArmResult(
        arm=arm,
        short_before=mean(passkey_accuracy(model, task, short, evaluation)),
        long_before=mean(long_before),
        long_before_by_depth=long_before,
    )
    if arm.fine_tune:
        train(
            model,
            task,
            steps=ext.steps,
            batch=ext.batch,
            lengths=(ext.target,),
            lr=ext.lr,
            warmup=ext.warmup,
            seed=ext.seed,
            cosine=False,
        )
        result.long_after_by_depth = passkey_accuracy(model, task, ext.target, evaluation)
        result.long_after = mean(result.long_after_by_depth)
        result.short_after = mean(passkey_accuracy(model, task, short, evaluation))
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Targets:
    default_min_long_after: float = 0.95
    extrapolation_max: float = 0.2


def winner(results: Sequence[ArmResult]) -> ArmResult | None:
    """Best accuracy at 4L after fine-tuning; ties broken by accuracy back at L (less forgetting)."""
    tuned = [r for r in results if r.long_after is not None]
    if not tuned:
        return None
    return max(tuned, key=lambda r: (r.long_after, r.short_after or 0.0))


def verdict_lines(
    results: Sequence[ArmResult], config: BenchmarkConfig, targets: Targets
) -> list[str]:
    lines = []
    ext = config.extension
    default = next(
        (r for r in results if r.arm.method == DEFAULT_ROPE_METHOD and r.arm.fine_tune), None
    )
    if default is not None:
        ok = default.long_after >= targets.default_min_long_after
        lines.append(
            f"- Target: default method `{DEFAULT_ROPE_METHOD}` ≥ {targets.default_min_long_after:.2f} "
            f"at {ext.target} after {ext.steps} steps: {default.long_after:.2f} → "
            f"{'MET' if ok else 'NOT MET'}"
        )
    extrapolation = next((r for r in results if not r.arm.fine_tune), None)
    if extrapolation is not None:
        ok = extrapolation.long_before <= targets.extrapolation_max
        lines.append(
            f"- Target: extrapolation ≤ {targets.extrapolation_max:.2f} at {ext.target}: "
            f"{extrapolation.long_before:.2f} → {'MET' if ok else 'NOT MET'}"
        )
    best = winner(results)
    if best is not None:
        agrees = best.arm.method == DEFAULT_ROPE_METHOD
        lines.append(
            f"- Winner: **{best.arm.name}** (`{best.arm.method}`) with {best.long_after:.2f} at "
            f"{ext.target} and {best.short_after:.2f} back at {config.base.context}; "
            + (
                f"it agrees with DEFAULT_ROPE_METHOD = `{DEFAULT_ROPE_METHOD}`."
                if agrees
                else f"it DISAGREES with DEFAULT_ROPE_METHOD = `{DEFAULT_ROPE_METHOD}`, "
                "which follows the run across base seeds (context_extension_seeds.py): one "
                "base model does not decide it."
            )
        )
        if default is not None and not agrees:
            trials = config.evaluation.trials_per_depth * len(config.evaluation.depths)
            margin = best.long_after - default.long_after
            error = math.sqrt(
                sum(p * (1 - p) / trials for p in (best.long_after, default.long_after))
            )
            lines.append(
                f"- Margin over `{DEFAULT_ROPE_METHOD}` at {ext.target}: {margin:.2f} with "
                f"{trials} trials per arm = {margin / error if error else float('inf'):.1f} "
                "standard errors of the difference (binomial)."
            )
    return lines


# --------------------------------------------------------------------------- report
def results_json(
    results: Sequence[ArmResult], config: BenchmarkConfig, base_accuracy: float
) -> dict:
    """Machine-readable results (context_extension_seeds.py aggregates several base seeds)."""
    return {
        "base_seed": config.base.seed,
        "base_accuracy": base_accuracy,
        "trials": config.evaluation.trials_per_depth * len(config.evaluation.depths),
        "arms": [
            {
                "name": r.arm.name,
                "method": r.arm.method,
                "fine_tune": r.arm.fine_tune,
                "short_before": r.short_before,
                "long_before": r.long_before,
                "long_after": r.long_after,
                "short_after": r.short_after,
                "long_final_by_depth": {str(d): v for d, v in r.long_final_by_depth.items()},
            }
            for r in results
        ],
    }


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def results_table(results: Sequence[ArmResult], config: BenchmarkConfig) -> str:
    short, long = config.base.context, config.extension.target
    steps = config.extension.steps
    header = (
        f"| arm | method | at {short} before FT | at {long} before FT "
        f"| at {long} after {steps} steps | back at {short} after | seconds |"
    )
    rows = [header, "|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r.arm.name} | `{r.arm.method}` | {fmt(r.short_before)} | {fmt(r.long_before)} "
            f"| {fmt(r.long_after)} | {fmt(r.short_after)} | {r.seconds:.0f} |"
        )
    return "\n".join(rows)


def depth_table(results: Sequence[ArmResult], config: BenchmarkConfig) -> str:
    depths = config.evaluation.depths
    rows = [
        "| arm | " + " | ".join(f"depth {d:.2f}" for d in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    for r in results:
        by_depth = r.long_final_by_depth
        rows.append(f"| {r.arm.name} | " + " | ".join(fmt(by_depth[d]) for d in depths) + " |")
    return "\n".join(rows)


def draw_charts(
    results: Sequence[ArmResult], config: BenchmarkConfig, bar_path: Path, heatmap_path: Path
) -> None:
    """Grouped bars (before / after / forgetting per arm) and an accuracy-by-depth heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short, long, steps = config.base.context, config.extension.target, config.extension.steps
    series = [
        (f"at {long} before FT", [r.long_before for r in results]),
        (f"at {long} after {steps} steps", [r.long_after or 0.0 for r in results]),
        (f"back at {short} after", [r.short_after or 0.0 for r in results]),
    ]
    width = 0.27
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, (label, values) in enumerate(series):
        xs = [x + (i - 1) * width for x in range(len(results))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(results)), [r.arm.name for r in results], rotation=15, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("passkey accuracy (exact 5 digits)")
    ax.set_title(f"Context extension {short} → {long}: same base, same {steps}-step budget")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(bar_path, dpi=110)
    plt.close(fig)

    depths = config.evaluation.depths
    grid = [[r.long_final_by_depth[d] for d in depths] for r in results]
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(results) + 1.6))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{d:.2f}" for d in depths])
    ax.set_yticks(range(len(results)), [r.arm.name for r in results])
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            color = "black" if value > 0.6 else "white"  # readable on viridis' light end
            ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel("passkey depth")
    ax.set_title(f"Accuracy at {long} by depth (after FT; extrapolation: no FT)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(heatmap_path, dpi=110)
    plt.close(fig)


def reproduce_command(argv: Sequence[str]) -> str:
    return " ".join(["python benchmarks/context_extension.py", *(shlex.quote(a) for a in argv)])


def markdown_report(
    results: Sequence[ArmResult],
    config: BenchmarkConfig,
    base_facts: dict,
    base_accuracy: float,
    targets: Targets,
    argv: Sequence[str],
    total_seconds: float,
    image_names: tuple[str, str],
) -> str:
    m, b, e, ev = config.model, config.base, config.extension, config.evaluation
    origin = "loaded from cache" if base_facts.get("cached") else "trained in this run"
    return "\n".join(
        [
            f"# Context extension {b.context} → {e.target} (passkey retrieval, toy scale)",
            "",
            f"Model: Llama {m.layers} layers, hidden {m.hidden}, {m.heads} heads, MLP {m.mlp}, "
            f"RoPE theta {m.rope_theta:g}. Base: L={b.context}, lengths {list(b.lengths)}, "
            f"batch {b.batch}, AdamW lr {b.lr:g}, {b.steps} steps ({origin}; "
            f"{base_facts['train_seconds']:.0f} s when trained, final loss "
            f"{base_facts['final_loss']:.3f}). Base accuracy at {b.context}: {base_accuracy:.2f}.",
            f"Extension: every arm from the same base weights, {e.steps} steps, batch {e.batch}, "
            f"AdamW lr {e.lr:g} ({e.warmup}-step warm-up then constant), sequences of {e.target}, "
            f"seed {e.seed}. Accuracy: exact match of the 5 digits over {ev.trials_per_depth} trials "
            f"at each depth {list(ev.depths)} ({ev.trials_per_depth * len(ev.depths)} in all).",
            "",
            results_table(results, config),
            "",
            f"Accuracy at {e.target} by depth (after fine-tuning; extrapolation arm: no FT):",
            "",
            depth_table(results, config),
            "",
            *verdict_lines(results, config, targets),
            "",
            f"![accuracy per arm]({image_names[0]})",
            f"![accuracy by depth]({image_names[1]})",
            "",
            f"Total time: {total_seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads "
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
    parser.add_argument("--retrain", action="store_true", help="ignore the cached base model")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=sorted({a.method for a in ALL_ARMS} | {"extrapolation"}),
        help="subset of arms by method (default: all); 'extrapolation' = no-FT arm",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 1 by default: on a shared 2-core box two OpenMP threads "
        "slow down ~4x whenever another process holds a core",
    )
    parser.add_argument(
        "--base-seed",
        type=int,
        help="seed of the base model's pre-training (default 0): how much do the numbers "
        "depend on the one base every arm starts from?",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    return parser.parse_args(argv)


def select_arms(names: Sequence[str] | None) -> tuple[Arm, ...]:
    if not names:
        return ALL_ARMS
    wanted = set(names)
    return tuple(
        a
        for a in ALL_ARMS
        if (not a.fine_tune and "extrapolation" in wanted) or (a.fine_tune and a.method in wanted)
    )


@contextmanager
def isolated_torch_state(threads: int) -> Iterator[None]:
    """Run with `threads` torch threads and a forked global RNG, restoring both on exit.

    WHY: run_benchmark also runs inside other processes (the smoke test under pytest); its
    torch.manual_seed and set_num_threads must not leak into the caller's later work."""
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)


def run_benchmark(argv: Sequence[str]) -> tuple[list[ArmResult], Path]:
    """Run everything; returns the per-arm results and the markdown report's path."""
    args = parse_args(argv)
    with isolated_torch_state(args.threads):
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> tuple[list[ArmResult], Path]:
    config = quick_config() if args.quick else BenchmarkConfig()
    config = dataclasses.replace(config, arms=select_arms(args.arms))
    if args.base_seed is not None:
        config = dataclasses.replace(
            config, base=dataclasses.replace(config.base, seed=args.base_seed)
        )
    started = time.perf_counter()

    base_state, base_facts = base_model_state(config, args.cache_dir, args.retrain)
    base_model = build_model(
        base_llama_config(config.model, config.task, config.base.context), base_state
    )
    base_accuracy = mean(
        passkey_accuracy(base_model, config.task, config.base.context, config.evaluation)
    )
    print(f"base accuracy at L={config.base.context}: {base_accuracy:.2f}", flush=True)

    results = []
    for arm in config.arms:
        result = run_arm(arm, config, base_state)
        print(
            f"{arm.name:32s} before {result.long_before:.2f}  after {fmt(result.long_after)}  "
            f"back at L {fmt(result.short_after)}  ({result.seconds:.0f} s)",
            flush=True,
        )
        results.append(result)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    image_names = ("context_extension.png", "context_extension_depth.png")
    draw_charts(results, config, *(args.output_dir / name for name in image_names))
    report = markdown_report(
        results,
        config,
        base_facts,
        base_accuracy,
        Targets(),
        argv,
        time.perf_counter() - started,
        image_names,
    )
    report_path = args.output_dir / "context_extension.md"
    report_path.write_text(report)
    (args.output_dir / "context_extension.json").write_text(
        json.dumps(results_json(results, config, base_accuracy), indent=1)
    )
    print()
    print(report)
    return results, report_path


def main(argv: Sequence[str] | None = None) -> int:
    run_benchmark(sys.argv[1:] if argv is None else list(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
