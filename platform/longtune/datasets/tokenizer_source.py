"""Which tokenizer counts a file's tokens, loaded with the `tokenizers` library (no torch).

Why `tokenizers` and not transformers: it is a small Rust extension that loads in
milliseconds, so both the cpu worker (scrub task) and the web process (token_stats
endpoint) can count with a base model's real vocabulary without pulling in torch.

Why only ``tokenizer.json`` is fetched for ``s3://`` locations: counting needs the
vocabulary, not gigabytes of weights. The object is cached on disk under its ETag, so a
re-uploaded tokenizer is fetched again and an unchanged one never is.

Counts are ``len(tokenizer.encode(text).ids)``: the tokenizer's own special tokens (e.g.
BOS) included, the chat template a job may add excluded.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from django.conf import settings

from longtune.datasets.tokens import CountTokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from longtune.catalog.models import BaseModel
    from longtune.tenancy.models import Organization

logger = logging.getLogger("longtune.datasets")

TOKENIZER_FILE = "tokenizer.json"
# Without a tokenizer: ~4 UTF-8 bytes per token is the usual ratio of BPE vocabularies on
# English text.
BYTES_PER_TOKEN_ESTIMATE = 4
ESTIMATE_NAME = f"estimate: bytes/{BYTES_PER_TOKEN_ESTIMATE}"


class TokenizerUnavailable(Exception):
    """The model has no loadable tokenizer.json at its location."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN_ESTIMATE)


@dataclass(frozen=True)
class TokenCounter:
    """A named counting function; ``name`` goes into reports so a number says what made it."""

    name: str
    count: CountTokens
    is_estimate: bool = False

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]


@dataclass(frozen=True)
class _TokenizerCounter(TokenCounter):
    tokenizer: Tokenizer | None = None

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Batched: the Rust side encodes a batch in parallel."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]


ESTIMATE = TokenCounter(ESTIMATE_NAME, estimate_tokens, is_estimate=True)


# --- which model ---------------------------------------------------------------------------


def default_base_model(org: Organization) -> BaseModel | None:
    """The model whose tokenizer counts at upload time (the training model is not known yet):
    settings.LONGTUNE_DEFAULT_BASE_MODEL if the org may use it, else the first public model."""
    from longtune.catalog.models import BaseModel
    from longtune.catalog.resolution import visible_base_models

    name = getattr(settings, "LONGTUNE_DEFAULT_BASE_MODEL", None)
    if name:
        named = visible_base_models(org).filter(name=name).first()
        if named is not None:
            return named
    return BaseModel.objects.filter(is_public=True).order_by("name").first()


# --- loading -------------------------------------------------------------------------------


def counter_for(model: BaseModel) -> TokenCounter:
    """The model's tokenizer as a counter; TokenizerUnavailable if it cannot be loaded."""
    tokenizer = load_tokenizer(model.location)

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    return _TokenizerCounter(model.name, count, tokenizer=tokenizer)


def default_counter(org: Organization) -> TokenCounter:
    """The default base model's tokenizer, or the bytes/4 estimate when there is none."""
    model = default_base_model(org)
    if model is None:
        return ESTIMATE
    try:
        return counter_for(model)
    except TokenizerUnavailable as exc:
        logger.warning("counting with the estimate: %s", exc)
        return ESTIMATE


def load_tokenizer(location: str) -> Tokenizer:
    path = tokenizer_path(location)
    try:
        return _load_file(str(path), path.stat().st_mtime_ns)
    except Exception as exc:  # a corrupt file is as unavailable as a missing one
        from longtune.compute.time_limits import is_time_limit

        if is_time_limit(exc):  # the scrub's time limit, not a bad file: let the task see it
            raise
        raise TokenizerUnavailable(f"cannot load {path}: {exc}") from exc


@lru_cache(maxsize=8)
def _load_file(path: str, mtime_ns: int) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def tokenizer_path(location: str) -> Path:
    """A local tokenizer.json for a model location (local dir, file:// or s3://)."""
    if location.startswith("s3://"):
        return _fetch_s3_tokenizer(location)
    path = Path(location.removeprefix("file://")).expanduser() / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerUnavailable(f"no {TOKENIZER_FILE} in {location}")
    return path


def _fetch_s3_tokenizer(location: str) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    key = f"{prefix}/{TOKENIZER_FILE}" if prefix else TOKENIZER_FILE
    client = boto3.client(
        "s3", endpoint_url=settings.S3_ENDPOINT_URL or None, region_name=settings.S3_REGION
    )
    try:
        etag = client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        digest = hashlib.sha256(f"{bucket}/{key}@{etag}".encode()).hexdigest()[:32]
        cached = Path(settings.MODELS_DIR) / "tokenizers" / digest / TOKENIZER_FILE
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(TOKENIZER_FILE + ".partial")
            client.download_file(bucket, key, str(partial))
            partial.replace(cached)
        return cached
    except (BotoCoreError, ClientError, OSError) as exc:
        raise TokenizerUnavailable(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc
