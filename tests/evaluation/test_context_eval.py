"""gpu_runtime.context_eval on the tiny model: the suites run, their numbers mean what they say."""

from __future__ import annotations

import collections
import math
import random
import re

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from gpu_runtime import context_eval as ce


@pytest.fixture(scope="module")
def tiny(tiny_base_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_base_dir)


@pytest.mark.parametrize("length", [256, 512, 1024])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_a_passkey_prompt_has_about_the_asked_length_and_holds_the_key(tiny, length, depth):
    _, tokenizer = tiny
    case = ce.passkey_case(tokenizer, length, depth, "48213")
    assert 0.7 * length <= len(case.prompt_ids) <= length + 8
    text = tokenizer.decode(case.prompt_ids)
    assert text.count("48213") == 2 and text.rstrip().endswith("The pass key is")
    # The key sits where asked: its share of the text before it follows the depth.
    before = text.index("48213") / len(text)
    assert abs(before - depth) < 0.35


def test_a_length_shorter_than_the_fixed_part_is_refused(tiny):
    with pytest.raises(ValueError, match="too short for a passkey prompt"):
        ce.passkey_case(tiny[1], 64, 0.5, "48213")


def test_passkey_grid_shape_and_a_random_model_finds_nothing(tiny):
    model, tokenizer = tiny
    seen = []
    grid = ce.passkey_grid(
        model, tokenizer, [256, 512], [0.25, 0.75], 2, 0, lambda d, t: seen.append((d, t))
    )
    assert grid["lengths"] == [256, 512] and grid["depths"] == [0.25, 0.75]
    assert len(grid["accuracy"]) == 2 and all(len(row) == 2 for row in grid["accuracy"])
    assert grid["overall"] == 0.0  # random weights: no 5-digit key comes back
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == list(range(1, 9))


def test_greedy_continuation_matches_generate(tiny):
    model, tokenizer = tiny
    ids = tokenizer("the model answers the question", return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()
    assert ce.greedy_continuation(model, ids[0].tolist(), 6) == expected


def test_perplexity_by_length_equals_the_plain_loss(tiny):
    import torch

    model, tokenizer = tiny
    ids = ce.long_text_ids(tokenizer, 96)
    assert len(ids) == 96
    result = ce.perplexity_by_length(model, ids, [32, 96])
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([ids[:32]]), labels=torch.tensor([ids[:32]])).loss
    assert math.isclose(result["perplexity"][0], math.exp(float(plain)), rel_tol=1e-4)
    assert result["lengths"] == [32, 96] and all(p > 1 for p in result["perplexity"])


def test_effective_context_is_the_longest_length_every_shorter_one_meets():
    lengths, scores = [1024, 2048, 4096, 8192], [1.0, 0.9, 0.5, 0.95]
    summary = ce.effective_context(lengths, scores)
    assert summary["absolute"] == 2048  # 4096 fails, so 8192's recovery does not count
    assert summary["relative"] == 2048  # bar 0.9 x 1.0
    assert ce.effective_context([1024], [0.2])["absolute"] is None
    assert ce.effective_context([512, 1024], [0.5, 0.46])["relative"] == 1024  # 0.46 >= 0.45


