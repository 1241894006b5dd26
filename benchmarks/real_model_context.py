"""Context extension on a REAL model: SmolLM2-135M-Instruct from its native 8K to 16K and 32K.

WHY: `context_extension.py` decides the default RoPE method on toy models trained here; this
asks the same question of a real instruct model nobody here trained. Every arm takes the same
converted checkpoint, applies `gpu_runtime.rope.apply_rope_scaling(config, method, target)` and
is measured with the product's own evaluation suites (`gpu_runtime.context_eval`, the code the
`/v1/evaluations` jobs run):

  - passkey / needle-in-a-haystack accuracy by length x depth (exact match of a 5-digit key in
    the greedy continuation), with binomial standard errors;
  - perplexity by length of long real text (the standard library's largest modules).

Arms (training-free): none (extrapolation), linear PI, static NTK, dynamic NTK, YaRN; "default"
is `DEFAULT_ROPE_METHOD` (YaRN) and is reported, not re-run. Fine-tune arm
(`--finetune-steps N --finetune-methods ...`): the product's own trainer (`gpu_runtime.train`,
LoRA r16 on every linear layer, loss on every token) fine-tunes the model at the target
context with that method for N optimizer steps of one full-length row each, on long local
text the perplexity cells never read (the standard library's modules after the ones the
perplexity text takes), checkpointing every step so an interrupted run resumes; then the same
passkey / perplexity cells are measured on the fine-tune (`<method>+ft<N>`). One 16K
training step of this model is several minutes on 2 cores, so N is small: say it.

Seeds (`--seed S`, default 0): a fine-tune arm with seed S > 0 is its own arm,
`<method>+ft<N>@seed<S>`: LoRA initialisation, passkey keys and the training text all change
(seed S trains on the S-th next stretch of the standard library's text), so repeating an arm
under a few seeds measures how far its fine-tuned perplexity moves by chance. The fine-tuned
verdict pools an arm's seeds (passkey trials summed, perplexity averaged with its standard
error over seeds).

Verdict rule (printed with the table): among the training-free methods, those whose passkey
accuracy at the target length is within two standard errors of the highest (a pooled
two-proportion test: with 3 trials a method, one trial apart is noise) are tied, and of
those the lowest perplexity at the target length is best -- together with any whose mean
perplexity over two or more seeds is within two standard errors of the difference from it
(seed noise, measured, not assumed); the real model agrees with `DEFAULT_ROPE_METHOD` when
the default is (one of) the best. If it does not, the default should follow this evidence.

Compute dtype (`--dtype`): fp32 by default; `bfloat16` is what a GPU serves in and ~2.8x faster
on CPUs with AMX/AVX512-BF16. Each dtype keeps its own record (`real_model_context[_bfloat16]`),
never mixed: the same arm in two dtypes is two measurements.

Sizes are honest about CPU cost (prefill of 16K tokens is ~100 s on 2 idle cores): the default
grid is lengths 2K/8K/16K x depths 0.1/0.5/0.9 x 1 key at target 16K, plus one depth at 32K
for target 32K. Every finished cell is written to the JSON at once, so an interrupted run
resumes where it stopped (`--resume`, the default).

Run:  python benchmarks/real_model_context.py                  (hours on 2 CPU cores)
      python benchmarks/real_model_context.py --methods yarn none --targets 16384
      python benchmarks/real_model_context.py --quick --output-dir /tmp/rmc   (~1 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/real_model_context.py`
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from gpu_runtime import context_eval  # noqa: E402
from gpu_runtime.contract import LENGTH_DEPENDENT_ROPE_METHODS  # noqa: E402
from gpu_runtime.rope import DEFAULT_ROPE_METHOD, apply_rope_scaling  # noqa: E402

DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_MODEL_DIR = REPO_ROOT / "var" / "test-models" / "smollm2-135m-instruct"
TRAINING_FREE_METHODS = ("none", "linear", "ntk", "dynamic", "yarn")


@dataclass(frozen=True)
class Plan:
    """What one run measures. Per target: passkey lengths/depths and perplexity lengths."""

    methods: tuple[str, ...] = TRAINING_FREE_METHODS
    targets: tuple[int, ...] = (16384, 32768)
    passkey: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = field(
        default_factory=lambda: {
            16384: ((2048, 8192, 16384), (0.1, 0.5, 0.9)),
            32768: ((32768,), (0.5,)),
        }
    )
    perplexity: dict[int, tuple[int, ...]] = field(
        default_factory=lambda: {16384: (2048, 8192, 16384), 32768: (32768,)}
    )
    samples: int = 1
    seed: int = 0
    finetune_steps: int = 0
    finetune_methods: tuple[str, ...] = ()
    finetune_learning_rate: float = 5e-4
    finetune_row_length: int | None = None  # tokens per training row; None: the target
    dtype: str = "float32"  # compute dtype of every arm (and of the fine-tune): float32 | bfloat16


QUICK = Plan(
    methods=("none", "yarn"),
    targets=(16384,),  # factor 2: the scaling is really applied, measured at short lengths
    passkey={16384: ((256, 512), (0.5,))},
    perplexity={16384: (256, 512)},
    finetune_row_length=512,  # --quick --finetune-steps 1: rows as long as the longest cell
)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def record_name(dtype: str) -> str:
    """The record's file stem: one record per compute dtype, never mixed (a bf16 cell and an
    fp32 cell of the same arm are different measurements)."""
    return "real_model_context" + ("" if dtype == "float32" else f"_{dtype}")


def load(model_dir: Path, method: str, target: int, dtype: str = "float32") -> tuple[Any, Any]:
    """The checkpoint with `method` scaling to `target` tokens (training-free), eval mode."""
    from transformers import AutoConfig

    from gpu_runtime.registry import load_model, load_tokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    scaled = apply_rope_scaling(config, method, target)
    model = load_model(
        str(model_dir), rope_method=method, target_context=target, dtype=DTYPES[dtype]
    )
    assert model.config.rope_parameters == scaled.rope_parameters
    return model.eval(), load_tokenizer(str(model_dir))


def ensure_model(model_dir: Path) -> Path:
    if not (model_dir / "config.json").is_file():
        from gpu_runtime.smollm2 import convert

        model_dir.parent.mkdir(parents=True, exist_ok=True)
        convert(model_dir)
    return model_dir


def cell_key(kind: str, method: str, target: int, length: int, depth: float | None) -> str:
    return f"{kind}|{method}|{target}|{length}|{'' if depth is None else depth}"


def emulated_bf16_refusal(dtype: str, native_bf16: bool | None = None) -> str | None:
    """Why a bfloat16 run should not start on this CPU, or None.

    WHY: bfloat16 is ~2.8x faster than fp32 only where the CPU multiplies it natively
    (AVX512-BF16 / AMX, what oneDNN reports); elsewhere (e.g. an AVX2-only AMD EPYC) it is
    emulated, and a [2048 x 576] @ [576 x 1536] matmul measured 6x SLOWER than fp32 — a
    16K fine-tune step then takes most of an hour. Better to say so than to start it."""
    if dtype != "bfloat16":
        return None
    if native_bf16 is None:
        import torch

        native_bf16 = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if native_bf16:
        return None
    return (
        "--dtype bfloat16: this CPU has no native bfloat16 (no AVX512-BF16 / AMX), so every "
        "matmul is emulated and runs several times slower than float32; run --dtype float32 "
        "here (its own record), or add --allow-emulated-bf16 to run anyway"
    )


def finetuned_label(method: str, steps: int, seed: int = 0) -> str:
    """The arm name of `method` after the fine-tune: ``yarn+ft4``; ``yarn+ft4@seed1`` for a
    repeat under another seed (seed 0 keeps the plain name the older records use)."""
    return f"{method}+ft{steps}" + (f"@seed{seed}" if seed else "")


def split_label(label: str) -> tuple[str, int]:
    """(rope method, fine-tune steps) of an arm name; 0 steps for a training-free arm."""
    method, _, steps = label.partition("@seed")[0].partition("+ft")
    return method, int(steps or 0)


def label_seed(label: str) -> int:
    """The fine-tune seed of an arm name (0 for the plain name)."""
    return int(label.partition("@seed")[2] or 0)


def cells_in_order(plan: Plan) -> list[tuple[str, str, int, int, float | None]]:
    """(kind, arm, target, length, depth) in the order they are measured: for each target,
    length by length (in the order given) and depth by depth, every method at that point
    before the next -- so an interrupted run still compares all methods on what it measured.
    The fine-tuned arms come last (each costs a training run first), at the longest passkey
    length of their target (the target itself in the real grid) and every perplexity length."""
    out: list[tuple[str, str, int, int, float | None]] = []
    for target in plan.targets:
        lengths, depths = plan.passkey.get(target, ((), ()))
        for length in lengths:
            for depth in depths:
                out += [("passkey", m, target, length, depth) for m in plan.methods]
        for length in plan.perplexity.get(target, ()):
            out += [("ppl", m, target, length, None) for m in plan.methods]
    if plan.finetune_steps:
        for target in plan.targets:
            lengths, depths = plan.passkey.get(target, ((), ()))
            for method in plan.finetune_methods:
                arm = finetuned_label(method, plan.finetune_steps, plan.seed)
                out += [("passkey", arm, target, max(lengths), d) for d in depths if lengths]
                out += [("ppl", arm, target, n, None) for n in plan.perplexity.get(target, ())]
    return out


def finetune_data(tokenizer: Any, target: int, rows: int, skip_tokens: int, path: Path) -> Path:
    """`rows` text examples of about `target` tokens each, from the standard library's modules
    after the first `skip_tokens` tokens (the perplexity text): nothing evaluated is trained on.
    Windows are a little short of the target so re-tokenising the decoded text cannot spill a
    second row."""
    window = target - min(256, target // 8)
    ids = context_eval.long_text_ids(tokenizer, skip_tokens + rows * window)[skip_tokens:]
    with path.open("w") as out:
        for row in range(rows):
            text = tokenizer.decode(ids[row * window : (row + 1) * window])
            out.write(json.dumps({"text": text}) + "\n")
    return path


class _StepPrinter:
    """Training progress on stdout (a 16K step takes minutes: show each one)."""

    def on_step(self, metrics: Any) -> None:
        print(
            f"  fine-tune step {metrics.step}/{metrics.total_steps}: loss {metrics.loss:.4f}",
            flush=True,
        )

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_event(self, name: str, payload: Any) -> None:
        if name in ("data_packed", "model_ready"):
            print(f"  {name}: {dict(payload)}", flush=True)


def finetune(
    model_dir: Path, method: str, target: int, plan: Plan, skip_tokens: int, work_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """LoRA fine-tune with `method` at `target` for `plan.finetune_steps` steps (resumable:
    a checkpoint every step under `work_dir`); returns (artifact dir, training summary)."""
    from gpu_runtime.contract import TrainConfig
    from gpu_runtime.registry import load_tokenizer
    from gpu_runtime.train import train

    work_dir.mkdir(parents=True, exist_ok=True)
    summary_path = work_dir / "summary.json"
    if summary_path.is_file() and (work_dir / "final").is_dir():
        return work_dir / "final", json.loads(summary_path.read_text())
    row_length = plan.finetune_row_length or target
    data = finetune_data(
        load_tokenizer(str(model_dir)),
        row_length,
        plan.finetune_steps,
        # seed S trains on the S-th next stretch of text: the repeats differ in data too
        skip_tokens + plan.seed * plan.finetune_steps * row_length,
        work_dir / "data.jsonl",
    )
    config = TrainConfig(
        base_model=str(model_dir),
        output_dir=str(work_dir),
        context_length=target,
        sequence_length=row_length,
        method="lora",
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        rope_method=method,
        learning_rate=plan.finetune_learning_rate,
        lr_schedule="constant",
        max_steps=plan.finetune_steps,
        train_on_inputs=True,
        checkpoint_every_steps=1,
        keep_checkpoints=1,
        seed=plan.seed,
        dtype=plan.dtype,
    )
    result = train(config, str(data), [_StepPrinter()])
    summary = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "wall_time_s": round(result.wall_time_s, 1),
        "trained_tokens": result.trained_tokens,
        "learning_rate": plan.finetune_learning_rate,
        "row_length": row_length,
        "dtype": plan.dtype,
        "seed": plan.seed,
    }
    summary_path.write_text(json.dumps(summary, indent=1))
    assert result.artifact_dir is not None, result.stop_reason
    return Path(result.artifact_dir), summary


def load_finetuned(model_dir: Path, artifact: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """The fine-tune (adapter merged: evaluation pays no LoRA overhead), with the RoPE scaling
    it was trained under and the same attention as the training-free arms."""
    from gpu_runtime.attention import select_attention_implementation
    from gpu_runtime.output import load_trained_model

    model, tokenizer = load_trained_model(
        artifact,
        base_model=str(model_dir),
        dtype=DTYPES[dtype],
        attn_implementation=select_attention_implementation("auto"),
        merge=True,
    )
    return model.eval(), tokenizer


def run(plan: Plan, model_dir: Path, out_json: Path, resume: bool = True) -> dict[str, Any]:
    """Measure every cell of the plan not already in `out_json`; returns the whole record."""
    record: dict[str, Any] = {"cells": {}, "plan": None}
    if resume and out_json.is_file():
        record = json.loads(out_json.read_text())
        measured_in = (record.get("plan") or {}).get("dtype", "float32")
        if measured_in != plan.dtype:
            raise SystemExit(
                f"{out_json} was measured in {measured_in}, this run computes in {plan.dtype}: "
                "one record per dtype (pass --output-dir elsewhere or --no-resume)"
            )
    record["plan"] = json.loads(json.dumps(asdict(plan)))
    record["model"] = (
        str(model_dir.relative_to(REPO_ROOT))
        if model_dir.is_relative_to(REPO_ROOT)
        else str(model_dir)
    )
    record["threads"] = torch.get_num_threads()
    cells: dict[str, Any] = record["cells"]
    loaded: dict[tuple[str, int], tuple[Any, Any]] = {}  # 0.5 GB each in fp32

    def save() -> None:
        out_json.write_text(json.dumps(record, indent=1, sort_keys=True))

    finetunes: dict[str, Any] = record.setdefault("finetunes", {})
    skip_tokens = max((n for lengths in plan.perplexity.values() for n in lengths), default=0)
    for kind, method, target, length, depth in cells_in_order(plan):
        key = cell_key(kind, method, target, length, depth)
        if key in cells:
            continue
        if (method, target) not in loaded:
            rope_method, steps = split_label(method)
            if steps:
                loaded.clear()  # training needs the memory the cached arms (0.5 GB each) hold
                work = (
                    model_dir.parent / "real-model-context-ft" / f"{method}-{target}-{plan.dtype}"
                )
                artifact, finetunes[f"{method}|{target}"] = finetune(
                    model_dir, rope_method, target, plan, skip_tokens, work
                )
                save()
                loaded[(method, target)] = load_finetuned(model_dir, artifact, plan.dtype)
            else:
                loaded[(method, target)] = load(model_dir, method, target, plan.dtype)
        model, tokenizer = loaded[(method, target)]
        started = time.perf_counter()
        if kind == "passkey":
            grid = context_eval.passkey_grid(
                model, tokenizer, [length], [depth], plan.samples, seed=plan.seed
            )
            cells[key] = {"accuracy": grid["accuracy"][0][0], "trials": plan.samples}
        else:
            ids = context_eval.long_text_ids(tokenizer, length)
            ppl = context_eval.perplexity_by_length(model, ids, [length])["perplexity"][0]
            cells[key] = {"perplexity": ppl}
        cells[key]["seconds"] = round(time.perf_counter() - started, 1)
        print(
            f"{kind:7} {method:8} target {target} len {length} depth {depth}: {cells[key]}",
            flush=True,
        )
        save()
    save()
    return record


def summarize(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (target, method): passkey accuracy by length (mean over depths, stderr
    over depths x samples), perplexity by length."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in record["cells"].items():
        kind, method, target, length, depth = key.split("|")
        row = rows.setdefault((int(target), method), {"passkey": {}, "ppl": {}})
        if kind == "passkey":
            row["passkey"].setdefault(int(length), []).append((value["accuracy"], value["trials"]))
        else:
            row["ppl"][int(length)] = value["perplexity"]
    out = []
    for (target, method), row in sorted(rows.items()):
        passkey = {}
        for length, cells in sorted(row["passkey"].items()):
            trials = sum(t for _, t in cells)
            mean = sum(a * t for a, t in cells) / trials
            passkey[length] = (mean, math.sqrt(mean * (1 - mean) / trials), trials)
        out.append({"target": target, "method": method, "passkey": passkey, "ppl": row["ppl"]})
    return out


def _tied(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """Two passkey accuracies (mean, s.e., n) differ by at most two standard errors of their
    difference (pooled two-proportion test, about 95%): with n = 3 trials a method, one trial
    apart is a tie."""
    (pa, _, na), (pb, _, nb) = a, b
    pooled = (pa * na + pb * nb) / (na + nb)
    spread = 2 * math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    return abs(pa - pb) <= spread


def pooled_arms(rows: list[dict[str, Any]], target: int, steps: int) -> list[dict[str, Any]]:
    """The arms of `steps` fine-tune steps (0: training-free) at `target`, one per RoPE
    method with its seeds pooled: passkey at the target (trials summed), the perplexity at
    the target of each seed, and the seeds. Arms without a passkey cell at the target have
    ``passkey`` None."""
    by_method: dict[str, dict[str, Any]] = {}
    for r in rows:
        method, arm_steps = split_label(r["method"])
        if r["target"] != target or arm_steps != steps:
            continue
        arm = by_method.setdefault(method, {"method": method, "cells": [], "ppl": [], "seeds": []})
        arm["seeds"].append(label_seed(r["method"]))
        if target in r["passkey"]:
            mean, _, trials = r["passkey"][target]
            arm["cells"].append((mean, trials))
        if target in r["ppl"]:
            arm["ppl"].append(r["ppl"][target])
    out = []
    for method, arm in sorted(by_method.items()):
        passkey = None
        if arm["cells"]:
            trials = sum(t for _, t in arm["cells"])
            mean = sum(a * t for a, t in arm["cells"]) / trials
            passkey = (mean, math.sqrt(mean * (1 - mean) / trials), trials)
        out.append({"method": method, "passkey": passkey, "ppl": arm["ppl"],
                    "seeds": sorted(arm["seeds"])})  # fmt: skip
    return out


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None below two values: no spread measured)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _ppl_tied(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two arms' perplexities (one value per seed) are within two standard errors of their
    difference. Only a measured spread can tie: with fewer than two seeds on either side,
    only equal values are."""
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    if sa is None or sb is None:
        return ma == mb
    return abs(ma - mb) <= 2 * math.sqrt(sa**2 + sb**2)


