"""Token statistics, tokenizer-agnostic.

Why a callable instead of a tokenizer object: this module stays free of
`tokenizers`/`transformers`; datasets.tokenizer_source passes a base model's
`tokenizers.Tokenizer` (or the bytes/4 estimate) in, tests pass `len(str.split())`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CountTokens = Callable[[str], int]


def bucket_upper_bound(tokens: int) -> int:
    """Power-of-two histogram bucket: the smallest 2**k >= tokens (1 for 0 and 1)."""
    return 1 if tokens <= 1 else 1 << (tokens - 1).bit_length()


@dataclass
class TokenStats:
    examples: int = 0
    tokens: int = 0
    max_tokens: int = 0
    histogram: dict[int, int] = field(default_factory=dict)  # bucket upper bound -> examples
    # 4 bytes per example: exact training-token estimates for any context length later.
    lengths: array = field(default_factory=lambda: array("I"), repr=False)

    def add(self, tokens: int) -> None:
        self.examples += 1
        self.tokens += tokens
        self.max_tokens = max(self.max_tokens, tokens)
        bucket = bucket_upper_bound(tokens)
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1
        self.lengths.append(min(tokens, 0xFFFFFFFF))

    def estimated_training_tokens(
        self, context_length: int, epochs: float = 1.0, truncate: bool = True
    ) -> int:
        """Tokens a job will train on: examples longer than the context are truncated
        (chat/instruction) or split across sequences (truncate=False, pre-training text)."""
        if context_length <= 0 or epochs <= 0:
            raise ValueError("context_length and epochs must be positive")
        per_epoch = sum(min(n, context_length) for n in self.lengths) if truncate else self.tokens
        return math.ceil(per_epoch * epochs)

    def packed_sequences(self, context_length: int, truncate: bool = True) -> int:
        """Full-context sequences per epoch when examples are packed back to back."""
        return math.ceil(
            self.estimated_training_tokens(context_length, 1.0, truncate) / context_length
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "tokens": self.tokens,
            "max_tokens": self.max_tokens,
            "mean_tokens": round(self.tokens / self.examples, 2) if self.examples else 0.0,
            "histogram": {f"<={k}": v for k, v in sorted(self.histogram.items())},
        }


def token_stats(texts, count_tokens: CountTokens) -> TokenStats:
    """Stats over an iterable of texts (convenience for recipes and tests)."""
    stats = TokenStats()
    for text in texts:
        stats.add(count_tokens(text))
    return stats
