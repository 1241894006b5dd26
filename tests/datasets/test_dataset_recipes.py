"""Recipe mixing: proportions, determinism, length filter, dedup, 13-gram decontamination."""

from __future__ import annotations

import pytest

from longtune.datasets.recipes import (
    Decontaminator,
    EvalSet,
    Recipe,
    RecipeSource,
    run_recipe,
    whitespace_token_count,
)


def texts(prefix: str, n: int, words: int = 20) -> list[dict]:
    return [
        {"text": f"{prefix} document {i} " + " ".join(f"w{i}_{j}" for j in range(words))}
        for i in range(n)
    ]


def together_like_recipe(seed: int = 7) -> Recipe:
    return Recipe(
        name="long-context-pretrain",
        sources=(
            RecipeSource("book", 0.25, texts("book", 20_000)),
            RecipeSource("arxiv", 0.25, texts("arxiv", 20_000)),
            RecipeSource("web", 0.25, texts("web", 20_000)),
            RecipeSource("ul2", 0.25, texts("ul2", 20_000)),
        ),
        seed=seed,
    )


def test_mixture_proportions_follow_weights():
    recipe = Recipe(
        "skewed",
        (
            RecipeSource("a", 0.6, texts("a", 50_000)),
            RecipeSource("b", 0.3, texts("b", 50_000)),
            RecipeSource("c", 0.1, texts("c", 50_000)),
        ),
        seed=1,
    )
    examples, report = run_recipe(recipe, num_examples=20_000)
    out = list(examples)
    assert len(out) == 20_000 == report.kept
    props = report.proportions()
    assert props["a"] == pytest.approx(0.6, abs=0.015)
    assert props["b"] == pytest.approx(0.3, abs=0.015)
    assert props["c"] == pytest.approx(0.1, abs=0.01)
    assert sum(ex["text"].startswith("c ") for ex in out) == report.sources["c"].kept


def test_sampling_is_deterministic_per_seed():
    first = [e["text"] for e in run_recipe(together_like_recipe(7), 500)[0]]
    again = [e["text"] for e in run_recipe(together_like_recipe(7), 500)[0]]
    other = [e["text"] for e in run_recipe(together_like_recipe(8), 500)[0]]
    assert first == again and first != other


def test_min_length_filter_keeps_weights_on_kept_examples():
    short_and_long = [
        ex
        for pair in zip(texts("mix", 5000, words=3), texts("mixlong", 5000, words=40), strict=True)
        for ex in pair
    ]
    recipe = Recipe(
        "len",
        (
            RecipeSource("mixed", 0.5, short_and_long),
            RecipeSource("long", 0.5, texts("long", 5000, 40)),
        ),
        min_tokens=30,
        seed=3,
    )
    examples, report = run_recipe(recipe, num_examples=2000, count_tokens=whitespace_token_count)
    out = list(examples)
    assert all(whitespace_token_count(e["text"]) >= 30 for e in out)
    mixed = report.sources["mixed"]
    assert mixed.dropped["too_short"] == mixed.drawn - mixed.kept > 0
    assert report.proportions()["mixed"] == pytest.approx(0.5, abs=0.04)


def test_exact_dedup_on_normalised_content():
    docs = [
        {"text": "The same   Document"},
        {"text": "the same document"},
        {"prompt": "x", "completion": "y"},
        {"text": "THE SAME DOCUMENT\n"},
        {"text": "another one"},
    ]
    examples, report = run_recipe(Recipe("dedup", (RecipeSource("s", 1.0, docs),)))
    out = list(examples)
    assert [e.get("text") for e in out] == ["The same   Document", None, "another one"]
    assert report.sources["s"].dropped == {"duplicate": 2}
    assert report.sources["s"].exhausted


def test_thirteen_gram_decontamination():
    question = (
        "Which river flows through the ancient city of Baghdad and joins the Euphrates "
        "before reaching the Persian Gulf"
    )
    eval_set = EvalSet("helm_qa", (question,))
    leaked = {
        "text": "Trivia night! which river flows through the ancient city of Baghdad, and joins the "
        "Euphrates? Answer: the Tigris."
    }
    twelve_shared = {
        "text": "which river flows through the ancient city of Baghdad and joins the Nile"
    }
    clean = {"text": "Rivers of Mesopotamia are a popular topic."}
    recipe = Recipe(
        "decon", (RecipeSource("web", 1.0, [leaked, twelve_shared, clean]),), eval_sets=(eval_set,)
    )
    examples, report = run_recipe(recipe)
    assert list(examples) == [twelve_shared, clean]
    assert report.sources["web"].dropped == {"contaminated": 1}
    assert report.contaminated_by == {"helm_qa": 1}
    assert Decontaminator([eval_set]).contaminating_set(twelve_shared["text"]) is None


def test_report_counts_per_step_and_source():
    dup = {"text": "repeat me please " * 5}
    recipe = Recipe(
        "audit",
        (RecipeSource("a", 1.0, [dup, dup, {"text": "tiny"}, *texts("a", 10)]),),
        min_tokens=5,
    )
    examples, report = run_recipe(recipe, count_tokens=whitespace_token_count)
    kept = list(examples)
    counts = report.to_dict()["sources"]["a"]
    assert counts == {
        "drawn": 13,
        "kept": 11,
        "dropped": {"duplicate": 1, "too_short": 1},
        "exhausted": True,
    }
    assert len(kept) == report.kept == 11


def test_recipe_validation():
    with pytest.raises(ValueError):
        Recipe("bad", ())
    with pytest.raises(ValueError):
        Recipe("bad", (RecipeSource("a", 0, []),))
    with pytest.raises(ValueError):
        run_recipe(Recipe("needs-tokens", (RecipeSource("a", 1, []),), min_tokens=10))