def _ppl_text(values: Sequence[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:.3f}" if se is None else f"{mean:.3f} ± {se:.3f}, {len(values)} seeds"


def _judge(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule on pooled arms: the passkey leaders, the arms tied with them, the lowest
    perplexity among those, and the best (it plus any within seed noise of it)."""
    top = max(r["passkey"][0] for r in candidates)
    leaders = sorted(r["method"] for r in candidates if r["passkey"][0] == top)
    leader = next(r for r in candidates if r["method"] == leaders[0])
    tied = [r for r in candidates if _tied(r["passkey"], leader["passkey"])]
    measured = [r for r in tied if r["ppl"]]
    lowest = min(measured, key=lambda r: (mean_se(r["ppl"])[0], r["method"]), default=None)
    best = sorted(r["method"] for r in measured if _ppl_tied(r["ppl"], lowest["ppl"]))
    return {"top": top, "leaders": leaders, "tied": tied, "lowest": lowest, "best": best}


def _judgement_text(judged: dict[str, Any]) -> str:
    lowest, tied = judged["lowest"], judged["tied"]
    lowest_text = (
        f"{lowest['method']} ({_ppl_text(lowest['ppl'])})" if lowest is not None else "none"
    )
    within = [m for m in judged["best"] if lowest is None or m != lowest["method"]]
    return (
        f"highest passkey accuracy {', '.join(judged['leaders'])} ({judged['top']:.2f}); "
        f"statistically tied with it: {', '.join(sorted(r['method'] for r in tied))}; "
        f"of those, lowest perplexity: {lowest_text}"
        + (
            "; within seed noise of it: "
            + ", ".join(
                f"{m} ({_ppl_text(next(r for r in tied if r['method'] == m)['ppl'])})"
                for m in within
            )  # fmt: skip
            if within
            else ""
        )
    )


def verdict(
    rows: list[dict[str, Any]], target: int, steps: int = 0
) -> tuple[list[str], str] | None:
    """(the methods the default may be at `target`, the rule's sentence) or None before the
    target length was measured for every arm of that kind that has cells. `steps` = 0 judges
    the training-free arms; `steps` = N judges the `<method>+ftN[@seedS]` arms (named by their
    method, seeds pooled), the case DEFAULT_ROPE_METHOD decides in the product: a fine-tune
    job past the base's context trains with it.

    Rule: the methods whose passkey accuracy at the target length is statistically tied with
    the highest one (``_tied``) are candidates; of those, the lowest mean perplexity at the
    target length wins, with any whose perplexity is tied with it over measured seeds
    (``_ppl_tied``). The point-estimate leader is reported too, so a reader sees when only
    the noise separates them. A winner in ``LENGTH_DEPENDENT_ROPE_METHODS`` is reported but
    cannot be the default: its frequencies follow the forward's length, so the serving
    engine's chunked prefill does not serve the model measured here in one forward; when
    no other method is among the best, the rule is applied again to the others."""
    candidates = pooled_arms(rows, target, steps)
    if not candidates or any(r["passkey"] is None for r in candidates):
        return None
    judged = sorted(r["method"] for r in candidates)
    missing = [m for m in TRAINING_FREE_METHODS if m not in judged]
    seeds = sorted({s for r in candidates for s in r["seeds"]})
    scope = (
        f"After {steps} LoRA steps at {target} (fine-tuned: {', '.join(judged)}"
        + (f"; not fine-tuned: {', '.join(missing)}" if missing else "")
        + (f"; seeds {', '.join(map(str, seeds))} pooled" if len(seeds) > 1 else "")
        + "): "
        if steps
        else f"At {target}: "
    )
    first = _judge(candidates)
    sentence = scope + _judgement_text(first)
    servable = [m for m in first["best"] if m not in LENGTH_DEPENDENT_ROPE_METHODS]
    excluded = [m for m in first["best"] if m in LENGTH_DEPENDENT_ROPE_METHODS]
    others = [r for r in candidates if r["method"] not in LENGTH_DEPENDENT_ROPE_METHODS]
    if excluded:
        sentence += (
            f"; {', '.join(excluded)} cannot be the default (its frequencies follow the "
            "forward's length: served in chunks, it is not the model measured here)"
        )
        if not servable and others:
            second = _judge(others)
            servable = [m for m in second["best"] if m not in LENGTH_DEPENDENT_ROPE_METHODS]
            sentence += "; among the others: " + _judgement_text(second)
    agrees = DEFAULT_ROPE_METHOD in servable
    sentence += " — " + (
        f"the real model agrees with DEFAULT_ROPE_METHOD = `{DEFAULT_ROPE_METHOD}`."
        if agrees
        else f"the real model DISAGREES with DEFAULT_ROPE_METHOD = `{DEFAULT_ROPE_METHOD}`."
    )
    return servable, sentence


def markdown(record: dict[str, Any], commands: Sequence[str]) -> str:
    rows = summarize(record)
    lines = [
        "# Context extension on a real model (SmolLM2-135M-Instruct, native 8192)",
        "",
        "Reproduce (the record's runs, in order; each resumes the record):",
        "",
        *(f"    {command}" for command in commands),
        "",
        f"Training-free arms; `default` = `{DEFAULT_ROPE_METHOD}` (the product's default, "
        "the same arm). Passkey: exact match of a 5-digit key, mean over needle depths "
        "± binomial standard error (n = depths × keys). Perplexity: the first L tokens of "
        "the standard library's largest modules.",
        "",
        "| target | method | passkey accuracy by length (± s.e., n) | perplexity by length |",
        "|---|---|---|---|",
    ]
    for row in rows:
        method = row["method"] + (" (default)" if row["method"] == DEFAULT_ROPE_METHOD else "")
        passkey = ", ".join(
            f"{n}: {m:.2f} ± {s:.2f} (n={t})" for n, (m, s, t) in row["passkey"].items()
        )
        ppl = ", ".join(f"{n}: {p:.2f}" for n, p in sorted(row["ppl"].items()))
        lines.append(f"| {row['target']} | {method} | {passkey or '—'} | {ppl or '—'} |")
    seconds = sum(c.get("seconds", 0) for c in record["cells"].values())
    lines += [
        "",
        f"Measured cells: {len(record['cells'])}, {seconds / 60:.0f} min of compute "
        f"({record.get('threads')} torch threads, compute dtype "
        f"{(record.get('plan') or {}).get('dtype', 'float32')}).",
    ]
    for target in sorted({r["target"] for r in rows}):
        found = verdict(rows, target)
        lines.append(
            found[1]
            if found
            else f"Verdict at {target}: not every training-free method has its passkey cells "
            "at the target length yet."
        )
        arms = {split_label(r["method"])[1] for r in rows if r["target"] == target}
        for steps in sorted(arms - {0}):
            pooled = pooled_arms(rows, target, steps)
            if any(len(r["seeds"]) > 1 for r in pooled):
                lines.append(
                    f"Fine-tuned arms after {steps} steps at {target}, seeds pooled: "
                    + "; ".join(
                        f"{r['method']} (seeds {', '.join(map(str, r['seeds']))}): passkey "
                        + (
                            f"{r['passkey'][0]:.2f} ± {r['passkey'][1]:.2f} (n={r['passkey'][2]})"
                            if r["passkey"]
                            else "—"
                        )
                        + (f", perplexity {_ppl_text(r['ppl'])}" if r["ppl"] else "")
                        for r in pooled
                    )
                    + "."
                )
            found = verdict(rows, target, steps)
            lines.append(
                found[1]
                if found
                else f"Verdict after {steps} LoRA steps at {target}: not every fine-tuned arm "
                "has its passkey cells at the target length yet."
            )
    lines.append(
        "Rule: the methods whose passkey accuracy at the target length is within two standard "
        "errors of the highest (pooled two-proportion test) are tied; of those, the lowest "
        "perplexity at the target length is best, together with any whose mean perplexity over "
        "two or more seeds is within two standard errors of the difference from it (a spread "
        "measured over seeds, never assumed). It is applied to the training-free arms and, "
        "separately, to the arms fine-tuned for the same number of steps. The default should "
        "be (one of) the best in both; where the two verdicts differ, the fine-tuned one "
        "decides, because a fine-tune job past the base's context is what trains with "
        "DEFAULT_ROPE_METHOD (serving a base model past its context uses it untrained). A "
        "method whose rotary frequencies follow the forward's length "
        f"({', '.join(sorted(LENGTH_DEPENDENT_ROPE_METHODS))}: the serving engine prefills "
        "in chunks, so served it is not the model measured here in one forward) is reported "
        "but cannot be the default; if it alone is best, the rule picks among the others."
    )
    for name, ft in sorted(record.get("finetunes", {}).items()):
        arm, target = name.split("|")
        lines.append(
            f"Fine-tune `{arm}` at {target}: {ft['steps']} LoRA steps of one "
            f"{ft.get('row_length', target)}-token row each "
            f"(seed {ft.get('seed', 0)}; "
            f"lr {ft['learning_rate']}, constant), final loss {ft['final_loss']:.3f}, "
            f"{ft['wall_time_s'] / 60:.0f} min of training."
        )
    if not record.get("finetunes"):
        lines.append("Fine-tune arm: not run in this record (`--finetune-steps N`).")
    return "\n".join(lines) + "\n"


def chart(record: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(record)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        label = f"{row['method']} → {row['target']}"
        if row["passkey"]:
            xs = list(row["passkey"])
            left.errorbar(
                xs,
                [row["passkey"][x][0] for x in xs],
                yerr=[row["passkey"][x][1] for x in xs],
                marker="o",
                label=label,
                capsize=3,
            )
        if row["ppl"]:
            xs = sorted(row["ppl"])
            right.plot(xs, [row["ppl"][x] for x in xs], marker="o", label=label)
    for ax, title in ((left, "passkey accuracy"), (right, "perplexity (log)")):
        ax.set_xscale("log", base=2)
        ax.axvline(8192, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("context length (tokens); dotted: native 8K")
        ax.set_title(title)
        ax.legend(fontsize=7)
    right.set_yscale("log")
    left.set_ylim(-0.05, 1.05)
    dtype = (record.get("plan") or {}).get("dtype", "float32")
    fig.suptitle(
        f"SmolLM2-135M-Instruct, RoPE scaling ({dtype}; +ftN: after N LoRA steps)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recorded_arguments(argv: Sequence[str]) -> list[str]:
    """The run's arguments as the record lists them: without `--output-dir`, whose value is a
    path on the measuring machine (the record's home is the directory it is committed in)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--output-dir":
            skip = True
        elif not arg.startswith("--output-dir="):
            out.append(arg)
    return out


def recorded_command(command: str) -> str:
    """A command line as the record lists it (``recorded_arguments`` of its arguments)."""
    words = shlex.split(command)
    return shlex.join(words[:2] + recorded_arguments(words[2:]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(TRAINING_FREE_METHODS))
    parser.add_argument("--targets", nargs="+", type=int, default=[16384, 32768])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fine-tune seed (LoRA init, training text, passkey keys); S > 0 makes the "
        "fine-tuned arms separate `<method>+ftN@seedS` arms, pooled in the verdict",
    )
    parser.add_argument(
        "--passkey-lengths", nargs="+", type=int, help="passkey lengths (every target)"
    )
    parser.add_argument("--depths", nargs="+", type=float, help="passkey needle depths")
    parser.add_argument("--ppl-lengths", nargs="+", type=int, help="perplexity lengths")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--finetune-steps", type=int, default=0, help="LoRA steps of the fine-tune arm (0: none)"
    )
    parser.add_argument(
        "--finetune-methods",
        nargs="+",
        default=None,
        help="methods to fine-tune (default: --methods)",
    )
    parser.add_argument("--finetune-lr", type=float, default=Plan.finetune_learning_rate)
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="compute dtype of every arm; bfloat16 is ~2.8x faster on CPUs with AMX/AVX512-BF16 "
        "and is what a GPU serves in (a separate record: real_model_context_bfloat16.*)",
    )
    parser.add_argument(
        "--allow-emulated-bf16",
        action="store_true",
        help="run --dtype bfloat16 even on a CPU without native bfloat16 (several times slower)",
    )
    args = parser.parse_args(argv)
    refusal = None if args.allow_emulated_bf16 else emulated_bf16_refusal(args.dtype)
    if refusal:
        parser.error(refusal)
    plan = (
        QUICK
        if args.quick
        else Plan(methods=tuple(args.methods), targets=tuple(args.targets), samples=args.samples)
    )
    if not args.quick and (args.passkey_lengths or args.depths or args.ppl_lengths):
        default = Plan()
        passkey = {
            t: (
                tuple(args.passkey_lengths or default.passkey.get(t, ((t,), ()))[0]),
                tuple(args.depths or default.passkey.get(t, ((), (0.5,)))[1]),
            )
            for t in plan.targets
        }
        perplexity = {
            t: tuple(args.ppl_lengths or default.perplexity.get(t, (t,))) for t in plan.targets
        }
        plan = dataclasses.replace(plan, passkey=passkey, perplexity=perplexity)
    if args.finetune_steps:
        plan = dataclasses.replace(
            plan,
            finetune_steps=args.finetune_steps,
            finetune_methods=tuple(args.finetune_methods or plan.methods),
            finetune_learning_rate=args.finetune_lr,
        )
    plan = dataclasses.replace(plan, dtype=args.dtype, seed=args.seed)
    for method in plan.methods:
        if method not in TRAINING_FREE_METHODS:
            parser.error(f"--methods: {method!r} is not one of {TRAINING_FREE_METHODS}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = record_name(plan.dtype)
    out_json = args.output_dir / f"{stem}.json"
    record = run(plan, ensure_model(args.model_dir), out_json, resume=not args.no_resume)
    command = recorded_command(
        shlex.join(
            [
                "python",
                "benchmarks/real_model_context.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        )
    )
    # every run that added cells to this record, in order (older entries re-read without a
    # machine-local --output-dir)
    commands = list(dict.fromkeys(recorded_command(c) for c in record.get("commands", [])))
    if command not in commands:
        commands.append(command)
    record["commands"] = commands
    out_json.write_text(json.dumps(record, indent=1, sort_keys=True))
    report = markdown(record, commands)
    (args.output_dir / f"{stem}.md").write_text(report)
    chart(record, args.output_dir / f"{stem}.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
