"""A temperature too small to divide logits by is greedy decoding, not a NaN (a fuzzer's 500)."""

from __future__ import annotations

from longtune.inference.serializers import GREEDY_TEMPERATURE, CompletionRequestSerializer


def temperature_after_validation(value: float) -> float:
    body = CompletionRequestSerializer(
        data={"model": "m", "prompt": "p", "temperature": value, "max_tokens": 1}
    )
    assert body.is_valid(), body.errors
    return body.validated_data["temperature"]


def test_denormal_temperature_is_greedy():
    assert temperature_after_validation(1.401298464324817e-45) == 0.0
    assert temperature_after_validation(GREEDY_TEMPERATURE / 2) == 0.0
    assert temperature_after_validation(0.7) == 0.7
