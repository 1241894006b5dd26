"""The API's errors, shown next to a form's fields.

Services raise ``ApiError`` (one code, one ``param``) and serializers raise DRF's
``ValidationError`` (a tree of field paths). A page shows the SAME messages the API would send,
keyed by the same dotted path (``hyperparameters.n_epochs``); the page maps paths to its inputs.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions

from longtune.api.errors import ApiError

NON_FIELD = "form"  # templates cannot read keys starting with "_"


def _flatten(detail: Any, prefix: str, out: dict[str, list[str]]) -> None:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = NON_FIELD if key == "non_field_errors" else str(key)
            _flatten(value, f"{prefix}.{name}" if prefix else name, out)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                _flatten(value, f"{prefix}.{index}" if prefix else str(index), out)
            else:
                out.setdefault(prefix or NON_FIELD, []).append(str(value))
    else:
        out.setdefault(prefix or NON_FIELD, []).append(str(detail))


def field_errors(exc: exceptions.APIException) -> dict[str, list[str]]:
    """``{"dotted.path": [message, ...]}``; errors of the whole request under ``form``."""
    if isinstance(exc, ApiError):
        return {exc.param or NON_FIELD: [exc.message]}
    out: dict[str, list[str]] = {}
    _flatten(exc.detail, "", out)
    return out


def for_inputs(errors: dict[str, list[str]], aliases: dict[str, str]) -> dict[str, list[str]]:
    """Re-key API paths to the form's input names (``aliases``: path -> input); a path no input
    shows stays visible under ``form`` with its path, so no error is ever swallowed."""
    out: dict[str, list[str]] = {}
    for path, messages in errors.items():
        if path in aliases:
            out.setdefault(aliases[path], []).extend(messages)
        elif path == NON_FIELD:
            out.setdefault(NON_FIELD, []).extend(messages)
        else:
            out.setdefault(NON_FIELD, []).extend(f"{path}: {m}" for m in messages)
    return out
