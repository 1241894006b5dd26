"""Regexes, candidate patterns and validators for each PII entity type.

Why this shape (speed): every detector names a *candidate* pattern in RE2 syntax that
matches wherever its precise pattern could (a superset: no look-arounds, no back-references,
Unicode digits as ``\\p{Nd}`` like Python's ``\\d``). All candidates are compiled into one
RE2 set (``pii_prefilter``), so one linear-time pass over a string says which detectors can
possibly fire; only those run their precise Python pattern, and the expensive checks (Luhn,
mod-97, ``phonenumbers``, ipaddress, Shannon entropy) run only on what those patterns match.
The precise patterns are anchored by look-behinds so the regex engine does not retry inside
words. A detector's `accept` turns a match into (start, end, normalised key) or None.

The older per-detector *gates* (a substring test) are kept: the scrubber's ``prefilter=False``
path runs every detector behind its gate, which is the benchmark's baseline and the oracle
the prefilter is tested against (same detections on every input).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

# (start, end, entity, normalised key) of one accepted detection.
Span = tuple[int, int, str, str]
Accept = Callable[[re.Match[str], str], "Span | None"]


@dataclass(frozen=True)
class Detector:
    """One pattern family.

    With an `anchor`, the pattern runs only in windows around the anchor's matches
    (`back` chars before, `ahead` after): a C-speed scan for a rare feature ("@",
    a run of digits) replaces scanning the whole text with a look-behind at every
    position. Look-behinds still see the text before the window.
    """

    entities: frozenset[str]  # what accept() may emit; skipped when none is enabled
    gate: Callable[[str], bool] | None  # cheap test on the whole string; None = always
    pattern: re.Pattern[str]
    accept: Accept
    priority: int  # lower wins when two detections start at the same offset
    candidate: str  # RE2 pattern matching wherever `pattern` can (a superset), for the prefilter
    anchor: re.Pattern[str] | None = None
    back: int = 0
    ahead: int = 0


# ---------------------------------------------------------------- checksums


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# ISO 13616 IBAN lengths per country (the mod-97 check alone accepts 1 in 97 random strings).
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


def iban_valid(iban: str) -> bool:
    """ISO 7064 mod-97-10 over the rearranged IBAN, plus the country's length."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def shannon_entropy(text: str) -> float:
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in Counter(text).values())


# ---------------------------------------------------------------- gates

# Seven-plus chars of digits and separators: every card, phone, SSN and IPv4 lies inside one.
NUMERIC_RUN = re.compile(r"\d[\d ().+-]{5,}\d")
AT_SIGN = re.compile("@")


def _contains(needle: str) -> Callable[[str], bool]:
    return lambda text: needle in text


# ---------------------------------------------------------------- detectors

EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def accept_email(match: re.Match[str], text: str) -> Span | None:
    return match.start(), match.end(), "EMAIL", match.group().lower()


URL_CREDENTIALS_RE = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://([^\s:/@\"'<>]+:[^\s/@\"'<>]+)@[^\s/?#\"'<>]+"
)


def accept_url_credentials(match: re.Match[str], text: str) -> Span | None:
    # Only the user:password part is replaced; scheme and host stay readable.
    return match.start(1), match.end(1), "URL_CREDENTIALS", match.group(1)


CARD_RE = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d]|[.-]\d)")
_CARD_PREFIX = re.compile(
    r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|35|6(?:011|5|4[4-9]|2)"
)


def accept_card(match: re.Match[str], text: str) -> Span | None:
    raw = match.group()
    spaced, dashed = " " in raw, "-" in raw
    if spaced and dashed:
        return None  # one separator style per number
    digits = raw.replace(" ", "") if spaced else raw.replace("-", "") if dashed else raw
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits) or not luhn_valid(digits):
        return None
    return match.start(), match.end(), "CREDIT_CARD", digits


# Starts with a charset (no leading look-behind) so the regex engine skips ahead in C.
IBAN_RE = re.compile(r"([A-Z]{2})(?<![A-Za-z0-9][A-Z]{2})\d{2} ?[A-Z0-9]{4}")


def accept_iban(match: re.Match[str], text: str) -> Span | None:
    """Walk exactly the country's IBAN length (single spaces allowed), then check mod-97."""
    length = IBAN_LENGTHS.get(match.group(1))
    if length is None:
        return None
    chars: list[str] = []
    position, end = match.start(), len(text)
    while position < end and len(chars) < length:
        char = text[position]
        if char == " " and chars and position + 1 < end and text[position + 1] != " ":
            position += 1
            continue
        if not ("A" <= char <= "Z" or "0" <= char <= "9"):
            break
        chars.append(char)
        position += 1
    if len(chars) != length or (position < end and text[position].isalnum()):
        return None
    iban = "".join(chars)
    return (match.start(), position, "IBAN", iban) if iban_valid(iban) else None


