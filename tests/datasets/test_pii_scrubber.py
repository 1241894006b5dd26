"""PII scrubber: each entity type positive and negative, placeholders, policy."""

from __future__ import annotations

import json

import pytest

from longtune.datasets.pii import PATTERN_ENTITIES, PiiPolicy, PiiScrubber, mask_value
from longtune.datasets.pii_patterns import iban_valid, luhn_valid

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumbu\nabc+def==\n-----END RSA PRIVATE KEY-----"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

POSITIVE = [
    ("EMAIL", "write to Jane.Doe+tag@mail.example.co.uk today", "Jane.Doe+tag@mail.example.co.uk"),
    ("PHONE", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("PHONE", "call (415) 555-2671 now", "(415) 555-2671"),
    ("PHONE", "call +49 30 901820 now", "+49 30 901820"),
    ("PHONE", "call 415-555-2671.", "415-555-2671"),
    ("PHONE", "call +1 (415) 555-2671", "+1 (415) 555-2671"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card 5500-0000-0000-0004 please", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 378282246310005.", "378282246310005"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "pay GB82WEST12345698765432 TODAY", "GB82WEST12345698765432"),
    ("US_SSN", "ssn 078-05-1120.", "078-05-1120"),
    ("IP_ADDRESS", "host 192.168.1.20:8080 down", "192.168.1.20"),
    ("IP_ADDRESS", "v6 2001:db8:85a3::8a2e:370:7334 up", "2001:db8:85a3::8a2e:370:7334"),
    ("URL_CREDENTIALS", "clone https://deploy:s3cr3t@git.example.com/repo.git", "deploy:s3cr3t"),
    ("AWS_ACCESS_KEY", "id AKIAIOSFODNN7EXAMPLE ok", "AKIAIOSFODNN7EXAMPLE"),
    (
        "AWS_SECRET_KEY",
        "secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("PRIVATE_KEY", f"key:\n{PEM}\nend", PEM),
    ("JWT", f"Authorization: Bearer {JWT}", JWT),
    (
        "API_TOKEN",
        "token ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5 x",
        "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
    ),
    (
        "API_TOKEN",
        "OPENAI_API_KEY=sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
        "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
    ),
    ("API_TOKEN", "slack xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"),
    (
        "HIGH_ENTROPY_SECRET",
        "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ),
    (
        "HIGH_ENTROPY_SECRET",
        "token: Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZg9Kx7",
        "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZg9Kx7",
    ),
]

NEGATIVE = [
    "card 4111 1111 1111 1112 fails Luhn",
    "random digits 1234 5678 9012 3456",  # Luhn-valid? no: and wrong IIN anyway
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "not an ip 999.1.1.1 nor 1.2.3",
    "ssn-like 000-12-3456 and 666-12-3456 and 900-12-3456 are invalid",
    "dates 2024-01-15, 15.01.2024, times 12:30:45, version 1.2.3",
    "order #123456 shipped, total $1,299.99, 42 items",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "function get_user_account_by_organization_identifier_v2 ok",
    "path /api/v2/organizations/members/invitations/pending",
    "email-like text: name at example dot com, user@localhost",
    "C++ std::vector<int> and a::b",
    "https://example.com/docs/getting-started?lang=en",
    "isbn 978-3-16-148410-0 and 10 000 000 people",
]


@pytest.mark.parametrize(
    ("entity", "text", "value"), POSITIVE, ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIVE)]
)
def test_each_entity_type_is_detected_and_replaced(entity, text, value):
    scrubber = PiiScrubber()
    spans = scrubber.detect(text)
    assert [(text[s:e], ent) for s, e, ent, _ in spans] == [(value, entity)]
    scrubbed = scrubber.scrub_text(text)
    assert value not in scrubbed and f"[{entity}_1]" in scrubbed
    assert scrubber.report.counts == {entity: 1}


# The look-alikes are about the pattern detectors: "fails Luhn" names a person to the NER
# model (H. P. Luhn), which is right; name look-alikes are in test_pii_names.py.
PATTERNS_ONLY = PiiPolicy(entities=PATTERN_ENTITIES)


@pytest.mark.parametrize("text", NEGATIVE)
def test_look_alikes_are_kept(text):
    scrubber = PiiScrubber(PATTERNS_ONLY)
    assert scrubber.detect(text) == []
    assert scrubber.scrub_text(text) == text


def test_checksum_helpers():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # wrong length for DE


def test_placeholders_are_consistent_across_lines_and_normalised():
    scrubber = PiiScrubber()
    first = scrubber.scrub_text("Mail Jane@Example.com or call +1 (415) 555-2671.")
    second = scrubber.scrub_text("jane@example.com again; 415-555-2671; other bob@example.com")
    assert first == "Mail [EMAIL_1] or call [PHONE_1]."
    assert second == "[EMAIL_1] again; [PHONE_1]; other [EMAIL_2]"
    assert scrubber.report.counts == {"EMAIL": 3, "PHONE": 2}
    assert scrubber.report.distinct == {"EMAIL": 2, "PHONE": 1}


def test_only_values_are_scrubbed_never_keys_or_structure():
    scrubber = PiiScrubber()
    line = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "I am bob@example.com"},
                {"role": "assistant", "content": "Hi"},
            ],
            "bob@example.com": {"nested": ["call 415-555-2671", 4155552671, None, True]},
        }
    ).encode()
    out = json.loads(scrubber.scrub_line(line))
    assert list(out) == ["messages", "bob@example.com"]  # key untouched
    assert out["messages"][0] == {"role": "user", "content": "I am [EMAIL_1]"}
    assert out["bob@example.com"] == {"nested": ["call [PHONE_1]", 4155552671, None, True]}


