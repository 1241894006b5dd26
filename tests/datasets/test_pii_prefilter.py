"""The RE2-set prefilter loses nothing: detections with it equal detections without it.

The prefilter decides which detectors run; each detector's candidate pattern must match
wherever its precise pattern can. The oracle is the scrubber's prefilter=False path (every
detector behind its own gate), on the labelled benchmark corpus and on random strings built
from the characters PII is made of (digits in several scripts, separators, letters, "@").
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
import re2

from longtune.datasets.pii import PATTERN_ENTITIES, PiiPolicy, PiiScrubber
from longtune.datasets.pii import PiiPolicy as Policy
from longtune.datasets.pii_patterns import CANDIDATES, build_detectors
from longtune.datasets.policies import PolicyError, validate_policy_fields

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from pii_corpus import make_example  # noqa: E402

PATTERNS = PiiPolicy(entities=PATTERN_ENTITIES)
# Fragments random strings are glued from: every detector's raw material, with Unicode
# digits (Arabic-Indic, full-width) and spaces (NBSP) where Python's \d and \s see them.
FRAGMENTS = [
    *"0123456789",
    "٣",
    "４",
    "\u00a0",
    " ",
    "-",
    ".",
    "(",
    ")",
    "+",
    ":",
    "::",
    "/",
    "@",
    "_",
    "=",
    "#",
    ",",
    "\n",
    "AB",
    "DE89",
    "GB82WEST",
    "eyJ",
    "AKIA",
    "ghp_",
    "sk-",
    "xoxb-",
    "-----BEGIN ",
    "PRIVATE KEY-----",
    "-----END ",
    "https://",
    "user:pw@",
    "a",
    "Z",
    "x9",
    "4111",
    "1111",
    "078-05-1120",
    "192.168.",
    "2001:db8",
    "+44 20 ",
    "(415) ",
    "555-2671",
    "Street",
    "St",
    "Baker",
    "221B ",
    "Hauptstraße ",
    "rue ",
    "de ",
    "Rivoli",
    "DOB: ",
    "born on ",
    "04/07/1985",
    "March ",
    "1990",
    "mail",
    ".com",
    "example",
]


def _labelled_texts(n: int) -> list[str]:
    rng = random.Random(3)
    return [m["content"] for _ in range(n) for m in make_example(rng)[0]["messages"]]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(FRAGMENTS, k=rng.randint(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("source", ["labelled", "random"])
def test_prefilter_finds_exactly_what_every_detector_finds(source):
    texts = _labelled_texts(600) if source == "labelled" else _random_texts(8_000, seed=7)
    fast, oracle = PiiScrubber(PATTERNS), PiiScrubber(PATTERNS, prefilter=False)
    found = 0
    for text in texts:
        expected = oracle.detect(text)
        assert fast.detect(text) == expected, text
        found += len(expected)
    assert found > len(texts) // 20  # the inputs really hold PII: the comparison is not vacuous


def test_each_candidate_is_valid_re2_and_fires_on_its_own_positive_examples():
    from tests.datasets.test_pii_scrubber import POSITIVE  # the scrubber's own positive table

    detectors = build_detectors()
    for entity, text, _value in POSITIVE:
        fired = [d for d in detectors if entity in d.entities and re2.search(d.candidate, text)]
        assert fired, (entity, text)
    assert len(CANDIDATES) == len({d.candidate for d in detectors})


def test_strings_without_candidates_skip_every_detector():
    fast = PiiScrubber(PATTERNS)
    assert fast._prefilter.fired("The weather is nice today, see you at the meeting.") == []


# ---------------------------------------------------------------- phones (libphonenumber)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("ring +91 98765 43210 today", "919876543210"),  # India
        ("ring +81 3-1234-5678 today", "81312345678"),  # Japan
        ("ring +86 138 0013 8000 today", "8613800138000"),  # China mobile
        ("ring +33 1 23 45 67 89 today", "33123456789"),  # France
        ("ring 020 7946 0958 today", "442079460958"),  # UK national, trunk 0
        ("ring (415) 555-2671 today", "14155552671"),
    ],
)
def test_international_phone_formats_are_normalised_to_e164(text, key):
    spans = PiiScrubber(PATTERNS).detect(text)
    assert [(ent, k) for _, _, ent, k in spans] == [("PHONE", key)]


@pytest.mark.parametrize(
    "text",
    [
        "ring +999 123 4567 8 today",  # no such country code
        "ring +44 12 345 today",  # too short for the UK plan
        "ring +692 1234 5678 9 today",  # twelve digits: too long for the Marshall Islands
    ],
)
def test_numbers_no_numbering_plan_allows_are_not_phones(text):
    assert [s for s in PiiScrubber(PATTERNS).detect(text) if s[2] == "PHONE"] == []


# ---------------------------------------------------------------- allow-lists (RE2)


def test_allow_patterns_run_in_linear_time_even_when_pathological():
    # (a+)+$ backtracks exponentially in Python's re on "aaaa...!"; RE2 is linear.
    policy = Policy(allow_patterns=(r"(a+)+$", r".*@acme\.com"))
    scrubber = PiiScrubber(policy)
    evil = "a" * 5000 + "!@evil.io"
    start = time.perf_counter()
    for _ in range(20):
        scrubber._is_allowed(evil, evil)
    assert time.perf_counter() - start < 1.0
    assert scrubber.scrub_text("staff jane@acme.com, guest bob@other.org") == (
        "staff jane@acme.com, guest [EMAIL_1]"
    )


def test_patterns_re2_cannot_run_are_refused_at_edit_time_with_a_code():
    with pytest.raises(PolicyError) as refused:
        validate_policy_fields(["EMAIL"], [], [r"(?<=@)acme\.com"])
    assert (refused.value.field, refused.value.code) == ("allow_patterns.0", "invalid_regex")
    assert "RE2" in refused.value.message
    with pytest.raises(ValueError):
        Policy(allow_patterns=(r"(a)\1",))


def test_lone_surrogates_from_json_escapes_do_not_break_the_prefilter():
    text = json.loads('"call 415-555-2671 \\ud800 now"')  # valid JSON, not valid UTF-8
    assert "\ud800" in text
    spans = PiiScrubber(PATTERNS).detect(text)
    assert [(ent, key) for _, _, ent, key in spans] == [("PHONE", "14155552671")]