SSN_RE = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d]|-\d)")


def accept_ssn(match: re.Match[str], text: str) -> Span | None:
    area, _, group, serial = match.groups()
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return match.start(), match.end(), "US_SSN", area + group + serial


IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")


def accept_ipv4(match: re.Match[str], text: str) -> Span | None:
    octets = match.group().split(".")
    if any(int(o) > 255 or (len(o) > 1 and o[0] == "0") for o in octets):
        return None
    return match.start(), match.end(), "IP_ADDRESS", match.group()


IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:.])")


def _ipv6_gate(text: str) -> bool:
    return "::" in text or text.count(":") >= 7


def accept_ipv6(match: re.Match[str], text: str) -> Span | None:
    raw = match.group()
    if sum(1 for group in raw.split(":") if group) < 3:
        return None  # "a::b", "std::vector"-like noise
    try:
        address = ipaddress.IPv6Address(raw)
    except ValueError:
        return None
    return match.start(), match.end(), "IP_ADDRESS", address.compressed


# Phone shapes: +country..., (area) xxx-xxxx, NANP xxx-xxx-xxxx, trunk-0 national.
PHONE_RE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}"
    r"|(?:1[ .-]?)?\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}"
    r"|(?:1[.-])?\d{3}[.-]\d{3}[.-]\d{4}"
    r"|0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}"
    r")(?![\w]|[.-]\d)"
)


# Regions tried for a national number written with a trunk "0" and no country code
# ("020 7946 0958", "030 901820"): its country is unknown, so it is a phone number when it
# is a possible number in any of these numbering plans.
TRUNK_PREFIX_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "BE", "AT", "CH", "IE", "AU", "IN")


def _possible(raw: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def parse_phone(raw: str) -> phonenumbers.PhoneNumber | None:
    """The number ``raw`` denotes under Google's libphonenumber plans, or None.

    "+..." is parsed on its own country code; a NANP shape ("(415) 555-2671",
    "415-555-2671") as US/Canada; a trunk-0 national number in the first region of
    TRUNK_PREFIX_REGIONS where it is valid, else where it is at least possible.
    "Possible" (right length for the country's plan) rather than "valid" (an assigned
    range): a customer's number in a chat is personal data even in a range the library
    does not know yet.
    """
    if raw[0] == "+":
        return _possible(raw, None)
    if raw[0] != "0":
        return _possible(raw, "US")
    fallback = None
    for region in TRUNK_PREFIX_REGIONS:
        number = _possible(raw, region)
        if number is not None:
            if phonenumbers.is_valid_number(number):
                return number
            fallback = fallback or number
    return fallback


def _plausible_digit_count(raw: str, digits: int) -> bool:
    """The shape check before the numbering plans: E.164 allows 8-15 digits after "+";
    a national number is 10-11 digits. Cheap, and it keeps "0044 0532 0130" (part of an
    IBAN) out even where a plan would call it possible."""
    if raw[0] == "+":
        return 8 <= digits <= 15
    return digits in (10, 11)


def accept_phone(match: re.Match[str], text: str) -> Span | None:
    raw = match.group()
    if not _plausible_digit_count(raw, sum(1 for c in raw if c.isdigit())):
        return None
    number = parse_phone(raw)
    if number is None:
        return None
    # E.164 digits: "+1 415 555 2671" and "(415) 555-2671" share one placeholder.
    return match.start(), match.end(), "PHONE", f"{number.country_code}{number.national_number}"


_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DATE = (
    r"\d{4}-\d{1,2}-\d{1,2}"
    r"|\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})(?!\d)"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\.?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
)
# A date is a date of birth only after a cue: "DOB 04/07/1985", "born on 3 March 1990".
DOB_RE = re.compile(
    r"(?i)\b(?:date\s+of\s+birth|birth\s*date|d\.?o\.?b\.?|born(?:\s+on)?|birthday)"
    rf"(?:\s*(?:is|was|:|=|-))?\s*({_DATE})(?!\d)"
)


def accept_dob(match: re.Match[str], text: str) -> Span | None:
    # Only the date is replaced; the cue stays so the sentence still reads.
    key = "".join(c for c in match.group(1).casefold() if c.isalnum())
    return match.start(1), match.end(1), "DATE_OF_BIRTH", key


_STREET_TYPES = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Terrace|Close|Crescent|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Row|Walk)\.?"
)
_CAP_WORD = r"[A-Z][A-Za-z'\u2019-]*\.?"
# "221B Baker Street", "1600 Pennsylvania Avenue NW, Suite 4", "Hauptstraße 12a",
# "Keizersgracht 123", "12 rue de Rivoli": a number and capitalised words around a street type.
ADDRESS_RE = re.compile(
    rf"(?<![\w-])\d{{1,6}}[A-Za-z]?(?:\s+{_CAP_WORD}){{1,4}}\s+{_STREET_TYPES}(?![A-Za-z])"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?\s*[A-Za-z0-9-]+)?"
    r"|(?<![\w-])[A-Z\u00c4\u00d6\u00dc][a-z\u00e4\u00f6\u00fc\u00df]+"
    r"(?:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|laan|straat|gracht|plein)\s+\d{1,4}[a-z]?(?![\w-])"
    r"|(?<![\w-])\d{1,4}(?:\s*(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|place|chemin|impasse|quai)"
    r"\s+(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+|d')?[A-Z\u00c9][\w'-]+(?:\s+[A-Z\u00c9][\w'-]+){0,3}"
)


