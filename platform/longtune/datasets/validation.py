"""Stream an upload once: decompress, validate every line, scrub PII, write out.

Why one pass: uploads can be many GiB; reading them twice doubles the CPU
bill and the time a user waits. Memory stays bounded by the longest allowed
line (`max_line_bytes`): lines are read with a length cap and an over-long line
is skipped chunk by chunk, never accumulated.

Entry point for the Celery task: `validate_and_scrub(src, dst, policy, limits)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .decompress import Compression, open_upload
from .errors import DatasetError, FatalDatasetError
from .formats import DatasetFormat, detect_format, example_text, validate_example
from .limits import MIB, DatasetLimits
from .pii import NameDetector, PiiPolicy, PiiScrubber, ScrubReport, dump_json_line
from .tokens import CountTokens, TokenStats

_UTF8_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 * MIB


@dataclass
class ProcessingReport:
    """Everything the API shows about one processed upload (JSON-serialisable via to_dict)."""

    valid: bool = False
    format: DatasetFormat | None = None
    compression: Compression | None = None
    lines: int = 0
    blank_lines: int = 0
    examples: int = 0  # valid examples written to dst
    bytes_in: int = 0
    bytes_decompressed: int = 0
    errors: list[DatasetError] = field(default_factory=list)  # the first max_errors_listed
    error_counts: dict[str, int] = field(default_factory=dict)  # every error, per code
    fatal: DatasetError | None = None  # the error that stopped processing, if any
    pii: ScrubReport | None = None
    token_stats: TokenStats | None = None

    def add_error(self, error: DatasetError, max_listed: int) -> None:
        self.error_counts[error.code] = self.error_counts.get(error.code, 0) + 1
        if len(self.errors) < max_listed:
            self.errors.append(error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "format": str(self.format) if self.format else None,
            "compression": str(self.compression) if self.compression else None,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "examples": self.examples,
            "bytes_in": self.bytes_in,
            "bytes_decompressed": self.bytes_decompressed,
            "errors": [e.to_dict() for e in self.errors],
            "error_counts": dict(self.error_counts),
            "fatal": self.fatal.to_dict() if self.fatal else None,
            "pii": self.pii.to_dict() if self.pii else None,
            "token_stats": self.token_stats.to_dict() if self.token_stats else None,
        }


class _LineProcessor:
    """Per-line state machine: format detection, checks, scrubbing, output."""

    def __init__(
        self,
        report: ProcessingReport,
        limits: DatasetLimits,
        dst: BinaryIO | None,
        scrubber: PiiScrubber | None,
        count_tokens: CountTokens | None,
    ):
        self.report = report
        self.limits = limits
        self.dst = dst
        self.scrubber = scrubber
        self.count_tokens = count_tokens
        self.seen_content = False

    def error(self, code: str, message: str, line: int, param: str | None = None) -> None:
        self.report.add_error(
            DatasetError(code, message, line, param), self.limits.max_errors_listed
        )

    def check_not_array(self, head: bytes, line_no: int) -> None:
        """A JSON array is the most common wrong upload; say so instead of 'invalid_json'."""
        if self.seen_content:
            return
        self.seen_content = True
        if head.lstrip().startswith(b"["):
            raise FatalDatasetError(
                "json_array_not_jsonl",
                "The file is a JSON array, not JSON Lines: put one JSON object per line, no surrounding [ ].",
                line=line_no,
            )

    def process(self, raw: bytes, line_no: int) -> None:
        stripped = raw.strip()
        if line_no == 1 and stripped.startswith(_UTF8_BOM):
            stripped = stripped[len(_UTF8_BOM) :].strip()
        if not stripped:
            self.report.blank_lines += 1
            return
        self.check_not_array(stripped, line_no)
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.error(
                "invalid_utf8",
                f"Invalid UTF-8 at byte {exc.start}: {exc.reason}.",
                line_no,
                f"byte {exc.start}",
            )
            return
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = (
                " (pretty-printed JSON? each object must be on one line)"
                if text in ("{", "}")
                else ""
            )
            self.error(
                "invalid_json", f"Invalid JSON: {exc.msg}{hint}.", line_no, f"column {exc.colno}"
            )
            return
        except RecursionError:
            self.error("invalid_json", "Invalid JSON: nesting too deep.", line_no)
            return
        if not isinstance(obj, dict):
            self.error(
                "not_an_object", f"Expected a JSON object, got {type(obj).__name__}.", line_no
            )
            return
        self.accept_object(obj, stripped, line_no)

    def accept_object(self, obj: dict[str, Any], stripped: bytes, line_no: int) -> None:
        report = self.report
        if report.format is None:
            report.format = detect_format(obj)
            if report.format is None:
                self.error(
                    "unknown_format",
                    "No known format: expected 'messages', 'prompt'+'completion' or 'text'.",
                    line_no,
                )
                return
        issues = validate_example(obj, report.format)
        if issues:
            for issue in issues:
                self.error(issue.code, issue.message, line_no, issue.param)
            return
        out = stripped
        if self.scrubber is not None:
            try:
                if self.scrubber.scrub_json(obj):
                    out = dump_json_line(obj)
            except RecursionError:
                self.error("invalid_json", "Invalid JSON: nesting too deep.", line_no)
                return
        if self.count_tokens is not None:
            report.token_stats.add(self.count_tokens(example_text(obj, report.format)))
        report.examples += 1
        if self.dst is not None:
            self.dst.write(out + b"\n")

    def skip_long_line(self, head: bytes, readline: Callable[[int], bytes], line_no: int) -> None:
        self.check_not_array(head, line_no)
        rest = head
        while rest and not rest.endswith(b"\n"):
            rest = readline(_SKIP_CHUNK)  # discard: never hold the whole line
        self.error(
            "line_too_long",
            f"Line exceeds {self.limits.max_line_bytes} bytes.",
            line_no,
            "max_line_bytes",
        )


def validate_and_scrub(
    src: BinaryIO,
    dst: BinaryIO | None = None,
    policy: PiiPolicy | None = None,
    limits: DatasetLimits | None = None,
    *,
    scrub: bool = True,
    count_tokens: CountTokens | None = None,
    name_detector: NameDetector | None = None,
) -> ProcessingReport:
    """Validate a (possibly gzip/zstd) JSONL upload and write scrubbed JSONL to dst.

    Only valid examples are written; when `report.valid` is False the caller
    must discard dst. scrub=False validates only (report.pii stays None).
    Never raises for bad input: every problem is a coded error in the report.
    """
    limits = limits or DatasetLimits()
    report = ProcessingReport()
    scrubber = PiiScrubber(policy, name_detector) if scrub else None
    if count_tokens is not None:
        report.token_stats = TokenStats()
    processor = _LineProcessor(report, limits, dst, scrubber, count_tokens)
    upload = None
    try:
        upload = open_upload(src, limits)
        report.compression = upload.compression
        _read_lines(upload.reader, processor, limits)
    except FatalDatasetError as exc:
        report.fatal = exc.error
        report.add_error(exc.error, limits.max_errors_listed)
    if upload is not None:
        report.bytes_in, report.bytes_decompressed = upload.bytes_in, upload.bytes_decompressed
    if scrubber is not None:
        report.pii = scrubber.report
    if report.fatal is None:
        _file_level_checks(report, limits)
    report.valid = not report.error_counts
    return report


def _read_lines(reader, processor: _LineProcessor, limits: DatasetLimits) -> None:
    readline = reader.readline
    cap = limits.max_line_bytes + 1  # +1: a max-length line plus its "\n" still fits
    line_no = 0
    while raw := readline(cap):
        line_no += 1
        processor.report.lines = line_no
        if line_no > limits.max_lines:
            raise FatalDatasetError(
                "too_many_lines",
                f"More than {limits.max_lines} lines.",
                line=line_no,
                param="max_lines",
            )
        if len(raw) == cap and not raw.endswith(b"\n"):
            processor.skip_long_line(raw, readline, line_no)
        else:
            processor.process(raw, line_no)


def _file_level_checks(report: ProcessingReport, limits: DatasetLimits) -> None:
    if report.lines == report.blank_lines:
        report.add_error(
            DatasetError("empty_file", "The file has no data lines."), limits.max_errors_listed
        )
    elif report.examples < limits.min_examples:
        report.add_error(
            DatasetError(
                "too_few_examples",
                f"{report.examples} valid examples; at least {limits.min_examples} are needed.",
                param="min_examples",
            ),
            limits.max_errors_listed,
        )
