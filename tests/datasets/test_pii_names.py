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
    assert len(fresh._segment_cache) <= 2  # the model's windows are bounded alike


# ----- speed without loss: the gate, the windows, the batches, the pipeline's components


def test_the_ner_alone_finds_what_it_found_with_the_shared_tok2vec(detector):
    """en_core_web_sm's NER has a tok2vec of its own; the shared one feeds tagger and parser."""
    import spacy

    from longtune.datasets.pii_names import MODEL_PACKAGE

    assert detector._nlp.pipe_names == ["ner"]
    with_tok2vec = spacy.load(
        MODEL_PACKAGE, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
    )
    assert with_tok2vec.pipe_names == ["tok2vec", "ner"]
    texts = [text for text, _ in NAMES] + NOT_NAMES + [text for text, _, _ in _corpus()[:80]]

    def ents(nlp):
        return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]

    assert ents(detector._nlp) == ents(with_tok2vec)


def _corpus():
    from benchmarks.pii_names_corpus import names_corpus

    return names_corpus(600)


def test_gated_windows_find_what_whole_strings_found_on_the_names_corpus(detector):
    """The benchmark's corpus (600 messages, seed 11): every gold name the first version
    found is found, and no span is added that it did not find."""
    first = NameDetector(NameDetectorConfig(gated=False), nlp=detector._nlp)
    fast = NameDetector(nlp=detector._nlp)
    corpus = _corpus()
    texts = [text for text, _, _ in corpus]
    answers = fast.detect_many(texts)
    hits_first = hits_fast = extra = 0
    for (text, gold, _), mine in zip(corpus, answers, strict=True):
        theirs = first(text)

        def hits(spans, gold=gold):
            return sum(any(s < g[1] and g[0] < e for s, e in spans) for g in gold)

        hits_first += hits(theirs)
        hits_fast += hits(mine)
        extra += sum(not any(s < e2 and s2 < e for s2, e2 in theirs) for s, e in mine)
    assert hits_first > 560  # the first version's recall, 0.98 of 622
    assert hits_fast == hits_first
    assert extra == 0
    assert fast.model_chars < 0.7 * first.model_chars  # and it read much less


def test_sentences_without_a_possible_name_are_not_read_by_the_model(detector):
    fast = NameDetector(nlp=detector._nlp)
    jargon = "The deployment finished at 14:32. Our SLA is 99.95% and the ISBN was fine."
    assert fast(jargon) == [] and fast.model_chars == 0
    text = "The deployment finished at 14:32. I forwarded the logs to Kwame Mensah in the team."
    before = fast.model_chars
    assert [text[s:e] for s, e in fast(text)] == ["Kwame Mensah"]
    # the model read the second sentence and a few words before it, not the first one whole
    assert 0 < fast.model_chars - before <= len(text) - len("The deployment ")


def test_a_batch_answers_like_one_call_per_string_and_reads_each_window_once(detector):
    texts = [text for text, _ in NAMES] + NOT_NAMES + [NAMES[0][0]]
    one_by_one = NameDetector(nlp=detector._nlp)
    expected = [one_by_one(text) for text in texts]
    batched = NameDetector(nlp=detector._nlp)
    calls = []
    real_pipe = batched._nlp.pipe

    class Counting:  # the pipeline, counting its pipe calls
        def __getattr__(self, name):
            return getattr(detector._nlp, name)

        def pipe(self, texts, **kwargs):
            calls.append(list(texts))
            return real_pipe(calls[-1], **kwargs)

    batched._nlp = Counting()
    assert batched.detect_many(texts) == expected
    assert len(calls) == 1  # every window of every string in one nlp.pipe
    assert len(calls[0]) == len(set(calls[0]))  # the repeated string's windows read once


def test_the_scrubber_hands_all_strings_of_a_line_to_one_batched_call():
    seen = []

    class Names:
        def __call__(self, text):
            raise AssertionError("each string of the line was answered by detect_many")

        def detect_many(self, texts):
            seen.append(list(texts))
            return [[(t.index("Ada"), t.index("Ada") + 3)] if "Ada" in t else [] for t in texts]

    scrubber = PiiScrubber(name_detector=Names())
    line = (
        b'{"messages":[{"role":"user","content":"Hello, Ada here"},'
        b'{"role":"assistant","content":"Hi Ada, how can I help?"}]}'
    )
    out = scrubber.scrub_line(line)
    # one call for the line's strings ("user" is shorter than any detection)
    assert seen == [["Hello, Ada here", "assistant", "Hi Ada, how can I help?"]]
    assert b"[PERSON_1] here" in out and b"Hi [PERSON_1]," in out
