"""Streaming PII scrubbing with consistent typed placeholders.

Why placeholders are consistent per file: a conversation that says
"mail jane@acme.com ... I wrote to jane@acme.com" must still read coherently
after scrubbing ("[EMAIL_1] ... [EMAIL_1]"), or the model learns that entities
change mid-dialogue. Values are keyed after normalisation (lowercased email,
digits-only phone/card) so "+1 (415) 555-2671" and "415-555-2671" share one
placeholder. Only JSON string *values* are scrubbed: keys and structure are
the dataset's schema and must survive byte-for-byte in meaning.

Which detectors run on a string is decided by one RE2-set pass (``pii_prefilter``); only
those run their precise pattern and validators (``pii_patterns``). Person names come from
spaCy's English NER model plus context cues (``pii_names``), loaded lazily in the scrubbing
worker; when the model is not installed the report says names were not scrubbed. Postal
addresses (street lines) and dates of birth (a date after a cue such as "DOB") are patterns.
Org allow-patterns are compiled with RE2 too: linear time, so no pattern an org writes can
make the worker backtrack for hours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from .pii_patterns import Detector, Span, build_detectors
from .pii_prefilter import Prefilter

PATTERN_ENTITIES = frozenset(
    {
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "IBAN",
        "US_SSN",
        "IP_ADDRESS",
        "URL_CREDENTIALS",
        "AWS_ACCESS_KEY",
        "AWS_SECRET_KEY",
        "PRIVATE_KEY",
        "JWT",
        "API_TOKEN",
        "HIGH_ENTROPY_SECRET",
        "DATE_OF_BIRTH",
        "STREET_ADDRESS",
    }
)
PERSON = "PERSON"
ALL_ENTITIES = PATTERN_ENTITIES | {PERSON}

# Shortest value any detector accepts ("1.1.1.1", "a@b.co"): shorter strings skip detection.
_MIN_CANDIDATE_LEN = 6

# Anchored detectors scan windows around their anchor's matches only in strings at least this
# long: on a short string one scan of the whole string is cheaper than finding the windows.
_WINDOWED_MIN_LEN = 2048

NameDetector = Callable[[str], Iterable[tuple[int, int]]]


@dataclass(frozen=True)
class PiiPolicy:
    """Per-org scrubbing policy.

    allow_values: literal values kept as-is (case-insensitive), e.g. the company's
    own support address. allow_patterns: RE2 regexes (no look-arounds or
    back-references) that, when they fully match a detected value, keep it
    (e.g. r".*@acme\\.com" for all staff addresses).
    """

    entities: frozenset[str] = ALL_ENTITIES
    allow_values: frozenset[str] = frozenset()
    allow_patterns: tuple[str, ...] = ()
    max_samples_per_entity: int = 5

    def __post_init__(self) -> None:
        unknown = set(self.entities) - ALL_ENTITIES
        if unknown:
            raise ValueError(f"unknown PII entity types: {sorted(unknown)}")
        for pattern in self.allow_patterns:
            try:
                compile_allow_pattern(pattern)  # fail at policy creation, not mid-file
            except re2.error as exc:
                raise ValueError(f"allow pattern {pattern!r} is not valid RE2: {exc}") from exc


def compile_allow_pattern(pattern: str) -> re2._Regexp:
    """An org's allow-pattern as an RE2 regex: linear-time matching, whatever the pattern.

    Raises re2.error for a pattern RE2 cannot compile (look-arounds, back-references).
    """
    return re2.compile(pattern)


@dataclass
class ScrubReport:
    """Per-file summary: never holds a raw value, only masked samples."""

    counts: dict[str, int] = field(default_factory=dict)  # occurrences replaced
    distinct: dict[str, int] = field(default_factory=dict)  # distinct normalised values
    allowed: dict[str, int] = field(default_factory=dict)  # occurrences kept by the allow-list
    samples: dict[str, list[str]] = field(default_factory=dict)  # masked, e.g. j***@e***.com
    person_names: str = "not_scrubbed: the name model (spaCy en_core_web_sm) is not installed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "distinct": dict(self.distinct),
            "allowed": dict(self.allowed),
            "samples": {k: list(v) for k, v in self.samples.items()},
            "person_names": self.person_names,
        }


# ---------------------------------------------------------------- masking


def _mask_keep(value: str, head: int, tail: int) -> str:
    if len(value) <= head + tail:
        return "*" * len(value)
    return value[:head] + "*" * 3 + (value[-tail:] if tail else "")


def mask_value(entity: str, raw: str) -> str:
    """A sample a human can recognise the *kind* of, without the value itself."""
    if entity == "EMAIL":
        local, _, domain = raw.partition("@")
        name, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{name[:1]}***.{tld}"
    if entity in ("CREDIT_CARD", "IBAN"):
        compact = raw.replace(" ", "").replace("-", "")
        return (compact[:2] if entity == "IBAN" else "") + "****" + compact[-4:]
    if entity in ("PHONE", "US_SSN"):
        digits = [c for c in raw if c.isdigit()]
        return "***" + "".join(digits[-2:])
    if entity == "IP_ADDRESS":
        sep = "." if "." in raw else ":"
        return raw.split(sep)[0] + sep + "***"
    if entity == "URL_CREDENTIALS":
        user = raw.split(":", 1)[0]
        return f"{user[:1]}***:***"
    if entity in (PERSON, "STREET_ADDRESS"):
        return raw[:1] + "***"
    if entity == "DATE_OF_BIRTH":
        return "**-**-" + "".join(c for c in raw if c.isdigit())[-2:]
    return f"{raw[:4]}*** ({len(raw)} chars)"  # secrets: prefix says which kind of key


# ---------------------------------------------------------------- scrubber


class PiiScrubber:
    """Detects and replaces PII; one instance per file (it owns the placeholder map)."""

    def __init__(
        self,
        policy: PiiPolicy | None = None,
        name_detector: NameDetector | None = None,
        *,
        prefilter: bool = True,
    ):
        """name_detector: None means the installed one (spaCy NER + cues, `pii_names`).

        prefilter=False runs every detector behind its own gate instead of the RE2 set: the
        same detections, slower; the benchmark's baseline and the tests' oracle.
        """
        self.policy = policy or PiiPolicy()
        enabled = self.policy.entities
        self._detectors: list[Detector] = [d for d in build_detectors() if d.entities & enabled]
        self._prefilter = _prefilter_for(self._detectors) if prefilter else None
        self._enabled = enabled
        if PERSON in enabled and name_detector is None:
            from .pii_names import installed_name_detector  # spaCy only when names are on

            name_detector = installed_name_detector()
        self._name_detector = name_detector if PERSON in enabled else None
        self._allow_values = {v.casefold() for v in self.policy.allow_values}
        self._allow_patterns = [compile_allow_pattern(p) for p in self.policy.allow_patterns]
        # Name spans computed ahead for the strings of the current JSONL line (scrub_json /
        # scrub_texts hand them to the detector's batched detect_many in one call).
        self._names_ahead: dict[str, list[tuple[int, int]]] = {}
        self._placeholders: dict[tuple[str, str], str] = {}
        self._next_index: dict[str, int] = {}
        self.report = ScrubReport()
        if self._name_detector is not None:
            self.report.person_names = "scrubbed"
        elif PERSON not in enabled:
            self.report.person_names = "disabled by policy"

    # ----- detection

    def detect(self, text: str) -> list[Span]:
        """Non-overlapping (start, end, entity, key) detections, in text order."""
        if len(text) < _MIN_CANDIDATE_LEN or (self._name_detector is None and text.isalpha()):
            return []
        found: dict[tuple[int, int], tuple[int, int, Span]] = {}
        anchors: dict[re.Pattern[str], list[tuple[int, int]]] = {}
        enabled = self._enabled
        length = len(text)
        if self._prefilter is None:
            detectors = [d for d in self._detectors if d.gate is None or d.gate(text)]
        else:
            detectors = [self._detectors[i] for i in self._prefilter.fired(text)]
        whole: tuple[tuple[int, int], ...] = ((0, length),)
        windowed = length >= _WINDOWED_MIN_LEN
        for detector in detectors:
            if detector.anchor is None or not windowed:
                windows: Iterable[tuple[int, int]] = whole
            else:
                windows = anchors.get(detector.anchor)
                if windows is None:
                    windows = anchors[detector.anchor] = [
                        m.span() for m in detector.anchor.finditer(text)
                    ]
            for start, end in windows:
                pos, endpos = max(0, start - detector.back), min(length, end + detector.ahead)
                for match in detector.pattern.finditer(text, pos, endpos):
                    span = detector.accept(match, text)
                    if span is not None and span[2] in enabled:
                        found.setdefault((span[0], span[1]), (span[0], detector.priority, span))
        if self._name_detector is not None:
            names = self._names_ahead.pop(text, None)
            for start, end in self._name_detector(text) if names is None else names:
                found.setdefault(
                    (start, end), (start, 99, (start, end, PERSON, text[start:end].casefold()))
                )
        if not found:
            return []
        return _resolve_overlaps(list(found.values()))

    def _is_allowed(self, raw: str, key: str) -> bool:
        if not self._allow_values and not self._allow_patterns:
            return False
        if self._allow_values and (
            raw.casefold() in self._allow_values or key.casefold() in self._allow_values
        ):
            return True
        return any(p.fullmatch(raw) for p in self._allow_patterns)

    def _placeholder(self, entity: str, key: str, raw: str) -> str:
        slot = (entity, key)
        placeholder = self._placeholders.get(slot)
        report = self.report
        if placeholder is None:
            index = self._next_index.get(entity, 0) + 1
            self._next_index[entity] = index
            placeholder = self._placeholders[slot] = f"[{entity}_{index}]"
            report.distinct[entity] = index
            samples = report.samples.setdefault(entity, [])
            if len(samples) < self.policy.max_samples_per_entity:
                samples.append(mask_value(entity, raw))
        report.counts[entity] = report.counts.get(entity, 0) + 1
        return placeholder

    # ----- replacement

    def scrub_text(self, text: str) -> str:
        spans = self.detect(text)
        if not spans:
            return text
        pieces: list[str] = []
        cursor = 0
        for start, end, entity, key in spans:
            raw = text[start:end]
            if self._is_allowed(raw, key):
                self.report.allowed[entity] = self.report.allowed.get(entity, 0) + 1
                continue
            pieces.append(text[cursor:start])
            pieces.append(self._placeholder(entity, key, raw))
            cursor = end
        if not pieces:
            return text
        pieces.append(text[cursor:])
        return "".join(pieces)

    def scrub_texts(self, texts: list[str]) -> list[str]:
        """``[scrub_text(t) for t in texts]``, with one batched name-model pass for all of them."""
        self._names_prefetch(texts)
        try:
            return [self.scrub_text(text) for text in texts]
        finally:
            self._names_ahead.clear()

    def _names_prefetch(self, texts: list[str]) -> None:
        """Run the name detector once over several strings (the model batches its sentences)."""
        many = getattr(self._name_detector, "detect_many", None)
        texts = [t for t in texts if len(t) >= _MIN_CANDIDATE_LEN]
        if many is None or len(texts) < 2:
            return
        self._names_ahead = dict(zip(texts, many(texts), strict=True))

    def scrub_json(self, value: Any) -> bool:
        """Scrub string values inside a parsed JSON container in place; True if anything changed."""
        if self._name_detector is None:
            return self._scrub_json(value)
        self._names_prefetch(list(_strings(value)))
        try:
            return self._scrub_json(value)
        finally:
            self._names_ahead.clear()

    def _scrub_json(self, value: Any) -> bool:
        changed = False
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for slot, item in items:
            if isinstance(item, str):
                if len(item) >= _MIN_CANDIDATE_LEN:
                    scrubbed = self.scrub_text(item)
                    if scrubbed is not item:
                        value[slot] = scrubbed
                        changed = True
            elif isinstance(item, dict | list):
                changed |= self._scrub_json(item)
        return changed

    def scrub_line(self, line: bytes) -> bytes:
        """One JSONL line in, one out (unchanged bytes when nothing was found)."""
        obj = json.loads(line)
        if isinstance(obj, str):
            scrubbed = self.scrub_text(obj)
            return line if scrubbed is obj else dump_json_line(scrubbed)
        if isinstance(obj, dict | list) and self.scrub_json(obj):
            return dump_json_line(obj)
        return line


def _strings(value: Any) -> Iterable[str]:
    """Every string value inside a parsed JSON container (keys excluded), in document order."""
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict | list):
            yield from _strings(item)


_PREFILTERS: dict[tuple[str, ...], Prefilter] = {}


def _prefilter_for(detectors: list[Detector]) -> Prefilter:
    """One compiled RE2 set per distinct detector list (policies share them; compiling is ms)."""
    key = tuple(d.candidate for d in detectors)
    prefilter = _PREFILTERS.get(key)
    if prefilter is None:
        prefilter = _PREFILTERS[key] = Prefilter(detectors)
    return prefilter


def dump_json_line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _resolve_overlaps(spans: list[tuple[int, int, Span]]) -> list[Span]:
    """Earliest start wins; at equal start the higher-priority detector wins."""
    spans.sort()
    kept: list[Span] = []
    last_end = -1
    for start, _, span in spans:
        if start >= last_end:
            kept.append(span)
            last_end = span[1]
    return kept
