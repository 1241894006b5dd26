"""The engine decodes exactly what model.generate decodes, alone, batched and chunked."""

from __future__ import annotations

import asyncio

import pytest

from gpu_runtime.serving import GenerationRequest, SamplingParams

from .conftest import PROMPTS, greedy_reference

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt).input_ids


def test_single_request_matches_generate_token_for_token(
    engine_factory, base_model, serving_tokenizer
):
    engine = engine_factory()
    result = engine.generate(GenerationRequest(prompt=PROMPTS[2], sampling=GREEDY), timeout=30)
    ids = _prompt_ids(serving_tokenizer, PROMPTS[2])
    assert list(result.token_ids) == greedy_reference(base_model, serving_tokenizer, ids, 16)
    assert result.text == serving_tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert result.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (len(ids), 16)
    assert result.usage.total_tokens == len(ids) + 16
    metrics = result.metrics
    assert 0 < metrics.ttft_s <= metrics.total_s and metrics.decode_tokens_per_s > 0


def test_concurrent_requests_are_batched_and_equal_sequential(
    engine_factory, base_model, serving_tokenizer
):
    # Different prompt lengths and max_tokens: rows are left-padded, requests leave mid-batch.
    engine = engine_factory(autostart=False, prefill_chunk_size=8)
    requests = [
        GenerationRequest(
            prompt=p,
            sampling=SamplingParams(max_tokens=10 + 3 * i, temperature=0.0, ignore_eos=True),
        )
        for i, p in enumerate(PROMPTS)
    ]
    handles = [engine.submit(r) for r in requests]
    engine.start()
    results = [h.result(30) for h in handles]
    assert engine.stats.max_decode_batch == len(PROMPTS)  # really decoded together
    for request, result in zip(requests, results, strict=True):
        ids = _prompt_ids(serving_tokenizer, request.prompt)
        expected = greedy_reference(base_model, serving_tokenizer, ids, request.sampling.max_tokens)
        assert list(result.token_ids) == expected, request.prompt


def test_request_joining_a_running_batch_matches_generate(
    engine_factory, base_model, serving_tokenizer
):
    engine = engine_factory(prefill_chunk_size=4)
    long_running = engine.submit(
        GenerationRequest(
            prompt=PROMPTS[0],
            sampling=SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True),
        )
    )
    next(iter(long_running.stream(timeout=30)))  # it is decoding now
    late = engine.generate(GenerationRequest(prompt=PROMPTS[2], sampling=GREEDY), timeout=30)
    first = long_running.result(30)
    assert engine.stats.max_decode_batch == 2
    for prompt, result in ((PROMPTS[0], first), (PROMPTS[2], late)):
        ids = _prompt_ids(serving_tokenizer, prompt)
        assert list(result.token_ids) == greedy_reference(
            base_model, serving_tokenizer, ids, len(result.token_ids)
        )


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_prefill_gives_the_same_output(
    engine_factory, base_model, serving_tokenizer, chunk
):
    engine = engine_factory(prefill_chunk_size=chunk)
    result = engine.generate(GenerationRequest(prompt=PROMPTS[2], sampling=GREEDY), timeout=30)
    ids = _prompt_ids(serving_tokenizer, PROMPTS[2])
    assert result.metrics.prefill_chunks == -(-len(ids) // chunk)
    assert list(result.token_ids) == greedy_reference(base_model, serving_tokenizer, ids, 16)


def test_stream_deltas_add_up_to_the_result(engine_factory):
    engine = engine_factory()
    handle = engine.submit(GenerationRequest(prompt=PROMPTS[1], sampling=GREEDY))
    deltas = list(handle.stream(timeout=30))
    result = handle.result(1)
    assert "".join(d.text for d in deltas) == result.text
    assert tuple(t for d in deltas for t in d.token_ids) == result.token_ids
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + ["length"]


def test_async_stream_matches_sync_result(engine_factory):
    engine = engine_factory()

    async def consume():
        handle = engine.submit(GenerationRequest(prompt=PROMPTS[3], sampling=GREEDY))
        return [d async for d in handle.astream()], handle

    deltas, handle = asyncio.run(consume())
    assert "".join(d.text for d in deltas) == handle.result(1).text
    assert deltas[-1].finish_reason == "length"


def test_stop_sequence_spanning_tokens_cuts_the_text(engine_factory, serving_tokenizer):
    engine = engine_factory()
    free = engine.generate(GenerationRequest(prompt=PROMPTS[0], sampling=GREEDY), timeout=30)
    # Token boundaries of the free-running text: pick a stop that starts inside one token's
    # text and ends inside a later one.
    ends = [
        len(serving_tokenizer.decode(free.token_ids[: i + 1])) for i in range(len(free.token_ids))
    ]
    k = next(
        i
        for i in range(2, len(ends) - 1)
        if ends[i] - ends[i - 1] >= 2 and ends[i + 1] - ends[i] >= 2
    )
    stop = free.text[ends[k] - 1 : ends[k + 1] - 1]  # last char of token k + head of token k+1
    expected = free.text[: free.text.find(stop)]
    handle = engine.submit(
        GenerationRequest(
            prompt=PROMPTS[0],
            sampling=SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, stop=(stop,)),
        )
    )
    streamed = "".join(d.text for d in handle.stream(timeout=30))
    result = handle.result(1)
    assert result.finish_reason == "stop"
    assert result.text == streamed == expected
    assert stop not in result.text
    assert result.usage.completion_tokens < 16


def test_eos_token_finishes_with_stop(engine_factory, serving_tokenizer):
    engine = engine_factory()
    free = engine.generate(GenerationRequest(prompt=PROMPTS[1], sampling=GREEDY), timeout=30)
    # Declare the 4th generated token a stop token: generation ends on it, reason "stop".
    stop_id = free.token_ids[3]
    first = free.token_ids.index(stop_id)
    result = engine.generate(
        GenerationRequest(
            prompt=PROMPTS[1],
            sampling=SamplingParams(max_tokens=16, temperature=0.0, stop_token_ids=(stop_id,)),
        ),
        timeout=30,
    )
    assert result.finish_reason == "stop"
    assert result.token_ids == free.token_ids[: first + 1]
    assert result.text == serving_tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)


def test_seeded_sampling_is_reproducible_alone_or_batched(engine_factory):
    engine = engine_factory()

    def sampled(seed: int) -> GenerationRequest:
        return GenerationRequest(
            prompt=PROMPTS[0],
            sampling=SamplingParams(
                max_tokens=20, temperature=1.0, top_p=0.95, seed=seed, ignore_eos=True
            ),
        )

    alone = engine.generate(sampled(11), timeout=30).token_ids
    handles = [engine.submit(sampled(s)) for s in (11, 11, 12)]
    batched = [h.result(30).token_ids for h in handles]
    assert batched[0] == batched[1] == alone
    assert batched[2] != alone
