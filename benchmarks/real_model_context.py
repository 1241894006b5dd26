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
is `DEFAULT_ROPE_METHOD` (YaRN) and is reported, not re-run. The fine-tune arm
(`--finetune-steps N`: a LoRA fine-tune of each method at the target on long local text, then
the same evaluation) is not built yet: one 16K training step of this model is several
minutes on 2 cores.

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


QUICK = Plan(
    methods=("none", "yarn"),
    targets=(16384,),  # factor 2: the scaling is really applied, measured at short lengths
    passkey={16384: ((256, 512), (0.5,))},
    perplexity={16384: (256, 512)},
)


def load(model_dir: Path, method: str, target: int) -> tuple[Any, Any]:
    """The checkpoint with `method` scaling to `target` tokens (training-free), eval mode."""
    from transformers import AutoConfig

    from gpu_runtime.registry import load_model, load_tokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    scaled = apply_rope_scaling(config, method, target)
    model = load_model(
        str(model_dir), rope_method=method, target_context=target, dtype=torch.float32
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


def cells_in_order(plan: Plan) -> list[tuple[str, str, int, int, float | None]]:
    """(kind, method, target, length, depth) in the order they are measured: for each target,
    length by length (in the order given) and depth by depth, every method at that point
    before the next -- so an interrupted run still compares all methods on what it measured."""
    out: list[tuple[str, str, int, int, float | None]] = []
    for target in plan.targets:
        lengths, depths = plan.passkey.get(target, ((), ()))
        for length in lengths:
            for depth in depths:
                out += [("passkey", m, target, length, depth) for m in plan.methods]
        for length in plan.perplexity.get(target, ()):
            out += [("ppl", m, target, length, None) for m in plan.methods]
    return out


def run(plan: Plan, model_dir: Path, out_json: Path, resume: bool = True) -> dict[str, Any]:
    """Measure every cell of the plan not already in `out_json`; returns the whole record."""
    record: dict[str, Any] = {"cells": {}, "plan": None}
    if resume and out_json.is_file():
        record = json.loads(out_json.read_text())
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

    for kind, method, target, length, depth in cells_in_order(plan):
        key = cell_key(kind, method, target, length, depth)
        if key in cells:
            continue
        if (method, target) not in loaded:
            loaded[(method, target)] = load(model_dir, method, target)
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


def markdown(record: dict[str, Any], command: str) -> str:
    rows = summarize(record)
    lines = [
        "# Context extension on a real model (SmolLM2-135M-Instruct, native 8192)",
        "",
        f"Reproduce: `{command}`",
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
        f"({record.get('threads')} torch threads).",
    ]
    lines.append(
        "Fine-tune arm (each method after a short LoRA fine-tune at the target): not built "
        "into this script yet; see the benchmarks README for its cost on 2 cores."
    )
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
    fig.suptitle("SmolLM2-135M-Instruct, training-free RoPE scaling", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(TRAINING_FREE_METHODS))
    parser.add_argument("--targets", nargs="+", type=int, default=[16384, 32768])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument(
        "--passkey-lengths", nargs="+", type=int, help="passkey lengths (every target)"
    )
    parser.add_argument("--depths", nargs="+", type=float, help="passkey needle depths")
    parser.add_argument("--ppl-lengths", nargs="+", type=int, help="perplexity lengths")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
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
    for method in plan.methods:
        if method not in TRAINING_FREE_METHODS:
            parser.error(f"--methods: {method!r} is not one of {TRAINING_FREE_METHODS}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out_json = args.output_dir / "real_model_context.json"
    record = run(plan, ensure_model(args.model_dir), out_json, resume=not args.no_resume)
    command = "python benchmarks/real_model_context.py " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    report = markdown(record, command.strip())
    (args.output_dir / "real_model_context.md").write_text(report)
    chart(record, args.output_dir / "real_model_context.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
