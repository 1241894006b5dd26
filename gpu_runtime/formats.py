"""Turn one training example (chat, prompt/completion or plain text) into ids + loss labels.

Labels are aligned with input ids: labels[t] is input_ids[t] where token t is a training
target and -100 where it is not. The one-token shift (position t predicts t + 1) happens in
the loss (`loss.chunked_causal_lm_loss`), never here.

Which tokens are targets is decided on characters, not on separately tokenized pieces: the
example is rendered to one string, tokenized once with offset mapping, and a token is a target
when its characters overlap a trained span. Tokenizing pieces separately would change BPE
merges at the seams and train on ids the model never sees at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


class ExampleFormatError(ValueError):
    """An example does not match any supported format; `field` names the offending key."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # same length; IGNORE_INDEX where no loss

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError("input_ids and labels must have the same length")

    def __len__(self) -> int:
        return len(self.input_ids)


Span = tuple[int, int]  # [start, end) in characters


def example_kind(example: dict[str, Any]) -> str:
    """'chat', 'prompt_completion' or 'text'; raises ExampleFormatError otherwise."""
    if not isinstance(example, dict):
        raise ExampleFormatError("example must be a JSON object")
    if "messages" in example:
        return "chat"
    if "prompt" in example or "completion" in example:
        return "prompt_completion"
    if "text" in example:
        return "text"
    raise ExampleFormatError(
        "example needs 'messages', 'prompt'+'completion' or 'text'", field="messages"
    )


def _require_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ExampleFormatError(f"{field} must be a string", field=field)
    return value


def _validate_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ExampleFormatError("messages must be a non-empty list", field="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ExampleFormatError("each message must be an object", field=f"messages[{i}]")
        if message.get("role") not in ("system", "user", "assistant"):
            raise ExampleFormatError(
                "role must be system, user or assistant", field=f"messages[{i}].role"
            )
        _require_str(message.get("content"), f"messages[{i}].content")
        if message.get("weight", 1) not in (0, 1):
            raise ExampleFormatError("weight must be 0 or 1", field=f"messages[{i}].weight")
    return messages


def _render_chat(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, **kwargs)


def _chat_text_and_spans(
    tokenizer: Any, messages: list[dict[str, Any]], train_on_inputs: bool
) -> tuple[str, list[Span]]:
    """Render the conversation and the character spans of trained assistant replies.

    An assistant span runs from the end of the generation prompt (`add_generation_prompt=True`
    on the preceding turns) to the end of the turn, so it covers the reply and the template's
    end-of-turn marker — the model must learn to stop — but not the role header.
    """
    text = _render_chat(tokenizer, messages)
    if train_on_inputs:
        return text, [(0, len(text))]
    spans: list[Span] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        upto = _render_chat(tokenizer, messages[: i + 1])
        if i:
            prompt = _render_chat(tokenizer, messages[:i], add_generation_prompt=True)
            start = len(prompt) if upto.startswith(prompt) else -1
        else:  # templates refuse an empty conversation: find the reply text instead
            start = upto.rfind(message["content"]) if message["content"] else -1
        if start < 0 or not text.startswith(upto):
            raise ExampleFormatError(
                "the tokenizer's chat template does not render conversations prefix-stably; "
                "cannot locate assistant turns",
                field=f"messages[{i}]",
            )
        spans.append((start, len(upto)))
    return text, spans


def _labels_for_spans(
    input_ids: list[int], offsets: list[tuple[int, int]], spans: list[Span]
) -> list[int]:
    labels = [IGNORE_INDEX] * len(input_ids)
    for t, (start, end) in enumerate(offsets):
        if end <= start:  # special tokens added by the post-processor have empty offsets
            continue
        if any(start < span_end and end > span_start for span_start, span_end in spans):
            labels[t] = input_ids[t]
    return labels


def tokenize_example(
    example: dict[str, Any], tokenizer: Any, *, train_on_inputs: bool = False
) -> TokenizedExample:
    """Tokenize one example and mark its loss targets, then append eos (a trained target when the
    example's last segment is trained, so the model learns to end its answer)."""
    kind = example_kind(example)
    add_special_tokens = True
    if kind == "chat":
        messages = _validate_messages(example["messages"])
        text, spans = _chat_text_and_spans(tokenizer, messages, train_on_inputs)
        add_special_tokens = False  # the template already places bos
        last_trained = messages[-1]["role"] == "assistant" and messages[-1].get("weight", 1) != 0
    elif kind == "prompt_completion":
        prompt = _require_str(example.get("prompt"), "prompt")
        completion = _require_str(example.get("completion"), "completion")
        text = prompt + completion
        spans = [(0 if train_on_inputs else len(prompt), len(text))]
        last_trained = bool(completion)
    else:
        text = _require_str(example["text"], "text")
        spans = [(0, len(text))]
        last_trained = True

    encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = _labels_for_spans(input_ids, list(encoding["offset_mapping"]), spans)

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id")
    if not input_ids or input_ids[-1] != eos:
        input_ids.append(eos)
        labels.append(eos if (last_trained or train_on_inputs) else IGNORE_INDEX)
    return TokenizedExample(input_ids=input_ids, labels=labels)
