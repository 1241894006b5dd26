"""Do "auto" hyperparameters teach? SmolLM2-135M-Instruct LoRA-fine-tuned on the bundled
examples/support_chat.jsonl, scored on held-out prompts of the dataset's style.

Arms (all on the same scrubbed data, context 2,048 as in the README walkthrough):
    base         no fine-tune
    old_default  what "auto" chose before finetuning/auto.py: rows of the whole context
                 (40 examples -> 2 rows), 3 epochs, batch 1, LoRA learning rate 2e-4: 6 steps
    auto         finetuning.auto.choose on the data's shape (what a job with every
                 hyperparameter left "auto" now trains with)

The scored check (``in_support_style``): every answer in the dataset reads "Thanks for asking
about <topic>. Our <topic> team answers within one business day." An answer to a held-out
prompt counts when it starts with "Thanks for asking about" AND contains "within one business
day". The held-out prompts ask, in the dataset's words, about topics the dataset never
mentions (warranties, gift cards, ...), so a hit is the style carried to a new topic, not a
memorised answer. Greedy decoding, 24 new tokens.

    OMP_NUM_THREADS=1 nice python benchmarks/auto_hyperparameters.py            # all arms
    python benchmarks/auto_hyperparameters.py --arms base,auto --out /tmp/x.md

One thread: on a shared, oversubscribed 2-core box, torch's two threads spin against other
processes (one 128-token step took 40-75 s with two threads, ~14 s with one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "platform"), str(REPO)]

DATASET = REPO / "examples" / "support_chat.jsonl"
DEFAULT_MODEL = REPO / "var" / "test-models" / "smollm2-135m-instruct"
CONTEXT = 2048
SYSTEM = "You are Acme's support assistant."
# Topics the dataset never mentions (it has billing, shipping, returns, passwords, invoices,
# refunds).
HELD_OUT_TOPICS = (
    "warranties",
    "subscriptions",
    "gift cards",
    "deliveries",
    "my account",
    "coupons",
    "orders",
    "exchanges",
    "discounts",
    "payments",
)
PASS_FRACTION = 0.8  # the bar: >= 80% of held-out prompts in the dataset's style
MAX_NEW_TOKENS = 24


def held_out_prompts() -> list[list[dict[str, str]]]:
    """Chat prompts in the dataset's words (after the PII scrub) about unseen topics."""
    return [
        [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": f"I have a question about {topic}. My email is [EMAIL_1] and my "
                "phone is [PHONE_1].",
            },
        ]
        for topic in HELD_OUT_TOPICS
    ]


def in_support_style(answer: str) -> bool:
    """The dataset's answer style: its opening and its promise, whatever the topic."""
    text = answer.strip()
    return text.startswith("Thanks for asking about") and "within one business day" in text


def scrubbed_examples() -> list[dict[str, Any]]:
    """The dataset as the product trains on it: through the PII scrubber (one per file)."""
    from longtune.datasets.pii import PiiScrubber

    scrubber = PiiScrubber()
    examples = []
    for line in DATASET.read_text(encoding="utf-8").splitlines():
        if line.strip():
            example = json.loads(line)
            scrubber.scrub_json(example)
            examples.append(example)
    return examples


@dataclass
class ArmResult:
    arm: str
    hyperparameters: dict[str, Any]
    steps: int
    train_seconds: float
    tokens_seen: int
    final_loss: float | None
    score: int
    total: int
    answers: list[str] = field(default_factory=list)


def shape_of(examples: list[dict[str, Any]], tokenizer: Any):
    """The shape a job's "auto" sees: counted like the validator does (the messages' text,
    datasets.formats.example_text), not with the chat template training adds."""
    from longtune.finetuning.auto import DatasetShape

    lengths = [
        len(tokenizer("\n".join(m["content"] for m in e["messages"]), add_special_tokens=False)
            .input_ids)
        for e in examples
    ]  # fmt: skip
    return DatasetShape(examples=len(lengths), tokens=sum(lengths), max_example_tokens=max(lengths))


def arm_hyperparameters(arm: str, shape: Any) -> dict[str, Any]:
    from longtune.finetuning.auto import choose

    if arm == "old_default":
        return {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.0,
                "sequence_length": CONTEXT}  # fmt: skip
    choice = choose(shape, context_length=CONTEXT, method="lora")
    return {k: getattr(choice, k) for k in ("n_epochs", "batch_size", "learning_rate_multiplier",
                                             "sequence_length", "estimated_steps")}  # fmt: skip


