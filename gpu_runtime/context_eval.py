"""Long-context evaluation suites: passkey retrieval by length x depth, RULER-style tasks,
perplexity by length.

Why these two first: they answer the product's question -- does the model USE its (extended)
context -- from two sides. Passkey retrieval (Mohtashami & Jaggi's task, gkamradt's
needle-in-a-haystack plots) asks whether one fact planted at a given depth of a long filler is
found again; perplexity by length (the PG-19 table of the YaRN / Together write-ups) asks whether
more context keeps lowering the loss or starts to hurt. Both are generated locally and seeded:
no hub, no downloaded dataset.

- ``passkey_grid(model, tokenizer, lengths, depths, samples, seed)`` -> accuracy per (length,
  depth), exact match of the 5-digit key in the greedy continuation;
- ``ruler_grid(model, tokenizer, tasks, lengths, samples, seed)`` -> RULER's synthetic tasks
  (single / multi-key / multi-value / multi-query needles, variable tracking, common-words
  extraction): score per task and length, RULER's ``string_match_all``;
- ``perplexity_by_length(model, token_ids, lengths)`` -> perplexity of the first L tokens of a
  long text (chunked loss: never [tokens x vocab] logits);
- ``long_text_ids(tokenizer, n_tokens)`` -> the long real text: the largest modules of this
  interpreter's standard library, concatenated (code nobody here wrote, that ships locally);
- ``effective_context(scores, ...)`` -> RULER's absolute threshold (0.856) and a relative one
  (>= 90% of the model's score at its shortest length);
- ``heatmap_png(grid, path)`` / ``ruler_heatmap_png`` draw the length x depth (task) grid
  (matplotlib, imported lazily).

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
from transformers import DynamicCache

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
def greedy_continuation(
    model: Any, prompt_ids: list[int], max_new_tokens: int = 8, prefill_chunk: int | None = None
) -> list[int]:
    """Greedy decode with the KV cache (a prefill, then one token at a time). The prefill
    keeps the logits of the last position only: [1, 1, vocab], not [1, L, vocab] (3.2 GB of
    fp32 for a 16K prompt and a 49K vocabulary). ``prefill_chunk`` runs the prompt in chunks
    of that many tokens over the cache, as the serving engine does (``prefill_chunk_size``);
    None runs it in one forward."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)  # [1, L]
    step = prefill_chunk or ids.shape[1]
    past = DynamicCache(config=model.config)
    for start in range(0, ids.shape[1], step):
        chunk = ids[:, start : start + step]  # [1, <= step]
        positions = torch.arange(start, start + chunk.shape[1], device=device).unsqueeze(0)
        out = model(
            input_ids=chunk,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        past = out.past_key_values
    generated = []
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
    prefill_chunk: int | None = None,
) -> dict[str, Any]:
    """Accuracy per (length, depth) over ``samples`` keys each: {"lengths", "depths",
    "accuracy": [[per depth] per length], "by_length": [...], "overall"}. ``prefill_chunk``:
    see ``greedy_continuation``."""
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
                text = tokenizer.decode(
                    greedy_continuation(model, case.prompt_ids, prefill_chunk=prefill_chunk)
                )
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


# --------------------------------------------------------------------------- RULER-style tasks
#
# Hsieh et al. 2024, "RULER: What's the Real Context Size of Your Long-Context Language Models?"
# (github.com/NVIDIA/RULER): synthetic tasks whose answer is unambiguous and whose length is a
# knob. The templates follow RULER's; keys are seeded pseudo-words and values 7-digit numbers,
# so nothing is downloaded. Scored as RULER does (``string_match_all``): the fraction of the
# expected strings found in the greedy continuation, averaged over samples.