def test_unchanged_line_is_returned_byte_for_byte():
    line = b'{"text":  "nothing to see here, just words"}'
    assert PiiScrubber().scrub_line(line) is line


def test_allow_list_values_and_patterns_are_honoured():
    policy = PiiPolicy(
        allow_values=frozenset({"Support@Acme.com"}), allow_patterns=(r"10\.0\.\d+\.\d+",)
    )
    scrubber = PiiScrubber(policy)
    text = "Write support@acme.com or jane@acme.com; server 10.0.3.7 vs 192.168.0.9"
    assert (
        scrubber.scrub_text(text)
        == "Write support@acme.com or [EMAIL_1]; server 10.0.3.7 vs [IP_ADDRESS_1]"
    )
    assert scrubber.report.allowed == {"EMAIL": 1, "IP_ADDRESS": 1}


def test_policy_can_disable_entity_types_and_rejects_unknown_ones():
    scrubber = PiiScrubber(PiiPolicy(entities=frozenset({"EMAIL"})))
    assert scrubber.scrub_text("a@b.com 415-555-2671") == "[EMAIL_1] 415-555-2671"
    with pytest.raises(ValueError):
        PiiPolicy(entities=frozenset({"EMAIL", "SHOE_SIZE"}))


def test_report_holds_masked_samples_never_raw_values():
    scrubber = PiiScrubber()
    scrubber.scrub_text(
        "john.smith@example.com 4111 1111 1111 1111 078-05-1120 AKIAIOSFODNN7EXAMPLE"
    )
    report = json.dumps(scrubber.report.to_dict())
    for raw in (
        "john.smith@example.com",
        "4111 1111 1111 1111",
        "078-05-1120",
        "AKIAIOSFODNN7EXAMPLE",
    ):
        assert raw not in report
    assert scrubber.report.samples["EMAIL"] == ["j***@e***.com"]
    assert scrubber.report.samples["CREDIT_CARD"] == ["****1111"]
    assert mask_value("IBAN", "DE89 3704 0044 0532 0130 00") == "DE****3000"


def test_person_names_are_scrubbed_by_the_installed_model_by_default():
    scrubber = PiiScrubber()
    assert scrubber.report.person_names == "scrubbed"
    assert scrubber.scrub_text("Hello, my name is Priya Raman.") == "Hello, my name is [PERSON_1]."


def test_a_missing_name_model_is_reported_not_hidden(monkeypatch):
    from longtune.datasets import pii_names

    monkeypatch.setattr(pii_names, "installed_name_detector", lambda: None)
    report = PiiScrubber().report
    assert report.person_names.startswith("not_scrubbed")
    assert "not installed" in report.person_names


def test_person_names_take_any_detector_and_policy_turns_them_off():
    def names(text):  # stand-in NER: capitalised "Alice"
        start = text.find("Alice")
        return [(start, start + 5)] if start >= 0 else []

    scrubber = PiiScrubber(name_detector=names)
    assert scrubber.scrub_text("Hello Alice, mail alice@x.io") == "Hello [PERSON_1], mail [EMAIL_1]"
    assert scrubber.report.person_names == "scrubbed"
    off = PiiScrubber(PATTERNS_ONLY)
    assert off.scrub_text("Hello, my name is Priya Raman.") == "Hello, my name is Priya Raman."
    assert off.report.person_names == "disabled by policy"
