""" "auto" hyperparameters that teach: epochs, batch, packed row length and learning rate chosen
from the dataset's shape and the optimizer steps they give.

Why a step budget, not a fixed epoch count: packing puts many short examples into one row of
the job's context, so 40 chat examples of ~70 tokens fill 2 rows of 2,048 tokens and 3 epochs
are 6 optimizer steps -- too few for AdamW to move a LoRA adapter anywhere visible (measured
on SmolLM2-135M-Instruct: its answers to the training prompts were unchanged). Rows are packed
with per-document position ids and no cross-document attention (gpu_runtime.packing), so a
row longer than the longest example teaches nothing a shorter one does not: it only groups
more documents into one step. The chooser therefore packs short data into the shortest power
of two that holds the longest example, lets ``batch_size`` regroup rows into steps of at most
one full context of tokens, and adds epochs until the run reaches ``AutoPolicy.min_steps``.
Long documents keep rows of the full context (they need it to learn long-range positions).

Pure functions of plain numbers (no Django, no gpu_runtime): ``finetuning.services`` calls
``choose`` with a file's counts, and benchmarks/auto_hyperparameters.py and the unit tests
call it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUTO = "auto"


@dataclass(frozen=True)
class DatasetShape:
    """What the validator counted in a processed file (``File.num_examples`` / ``num_tokens`` /
    ``report.token_stats.max_tokens``); tokens under the base model's tokenizer or an
    estimate."""

    examples: int
    tokens: int
    max_example_tokens: int

    @property
    def mean_example_tokens(self) -> float:
        return self.tokens / self.examples if self.examples else 0.0


@dataclass(frozen=True)
class AutoPolicy:
    """The rule's knobs; the defaults are what benchmarks/auto_hyperparameters.py measured."""

    # Optimizer steps a run should reach (epochs are added until it does). 40 steps of one
    # 128-token row taught SmolLM2-135M-Instruct the bundled support style (10/10 held-out
    # prompts; benchmarks/results/auto_hyperparameters.md) where 6 steps of 2,048 did not.
    min_steps: int = 40
    max_epochs: int = 10  # never more passes than this, whatever the step count
    large_dataset_tokens: int = 10_000_000  # at least this many tokens: one epoch is plenty
    min_row_length: int = 64  # shortest packed row ever chosen
    # The validator counts an example's text (``DatasetShape``); training adds the chat
    # template's role markers, bos and eos: SmolLM2 on the bundled data, 50-55 counted -> 65-70
    # trained. Rows and row counts are estimated with these added per example, and a row holds
    # the longest example with a further safety margin, so no example is cut in two.
    template_tokens_per_example: int = 16
    row_margin_fraction: float = 0.25
    # AdamW learning-rate multipliers (on finetuning.planning.BASE_LEARNING_RATE, 2e-4 for
    # LoRA, 2e-5 for full): a LoRA adapter starts at zero and gets few steps on small data, so
    # it takes larger ones; a full fine-tune moves every weight and keeps its base rate.
    lora_lr_multiplier_short_run: float = 2.0
    lora_lr_multiplier: float = 1.0
    short_run_steps: int = 400  # a LoRA run of at most this many steps is "short"
    full_lr_multiplier: float = 1.0


DEFAULT_POLICY = AutoPolicy()


@dataclass(frozen=True)
class AutoChoice:
    """Resolved hyperparameters (no "auto" left) and the step count they are expected to give."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    sequence_length: int  # packed row length, <= context_length
    estimated_rows: int  # packed rows per epoch (an estimate: first-fit packing may differ)
    estimated_steps: int  # optimizer steps over all epochs (on one GPU)


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def row_length_for(shape: DatasetShape, context_length: int, policy: AutoPolicy) -> int:
    """The shortest power of two that holds the longest example (template and margin
    included), within [min_row_length, context_length]. An example longer than the context is
    split by packing anyway."""
    longest = math.ceil(
        shape.max_example_tokens * (1 + policy.row_margin_fraction)
        + policy.template_tokens_per_example
    )
    return min(next_power_of_two(max(longest, policy.min_row_length)), context_length)


def estimated_rows(
    shape: DatasetShape, row_length: int, policy: AutoPolicy = DEFAULT_POLICY
) -> int:
    """Packed rows per epoch: whole examples per row at the mean trained length, never fewer
    rows than the tokens need (examples longer than the row are split into row-sized pieces)."""
    if shape.examples <= 0:
        return 0
    overhead = policy.template_tokens_per_example
    trained_tokens = shape.tokens + shape.examples * overhead
    by_examples = 0
    if shape.max_example_tokens + overhead <= row_length:
        per_row = max(1, math.floor(row_length / (shape.mean_example_tokens + overhead)))
        by_examples = math.ceil(shape.examples / per_row)
    return max(1, by_examples, math.ceil(trained_tokens / row_length))


def choose(
    shape: DatasetShape,
    *,
    context_length: int,
    method: str,
    n_epochs: int | str = AUTO,
    batch_size: int | str = AUTO,
    learning_rate_multiplier: float | str = AUTO,
    sequence_length: int | str = AUTO,
    policy: AutoPolicy = DEFAULT_POLICY,
) -> AutoChoice:
    """Every "auto" resolved; values the client gave are kept and the rest fit around them.

    1. row length: the client's; the context when the client chose ``batch_size`` (it counts
       rows, and they counted rows of the context); else ``row_length_for`` (short data ->
       short rows);
    2. batch: the client's, else as many rows per step as keep an epoch at ``min_steps`` or
       more, capped at one full context of tokens per step (what one packed row held before);
    3. epochs: the client's, else enough to reach ``min_steps`` (1 for large datasets),
       within [1, max_epochs];
    4. learning rate: the client's, else by method and run length (see ``AutoPolicy``).
    """
    if sequence_length != AUTO:
        length = int(sequence_length)
    elif batch_size != AUTO:
        # batch_size counts packed rows; a client who chose one counted rows of the context
        length = context_length
    else:
        length = row_length_for(shape, context_length, policy)
    rows = estimated_rows(shape, length, policy)
    if batch_size == AUTO:
        per_step_cap = max(1, context_length // length)
        batch = max(1, min(per_step_cap, rows // policy.min_steps))
    else:
        batch = int(batch_size)
    steps_per_epoch = max(1, rows // batch)
    if n_epochs != AUTO:
        epochs = int(n_epochs)
    elif shape.tokens >= policy.large_dataset_tokens:
        epochs = 1
    else:
        epochs = min(policy.max_epochs, max(1, math.ceil(policy.min_steps / steps_per_epoch)))
    steps = steps_per_epoch * epochs
    if learning_rate_multiplier != AUTO:
        lr = float(learning_rate_multiplier)
    elif method == "full":
        lr = policy.full_lr_multiplier
    elif steps <= policy.short_run_steps:
        lr = policy.lora_lr_multiplier_short_run
    else:
        lr = policy.lora_lr_multiplier
    return AutoChoice(
        n_epochs=epochs,
        batch_size=batch,
        learning_rate_multiplier=lr,
        sequence_length=length,
        estimated_rows=rows,
        estimated_steps=steps,
    )
