"""Does a RoPE method keep its passkey accuracy when the prompt is prefilled in chunks, as the
serving engine does? SmolLM2-135M-Instruct at 16K, one forward against chunks of 512.

WHY: `real_model_context.py` measures every arm with the prompt in ONE forward. The serving
engine (`gpu_runtime.serving.engine`) prefills a long prompt in `prefill_chunk_size` chunks
over the KV cache. For most methods that is exact (tests/gpu_runtime/
test_rope_length_dependence.py); for a method in `LENGTH_DEPENDENT_ROPE_METHODS` (HF dynamic
NTK rescales theta by the forward's largest position) the early chunks' keys are rotated with
other frequencies than the later queries, so what is served is not the model that was
measured. This measures how much that costs on the real model, arm by arm, with the same
prompts and keys in both modes (the baseline is the same run's one-forward figure).

Arms: a RoPE method (training-free, as `real_model_context.py` loads it) or a fine-tuned arm
label of that benchmark (`<method>+ftN[@seedS]`), read from its work directory
(`var/test-models/real-model-context-ft/<label>-<target>-<dtype>/final`: run
`real_model_context.py` with `--finetune-steps` first). Every finished cell is written to
the JSON at once; a re-run resumes.

Run:  python benchmarks/chunked_prefill_rope.py --dtype bfloat16     (~25 min on 2 idle cores)
      python benchmarks/chunked_prefill_rope.py --arms yarn dynamic --depths 0.5 --samples 1
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # allow `python benchmarks/chunked_prefill_rope.py`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_model_context as rmc  # noqa: E402
from gpu_runtime import context_eval  # noqa: E402
from gpu_runtime.contract import LENGTH_DEPENDENT_ROPE_METHODS  # noqa: E402

DEFAULT_ARMS = ("yarn", "dynamic", "yarn+ft3@seed1", "dynamic+ft3@seed1")
ENGINE_CHUNK = 512  # gpu_runtime.serving.EngineConfig.prefill_chunk_size's default


def arm_dir(model_dir: Path, label: str, target: int, dtype: str) -> Path:
    return model_dir.parent / "real-model-context-ft" / f"{label}-{target}-{dtype}" / "final"


def load_arm(model_dir: Path, label: str, target: int, dtype: str) -> tuple[Any, Any]:
    """A training-free method or a fine-tuned arm of real_model_context.py, in eval mode."""
    method, steps = rmc.split_label(label)
    if not steps:
        return rmc.load(model_dir, method, target, dtype)
    artifact = arm_dir(model_dir, label, target, dtype)
    if not artifact.is_dir():
        raise SystemExit(
            f"{label}: no fine-tune at {artifact}; run benchmarks/real_model_context.py with "
            f"--finetune-steps {steps} --finetune-methods {method} --dtype {dtype} first"
        )
    return rmc.load_finetuned(model_dir, artifact, dtype)


def cell_key(label: str, chunk: int | None, depth: float) -> str:
    return f"{label}|{chunk or 'whole'}|{depth}"


def run(args: argparse.Namespace, out_json: Path) -> dict[str, Any]:
    setup = {"length": args.length, "target": args.target, "chunk": args.chunk,
             "dtype": args.dtype, "seed": args.seed}  # fmt: skip
    record: dict[str, Any] = {"cells": {}, **setup}
    if out_json.is_file():
        record = json.loads(out_json.read_text())
        # cells are keyed by arm, mode and depth only: another setup would be mixed in unseen
        changed = {k: (record.get(k), v) for k, v in setup.items() if record.get(k) != v}
        if changed:
            raise SystemExit(
                f"{out_json} was measured with another setup ({changed}: recorded, asked); "
                "use another --output-dir"
            )
    cells = record["cells"]
    model_dir = rmc.ensure_model(args.model_dir)
    for label in args.arms:
        todo = [
            (chunk, depth)
            for depth in args.depths
            for chunk in (None, args.chunk)
            if cell_key(label, chunk, depth) not in cells
        ]
        if not todo:
            continue
        model, tokenizer = load_arm(model_dir, label, args.target, args.dtype)
        for chunk, depth in todo:  # both modes at a depth before the next depth
            started = time.perf_counter()
            grid = context_eval.passkey_grid(
                model, tokenizer, [args.length], [depth], args.samples, seed=args.seed,
                prefill_chunk=chunk,
            )  # fmt: skip
            key = cell_key(label, chunk, depth)
            cells[key] = {
                "accuracy": grid["accuracy"][0][0],
                "trials": args.samples,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"{key}: {cells[key]}", flush=True)
            out_json.write_text(json.dumps(record, indent=1, sort_keys=True))
        del model
    return record


def pooled(record: dict[str, Any], label: str, chunk: int | None) -> tuple[float, float, int]:
    """(accuracy, binomial s.e., trials) of an arm in one mode, over every depth measured."""
    mode = str(chunk or "whole")
    found = [v for k, v in record["cells"].items() if k.split("|")[:2] == [label, mode]]
    trials = sum(v["trials"] for v in found)
    if not trials:
        return math.nan, math.nan, 0
    mean = sum(v["accuracy"] * v["trials"] for v in found) / trials
    return mean, math.sqrt(mean * (1 - mean) / trials), trials


def markdown(record: dict[str, Any], command: str) -> str:
    chunk = record["chunk"]
    labels = sorted({k.split("|")[0] for k in record["cells"]})
    lines = [
        "# Passkey accuracy with the prompt in one forward and in chunks (as served)",
        "",
        "Reproduce:",
        "",
        f"    {command}",
        "",
        f"SmolLM2-135M-Instruct, {record['dtype']}, passkey at {record['length']} tokens "
        f"(target context {record['target']}), the same prompts and keys in both modes; "
        f"chunked = {chunk}-token chunks over the KV cache (the serving engine's "
        "`prefill_chunk_size`). ± binomial standard error over depths × keys.",
        "",
        "| arm | length-dependent | one forward | chunked | chunked − one forward |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        method, _ = rmc.split_label(label)
        (wm, ws, wn), (cm, cs, cn) = pooled(record, label, None), pooled(record, label, chunk)
        lines.append(
            f"| {label} | {'yes' if method in LENGTH_DEPENDENT_ROPE_METHODS else 'no'} "
            f"| {wm:.2f} ± {ws:.2f} (n={wn}) | {cm:.2f} ± {cs:.2f} (n={cn}) | {cm - wm:+.2f} |"
        )
    seconds = sum(v.get("seconds", 0) for v in record["cells"].values())
    lines += ["", f"{len(record['cells'])} cells, {seconds / 60:.0f} min of compute."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS))
    parser.add_argument("--length", type=int, default=16384, help="passkey prompt tokens")
    parser.add_argument("--target", type=int, default=16384, help="context the arms extend to")
    parser.add_argument("--depths", nargs="+", type=float, default=[0.1, 0.5, 0.9])
    parser.add_argument("--samples", type=int, default=2, help="keys per depth")
    parser.add_argument("--seed", type=int, default=1, help="passkey keys (every arm the same)")
    parser.add_argument("--chunk", type=int, default=ENGINE_CHUNK)
    parser.add_argument("--dtype", choices=sorted(rmc.DTYPES), default="bfloat16")
    parser.add_argument("--model-dir", type=Path, default=rmc.DEFAULT_MODEL_DIR)
    parser.add_argument("--output-dir", type=Path, default=rmc.DEFAULT_RESULTS_DIR)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    refusal = rmc.emulated_bf16_refusal(args.dtype)
    if refusal:
        parser.error(refusal)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out_json = args.output_dir / f"chunked_prefill_rope_{args.dtype}.json"
    record = run(args, out_json)
    command = shlex.join(
        ["python", "benchmarks/chunked_prefill_rope.py", *rmc.recorded_arguments(argv)]
    )
    text = markdown(record, command)
    (args.output_dir / f"chunked_prefill_rope_{args.dtype}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
