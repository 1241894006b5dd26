"""Formats → labels, and packing into fixed-length rows with per-document positions."""

from __future__ import annotations

import pytest
import torch

from gpu_runtime.formats import (
    IGNORE_INDEX,
    ExampleFormatError,
    TokenizedExample,
    tokenize_example,
)
from gpu_runtime.packing import pack_examples, packing_stats

PAD = 2


def _targets(example: TokenizedExample) -> list[int]:
    return [label for label in example.labels if label != IGNORE_INDEX]


# --------------------------------------------------------------------------- formats


def test_text_example_trains_on_everything_and_ends_with_eos(tokenizer):
    example = tokenize_example({"text": "The quick river runs."}, tokenizer)
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels[0] == IGNORE_INDEX  # bos is never a target
    assert example.labels[1:] == example.input_ids[1:]


def test_prompt_completion_trains_on_completion_only(tokenizer):
    example = tokenize_example(
        {"prompt": "Question: where?", "completion": " By the river."}, tokenizer
    )
    assert tokenizer.decode(_targets(example)) == " By the river.</s>"
    full = tokenize_example(
        {"prompt": "Question: where?", "completion": " By the river."},
        tokenizer,
        train_on_inputs=True,
    )
    assert full.input_ids == example.input_ids
    assert full.labels[1:] == full.input_ids[1:]


def test_chat_trains_on_weighted_assistant_turns_only(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Skip me", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello there!"},
    ]
    example = tokenize_example({"messages": messages}, tokenizer)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered  # template's own eos, no extra one
    # reply + end-of-turn marker are targets; the role header and weight-0 turn are not
    assert tokenizer.decode(_targets(example)) == "Hello there!</s>"


def test_chat_train_on_inputs_trains_every_turn(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    example = tokenize_example({"messages": messages}, tokenizer, train_on_inputs=True)
    assert _targets(example) == example.input_ids


def test_chat_ending_with_user_turn_gets_untrained_eos(tokenizer):
    messages = [{"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Hi"}]
    example = tokenize_example({"messages": messages}, tokenizer)
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels[-1] == IGNORE_INDEX
    assert tokenizer.decode(_targets(example)) == "Yo</s>"


@pytest.mark.parametrize(
    ("example", "field"),
    [
        ({"nothing": 1}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x", "weight": 2}]}, "messages[0].weight"),
        ({"prompt": "x"}, "completion"),
        ({"text": None}, "text"),
    ],
)
def test_bad_examples_name_the_field(tokenizer, example, field):
    with pytest.raises(ExampleFormatError) as error:
        tokenize_example(example, tokenizer)
    assert error.value.field == field


# --------------------------------------------------------------------------- packing


def _doc(start: int, length: int) -> TokenizedExample:
    ids = list(range(start, start + length))
    return TokenizedExample(input_ids=ids, labels=list(ids))


def test_every_row_has_exactly_seq_len_tokens_and_restarting_positions():
    docs = [_doc(100, 5), _doc(200, 3), _doc(300, 6), _doc(400, 2)]
    rows = list(pack_examples(docs, 8, pad_token_id=PAD))
    assert all(len(r) == 8 for r in rows)
    # first-fit: [5 + 3], [6 + 2]
    assert [r.num_documents for r in rows] == [2, 2]
    assert rows[0].input_ids.tolist() == list(range(100, 105)) + list(range(200, 203))
    assert rows[0].position_ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert packing_stats(rows).efficiency == 1.0


def test_first_token_of_each_document_is_not_a_target():
    rows = list(pack_examples([_doc(100, 4), _doc(200, 3)], 10, pad_token_id=PAD))
    (row,) = rows
    assert row.labels.tolist() == [
        IGNORE_INDEX, 101, 102, 103,  # doc 1
        IGNORE_INDEX, 201, 202,  # doc 2: 200 must not be predicted from doc 1's last token
        IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX,  # padding
    ]  # fmt: skip
    # after the loss's left shift, no position targets a token of another document
    shifted = torch.cat([row.labels[1:], torch.tensor([IGNORE_INDEX])])
    doc_of = torch.cumsum(row.position_ids == 0, 0)
    for t in (shifted != IGNORE_INDEX).nonzero().view(-1).tolist():
        assert doc_of[t] == doc_of[t + 1]


def test_padding_is_its_own_document():
    (row,) = pack_examples([_doc(100, 5)], 8, pad_token_id=PAD)
    assert row.input_ids.tolist()[5:] == [PAD] * 3
    assert row.position_ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert row.num_real_tokens == 5 and row.num_documents == 1
    stats = packing_stats([row])
    assert (stats.real_tokens, stats.padded_tokens, stats.efficiency) == (5, 3, 5 / 8)


def test_long_documents_are_split_into_seq_len_chunks():
    rows = list(pack_examples([_doc(1000, 19)], 8, pad_token_id=PAD))
    assert [r.num_real_tokens for r in rows] == [8, 8, 3]
    assert torch.cat([r.input_ids[: r.num_real_tokens] for r in rows]).tolist() == list(
        range(1000, 1019)
    )
    assert all(r.position_ids[0] == 0 and r.labels[0] == IGNORE_INDEX for r in rows)


def test_first_fit_fills_earlier_rows_and_greedy_does_not():
    docs = [_doc(100, 6), _doc(200, 5), _doc(300, 2), _doc(400, 3)]
    first_fit = list(pack_examples(docs, 8, pad_token_id=PAD))
    greedy = list(pack_examples(docs, 8, pad_token_id=PAD, max_open_rows=1))
    assert len(first_fit) == 2 and len(greedy) == 3
    assert packing_stats(first_fit).efficiency > packing_stats(greedy).efficiency
    assert packing_stats(first_fit).real_tokens == packing_stats(greedy).real_tokens == 16


def test_packing_is_lazy():
    def endless():
        n = 0
        while True:
            n += 1
            yield _doc(100, 3)

    rows = pack_examples(endless(), 9, pad_token_id=PAD)
    assert next(rows).num_documents == 3


def test_tokenized_examples_pack_end_to_end(tokenizer):
    examples = [
        tokenize_example({"text": f"Story number {i} about the river."}, tokenizer)
        for i in range(6)
    ]
    rows = list(pack_examples(examples, 64, pad_token_id=tokenizer.pad_token_id))
    assert sum(r.num_documents for r in rows) == 6
    assert sum(r.num_real_tokens for r in rows) == sum(len(e) for e in examples)
