"""Load base models from a local directory or an object-storage prefix — never from a hub.

A model location is either a directory (config.json + *.safetensors + tokenizer files) or
`s3://bucket/prefix`, which is mirrored into a local cache first (boto3; endpoint from
S3_ENDPOINT_URL so MinIO/moto/R2 work). Everything then goes through the same
`from_pretrained(..., local_files_only=True)` path, so the tiny test model and an operator's
Llama-3 checkpoint are loaded by identical code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from gpu_runtime.attention import select_attention_implementation
from gpu_runtime.rope import (
    DEFAULT_ROPE_METHOD,
    ContextSpec,
    apply_context,
    apply_rope_scaling,
    original_context_length,
)

# Llama-architecture decoders with RoPE whose attention goes through AttentionInterface.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3")
_MANIFEST = ".longtune-s3-manifest.json"


class ModelLocationError(ValueError):
    """The location does not hold a loadable model (missing, empty, unsupported)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("LONGTUNE_MODEL_CACHE", Path.home() / ".cache/longtune/models"))


def _s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)


def _list_objects(client, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """key -> (etag, size) for every object under prefix."""
    objects: dict[str, tuple[str, int]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"]] = (item["ETag"], int(item["Size"]))
    return objects


def _safe_relative(key: str, prefix: str) -> PurePosixPath:
    relative = PurePosixPath(key[len(prefix) :].lstrip("/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ModelLocationError(f"refusing to mirror object key {key!r} outside the cache")
    return relative


def download_s3_prefix(location: str, cache_dir: str | Path | None = None) -> Path:
    """Mirror s3://bucket/prefix into cache_dir/bucket/prefix; unchanged objects are skipped.

    Files are written to a temporary name and renamed, and a manifest of ETags says what the
    cache holds, so an interrupted download is resumed and a changed object is fetched again.
    """
    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise ModelLocationError(f"{location!r} has no bucket")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    target = Path(cache_dir or default_cache_dir()) / bucket / prefix
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / _MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    client = _s3_client()
    objects = _list_objects(client, bucket, prefix)
    if not objects:
        raise ModelLocationError(f"no objects under {location}")
    for key, (etag, size) in sorted(objects.items()):
        relative = _safe_relative(key, prefix)
        local = target / relative
        if manifest.get(str(relative)) == etag and local.exists() and local.stat().st_size == size:
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".partial")
        client.download_file(bucket, key, str(partial))
        partial.replace(local)
        manifest[str(relative)] = etag
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return target


def resolve_model_dir(location: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding the model at `location` (downloading s3:// prefixes)."""
    if location.startswith("s3://"):
        path = download_s3_prefix(location, cache_dir)
    else:
        path = Path(location.removeprefix("file://")).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLocationError(f"{location!r} is not a model directory (no config.json)")
    return path


def load_tokenizer(location: str, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_model_dir(location, cache_dir), local_files_only=True
    )


def load_model(
    location: str,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str = "auto",
    rope_method: str | None = None,
    target_context: int | None = None,
    context: ContextSpec | None = None,
    cache_dir: str | Path | None = None,
) -> PreTrainedModel:
    """Load a causal LM, optionally RoPE-extended to `target_context` with `rope_method`.

    `context` (a planned ContextSpec, e.g. a job's) is applied verbatim and excludes the two
    others. rope_method alone keeps the original context (factor 1); target_context alone uses
    the default method. Attention "auto" becomes flash_attention_2 on CUDA+flash-attn, else
    LongTune's packed-aware varlen SDPA.
    """
    model_dir = resolve_model_dir(location, cache_dir)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLocationError(
            f"model type {config.model_type!r} is not supported; expected one of "
            f"{SUPPORTED_MODEL_TYPES}"
        )
    if context is not None:
        if rope_method is not None or target_context is not None:
            raise ValueError("give either a context spec or rope_method/target_context, not both")
        config = apply_context(config, context)
    elif rope_method is not None or target_context is not None:
        config = apply_rope_scaling(
            config,
            rope_method or DEFAULT_ROPE_METHOD,
            target_context or original_context_length(config),
        )
    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        config=config,
        dtype=dtype if dtype is not None else "auto",  # the checkpoint's own dtype
        attn_implementation=select_attention_implementation(attn_implementation),
        local_files_only=True,
    )
