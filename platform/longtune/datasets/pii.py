"""Streaming PII scrubbing with consistent typed placeholders.

Why placeholders are consistent per file: a conversation that says
"mail jane@acme.com ... I wrote to jane@acme.com" must still read coherently
after scrubbing ("[EMAIL_1] ... [EMAIL_1]"), or the model learns that entities
change mid-dialogue. Values are keyed after normalisation (lowercased email,
digits-only phone/card) so "+1 (415) 555-2671" and "415-555-2671" share one
placeholder. Only JSON string *values* are scrubbed: keys and structure are
the dataset's schema and must survive byte-for-byte in meaning.

Person names need an NER model; none ships with the platform, so PERSON is
scrubbed only when a `name_detector` callable is supplied (the report says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .pii_patterns import Detector, Span, build_detectors

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
    }
)
PERSON = "PERSON"
ALL_ENTITIES = PATTERN_ENTITIES | {PERSON}

# Shortest value any detector accepts ("1.1.1.1", "a@b.co"): shorter strings skip detection.
_MIN_CANDIDATE_LEN = 6

NameDetector = Callable[[str], Iterable[tuple[int, int]]]


@dataclass(frozen=True)
class PiiPolicy:
    """Per-org scrubbing policy.

    allow_values: literal values kept as-is (case-insensitive), e.g. the company's
    own support address. allow_patterns: regexes that, when they fully match a
    detected value, keep it (e.g. r".*@acme\\.com" for all staff addresses).
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
            re.compile(pattern)  # fail at policy creation, not mid-file


@dataclass
class ScrubReport:
    """Per-file summary: never holds a raw value, only masked samples."""

    counts: dict[str, int] = field(default_factory=dict)  # occurrences replaced
    distinct: dict[str, int] = field(default_factory=dict)  # distinct normalised values
    allowed: dict[str, int] = field(default_factory=dict)  # occurrences kept by the allow-list
    samples: dict[str, list[str]] = field(default_factory=dict)  # masked, e.g. j***@e***.com
    person_names: str = "not_scrubbed: no name detector is installed"

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
    if entity == PERSON:
        return raw[:1] + "***"
    return f"{raw[:4]}*** ({len(raw)} chars)"  # secrets: prefix says which kind of key


# ---------------------------------------------------------------- scrubber


class PiiScrubber:
    """Detects and replaces PII; one instance per file (it owns the placeholder map)."""

    def __init__(self, policy: PiiPolicy | None = None, name_detector: NameDetector | None = None):
        self.policy = policy or PiiPolicy()
        enabled = self.policy.entities
        self._detectors: list[Detector] = [d for d in build_detectors() if d.entities & enabled]
        self._enabled = enabled
        self._name_detector = name_detector if PERSON in enabled else None
        self._allow_values = {v.casefold() for v in self.policy.allow_values}
        self._allow_patterns = [re.compile(p) for p in self.policy.allow_patterns]
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
        for detector in self._detectors:
            if detector.gate is not None and not detector.gate(text):
                continue
            if detector.anchor is None:
                windows: Iterable[tuple[int, int]] = ((0, length),)
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
            for start, end in self._name_detector(text):
                found.setdefault(
                    (start, end), (start, 99, (start, end, PERSON, text[start:end].casefold()))
                )
        if not found:
            return []
        return _resolve_overlaps(list(found.values()))

    def _is_allowed(self, raw: str, key: str) -> bool:
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

    def scrub_json(self, value: Any) -> bool:
        """Scrub string values inside a parsed JSON container in place; True if anything changed."""
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
                changed |= self.scrub_json(item)
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
