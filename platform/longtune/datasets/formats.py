"""The three accepted example shapes, their detection and per-line checks.

chat         {"messages": [{"role": "system"|"user"|"assistant", "content": str,
                            "weight": 0|1 (assistant only, optional)}, ...]}
instruction  {"prompt": str, "completion": str}
text         {"text": str}                     (continued pre-training)

Why detect from the first valid line and reject mixing: a training job picks
one loss masking scheme per file (assistant-only, completion-only, or every
token); a file that mixes shapes would silently train on the wrong tokens.
Extra keys (e.g. "metadata") are allowed and ignored by training.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

ROLES = frozenset({"system", "user", "assistant"})


class DatasetFormat(StrEnum):
    CHAT = "chat"
    INSTRUCTION = "instruction"
    TEXT = "text"


class Issue(NamedTuple):
    """A line-level problem, before the line number is attached."""

    code: str
    message: str
    param: str | None = None


def detect_format(example: dict[str, Any]) -> DatasetFormat | None:
    """Shape of one object by its keys; None if it matches no format."""
    if "messages" in example:
        return DatasetFormat.CHAT
    if "prompt" in example or "completion" in example:
        return DatasetFormat.INSTRUCTION
    if "text" in example:
        return DatasetFormat.TEXT
    return None


def _check_text_field(
    example: dict[str, Any], field: str, allow_empty: bool = False
) -> list[Issue]:
    if field not in example:
        return [Issue("missing_field", f"Missing required field '{field}'.", field)]
    value = example[field]
    if not isinstance(value, str):
        return [
            Issue("invalid_type", f"'{field}' must be a string, got {_json_type(value)}.", field)
        ]
    if not allow_empty and not value.strip():
        return [Issue("empty_content", f"'{field}' is empty.", field)]
    return []


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _check_message(message: Any, index: int) -> list[Issue]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return [
            Issue("invalid_type", f"{where} must be an object, got {_json_type(message)}.", where)
        ]
    if "role" not in message:
        return [Issue("missing_field", f"{where} has no 'role'.", f"{where}.role")]
    role = message["role"]
    if not isinstance(role, str):
        return [Issue("invalid_type", f"{where}.role must be a string.", f"{where}.role")]
    if role not in ROLES:
        return [
            Issue(
                "unknown_role",
                f"{where}.role is {role!r}; expected system, user or assistant.",
                f"{where}.role",
            )
        ]
    issues = [
        i._replace(param=f"{where}.content", message=f"{where}: {i.message}")
        for i in _check_text_field(message, "content")
    ]
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            issues.append(
                Issue(
                    "invalid_weight",
                    f"{where}.weight is only allowed on assistant messages.",
                    f"{where}.weight",
                )
            )
        elif isinstance(weight, bool) or weight not in (0, 1):
            issues.append(
                Issue(
                    "invalid_weight",
                    f"{where}.weight must be 0 or 1, got {weight!r}.",
                    f"{where}.weight",
                )
            )
    return issues


def _validate_chat(example: dict[str, Any]) -> list[Issue]:
    messages = example["messages"]
    if not isinstance(messages, list):
        return [
            Issue(
                "invalid_type",
                f"'messages' must be an array, got {_json_type(messages)}.",
                "messages",
            )
        ]
    if not messages:
        return [Issue("empty_messages", "'messages' is empty.", "messages")]
    issues: list[Issue] = []
    for index, message in enumerate(messages):
        issues += _check_message(message, index)
    if issues:
        return issues
    assistant = [m for m in messages if m["role"] == "assistant"]
    if not assistant:
        return [
            Issue("no_assistant_message", "The conversation has no assistant message.", "messages")
        ]
    if all(m.get("weight", 1) == 0 for m in assistant):
        return [Issue("no_trainable_message", "Every assistant message has weight 0.", "messages")]
    return []


def _validate_instruction(example: dict[str, Any]) -> list[Issue]:
    # An empty prompt is legitimate (unconditional generation); an empty completion teaches nothing.
    return _check_text_field(example, "prompt", allow_empty=True) + _check_text_field(
        example, "completion"
    )


def _validate_text(example: dict[str, Any]) -> list[Issue]:
    return _check_text_field(example, "text")


_VALIDATORS = {
    DatasetFormat.CHAT: _validate_chat,
    DatasetFormat.INSTRUCTION: _validate_instruction,
    DatasetFormat.TEXT: _validate_text,
}

_PRIMARY_FIELD = {
    DatasetFormat.CHAT: "messages",
    DatasetFormat.INSTRUCTION: "completion",
    DatasetFormat.TEXT: "text",
}


def validate_example(example: dict[str, Any], expected: DatasetFormat) -> list[Issue]:
    """Issues for one object given the file's format; [] when it is a valid example."""
    found = detect_format(example)
    if found is None:
        field = _PRIMARY_FIELD[expected]
        return [
            Issue("missing_field", f"Missing required field '{field}' ({expected} format).", field)
        ]
    if found is not expected:
        return [
            Issue(
                "mixed_formats",
                f"This line is {found} format but the file is {expected} format.",
                _PRIMARY_FIELD[found],
            )
        ]
    return _VALIDATORS[expected](example)


def example_text(example: dict[str, Any], fmt: DatasetFormat) -> str:
    """The trainable text of a valid example (for token counts, dedup, decontamination)."""
    if fmt is DatasetFormat.CHAT:
        return "\n".join(m["content"] for m in example["messages"])
    if fmt is DatasetFormat.INSTRUCTION:
        return example["prompt"] + "\n" + example["completion"]
    return example["text"]
