"""Synthetic chat JSONL with PII at known character offsets (for the PII benchmarks).

Realistic-looking support/engineering conversations built from templates, with
hard negatives mixed in (Luhn-invalid cards, bad-checksum IBANs, 999.x "IPs",
dates, versions, prices, UUIDs, ISBNs) so precision is actually tested.
Every generated PII value is valid for its type (Luhn, mod-97, SSA rules).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator

FIRST = [
    "james",
    "maria",
    "wei",
    "olivia",
    "ahmed",
    "sofia",
    "liam",
    "yuki",
    "noah",
    "fatima",
    "lucas",
    "emma",
]
LAST = [
    "smith",
    "garcia",
    "chen",
    "müller",
    "okafor",
    "rossi",
    "tanaka",
    "kowalski",
    "dubois",
    "silva",
    "haddad",
]
DOMAINS = [
    "example.com",
    "acme-corp.io",
    "mail.example.co.uk",
    "globex.de",
    "initech.net",
    "umbrella.org",
]

FILLER = [
    "Thanks for reaching out, I looked into the issue you reported yesterday.",
    "The deployment finished at 14:32 and the health checks are green again.",
    "Could you share the exact error message and the steps to reproduce it?",
    "We upgraded the library to version 2.14.3 last week, which may explain the change.",
    "Your order #884213 shipped on 2024-03-15 and should arrive within 5 business days.",
    "The invoice total was $1,299.99 including tax, payable by the end of the month.",
    "I restarted the worker pool and the queue drained in about 12 minutes.",
    "Please note that the meeting moved to Thursday 10:30 in room 4B.",
    "The model was trained for 3 epochs with a learning rate of 0.0002 and batch size 64.",
    "Our SLA guarantees 99.95% availability, measured over a rolling 30-day window.",
    "The request id was 550e8400-e29b-41d4-a716-446655440000 if that helps the on-call team.",
    "Run pip install -r requirements.txt and then python manage.py migrate to set it up.",
    "The reference book is ISBN 978-3-16-148410-0, chapter 7 covers the topic in depth.",
    "Latency dropped from 180 ms to 42 ms after we enabled connection pooling.",
    "I can confirm the refund of 45.00 EUR was processed on 12.04.2024.",
    "The function get_user_account_by_organization_identifier returns None for deleted users.",
    "See https://docs.example.com/guides/getting-started?lang=en for the full walkthrough.",
    "We have 10 000 000 rows in the events table and the index is 3.2 GB.",
    "The config file lives at /etc/service/conf.d/override.yaml on every node.",
    "Kubernetes reported 3/5 pods ready, the other two were stuck in CrashLoopBackOff.",
]
NEGATIVE_TEMPLATES = [
    "The test card 4111 1111 1111 1112 was declined, as expected for an invalid number.",
    "That account DE89 3704 0044 0532 0130 01 looks wrong, the checksum fails.",
    "The log shows 999.12.1.1 which is not a real address.",
    "Build 1.2.3 fixed the regression from 1.2.2.",
    "Ticket 2024-00017 was merged into ticket 2024-00012.",
    "The tracking number is 1Z 999 AA1 0123 4567 84 for the second parcel.",
    "Scores were 12-15-2023 in the old format, we now use ISO dates.",
]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, c in enumerate(reversed(digits)):
        v = int(c)
        if i % 2 == 0:
            v *= 2
            v -= 9 if v > 9 else 0
        total += v
    return digits + str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16)]
    )
    digits = luhn_complete(prefix, length, rng)
    style = rng.choice(["space", "dash", "none"])
    if style == "none":
        return digits
    sep = " " if style == "space" else "-"
    groups = (
        [digits[0:4], digits[4:10], digits[10:]]
        if length == 15
        else [digits[i : i + 4] for i in range(0, 16, 4)]
    )
    return sep.join(groups)


IBAN_BBAN = {
    "DE": (18, string.digits),
    "GB": (18, None),
    "FR": (23, string.digits),
    "NL": (14, None),
}


def make_iban(rng: random.Random) -> str:
    country = rng.choice(list(IBAN_BBAN))
    length, alphabet = IBAN_BBAN[country]
    if alphabet is None:  # GB/NL: 4-letter bank code then digits
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
        bban += "".join(rng.choice(string.digits) for _ in range(length - 4))
    else:
        bban = "".join(rng.choice(alphabet) for _ in range(length))
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    iban = f"{country}{98 - numeric % 97:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def make_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def make_phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{d(4)}",
            f"+49 30 {d(6)}",
            f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{d(4)}",
            f"+1 {rng.randint(201, 989)} {rng.randint(200, 999)} {d(4)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
        ]
    )


def make_ip(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(1, 0xFFFF):x}" for _ in range(8)]
    return (
        "2001:db8:" + ":".join(groups[2:])
        if rng.random() < 0.5
        else f"2001:db8::{groups[5]}:{groups[6]}:{groups[7]}"
    )


def make_email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", ""])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST).replace('ü', 'u')}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits


def make_secret(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["AWS_ACCESS_KEY", "API_TOKEN", "JWT", "AWS_SECRET_KEY"])
    if kind == "AWS_ACCESS_KEY":
        return kind, "AKIA" + _rand(rng, string.ascii_uppercase + string.digits, 16)
    if kind == "API_TOKEN":
        return kind, "ghp_" + _rand(rng, ALNUM, 36)
    if kind == "JWT":
        return kind, "eyJhbGciOiJIUzI1NiJ9.eyJ" + _rand(rng, ALNUM, 30) + "." + _rand(
            rng, ALNUM + "_-", 43
        )
    return kind, _rand(rng, ALNUM, 18) + "/" + _rand(rng, ALNUM, 21)


PII_TEMPLATES = {
    "EMAIL": ["You can email me at {} anytime.", "Please cc {} on the thread."],
    "PHONE": ["Call me on {} after 5pm.", "My direct line is {}."],
    "CREDIT_CARD": ["Charge the card {} for the upgrade.", "My card number is {} if you need it."],
    "IBAN": ["Send the refund to IBAN {} please.", "Our IBAN is {}."],
    "US_SSN": ["My social security number is {} for the form.", "SSN: {}"],
    "IP_ADDRESS": ["The server at {} stopped responding.", "Whitelist {} in the firewall."],
    "SECRET": ["Here is the key {} for staging.", "token={}"],
}
GENERATORS = {
    "EMAIL": make_email,
    "PHONE": make_phone,
    "CREDIT_CARD": make_card,
    "IBAN": make_iban,
    "US_SSN": make_ssn,
    "IP_ADDRESS": make_ip,
}


def make_message(rng: random.Random, pii_rate: float) -> tuple[str, list[tuple[int, int, str]]]:
    """One message text and its gold spans [(start, end, entity)]."""
    parts: list[str] = []
    spans: list[tuple[int, int, str]] = []
    offset = 0
    for _ in range(rng.randint(2, 7)):
        if rng.random() < pii_rate:
            entity = rng.choice(list(PII_TEMPLATES))
            if entity == "SECRET":
                entity, value = make_secret(rng)
                template = rng.choice(PII_TEMPLATES["SECRET"])
            else:
                value = GENERATORS[entity](rng)
                template = rng.choice(PII_TEMPLATES[entity])
            before = template.index("{}")
            spans.append((offset + before, offset + before + len(value), entity))
            sentence = template.format(value)
        elif rng.random() < 0.08:
            sentence = rng.choice(NEGATIVE_TEMPLATES)
        else:
            sentence = rng.choice(FILLER)
        parts.append(sentence)
        offset += len(sentence) + 1
    return " ".join(parts), spans


def make_example(
    rng: random.Random, pii_rate: float = 0.15
) -> tuple[dict, list[list[tuple[int, int, str]]]]:
    messages, labels = [{"role": "system", "content": "You are a helpful support assistant."}], [[]]
    for _turn in range(rng.randint(1, 3)):
        for role in ("user", "assistant"):
            text, spans = make_message(rng, pii_rate if role == "user" else pii_rate / 3)
            messages.append({"role": role, "content": text})
            labels.append(spans)
    return {"messages": messages}, labels


def iter_jsonl(target_bytes: int, seed: int = 0) -> Iterator[bytes]:
    """JSONL lines until target_bytes; a pool of examples is reused for generation speed."""
    rng = random.Random(seed)
    pool = [
        json.dumps(make_example(rng)[0], ensure_ascii=False).encode() + b"\n" for _ in range(4000)
    ]
    written = 0
    while written < target_bytes:
        line = pool[rng.randrange(len(pool))]
        written += len(line)
        yield line
