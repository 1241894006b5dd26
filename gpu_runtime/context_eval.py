"""Long-context evaluation suites: passkey retrieval by length x depth, perplexity by length.

Why these two first: they answer the product's question -- does the model USE its (extended)
context -- from two sides. Passkey retrieval (Mohtashami & Jaggi's task, gkamradt's
needle-in-a-haystack plots) asks whether one fact planted at a given depth of a long filler is
found again; perplexity by length (the PG-19 table of the YaRN / Together write-ups) asks whether
more context keeps lowering the loss or starts to hurt. Both are generated locally and seeded:
no hub, no downloaded dataset.

- ``passkey_grid(model, tokenizer, lengths, depths, samples, seed)`` -> accuracy per (length,
  depth), exact match of the 5-digit key in the greedy continuation;
- ``perplexity_by_length(model, token_ids, lengths)`` -> perplexity of the first L tokens of a
  long text (chunked loss: never [tokens x vocab] logits);
- ``long_text_ids(tokenizer, n_tokens)`` -> the long real text: the largest modules of this
  interpreter's standard library, concatenated (code nobody here wrote, that ships locally);
- ``effective_context(scores, ...)`` -> RULER's absolute threshold (0.856) and a relative one
  (>= 90% of the model's score at its shortest length);
- ``heatmap_png(grid, path)`` draws the length x depth grid (matplotlib, imported lazily).

``progress(done, total)`` is called after each forward so the caller can heartbeat, report and
cancel (it may raise to stop).
"""

from __future__ import annotations

import math
import random
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpu_runtime.loss import chunked_causal_lm_loss

Progress = Callable[[int, int], None]
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
QUESTION = "\nWhat is the pass key? The pass key is"
RULER_ABSOLUTE_THRESHOLD = 0.856  # RULER's Llama-2-7B score at 4K, its "effective" bar
RELATIVE_THRESHOLD = 0.9  # of the model's own score at its shortest evaluated length


def _noop(done: int, total: int) -> None:
    return None


# --------------------------------------------------------------------------- passkey


@dataclass(frozen=True)
class PasskeyCase:
    length: int  # target prompt length in tokens
    depth: float  # where the key sits, 0 = start of the filler, 1 = its end
    key: str  # 5 digits
    prompt_ids: list[int]


def passkey_case(tokenizer: Any, length: int, depth: float, key: str) -> PasskeyCase:
    """A prompt of about ``length`` tokens: filler, the key sentence at ``depth``, the question."""
    needle = f" The pass key is {key}. Remember it. {key} is the pass key. "
    fixed = len(tokenizer(needle + QUESTION, add_special_tokens=False).input_ids)
    per_filler = len(tokenizer(FILLER * 8, add_special_tokens=False).input_ids) / 8
    n_fillers = int((length - fixed) / per_filler)
    if n_fillers < 1:
        raise ValueError(
            f"length {length} is too short for a passkey prompt with this tokenizer: the key "
            f"sentence and the question alone take {fixed} tokens"
        )
    before = round(n_fillers * depth)
    text = FILLER * before + needle + FILLER * (n_fillers - before) + QUESTION
    return PasskeyCase(length, depth, key, tokenizer(text).input_ids)