def accept_address(match: re.Match[str], text: str) -> Span | None:
    key = " ".join(match.group().casefold().replace(",", " ").split())
    return match.start(), match.end(), "STREET_ADDRESS", key


PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    re.DOTALL,
)


def accept_whole_as(entity: str) -> Accept:
    def accept(match: re.Match[str], text: str) -> Span | None:
        return match.start(), match.end(), entity, match.group()

    return accept


JWT_RE = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")

API_TOKEN_RE = re.compile(
    r"(?<![A-Za-z0-9_-])(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255}"
    r"|sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}"
    r"|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,})"
)

AWS_ACCESS_KEY_RE = re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}")

# One scan finds every token-like run (20+ base64/base64url/hex chars, optional "=" padding);
# accept() classifies it: AWS access key, known-prefix API token, AWS secret key, or a generic
# high-entropy secret. "=" is not a start char so "key=ghp_..." still isolates the token.
_TOKEN_CHARS = r"A-Za-z0-9+/_\-"
TOKEN_RUN_RE = re.compile(rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{20,}}={{0,2}}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def classify_long_token(token: str) -> str | None:
    """HIGH_ENTROPY_SECRET / AWS_SECRET_KEY / None for a 32+ char token run."""
    if len(token) < 32 or _UUID_RE.fullmatch(token):
        return None
    if _HEX_RE.fullmatch(token):
        has_digit = any(c.isdigit() for c in token)
        has_letter = any(c.isalpha() for c in token)
        if has_digit and has_letter and shannon_entropy(token) >= 3.0:
            return "HIGH_ENTROPY_SECRET"
        return None
    body = token.rstrip("=")
    if not (
        any(c.islower() for c in body)
        and any(c.isupper() for c in body)
        and any(c.isdigit() for c in body)
    ):
        return None  # identifiers, paths and words rarely mix all three classes
    if "/" in body and max(len(part) for part in body.split("/")) < 16:
        return None  # a URL path, not a key
    if shannon_entropy(body) < 4.0:
        return None
    if len(token) == 40 and "_" not in token and "-" not in token:
        return "AWS_SECRET_KEY"
    return "HIGH_ENTROPY_SECRET"


def classify_token(token: str) -> str | None:
    if AWS_ACCESS_KEY_RE.fullmatch(token):
        return "AWS_ACCESS_KEY"
    if API_TOKEN_RE.fullmatch(token):
        return "API_TOKEN"
    return classify_long_token(token)


def accept_token(match: re.Match[str], text: str) -> Span | None:
    token = match.group()
    entity = classify_token(token)
    return (match.start(), match.end(), entity, token) if entity else None


def _has_long_word(text: str) -> bool:
    """A 20+ char whitespace-free word: split/map/len run in C."""
    return len(text) >= 20 and max(map(len, text.split()), default=0) >= 20


