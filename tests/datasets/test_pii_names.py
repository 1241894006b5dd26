"""Person names: the real spaCy model (en_core_web_sm 3.8.0) plus context cues, and the
postal-address and date-of-birth patterns that came with them."""

from __future__ import annotations

import pytest

from longtune.datasets.pii import PiiScrubber
from longtune.datasets.pii_names import NameDetector, NameDetectorConfig, model_installed

pytestmark = pytest.mark.skipif(not model_installed(), reason="scripts/setup.sh installs it")

NAMES = [
    # (text, the names it holds): varied cultures, lower case, inside e-mails
    ("Hi, my name is Priya Raman and I need help with my invoice.", ["Priya Raman"]),
    ("my name is john smith, please call me back", ["john smith"]),
    (
        "Thanks Oluwaseun, that fixed it.\n\nBest regards,\nMei-Ling Chen",
        ["Oluwaseun", "Mei-Ling Chen"],
    ),
    (
        "From: Kwame Mensah <kwame.mensah@globex.de>\nHi Anna,\nthe deploy is done.",
        ["Kwame Mensah", "Anna"],
    ),
    ("i spoke with maria garcia yesterday about the refund", ["maria garcia"]),
    (
        "José Álvarez and Zhang Wei joined the call with Björn Borg.",
        ["José Álvarez", "Zhang Wei", "Björn Borg"],
    ),
    ("Dear Mr. Okafor, your ticket is closed.", ["Okafor"]),
]
NOT_NAMES = [
    "I am locked out. Hello world. this is urgent. I'm sorry.",
    "Hi there, thanks again for the quick reply!",
    "The deployment finished at 14:32 and the health checks are green again.",
    "Run pip install -r requirements.txt and then python manage.py migrate.",
    "Best regards,\nThe Support Team",
]


@pytest.fixture(scope="module")
def detector():
    return NameDetector()


@pytest.mark.parametrize(("text", "names"), NAMES)
def test_names_are_found_with_their_exact_extent(detector, text, names):
    found = [text[s:e] for s, e in detector(text)]
    assert found == names


@pytest.mark.parametrize("text", NOT_NAMES)
def test_ordinary_words_after_cues_are_not_names(detector, text):
    assert [text[s:e] for s, e in detector(text)] == []


def test_cues_alone_work_without_the_model():
    cues_only = NameDetector(NameDetectorConfig(use_model=False))
    text = "my name is wanjiru kamau.\nRegards,\nTomasz"
    assert [text[s:e] for s, e in cues_only(text)] == ["wanjiru kamau", "Tomasz"]


def test_long_strings_are_cut_into_pieces_and_offsets_survive(detector):
    text = ("Filler words about deployments and queues. " * 600) + "Please ask Fatima Haddad."
    assert len(text) > NameDetector().config.chunk_chars
    spans = detector(text)
    assert [text[s:e] for s, e in spans] == ["Fatima Haddad"]


def test_names_get_consistent_typed_placeholders_next_to_other_entities():
    scrubber = PiiScrubber()
    first = scrubber.scrub_text("My name is Lars Eriksson, mail lars@example.com.")
    second = scrubber.scrub_text("I spoke with Lars Eriksson. Then I spoke with Ana Lima.")
    assert first == "My name is [PERSON_1], mail [EMAIL_1]."
    assert second == "I spoke with [PERSON_1]. Then I spoke with [PERSON_2]."
    assert scrubber.report.samples["PERSON"] == ["L***", "A***"]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("My DOB: 04/07/1985, thanks", "DATE_OF_BIRTH", "04/07/1985"),
        ("I was born on 3 March 1990 in Lagos", "DATE_OF_BIRTH", "3 March 1990"),
        ("date of birth is 1979-11-02.", "DATE_OF_BIRTH", "1979-11-02"),
        ("ship it to 221B Baker Street please", "STREET_ADDRESS", "221B Baker Street"),
        (
            "Office: 1600 Pennsylvania Avenue NW, Suite 4",
            "STREET_ADDRESS",
            "1600 Pennsylvania Avenue NW, Suite 4",
        ),
        ("Lieferung an Hauptstraße 12a bitte", "STREET_ADDRESS", "Hauptstraße 12a"),
        ("envoyez au 12 rue de Rivoli demain", "STREET_ADDRESS", "12 rue de Rivoli"),
    ],
)
def test_dates_of_birth_and_street_addresses(text, entity, value):
    scrubber = PiiScrubber()
    spans = [(text[s:e], ent) for s, e, ent, _ in scrubber.detect(text) if ent == entity]
    assert spans == [(value, entity)]
    assert value not in scrubber.scrub_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "The release date is 04/07/2025 and the meeting is on 3 March.",  # a date, no birth cue
        "We have 3 Street lamps",  # no capitalised street name before the type
        "Version 2 Drive sync fixed 14 issues.",
    ],
)
def test_dates_and_numbers_without_cues_are_not_dob_or_addresses(text):
    found = {ent for _, _, ent, _ in PiiScrubber().detect(text)}
    assert not found & {"DATE_OF_BIRTH", "STREET_ADDRESS"}


def test_repeated_strings_are_answered_from_a_bounded_cache(detector, monkeypatch):
    from longtune.datasets import pii_names

    monkeypatch.setattr(pii_names, "CACHE_ENTRIES", 2)
    fresh = NameDetector(nlp=detector._nlp)
    calls = []
    real = fresh._detect
    monkeypatch.setattr(fresh, "_detect", lambda text: calls.append(text) or real(text))
    prompt = "You are Maya, a support assistant for Acme."
    assert [prompt[s:e] for s, e in fresh(prompt)] == [prompt[s:e] for s, e in fresh(prompt)]
    assert calls == [prompt]  # the second answer came from the cache
    fresh("one other string"), fresh("and a third one")
    assert len(fresh._cache) == 2 and prompt not in fresh._cache  # oldest evicted