RULER_TASKS: tuple[str, ...] = (
    "niah_single",  # one needle, one key asked
    "niah_multikey",  # one needle asked among distractor needles with other keys
    "niah_multivalue",  # one key with several values: all of them asked
    "niah_multiquery",  # several keys asked at once
    "variable_tracking",  # follow chains of assignments VAR B = VAR A ...
    "common_words_extraction",  # the most frequent words of a long word list
)
NEEDLES = 4  # distractors / values / queries of the multi-* tasks (RULER's default is 4)
VT_HOPS = 4
CWE_COMMON, CWE_MAX_COMMON_FREQ, CWE_MIN_COMMON_FREQ, CWE_RARE_FREQ = 10, 30, 5, 3
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


@dataclass(frozen=True)
class RulerCase:
    task: str
    length: int
    prompt_ids: list[int]
    answers: tuple[str, ...]  # every one must appear in the continuation for a full score
    max_new_tokens: int


def _word(rng: random.Random, syllables: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def _distinct(rng: random.Random, n: int, make: Callable[[], str]) -> list[str]:
    seen: list[str] = []
    while len(seen) < n:
        item = make()
        if item not in seen:
            seen.append(item)
    return seen


def _number(rng: random.Random) -> str:
    return str(rng.randrange(1_000_000, 10_000_000))


def _ntokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _haystack(
    tokenizer: Any, length: int, needles: Sequence[str], tail: str, rng: random.Random
) -> str:
    """Filler of about ``length`` tokens in total with each needle at a seeded random depth,
    in order, then ``tail`` (the question)."""
    fixed = sum(_ntokens(tokenizer, n) for n in needles) + _ntokens(tokenizer, tail)
    per_filler = _ntokens(tokenizer, FILLER * 8) / 8
    n_fillers = int((length - fixed) / per_filler)
    if n_fillers < len(needles) + 1:
        raise ValueError(
            f"length {length} is too short for this task with this tokenizer: its needles and "
            f"question alone take {fixed} tokens"
        )
    cuts = sorted(rng.sample(range(n_fillers + 1), len(needles)))
    parts, previous = [], 0
    for cut, needle in zip(cuts, needles, strict=True):
        parts += [FILLER * (cut - previous), needle]
        previous = cut
    parts += [FILLER * (n_fillers - previous), tail]
    return "".join(parts)


def _needle(key: str, value: str) -> str:
    return f" One of the special magic numbers for {key} is: {value}. "


def _niah(tokenizer: Any, task: str, length: int, rng: random.Random) -> RulerCase:
    keys = _distinct(rng, NEEDLES, lambda: _word(rng))
    if task == "niah_single":
        pairs, asked = [(keys[0], _number(rng))], keys[:1]
    elif task == "niah_multikey":
        pairs, asked = [(k, _number(rng)) for k in keys], keys[:1]
    elif task == "niah_multivalue":
        pairs, asked = [(keys[0], _number(rng)) for _ in range(NEEDLES)], keys[:1]
    else:  # niah_multiquery
        pairs, asked = [(k, _number(rng)) for k in keys], keys
    rng.shuffle(pairs)
    answers = tuple(v for k, v in pairs if k in asked)
    if task in ("niah_single", "niah_multikey"):
        tail = (
            f"\nWhat is the special magic number for {asked[0]} mentioned in the provided "
            f"text? The special magic number for {asked[0]} mentioned in the provided text is"
        )
    elif task == "niah_multivalue":
        tail = (
            f"\nWhat are all the special magic numbers for {asked[0]} mentioned in the "
            f"provided text? The special magic numbers for {asked[0]} mentioned in the "
            "provided text are"
        )
    else:
        names = ", ".join(asked[:-1]) + f", and {asked[-1]}"
        tail = (
            f"\nWhat are all the special magic numbers for {names} mentioned in the provided "
            f"text? The special magic numbers for {names} mentioned in the provided text are"
        )
    text = _haystack(tokenizer, length, [_needle(k, v) for k, v in pairs], tail, rng)
    max_new = 12 if len(answers) == 1 else 12 * len(answers)
    return RulerCase(task, length, tokenizer(text).input_ids, answers, max_new)


def _variable_tracking(tokenizer: Any, length: int, rng: random.Random) -> RulerCase:
    names = _distinct(rng, VT_HOPS + 1, lambda: _word(rng, 2).upper())
    value = str(rng.randrange(10_000, 100_000))
    chain = [f" VAR {names[0]} = {value}. "] + [
        f" VAR {names[i + 1]} = VAR {names[i]}. " for i in range(VT_HOPS)
    ]
    tail = (
        f"\nQuestion: Find all variables that are assigned the value {value} in the text "
        f"above. Answer: According to the chain(s) of variable assignment in the text above, "
        f"{VT_HOPS + 1} variables are assigned the value {value}, they are:"
    )
    text = _haystack(tokenizer, length, chain, tail, rng)
    return RulerCase(
        "variable_tracking", length, tokenizer(text).input_ids, tuple(names), 8 * len(names)
    )


def _common_words(tokenizer: Any, length: int, rng: random.Random) -> RulerCase:
    """A numbered word list: CWE_COMMON words repeated ``freq`` times each, rare words
    CWE_RARE_FREQ times each, as many rare words as the length allows. ``freq`` is RULER's 30
    at long lengths; shorter prompts get fewer repetitions (common words take at most half of
    the list, never fewer than CWE_MIN_COMMON_FREQ > CWE_RARE_FREQ)."""
    head = "Below is a numbered list of words. In these words, some appear more often than "
    head += "others. Memorize the ones that appear most often.\n"
    tail = (
        f"\nQuestion: What are the {CWE_COMMON} most common words in the above list? "
        f"Answer: The top {CWE_COMMON} words that appear most often in the list are:"
    )
    sample = _distinct(rng, CWE_COMMON, lambda: _word(rng)) * 20
    per_entry = _ntokens(tokenizer, "".join(f" {i + 1}. {w}" for i, w in enumerate(sample)))
    per_entry /= len(sample)  # an estimate: longer lists have longer numbers (trimmed below)
    entries_fit = (length - _ntokens(tokenizer, head + tail)) / per_entry
    freq = min(CWE_MAX_COMMON_FREQ, max(CWE_MIN_COMMON_FREQ, int(entries_fit / 2 / CWE_COMMON)))
    n_rare = int((entries_fit - CWE_COMMON * freq) / CWE_RARE_FREQ)
    if n_rare < 1:
        raise ValueError(
            f"length {length} is too short for common_words_extraction with this tokenizer: "
            f"{CWE_COMMON} common words x {CWE_MIN_COMMON_FREQ} and one rare word take about "
            f"{int(per_entry * (CWE_COMMON * CWE_MIN_COMMON_FREQ + CWE_RARE_FREQ))} tokens"
        )
    vocabulary = _distinct(rng, CWE_COMMON + n_rare, lambda: _word(rng))
    words, rare = vocabulary[:CWE_COMMON], vocabulary[CWE_COMMON:]
    for _ in range(8):  # drop rare words until the prompt fits
        entries = words * freq + rare * CWE_RARE_FREQ
        rng.shuffle(entries)
        text = head + "".join(f" {i + 1}. {w}" for i, w in enumerate(entries)) + tail
        ids = tokenizer(text).input_ids
        excess = len(ids) - length
        if excess <= 0 or len(rare) <= 1:
            break
        actual = (len(ids) - _ntokens(tokenizer, head + tail)) / len(entries)
        rare = rare[: max(1, len(rare) - int(excess / actual / CWE_RARE_FREQ) - 1)]
    return RulerCase("common_words_extraction", length, ids, tuple(words), 6 * CWE_COMMON)


def ruler_case(tokenizer: Any, task: str, length: int, rng: random.Random) -> RulerCase:
    """One seeded prompt of about ``length`` tokens for ``task`` (one of RULER_TASKS)."""
    if task not in RULER_TASKS:
        raise ValueError(f"unknown RULER task {task!r}; expected one of {RULER_TASKS}")
    if task.startswith("niah_"):
        return _niah(tokenizer, task, length, rng)
    if task == "variable_tracking":
        return _variable_tracking(tokenizer, length, rng)
    return _common_words(tokenizer, length, rng)


def string_match_all(prediction: str, answers: Sequence[str]) -> float:
    """RULER's metric: the fraction of the expected strings found (case-insensitive)."""
    low = prediction.lower()
    return sum(a.lower() in low for a in answers) / len(answers)


def ruler_grid(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    lengths: Sequence[int],
    samples: int,
    seed: int = 0,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Score per task and length, mean over ``samples`` prompts: {"tasks", "lengths",
    "accuracy": {task: [per length]}, "stderr": {task: [...]}, "by_length": mean over tasks,
    "stderr_by_length", "overall"}. Each (task, length, sample) has its own seeded generator,
    so adding a task or a length leaves the other prompts unchanged."""
    total, done = len(tasks) * len(lengths) * samples, 0
    accuracy: dict[str, list[float]] = {}
    stderr: dict[str, list[float]] = {}
    for task in tasks:
        accuracy[task], stderr[task] = [], []
        for length in lengths:
            scores = []
            for sample in range(samples):
                rng = random.Random(f"{seed}:{task}:{length}:{sample}")
                case = ruler_case(tokenizer, task, length, rng)
                ids = greedy_continuation(model, case.prompt_ids, case.max_new_tokens)
                scores.append(string_match_all(tokenizer.decode(ids), case.answers))
                done += 1
                progress(done, total)
            mean = sum(scores) / samples
            var = sum((x - mean) ** 2 for x in scores) / (samples - 1) if samples > 1 else 0.0
            accuracy[task].append(mean)
            stderr[task].append(math.sqrt(var / samples))
    by_length = [sum(accuracy[t][i] for t in tasks) / len(tasks) for i in range(len(lengths))]
    stderr_by_length = [
        math.sqrt(sum(stderr[t][i] ** 2 for t in tasks)) / len(tasks) for i in range(len(lengths))
    ]
    return {
        "tasks": list(tasks),
        "lengths": list(lengths),
        "samples": samples,
        "accuracy": accuracy,
        "stderr": stderr,
        "by_length": by_length,
        "stderr_by_length": stderr_by_length,
        "overall": sum(by_length) / len(by_length),
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
    """Passkey accuracy by length (x) and depth (y), like gkamradt's needle-in-a-haystack
    plots."""
    return scores_heatmap_png(
        [list(column) for column in zip(*grid["accuracy"], strict=True)],  # [depths][lengths]
        xlabels=[str(n) for n in grid["lengths"]],
        ylabels=[f"{d:.0%}" for d in grid["depths"]],
        ylabel="needle depth",
        path=path,
        title=title,
    )


def ruler_heatmap_png(grid: dict[str, Any], path: str | Path, title: str) -> Path:
    """RULER score by length (x) and task (y)."""
    return scores_heatmap_png(
        [grid["accuracy"][task] for task in grid["tasks"]],  # [tasks][lengths]
        xlabels=[str(n) for n in grid["lengths"]],
        ylabels=list(grid["tasks"]),
        ylabel="task",
        path=path,
        title=title,
    )


def scores_heatmap_png(
    rows: Sequence[Sequence[float]],
    *,
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    ylabel: str,
    path: str | Path,
    title: str,
) -> Path:
    """A [len(ylabels), len(xlabels)] grid of scores in [0, 1], annotated, red to green."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(rows, dtype=float)  # [y, x]
    label_width = max(len(label) for label in ylabels) * 0.07
    width = max(4.5, 1.2 + label_width + 0.9 * len(xlabels))  # room for the title
    height = 1.2 + 0.5 * len(ylabels)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(scores, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(xlabels)), list(xlabels))
    ax.set_yticks(range(len(ylabels)), list(ylabels))
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8, wrap=True)
    for (y, x), value in np.ndenumerate(scores):
        ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
