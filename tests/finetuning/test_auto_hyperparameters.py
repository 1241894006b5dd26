""" "auto" hyperparameters (finetuning/auto.py): a small dataset of short examples gets short
packed rows and enough optimizer steps; long documents keep full-context rows; a value the
client gives is kept and the rest fit around it. Pure: no database."""

from __future__ import annotations

import pytest

from longtune.finetuning.auto import (
    DEFAULT_POLICY,
    AutoPolicy,
    DatasetShape,
    choose,
    estimated_rows,
    row_length_for,
)

# examples/support_chat.jsonl after the PII scrub, as the validator counts it (the messages'
# text under SmolLM2's tokenizer): 40 examples of 50-55 tokens, 2,098 in all. Trained with the
# chat template they are 65-70 tokens long.
SUPPORT_CHAT = DatasetShape(examples=40, tokens=2098, max_example_tokens=55)


def test_support_chat_gets_steps_not_two_full_rows():
    choice = choose(SUPPORT_CHAT, context_length=2048, method="lora")
    # The old "auto" packed it into 2 rows of 2,048 tokens: 3 epochs x 2 = 6 steps.
    assert choice.sequence_length == 128  # the shortest power of two holding 55 + template
    assert choice.estimated_rows == 40  # one 65-70-token example per 128-token row
    assert (choice.batch_size, choice.n_epochs) == (1, 1)
    assert choice.estimated_steps == 40 == DEFAULT_POLICY.min_steps
    assert choice.learning_rate_multiplier == DEFAULT_POLICY.lora_lr_multiplier_short_run


def test_full_fine_tune_keeps_its_base_rate():
    choice = choose(SUPPORT_CHAT, context_length=2048, method="full")
    assert choice.learning_rate_multiplier == DEFAULT_POLICY.full_lr_multiplier


def test_long_documents_keep_full_context_rows():
    shape = DatasetShape(examples=200, tokens=200 * 30_000, max_example_tokens=40_000)
    choice = choose(shape, context_length=32_768, method="lora")
    assert choice.sequence_length == 32_768
    assert choice.estimated_rows == 184  # ceil(6,000,000 / 32,768): long examples are split
    assert (choice.batch_size, choice.n_epochs) == (1, 1)  # 184 steps already
    assert choice.learning_rate_multiplier == DEFAULT_POLICY.lora_lr_multiplier_short_run


def test_many_short_examples_batch_up_to_one_context_per_step():
    shape = DatasetShape(examples=100_000, tokens=100_000 * 200, max_example_tokens=500)
    choice = choose(shape, context_length=4096, method="lora")
    assert choice.sequence_length == 1024  # 500 counted + template + margin
    assert choice.batch_size == 4096 // 1024  # a step holds at most one context of tokens
    assert choice.n_epochs == 1  # 20M tokens: large
    assert choice.estimated_steps == choice.estimated_rows // 4
    assert choice.learning_rate_multiplier == DEFAULT_POLICY.lora_lr_multiplier  # long run


def test_epochs_capped_for_a_tiny_dataset():
    shape = DatasetShape(examples=3, tokens=150, max_example_tokens=60)
    choice = choose(shape, context_length=1024, method="lora")
    assert choice.n_epochs == DEFAULT_POLICY.max_epochs
    assert choice.estimated_rows == 3  # one 50-token example (+ template) per 128-token row
    assert choice.estimated_steps == 3 * DEFAULT_POLICY.max_epochs


def test_given_values_are_kept_and_the_rest_fit_around_them():
    choice = choose(
        SUPPORT_CHAT,
        context_length=2048,
        method="lora",
        sequence_length=2048,
        learning_rate_multiplier=0.5,
    )
    assert choice.sequence_length == 2048 and choice.learning_rate_multiplier == 0.5
    assert choice.estimated_rows == 2  # 29 examples (+ template) per 2,048-token row
    assert choice.n_epochs == DEFAULT_POLICY.max_epochs  # as many passes as allowed
    epochs_only = choose(SUPPORT_CHAT, context_length=2048, method="lora", n_epochs=3)
    assert (epochs_only.n_epochs, epochs_only.sequence_length) == (3, 128)
    assert epochs_only.estimated_steps == 40 * 3
    # a batch counts rows: the client who chose one counted rows of the whole context
    fixed = choose(SUPPORT_CHAT, context_length=2048, method="lora", n_epochs=3, batch_size=2)
    assert (fixed.n_epochs, fixed.batch_size, fixed.sequence_length) == (3, 2, 2048)
    assert fixed.estimated_steps == (2 // 2) * 3


@pytest.mark.parametrize(
    ("longest", "context", "expected"),
    [
        (68, 2048, 128),
        (55, 2048, 128),
        (10, 2048, 64),
        (3000, 2048, 2048),
        (700, 8192, 1024),
        (1024, 8192, 2048),
    ],
)
def test_row_length(longest, context, expected):
    shape = DatasetShape(examples=10, tokens=10 * longest, max_example_tokens=longest)
    assert row_length_for(shape, context, AutoPolicy()) == expected


def test_estimated_rows_never_below_what_the_tokens_need():
    shape = DatasetShape(examples=4, tokens=4 * 100, max_example_tokens=100)
    assert estimated_rows(shape, 128) == 4  # one per row
    assert estimated_rows(shape, 400) == 2  # 3 per row: 100 + 16 template tokens each
    assert estimated_rows(DatasetShape(0, 0, 0), 128) == 0