def test_the_heatmap_is_a_png(tmp_path):
    grid = {"lengths": [64, 128], "depths": [0.1, 0.9], "accuracy": [[1.0, 0.5], [0.0, 0.25]]}
    path = ce.heatmap_png(grid, tmp_path / "h.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- RULER-style tasks
def _prompt(tokenizer, task, length, seed=0):
    case = ce.ruler_case(tokenizer, task, length, random.Random(f"{seed}:{task}"))
    return case, tokenizer.decode(case.prompt_ids)


def test_the_web_tiers_task_names_are_the_suites():
    from longtune.evaluation.models import RulerTask

    assert tuple(RulerTask.values) == ce.RULER_TASKS


@pytest.mark.parametrize("task", ce.RULER_TASKS)
@pytest.mark.parametrize("length", [1024, 2048])
def test_a_ruler_prompt_has_about_the_asked_length(tiny, task, length):
    case, _ = _prompt(tiny[1], task, length)
    assert 0.8 * length <= len(case.prompt_ids) <= length + 8, len(case.prompt_ids)
    assert case.answers and case.max_new_tokens > 0


@pytest.mark.parametrize("task", [t for t in ce.RULER_TASKS if t.startswith("niah_")])
def test_a_needle_tasks_answers_are_exactly_the_asked_keys_values(tiny, task):
    case, text = _prompt(tiny[1], task, 1024, seed=3)
    needles = re.findall(r"special magic numbers for (\w+) is: (\d{7})\.", text)
    asked = re.search(r"What (?:is|are all) the special magic numbers? for (.+?) mentioned", text)
    asked_keys = set(re.split(r", and |, ", asked.group(1)))
    expected = tuple(v for k, v in needles if k in asked_keys)
    assert case.answers == expected
    wanted = {"niah_single": (1, 1), "niah_multikey": (4, 1), "niah_multivalue": (4, 1),
              "niah_multiquery": (4, 4)}[task]  # fmt: skip
    assert (len(needles), len(asked_keys)) == wanted
    assert (
        len(set(case.answers))
        == len(case.answers)
        == (4 if task.endswith(("value", "query")) else 1)
    )


def test_variable_tracking_answers_are_every_variable_on_the_chain(tiny):
    case, text = _prompt(tiny[1], "variable_tracking", 1024, seed=5)
    assignments = dict(re.findall(r"VAR (\w+) = (?:VAR )?(\w+)\.", text))
    value = re.search(r"assigned the value (\d+) in the text", text).group(1)

    def resolves(name):
        while name in assignments:
            name = assignments[name]
        return name == value

    assert set(case.answers) == {n for n in assignments if resolves(n)} and len(case.answers) == 5


def test_common_words_answers_are_the_most_frequent_words_of_the_list(tiny):
    case, text = _prompt(tiny[1], "common_words_extraction", 2048, seed=7)
    listing = text[text.index("\n") : text.index("\nQuestion")]
    counts = collections.Counter(re.findall(r"\d+\. (\w+)", listing))
    top = [w for w, _ in counts.most_common(ce.CWE_COMMON)]
    assert sorted(top) == sorted(case.answers) and len(top) == ce.CWE_COMMON
    assert min(counts[w] for w in top) >= ce.CWE_MIN_COMMON_FREQ
    assert max(c for w, c in counts.items() if w not in top) == ce.CWE_RARE_FREQ


def test_a_ruler_length_too_short_is_refused(tiny):
    with pytest.raises(ValueError, match="too short"):
        ce.ruler_case(tiny[1], "common_words_extraction", 256, random.Random(0))
    with pytest.raises(ValueError, match="unknown RULER task"):
        ce.ruler_case(tiny[1], "qa_hotpot", 1024, random.Random(0))


def test_string_match_all_is_the_fraction_of_answers_found():
    assert ce.string_match_all("The numbers are 1234567 and 7654321.", ["1234567", "7654321"]) == 1
    assert ce.string_match_all("only KAVO here", ["kavo", "bidu"]) == 0.5
    assert ce.string_match_all("", ["x"]) == 0


def test_ruler_grid_shape_seeding_and_a_random_model_scores_nothing(tiny):
    model, tokenizer = tiny
    seen = []
    tasks = ["niah_single", "variable_tracking"]
    grid = ce.ruler_grid(model, tokenizer, tasks, [768, 1024], 1, 0, lambda d, t: seen.append(d))
    assert grid["tasks"] == tasks and grid["lengths"] == [768, 1024]
    assert {t: len(v) for t, v in grid["accuracy"].items()} == {t: 2 for t in tasks}
    assert grid["overall"] == 0.0 and seen == [1, 2, 3, 4]
    # Each (task, length, sample) prompt has its own seed: dropping a task changes no other.
    a = ce.ruler_case(tokenizer, "niah_single", 512, random.Random("0:niah_single:512:0"))
    b = ce.ruler_case(tokenizer, "niah_single", 512, random.Random("0:niah_single:512:0"))
    assert a == b


def test_the_ruler_heatmap_is_a_png(tmp_path):
    grid = {"tasks": ["niah_single", "common_words_extraction"], "lengths": [1024, 2048],
            "accuracy": {"niah_single": [1.0, 0.5], "common_words_extraction": [0.2, 0.0]}}  # fmt: skip
    path = ce.ruler_heatmap_png(grid, tmp_path / "r.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
