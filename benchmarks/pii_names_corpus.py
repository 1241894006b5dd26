"""A labelled corpus of person names in support-style messages (for benchmarks/pii_scrub.py).

What it covers, because that is where a name detector fails:
- names from many cultures (West African, East/South Asian, Arabic, Slavic, Latin American,
  Nordic, Turkish, ...), with diacritics and hyphens;
- lower-case chat ("my name is john smith") and names with no cue at all;
- names inside e-mails: a From: header with a display name, a greeting, a signature;
- look-alikes that are not names in context: places, companies, products, and words that are
  also given names ("Will", "Mark", "Grace", "Bill") used as ordinary words.

Each message comes with its gold PERSON spans [(start, end, "PERSON")].
"""

from __future__ import annotations

import random

FIRST = [
    "Oluwaseun",
    "Chinedu",
    "Amara",
    "Kwame",
    "Wanjiru",
    "Priya",
    "Arjun",
    "Ananya",
    "Rahul",
    "Wei",
    "Mei-Ling",
    "Hiroshi",
    "Yuki",
    "Ji-woo",
    "Minh",
    "Thi Lan",
    "Fatima",
    "Ahmed",
    "Omar",
    "Layla",
    "Dmitri",
    "Olga",
    "Katarzyna",
    "Tomasz",
    "Sofía",
    "José",
    "Camila",
    "Mateo",
    "Ingrid",
    "Lars",
    "Björn",
    "Astrid",
    "Emre",
    "Elif",
    "Siobhan",
    "Niamh",
    "James",
    "Emily",
    "Michael",
    "Sarah",
    "Giulia",
    "Luca",
    "Noa",
    "Yosef",
    "Aroha",
    "Tane",
]
LAST = [
    "Adeyemi",
    "Okafor",
    "Mensah",
    "Kamau",
    "Raman",
    "Sharma",
    "Iyer",
    "Chen",
    "Zhang",
    "Tanaka",
    "Sato",
    "Kim",
    "Nguyen",
    "Tran",
    "Haddad",
    "Al-Sayed",
    "Khan",
    "Ivanova",
    "Petrov",
    "Kowalski",
    "Nowak",
    "García",
    "Hernández",
    "Álvarez",
    "Silva",
    "Eriksson",
    "Johansson",
    "Yılmaz",
    "Demir",
    "O'Sullivan",
    "Murphy",
    "Smith",
    "Johnson",
    "Rossi",
    "Bianchi",
    "Levi",
    "Cohen",
    "Ngata",
    "Müller",
    "Dubois",
]
DOMAINS = ["example.com", "acme-corp.io", "globex.de", "initech.net"]

# {n} = a full name, {f} = a first name; the gold span is the name as inserted.
CUED = [
    "Hi, my name is {n} and I can't log in to the dashboard.",
    "Thanks {f}, that fixed it!",
    "Dear {n}, your refund has been processed.",
    "I spoke with {n} from your billing team yesterday.",
    "Please ask for {n} when you call back.",
    "This is {n}, following up on ticket 4821.",
    "Hello {f}, could you check the export job again?",
]
UNCUED = [
    "{n} approved the budget for the next quarter.",
    "The contract was signed by {n} last week.",
    "I forwarded the logs to {n} in the platform team.",
    "According to {n}, the migration is scheduled for Friday.",
    "{n} and I reviewed the failing checks together.",
]
LOWER = [
    "my name is {n} and i need to reset my password",
    "hi {f}, thanks for the quick reply",
    "i talked to {n} on the phone and she said it was fixed",
    "can you ask {n} to approve it",
]
NEGATIVES = [
    "Will you check whether the export finished?",
    "Mark the ticket as resolved once the fix is deployed.",
    "Bill me monthly instead of annually, please.",
    "Grace period ends on the first of the month.",
    "We moved the Washington office to Jordan Street last year.",
    "Our team in Georgia uses Amazon S3 and Apple laptops.",
    "The Paris region had higher latency than Frankfurt.",
    "Jenkins failed on the Django upgrade, Ruby on Rails is fine.",
    "Summer sale prices apply to the Crystal plan.",
    "Victoria station was closed so the engineer arrived late.",
    "Hi team, the Hunter integration is live.",
    "Best regards,\nThe Support Team",
    "Hope you are well. Regards, Customer Success",
    "The Lincoln tunnel closure delayed the shipment.",
]
FILLER = [
    "The deployment finished at 14:32 and the health checks are green again.",
    "Could you share the exact error message and the steps to reproduce it?",
    "Latency dropped from 180 ms to 42 ms after we enabled connection pooling.",
    "Please note that the meeting moved to Thursday 10:30 in room 4B.",
]


def _name(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(FIRST)
    return first, f"{first} {rng.choice(LAST)}"


def _fill(template: str, first: str, full: str) -> tuple[str, list[tuple[int, int, str]]]:
    spans, out, cursor = [], [], 0
    while True:
        i = template.find("{", cursor)
        if i < 0:
            out.append(template[cursor:])
            break
        out.append(template[cursor:i])
        value = full if template[i + 1] == "n" else first
        start = sum(len(p) for p in out)
        spans.append((start, start + len(value), "PERSON"))
        out.append(value)
        cursor = i + 3
    return "".join(out), spans


def make_email(rng: random.Random) -> tuple[str, list[tuple[int, int, str]], str]:
    """A forwarded e-mail: From: header with display name, greeting, body, signature."""
    _, sender = _name(rng)
    recipient, _ = _name(rng)
    first, last = sender.split(" ", 1)
    address = f"{first.lower()}.{last.split()[-1].lower()}@{rng.choice(DOMAINS)}"
    pieces = [
        ("From: ", False),
        (sender, True),
        (f" <{address}>\nSubject: invoice question\n\nHi ", False),
        (recipient, True),
        (",\n\n" + rng.choice(FILLER) + "\n\nBest regards,\n", False),
        (sender, True),
    ]
    text, spans = "", []
    for piece, is_name in pieces:
        if is_name:
            spans.append((len(text), len(text) + len(piece), "PERSON"))
        text += piece
    return text, spans, "email"


def make_message(rng: random.Random) -> tuple[str, list[tuple[int, int, str]], str]:
    """(text, gold spans, category) with category in cued/uncued/lower/email/negative."""
    roll = rng.random()
    if roll < 0.12:
        return make_email(rng)
    if roll < 0.32:
        return rng.choice(NEGATIVES), [], "negative"
    first, full = _name(rng)
    if roll < 0.55:
        category, template = "cued", rng.choice(CUED)
    elif roll < 0.78:
        category, template = "uncued", rng.choice(UNCUED)
    else:
        category, template = "lower", rng.choice(LOWER)
        first, full = first.lower(), full.lower()
    text, spans = _fill(template, first, full)
    if rng.random() < 0.5:  # embed in an ordinary sentence, shifting the gold spans
        prefix = rng.choice(FILLER) + " "
        text = prefix + text
        spans = [(s + len(prefix), e + len(prefix), t) for s, e, t in spans]
    return text, spans, category


def names_corpus(n: int, seed: int = 11) -> list[tuple[str, list[tuple[int, int, str]], str]]:
    rng = random.Random(seed)
    return [make_message(rng) for _ in range(n)]
