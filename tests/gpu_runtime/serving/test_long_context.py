"""A prompt 8x the base's original context, served with YaRN, chunked, equals generate."""

from __future__ import annotations

import pytest

from gpu_runtime.registry import load_model, load_tokenizer
from gpu_runtime.serving import (
    ContextLengthError,
    EngineConfig,
    GenerationRequest,
    InferenceEngine,
    SamplingParams,
)
from gpu_runtime.tiny import build_tiny_model_dir, generate_corpus

from .conftest import greedy_reference

ORIGINAL_CONTEXT, SERVED_CONTEXT, PROMPT_TOKENS = 64, 1024, 512


@pytest.fixture(scope="module")
def short_base(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-64") / "model"
    return str(build_tiny_model_dir(path, seed=2, max_position_embeddings=ORIGINAL_CONTEXT))


def test_long_prompt_is_served_with_yarn_in_chunks(short_base):
    tokenizer = load_tokenizer(short_base)
    prompt_ids = tokenizer(" ".join(generate_corpus(seed=5, num_sentences=200))).input_ids[
        :PROMPT_TOKENS
    ]
    assert len(prompt_ids) == PROMPT_TOKENS
    model = load_model(short_base, rope_method="yarn", target_context=SERVED_CONTEXT).eval()
    engine = InferenceEngine(
        EngineConfig(
            base_model=short_base,
            rope_method="yarn",
            target_context=SERVED_CONTEXT,
            prefill_chunk_size=128,
        ),
        model=model,
        tokenizer=tokenizer,
    )
    try:
        assert engine.max_context == SERVED_CONTEXT
        request = GenerationRequest(
            prompt_token_ids=prompt_ids,
            sampling=SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True),
        )
        result = engine.generate(request, timeout=60)
        assert result.metrics.prefill_chunks == PROMPT_TOKENS // 128
        assert result.usage.prompt_tokens == PROMPT_TOKENS
        assert list(result.token_ids) == greedy_reference(model, tokenizer, prompt_ids, 8)

        too_long = GenerationRequest(
            prompt_token_ids=prompt_ids * 2, sampling=SamplingParams(max_tokens=8)
        )
        with pytest.raises(ContextLengthError) as error:
            engine.submit(too_long)
        assert (error.value.code, error.value.field) == ("context_length_exceeded", "prompt")
    finally:
        engine.shutdown()
