"""Validation errors, cancellation, shutdown, chat prompts, thread-safe submission."""

from __future__ import annotations

import threading

import pytest

from gpu_runtime.serving import (
    ContextLengthError,
    EngineClosedError,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    chat_prompt_token_ids,
    chat_request,
    render_chat,
)

from .conftest import PROMPTS

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the river?"}]


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-1.0), "temperature"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(stop=("",)), "stop"),
    ],
)
def test_bad_sampling_params_name_the_field(engine_factory, sampling, field):
    engine = engine_factory()
    with pytest.raises(InvalidRequestError) as error:
        engine.submit(GenerationRequest(prompt="x", sampling=sampling))
    assert error.value.field == field and error.value.code.startswith("invalid_")


def test_bad_prompts_and_context_overflow_are_rejected(engine_factory):
    engine = engine_factory()
    for request in (
        GenerationRequest(),
        GenerationRequest(prompt="x", prompt_token_ids=[1]),
        GenerationRequest(prompt_token_ids=[]),
        GenerationRequest(prompt_token_ids=[10**6]),
    ):
        with pytest.raises(InvalidRequestError) as error:
            engine.submit(request)
        assert error.value.code == "invalid_prompt"
    with pytest.raises(ContextLengthError) as error:
        engine.submit(
            GenerationRequest(prompt="x", sampling=SamplingParams(max_tokens=engine.max_context))
        )
    assert error.value.field == "max_tokens"


def test_cancel_stops_a_running_request(engine_factory):
    engine = engine_factory()
    handle = engine.submit(
        GenerationRequest(
            prompt=PROMPTS[0],
            sampling=SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True),
        )
    )
    stream = handle.stream(timeout=30)
    next(stream)
    handle.cancel()
    rest = list(stream)
    result = handle.result(30)
    assert result.finish_reason == "cancelled" and rest[-1].finish_reason == "cancelled"
    assert result.usage.completion_tokens < 200
    # The engine keeps serving, and the request id can be reused.
    again = engine.generate(
        GenerationRequest(
            prompt=PROMPTS[0], request_id=handle.request_id, sampling=SamplingParams(max_tokens=3)
        ),
        timeout=30,
    )
    assert again.usage.completion_tokens <= 3


def test_duplicate_running_request_id_is_rejected(engine_factory):
    engine = engine_factory(autostart=False)
    engine.submit(GenerationRequest(prompt="x", request_id="r1"))
    with pytest.raises(InvalidRequestError) as error:
        engine.submit(GenerationRequest(prompt="y", request_id="r1"))
    assert error.value.code == "duplicate_request_id"


def test_shutdown_cancels_pending_and_refuses_new(engine_factory):
    engine = engine_factory(autostart=False)
    handle = engine.submit(GenerationRequest(prompt="x"))
    engine.shutdown()
    assert handle.result(5).finish_reason == "cancelled"
    with pytest.raises(EngineClosedError):
        engine.submit(GenerationRequest(prompt="x"))


def test_submit_from_many_threads(engine_factory):
    engine = engine_factory(max_batch_size=4)  # 12 requests: admission has to queue some
    results, errors = {}, []

    def client(i: int) -> None:
        try:
            request = GenerationRequest(
                prompt=PROMPTS[i % 4],
                sampling=SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True),
            )
            results[i] = engine.generate(request, timeout=60)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 12
    for i in range(4, 12):  # same prompt ⇒ same greedy tokens, whatever the batching
        assert results[i].token_ids == results[i % 4].token_ids
    assert 1 < engine.stats.max_decode_batch <= 4


def test_chat_uses_the_template_with_a_generation_prompt(serving_tokenizer, engine_factory):
    text = render_chat(serving_tokenizer, MESSAGES)
    assert text == "<s><|system|>\nBe brief.</s><|user|>\nthe river?</s><|assistant|>\n"
    ids = chat_prompt_token_ids(serving_tokenizer, MESSAGES)
    assert ids.count(serving_tokenizer.bos_token_id) == 1
    engine = engine_factory()
    request = chat_request(
        serving_tokenizer, MESSAGES, sampling=SamplingParams(max_tokens=4, temperature=0.0)
    )
    assert engine.generate(request, timeout=30).usage.prompt_tokens == len(ids)
    with pytest.raises(InvalidRequestError) as error:
        render_chat(serving_tokenizer, [{"role": "user"}])
    assert error.value.field == "messages[0]"