@torch.no_grad()
def greedy_continuation(model: Any, prompt_ids: list[int], max_new_tokens: int = 8) -> list[int]:
    """Greedy decode with the KV cache (one prefill, then one token at a time)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)  # [1, L]
    out = model(input_ids=ids, use_cache=True)
    past, generated = out.past_key_values, []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        generated.append(token)
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=past)
        past = out.past_key_values
    return generated


def passkey_grid(
    model: Any,
    tokenizer: Any,
    lengths: Sequence[int],
    depths: Sequence[float],
    samples: int,
    seed: int = 0,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Accuracy per (length, depth) over ``samples`` keys each: {"lengths", "depths",
    "accuracy": [[per depth] per length], "by_length": [...], "overall"}."""
    rng = random.Random(seed)
    total, done = len(lengths) * len(depths) * samples, 0
    grid: list[list[float]] = []
    for length in lengths:
        row = []
        for depth in depths:
            hits = 0
            for _ in range(samples):
                key = f"{rng.randrange(10_000, 100_000)}"
                case = passkey_case(tokenizer, length, depth, key)
                text = tokenizer.decode(greedy_continuation(model, case.prompt_ids))
                hits += key in text
                done += 1
                progress(done, total)
            row.append(hits / samples)
        grid.append(row)
    by_length = [sum(row) / len(row) for row in grid]
    return {
        "lengths": list(lengths),
        "depths": list(depths),
        "samples": samples,
        "accuracy": grid,
        "by_length": by_length,
        "overall": sum(by_length) / len(by_length),
        # Binomial standard error of each length's mean (len(depths) * samples trials).
        "stderr_by_length": [
            math.sqrt(max(p * (1 - p), 0.0) / (len(depths) * samples)) for p in by_length
        ],
    }


# --------------------------------------------------------------------------- perplexity


def long_text_ids(tokenizer: Any, n_tokens: int) -> list[int]:
    """At least ``n_tokens`` tokens of real text: the standard library's largest modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"), key=lambda p: p.stat().st_size, reverse=True)
    ids: list[int] = []
    for path in files:
        ids += tokenizer(path.read_text(errors="replace"), add_special_tokens=False).input_ids
        if len(ids) >= n_tokens:
            return ids[:n_tokens]
    raise ValueError(f"the standard library holds fewer than {n_tokens} tokens")


def _decoder_and_head(model: Any) -> tuple[Any, torch.Tensor]:
    """The decoder (hidden states) and the LM head weight, under peft or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.get_output_embeddings().weight


@torch.no_grad()
def perplexity_by_length(
    model: Any, token_ids: Sequence[int], lengths: Sequence[int], progress: Progress = _noop
) -> dict[str, Any]:
    """Perplexity of the first L tokens for each L (one forward per length, chunked loss)."""
    decoder, head = _decoder_and_head(model)
    device = head.device
    values = []
    for index, length in enumerate(lengths):
        ids = torch.tensor([list(token_ids[:length])], device=device)  # [1, L]
        hidden = decoder(input_ids=ids).last_hidden_state  # [1, L, H]
        loss, _ = chunked_causal_lm_loss(hidden[0], head, ids[0])
        values.append(math.exp(float(loss)))
        progress(index + 1, len(lengths))
    return {"lengths": list(lengths), "perplexity": values}


# --------------------------------------------------------------------------- summaries


def effective_context(
    lengths: Sequence[int],
    scores: Sequence[float],
    *,
    absolute: float = RULER_ABSOLUTE_THRESHOLD,
    relative: float = RELATIVE_THRESHOLD,
) -> dict[str, Any]:
    """The longest length up to which EVERY length meets the bar (None: not even the first).
    Relative: the bar is ``relative`` x the score at the shortest length."""

    def longest(bar: float) -> int | None:
        best = None
        for length, score in sorted(zip(lengths, scores, strict=True)):
            if score < bar:
                break
            best = length
        return best

    reference = scores[list(lengths).index(min(lengths))]
    return {
        "absolute_threshold": absolute,
        "absolute": longest(absolute),
        "relative_threshold": relative,
        "relative": longest(relative * reference) if reference > 0 else None,
    }


def heatmap_png(grid: dict[str, Any], path: str | Path, title: str) -> Path:
    """Accuracy by length (x) and depth (y), like gkamradt's needle-in-a-haystack plots."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = torch.tensor(grid["accuracy"]).T.numpy()  # [depths, lengths]
    width, height = 1.2 + 0.9 * len(grid["lengths"]), 1.2 + 0.5 * len(grid["depths"])
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(accuracy, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(grid["lengths"])), [str(n) for n in grid["lengths"]])
    ax.set_yticks(range(len(grid["depths"])), [f"{d:.0%}" for d in grid["depths"]])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title, fontsize=9)
    for (y, x), value in np.ndenumerate(accuracy):
        ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
