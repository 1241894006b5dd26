"""The registry loads local directories and s3:// prefixes (real moto S3 server)."""

from __future__ import annotations

import json

import boto3
import pytest
import torch

from gpu_runtime.attention import VARLEN_SDPA
from gpu_runtime.registry import (
    ModelLocationError,
    load_model,
    load_tokenizer,
    resolve_model_dir,
)


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint)


def _upload_dir(endpoint: str, local_dir, bucket: str, prefix: str) -> None:
    s3 = _s3(endpoint)
    s3.create_bucket(Bucket=bucket)
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_dir)}")


def _reference_logits(model_dir):
    model = load_model(str(model_dir)).eval()
    with torch.no_grad():
        return model(input_ids=torch.arange(3, 40)[None], use_cache=False).logits


def test_loads_local_dir_with_auto_attention_on_cpu(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    assert model.config._attn_implementation == VARLEN_SDPA  # no CUDA here
    assert model.dtype == torch.float32
    assert type(model).__name__ == "LlamaForCausalLM"
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert tokenizer.decode(tokenizer("the river").input_ids, skip_special_tokens=True) == (
        "the river"
    )
    assert tokenizer.chat_template


def test_dtype_and_explicit_attention(tiny_model_dir):
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16, attn_implementation="sdpa")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "sdpa"


def test_missing_or_unsupported_locations_fail_clearly(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLocationError, match="no config.json"):
        resolve_model_dir(str(tmp_path))
    bert_like = tmp_path / "bert"
    bert_like.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (bert_like / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ModelLocationError, match="not supported"):
        load_model(str(bert_like))


@pytest.mark.integration
def test_loads_from_s3_prefix(s3_env, tiny_model_dir, tmp_path):
    _upload_dir(s3_env, tiny_model_dir, "models", "base/tiny-llama")
    location = "s3://models/base/tiny-llama"
    cache = tmp_path / "cache"

    model_dir = resolve_model_dir(location, cache_dir=cache)
    assert model_dir == cache / "models" / "base" / "tiny-llama"
    assert (model_dir / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()

    torch.testing.assert_close(_reference_logits(model_dir), _reference_logits(tiny_model_dir))


@pytest.mark.integration
def test_s3_cache_skips_unchanged_and_refetches_changed_objects(s3_env, tiny_model_dir, tmp_path):
    _upload_dir(s3_env, tiny_model_dir, "models2", "tiny")
    cache = tmp_path / "cache"
    model_dir = resolve_model_dir("s3://models2/tiny", cache_dir=cache)
    weights = model_dir / "model.safetensors"
    first_mtime = weights.stat().st_mtime_ns

    resolve_model_dir("s3://models2/tiny", cache_dir=cache)
    assert weights.stat().st_mtime_ns == first_mtime  # not downloaded again

    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 512
    _s3(s3_env).put_object(
        Bucket="models2", Key="tiny/config.json", Body=json.dumps(config).encode()
    )
    resolve_model_dir("s3://models2/tiny", cache_dir=cache)
    assert json.loads((model_dir / "config.json").read_text())["max_position_embeddings"] == 512


@pytest.mark.integration
def test_s3_rope_extension_on_load(s3_env, tiny_model_dir, tmp_path):
    _upload_dir(s3_env, tiny_model_dir, "models3", "tiny")
    model = load_model(
        "s3://models3/tiny", rope_method="yarn", target_context=1024, cache_dir=tmp_path
    )
    assert model.config.rope_parameters["rope_type"] == "yarn"
    assert model.config.max_position_embeddings == 1024


@pytest.mark.integration
def test_empty_s3_prefix_is_an_error(s3_env, tmp_path):
    _s3(s3_env).create_bucket(Bucket="empty")
    with pytest.raises(ModelLocationError, match="no objects"):
        resolve_model_dir("s3://empty/nothing", cache_dir=tmp_path)


@pytest.mark.parametrize("key", ["tiny/../../etc/passwd", "tiny/"])
def test_object_keys_cannot_escape_the_cache(key):
    from gpu_runtime.registry import _safe_relative

    with pytest.raises(ModelLocationError):
        _safe_relative(key, "tiny/")
