"""Data recipes: a named, weighted, reproducible mixture of example sources.

Modelled on Together's LLaMA-2-7B-32K recipe: e.g. 25% books, 25% arXiv,
25% other web, 25% UL2-style data; sequences under 2K tokens dropped; all data
decontaminated against the evaluation sets (HELM's protocol: drop any example
sharing a 13-gram of words with an eval instance). Every step counts what it
saw and dropped, per source, so a recipe run is auditable.

Why sampling is by *kept* examples: a draw picks a source by weight, then pulls
from that source until one example survives the filters. The output mixture
then matches the weights even when one source loses most of its examples to
the length filter.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .formats import detect_format, example_text
from .tokens import CountTokens

Example = dict[str, Any]

DROP_TOO_SHORT = "too_short"
DROP_DUPLICATE = "duplicate"
DROP_CONTAMINATED = "contaminated"

_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class RecipeSource:
    name: str
    weight: float
    examples: Iterable[Example]  # a re-iterable (list, dataset) or a one-shot generator


@dataclass(frozen=True)
class EvalSet:
    """A registered evaluation set; training data must not overlap it."""

    name: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    name: str
    sources: tuple[RecipeSource, ...]
    seed: int = 0
    min_tokens: int = 0  # Together: 2048 for the long-context pre-training phase
    deduplicate: bool = True
    eval_sets: tuple[EvalSet, ...] = ()
    ngram: int = 13

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("a recipe needs at least one source")
        if len({s.name for s in self.sources}) != len(self.sources):
            raise ValueError("source names must be unique")
        if any(s.weight <= 0 for s in self.sources):
            raise ValueError("source weights must be positive")


@dataclass
class SourceCounts:
    drawn: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    exhausted: bool = False


@dataclass
class RecipeReport:
    recipe: str
    sources: dict[str, SourceCounts]
    contaminated_by: dict[str, int] = field(default_factory=dict)  # eval set -> examples dropped

    @property
    def kept(self) -> int:
        return sum(c.kept for c in self.sources.values())

    def proportions(self) -> dict[str, float]:
        total = self.kept or 1
        return {name: c.kept / total for name, c in self.sources.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "kept": self.kept,
            "sources": {
                name: {
                    "drawn": c.drawn,
                    "kept": c.kept,
                    "dropped": dict(c.dropped),
                    "exhausted": c.exhausted,
                }
                for name, c in self.sources.items()
            },
            "contaminated_by": dict(self.contaminated_by),
        }


def normalize_for_dedup(text: str) -> str:
    """NFKC, casefold, collapse whitespace: trivially re-formatted copies are duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> bytes:
    return hashlib.blake2b(normalize_for_dedup(text).encode(), digest_size=16).digest()


def words(text: str) -> list[str]:
    """HELM-style light tokenisation: lowercase word characters, punctuation dropped."""
    return _WORD_RE.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class Decontaminator:
    """Index of eval-set n-grams; an example sharing any n-gram is contaminated."""

    def __init__(self, eval_sets: Iterable[EvalSet], n: int = 13):
        self.n = n
        self._owner: dict[tuple[str, ...], str] = {}
        for eval_set in eval_sets:
            for text in eval_set.texts:
                for gram in ngrams(words(text), n):
                    self._owner.setdefault(gram, eval_set.name)

    def contaminating_set(self, text: str) -> str | None:
        if not self._owner:
            return None
        for gram in ngrams(words(text), self.n):
            owner = self._owner.get(gram)
            if owner is not None:
                return owner
        return None


def _text_of(example: Example) -> str:
    fmt = detect_format(example)
    if fmt is None:
        raise ValueError(f"recipe example matches no dataset format: keys {sorted(example)}")
    return example_text(example, fmt)


class _Filters:
    """The recipe's drop rules in order: length, exact duplicate, contamination."""

    def __init__(self, recipe: Recipe, count_tokens: CountTokens | None, report: RecipeReport):
        if recipe.min_tokens and count_tokens is None:
            raise ValueError("min_tokens needs a count_tokens callable")
        self.recipe = recipe
        self.count_tokens = count_tokens
        self.report = report
        self.seen: set[bytes] = set()
        self.decontaminator = Decontaminator(recipe.eval_sets, recipe.ngram)

    def drop_reason(self, example: Example) -> str | None:
        text = _text_of(example)
        if self.recipe.min_tokens and self.count_tokens(text) < self.recipe.min_tokens:
            return DROP_TOO_SHORT
        if self.recipe.deduplicate:
            digest = content_hash(text)
            if digest in self.seen:
                return DROP_DUPLICATE
        owner = self.decontaminator.contaminating_set(text)
        if owner is not None:
            self.report.contaminated_by[owner] = self.report.contaminated_by.get(owner, 0) + 1
            return DROP_CONTAMINATED
        if self.recipe.deduplicate:
            self.seen.add(digest)
        return None


def run_recipe(
    recipe: Recipe,
    num_examples: int | None = None,
    count_tokens: CountTokens | None = None,
) -> tuple[Iterator[Example], RecipeReport]:
    """Lazily yield the mixture; the report fills in as the iterator is consumed.

    Stops after num_examples kept examples, or as soon as any source runs dry
    (continuing would silently shift the mixture away from its weights).
    """
    report = RecipeReport(recipe.name, {s.name: SourceCounts() for s in recipe.sources})
    filters = _Filters(recipe, count_tokens, report)
    return _mix(recipe, num_examples, filters, report), report


def _mix(
    recipe: Recipe, num_examples: int | None, filters: _Filters, report: RecipeReport
) -> Iterator[Example]:
    rng = random.Random(recipe.seed)
    names = [s.name for s in recipe.sources]
    weights = [s.weight for s in recipe.sources]
    iterators = {s.name: iter(s.examples) for s in recipe.sources}
    kept = 0
    while num_examples is None or kept < num_examples:
        name = rng.choices(names, weights)[0]
        example = _next_kept(iterators[name], report.sources[name], filters)
        if example is None:
            return
        kept += 1
        yield example


def _next_kept(
    iterator: Iterator[Example], counts: SourceCounts, filters: _Filters
) -> Example | None:
    for example in iterator:
        counts.drawn += 1
        reason = filters.drop_reason(example)
        if reason is None:
            counts.kept += 1
            return example
        counts.dropped[reason] = counts.dropped.get(reason, 0) + 1
    counts.exhausted = True
    return None


def whitespace_token_count(text: str) -> int:
    """A tokenizer-free stand-in (~0.75 words per token): fine for filters in tests."""
    return len(text.split())


__all__ = [
    "EvalSet",
    "Recipe",
    "RecipeReport",
    "RecipeSource",
    "SourceCounts",
    "run_recipe",
    "Decontaminator",
    "content_hash",
    "normalize_for_dedup",
    "words",
    "whitespace_token_count",
]