def train_arm(model_dir: Path, examples: list, hp: dict[str, Any], out: Path, seed: int):
    """The run a job with these hyperparameters trains (finetuning.planning.train_config_for:
    LoRA r 16, alpha 32, dropout 0.05, all linear layers, base LR 2e-4 x multiplier)."""
    from gpu_runtime.contract import ContextSpec, TrainConfig
    from gpu_runtime.train import train

    spec = ContextSpec.plan(original_length=8192, target_length=CONTEXT)
    config = TrainConfig(
        base_model=str(model_dir),
        output_dir=str(out),
        **TrainConfig.context_fields(spec),
        sequence_length=hp["sequence_length"],
        learning_rate=2e-4 * hp["learning_rate_multiplier"],
        num_epochs=hp["n_epochs"],
        gradient_accumulation_steps=hp["batch_size"],
        lora_alpha=32,
        seed=seed,
        checkpoint_every_steps=0,
    )
    return train(config, examples)


def answers_of(model_dir: Path, adapter: Path | None) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    answers = []
    for messages in held_out_prompts():
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return answers


def run_arm(arm: str, model_dir: Path, examples: list, shape: Any, seed: int) -> ArmResult:
    hp = {} if arm == "base" else arm_hyperparameters(arm, shape)
    steps, seconds, tokens, loss, adapter = 0, 0.0, 0, None, None
    with tempfile.TemporaryDirectory(prefix=f"autohp-{arm}-") as tmp:
        if arm != "base":
            started = time.perf_counter()
            result = train_arm(model_dir, examples, hp, Path(tmp), seed)
            seconds = time.perf_counter() - started
            steps, tokens, loss, adapter = (
                result.steps,
                result.tokens_seen,
                result.final_loss,
                result.artifact_dir,
            )
        answers = answers_of(model_dir, adapter)
    score = sum(in_support_style(a) for a in answers)
    return ArmResult(arm, hp, steps, round(seconds, 1), tokens, loss, score, len(answers), answers)


def report(results: list[ArmResult], shape: Any, command: str, load: str) -> str:
    lines = [
        '# "auto" hyperparameters on the real model',
        "",
        f"SmolLM2-135M-Instruct, LoRA, `{DATASET.relative_to(REPO)}` ({shape.examples} examples,"
        f" {shape.tokens} tokens after the PII scrub, longest {shape.max_example_tokens}), "
        f"context {CONTEXT}. Scored on {len(HELD_OUT_TOPICS)} held-out prompts about topics the "
        'data never mentions: an answer counts when it starts with "Thanks for asking about" '
        'and contains "within one business day" (the dataset\'s style). Bar: '
        f">= {PASS_FRACTION:.0%}.",
        "",
        "| arm | epochs | batch | row length | LR x | steps | tokens fed | train s | final loss "
        "| held-out in style | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        hp = r.hyperparameters
        ok = r.score / r.total >= PASS_FRACTION
        lines.append(
            f"| {r.arm} | {hp.get('n_epochs', '-')} | {hp.get('batch_size', '-')} | "
            f"{hp.get('sequence_length', '-')} | {hp.get('learning_rate_multiplier', '-')} | "
            f"{r.steps} | {r.tokens_seen} | {r.train_seconds} | "
            f"{'-' if r.final_loss is None else f'{r.final_loss:.4f}'} | {r.score}/{r.total} | "
            f"{'MET' if ok else 'NOT MET'} |"
        )
    lines += ["", f"Machine: 2 shared CPU cores, {load}.", "", "Reproduce:", "",
              f"    {command}", "", "## Answers", ""]  # fmt: skip
    for r in results:
        lines.append(f"**{r.arm}**")
        lines.append("")
        lines += [f"- `{a!r}`" for a in r.answers]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--arms", default="base,old_default,auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/auto_hyperparameters.md"
    )
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        from gpu_runtime.smollm2 import convert

        convert(args.model_dir)
    examples = scrubbed_examples()
    shape = shape_of(examples, AutoTokenizer.from_pretrained(args.model_dir))
    loads = []
    results = []
    for arm in args.arms.split(","):
        loads.append(os.getloadavg()[0])
        result = run_arm(arm, args.model_dir, examples, shape, args.seed)
        print(json.dumps(asdict(result)), flush=True)
        results.append(result)
    loads.append(os.getloadavg()[0])
    load = f"1-min load average {min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f}) while it ran"
    command = "OMP_NUM_THREADS=1 nice python benchmarks/auto_hyperparameters.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    text = report(results, shape, command.strip(), load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
