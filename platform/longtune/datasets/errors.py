"""Machine-readable error codes for dataset uploads.

Why one dict: the API, the Celery task and docs/dataset-errors.md all speak
these codes; a test renders the docs table from ERROR_CODES and fails when
they drift apart, so a code can't be added without being documented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# code -> (scope, meaning). Scope "line" errors carry the line number at
# fault; "file" errors stop processing (no line, or the line where it stopped).
ERROR_CODES: dict[str, tuple[str, str]] = {
    "invalid_compression": (
        "file",
        "The gzip/zstd stream is corrupt or truncated (e.g. an interrupted upload).",
    ),
    "unsupported_compression": (
        "file",
        "The file starts with the magic bytes of zip, bzip2 or xz; only plain, gzip or zstd JSONL is accepted.",
    ),
    "decompression_bomb": (
        "file",
        "Decompressed size exceeded `max_decompressed_bytes`, or the decompressed/compressed ratio exceeded `max_compression_ratio`.",
    ),
    "file_too_large": ("file", "The uploaded (compressed) bytes exceeded `max_upload_bytes`."),
    "empty_file": ("file", "The file holds no non-blank line."),
    "json_array_not_jsonl": (
        "file",
        "The file starts with `[`: it is one JSON array, not JSON Lines. Write one JSON object per line.",
    ),
    "too_many_lines": (
        "file",
        "The file has more lines than `max_lines`; processing stopped there.",
    ),
    "too_few_examples": (
        "file",
        "Fewer valid examples than `min_examples` (fine-tuning on fewer is not useful).",
    ),
    "line_too_long": (
        "line",
        "The line is longer than `max_line_bytes`; it was skipped without being loaded into memory.",
    ),
    "invalid_utf8": ("line", "The line is not valid UTF-8; `param` gives the byte offset."),
    "invalid_json": ("line", "The line is not valid JSON; `param` gives the column."),
    "not_an_object": ("line", "The line is valid JSON but not an object (`{...}`)."),
    "unknown_format": (
        "line",
        "The first object matches no format: expected `messages` (chat), `prompt`+`completion` (instruction) or `text`.",
    ),
    "mixed_formats": (
        "line",
        "The line is in a different format than the one detected from the first valid line.",
    ),
    "missing_field": ("line", "A required field is absent; `param` names it."),
    "invalid_type": ("line", "A field has the wrong JSON type; `param` names it."),
    "unknown_role": ("line", "A chat message role is not one of system, user, assistant."),
    "empty_content": ("line", "A text field is empty or whitespace only."),
    "empty_messages": ("line", "`messages` is an empty list."),
    "invalid_weight": ("line", "`weight` is not 0 or 1, or is set on a non-assistant message."),
    "no_assistant_message": ("line", "A chat example has no assistant message to learn from."),
    "no_trainable_message": (
        "line",
        "Every assistant message has weight 0: nothing to learn from.",
    ),
}


@dataclass(frozen=True)
class DatasetError:
    """One problem found in an upload, shaped for the API's error list."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"undocumented dataset error code {self.code!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class FatalDatasetError(Exception):
    """Raised by the stream layers when processing cannot continue."""

    def __init__(self, code: str, message: str, line: int | None = None, param: str | None = None):
        super().__init__(message)
        self.error = DatasetError(code=code, message=message, line=line, param=param)


def render_error_table() -> str:
    """Markdown table of ERROR_CODES; docs/dataset-errors.md embeds it verbatim."""
    rows = ["| code | scope | meaning |", "|---|---|---|"]
    rows += [
        f"| `{code}` | {scope} | {meaning} |" for code, (scope, meaning) in ERROR_CODES.items()
    ]
    return "\n".join(rows) + "\n"
