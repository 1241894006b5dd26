"""Token ids → text deltas, with string-level stop sequences that may span token boundaries.

Decoding each new token alone is wrong for byte-level BPE (a character can be split over
tokens, and a sentencepiece "▁" depends on its neighbour), and re-decoding everything each
step is O(n²). `IncrementalDetokenizer` keeps a small window (the TGI/vLLM prefix/read offset
scheme): decode window with and without the new tokens, emit the difference once it no longer
ends in an incomplete character.

`StopStringBuffer` sits after it: it holds back the longest tail of the text that could still
become a stop string, so a stop split over several tokens ("\n\n" as "\n" + "\n") is cut
exactly and never half-streamed; the stop string itself is not returned (OpenAI semantics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens used as left context for the first generated tokens (leading-space handling).
_PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        context = list(prompt_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Text newly completed by `token_id` ("" while a character is still incomplete)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_REPLACEMENT_CHAR):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still pending at the end of generation (even an incomplete character)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]


class StopStringBuffer:
    """Accumulates generated text; releases only text that cannot be part of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._max_len = max((len(s) for s in self._stops), default=0)
        self.text = ""  # everything accepted so far (truncated at the stop once one is found)
        self._emitted = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add `delta`; return the text that is now safe to stream. Sets `stopped` on a hit."""
        if self.stopped:
            return ""
        # A stop ending inside `delta` starts at most max_len - 1 characters before it.
        search_from = max(0, len(self.text) - self._max_len + 1)
        self.text += delta
        hits = [i for s in self._stops if (i := self.text.find(s, search_from)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._held_back())

    def flush(self) -> str:
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest tail of text that is a proper prefix of some stop string."""
        for size in range(min(self._max_len - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self.text[self._emitted : end]
        self._emitted = end
        return out
