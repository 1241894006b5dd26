"""API key and invitation token material: generation and hashing.

Stored form: SHA-256 of the full secret, hex. Why a fast, unsalted hash is right here (and
bcrypt/argon2 would be wrong):
- The secrets are 286 bits of randomness from ``secrets`` (48 base62 chars), not human
  passwords. Guessing one is hopeless at any hash speed, so slow hashing buys nothing — while
  it would add ~100 ms of CPU to EVERY API request.
- An unsalted digest is deterministic, so authentication is one indexed equality lookup
  (``key_hash = sha256(presented key)``) instead of a scan comparing against every key.
- A database leak reveals only digests; without the secret nobody can authenticate.
We deliberately do not HMAC with SECRET_KEY: rotating SECRET_KEY would then invalidate every
key ever issued.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

API_KEY_PREFIX = "lt_"
_ALPHABET = string.ascii_letters + string.digits
API_KEY_RANDOM_LENGTH = 48
INVITATION_TOKEN_RANDOM_LENGTH = 40


@dataclass(frozen=True)
class NewSecret:
    """A freshly generated secret: show ``secret`` once, store ``digest`` and ``last_four``."""

    secret: str
    digest: str
    last_four: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_api_key() -> NewSecret:
    secret = API_KEY_PREFIX + _random(API_KEY_RANDOM_LENGTH)
    return NewSecret(secret=secret, digest=hash_secret(secret), last_four=secret[-4:])


def generate_invitation_token() -> NewSecret:
    secret = "inv_tok_" + _random(INVITATION_TOKEN_RANDOM_LENGTH)
    return NewSecret(secret=secret, digest=hash_secret(secret), last_four=secret[-4:])


def redacted(secret_last_four: str) -> str:
    return f"{API_KEY_PREFIX}...{secret_last_four}"
