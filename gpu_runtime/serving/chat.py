"""Chat prompts through the tokenizer's own chat template (what the model was tuned on)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpu_runtime.serving.types import GenerationRequest, InvalidRequestError, SamplingParams

ChatMessage = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


def validate_messages(messages: Sequence[ChatMessage]) -> None:
    if not messages:
        raise InvalidRequestError(
            "messages must not be empty", code="invalid_messages", field="messages"
        )
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise InvalidRequestError(
                "each message needs a string role and string content",
                code="invalid_messages",
                field=f"messages[{index}]",
            )


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """The prompt text: chat template with add_generation_prompt=True (ends with the assistant
    header). It already holds any BOS the template adds, so tokenize it without special tokens
    (`chat_prompt_token_ids`)."""
    validate_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError(
            "this model's tokenizer has no chat template; use a completion prompt",
            code="chat_template_missing",
            field="messages",
        )
    return tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )


def chat_prompt_token_ids(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    return tokenizer(render_chat(tokenizer, messages), add_special_tokens=False).input_ids


def chat_request(
    tokenizer: Any,
    messages: Sequence[ChatMessage],
    *,
    adapter: str | None = None,
    sampling: SamplingParams | None = None,
    **request_fields: Any,
) -> GenerationRequest:
    """A GenerationRequest for a chat conversation (prompt_token_ids from the template)."""
    return GenerationRequest(
        prompt_token_ids=chat_prompt_token_ids(tokenizer, messages),
        adapter=adapter,
        sampling=sampling or SamplingParams(),
        **request_fields,
    )