# Candidate patterns (RE2 syntax) for the prefilter; each matches wherever its detector's
# precise pattern can. \p{Nd} is what Python's \d matches in a str pattern.
_D = r"\p{Nd}"
# What Python's \s matches in a str pattern (RE2's \s is ASCII whitespace only).
_S = r"[\s\v\x1c-\x1f\x85\p{Z}]"
CANDIDATES = {
    "PRIVATE_KEY": "-----BEGIN",
    "URL_CREDENTIALS": r"://[^\s/@]+:[^\s/@]+@",
    "JWT": r"eyJ[A-Za-z0-9_-]{8,}\.eyJ",
    # classify_token: an AWS key id, a known API-token prefix, or a 32+ char run (with up to
    # two "=" of padding, so 30 token chars).
    "TOKEN": (
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}|gh[pousr]_|github_pat_|sk-|[sr]k_(?:live|test)_"
        r"|xox[abposr]-|glpat-|AIza|hf_|npm_|pypi-|[A-Za-z0-9+/_\-]{30}"
    ),
    "EMAIL": r"[A-Za-z0-9._%+-]@[A-Za-z0-9]",
    "IBAN": rf"[A-Z]{{2}}{_D}{{2}} ?[A-Z0-9]{{4}}",
    "CREDIT_CARD": rf"{_D}(?:[ -]?{_D}){{12}}",
    "US_SSN": rf"{_D}{{3}}[- ]{_D}{{2}}[- ]{_D}{{4}}",
    "IPV4": rf"{_D}{{1,3}}\.{_D}{{1,3}}\.{_D}{{1,3}}\.{_D}{{1,3}}",
    "IPV6": r":[0-9A-Fa-f]{0,4}:",
    "PHONE": rf"\+{_D}|\({_D}{{3}}\)|{_D}{{3}}[.-]{_D}{{3}}[.-]{_D}{{4}}|0{_D}{{1,4}}[ -]{_D}{{3}}",
    "DATE_OF_BIRTH": r"(?i)birth|born|d\.?o\.?b",
    "STREET_ADDRESS": (
        rf"{_D}[A-Za-z]?(?:{_S}+[A-Z][A-Za-z'\x{{2019}}.\-]*){{1,4}}{_S}+{_STREET_TYPES}(?:[^A-Za-z]|$)"
        rf"|(?:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee|laan|straat|gracht|plein){_S}+{_D}"
        rf"|{_D}(?:{_S}*(?:bis|ter))?,?{_S}+(?:rue|avenue|boulevard|place|chemin|impasse|quai){_S}"
    ),
}


def build_detectors() -> list[Detector]:
    """All pattern detectors, highest priority first (structured secrets before generic ones)."""

    def one(entity: str) -> frozenset[str]:
        return frozenset({entity})

    c = CANDIDATES
    tokens = frozenset({"AWS_ACCESS_KEY", "API_TOKEN", "AWS_SECRET_KEY", "HIGH_ENTROPY_SECRET"})
    numeric = {"anchor": NUMERIC_RUN, "back": 2, "ahead": 1}
    return [
        Detector(
            one("PRIVATE_KEY"),
            _contains("-----BEGIN"),
            PRIVATE_KEY_RE,
            accept_whole_as("PRIVATE_KEY"),
            0,
            c["PRIVATE_KEY"],
        ),
        Detector(
            one("URL_CREDENTIALS"),
            _contains("://"),
            URL_CREDENTIALS_RE,
            accept_url_credentials,
            1,
            c["URL_CREDENTIALS"],
        ),
        Detector(one("JWT"), _contains("eyJ"), JWT_RE, accept_whole_as("JWT"), 2, c["JWT"]),
        Detector(tokens, _has_long_word, TOKEN_RUN_RE, accept_token, 3, c["TOKEN"]),
        Detector(
            one("EMAIL"), _contains("@"), EMAIL_RE, accept_email, 5, c["EMAIL"], AT_SIGN, 64, 256
        ),
        Detector(one("IBAN"), None, IBAN_RE, accept_iban, 6, c["IBAN"]),
        Detector(one("DATE_OF_BIRTH"), None, DOB_RE, accept_dob, 6, c["DATE_OF_BIRTH"]),
        Detector(one("CREDIT_CARD"), None, CARD_RE, accept_card, 7, c["CREDIT_CARD"], **numeric),
        Detector(one("US_SSN"), None, SSN_RE, accept_ssn, 8, c["US_SSN"], **numeric),
        Detector(one("IP_ADDRESS"), None, IPV4_RE, accept_ipv4, 9, c["IPV4"], **numeric),
        Detector(one("IP_ADDRESS"), _ipv6_gate, IPV6_RE, accept_ipv6, 10, c["IPV6"]),
        Detector(one("PHONE"), None, PHONE_RE, accept_phone, 11, c["PHONE"], **numeric),
        Detector(one("STREET_ADDRESS"), None, ADDRESS_RE, accept_address, 12, c["STREET_ADDRESS"]),
    ]
