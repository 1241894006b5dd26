"""Every line-level and file-level error code, triggered by a crafted upload."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from longtune.datasets.formats import DatasetFormat
from longtune.datasets.limits import MIB, DatasetLimits
from longtune.datasets.validation import validate_and_scrub
from tests.datasets.dataset_helpers import chat, jsonl, process


def codes(report) -> list[str]:
    return [e.code for e in report.errors]


def test_valid_chat_file_is_accepted_and_written():
    report, out = process(jsonl(chat(), chat("2 + 2?", "4")))
    assert report.valid and report.format is DatasetFormat.CHAT
    assert report.examples == 2 and report.errors == []
    assert [json.loads(line) for line in out.splitlines()] == [chat(), chat("2 + 2?", "4")]


def test_instruction_and_text_formats_are_detected():
    report, _ = process(jsonl({"prompt": "", "completion": "Once upon a time"}))
    assert report.valid and report.format is DatasetFormat.INSTRUCTION
    report, _ = process(jsonl({"text": "A long book chapter."}))
    assert report.valid and report.format is DatasetFormat.TEXT


def test_blank_lines_crlf_and_bom_are_tolerated():
    data = b"\xef\xbb\xbf" + json.dumps(chat()).encode() + b"\r\n\r\n" + json.dumps(chat()).encode()
    report, _ = process(data)
    assert report.valid, report.errors
    assert (report.examples, report.blank_lines, report.lines) == (2, 1, 3)


@pytest.mark.parametrize(
    ("line", "code", "param"),
    [
        (b'{"text": "caf\xff"}', "invalid_utf8", "byte 13"),
        (b'{"text": "unterminated}', "invalid_json", "column 10"),
        (b"[1, 2]", "not_an_object", None),
        (b'"just a string"', "not_an_object", None),
        (b'{"text": "plain"}', "mixed_formats", "text"),
        (b'{"meta": 1}', "missing_field", "messages"),
        (b'{"messages": "hi"}', "invalid_type", "messages"),
        (b'{"messages": []}', "empty_messages", "messages"),
        (b'{"messages": [{"content": "x"}]}', "missing_field", "messages[0].role"),
        (b'{"messages": ["hi"]}', "invalid_type", "messages[0]"),
        (b'{"messages": [{"role": "bot", "content": "x"}]}', "unknown_role", "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "invalid_type", "messages[0].content"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}',
            "empty_content",
            "messages[1].content",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "no_assistant_message", "messages"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a", "weight": 2}]}',
            "invalid_weight",
            "messages[1].weight",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "a"}]}',
            "invalid_weight",
            "messages[0].weight",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a", "weight": 0}]}',
            "no_trainable_message",
            "messages",
        ),
    ],
)
def test_line_errors_carry_code_line_and_param(line, code, param):
    report, out = process(jsonl(chat(), line, chat()))
    assert not report.valid
    assert codes(report) == [code]
    error = report.errors[0]
    assert (error.line, error.param) == (2, param)
    assert report.examples == 2 and len(out.splitlines()) == 2  # bad line not written


def test_instruction_errors():
    report, _ = process(
        jsonl({"prompt": "p", "completion": "c"}, {"prompt": "p"}, {"prompt": 3, "completion": "c"})
    )
    assert [(e.line, e.code, e.param) for e in report.errors] == [
        (2, "missing_field", "completion"),
        (3, "invalid_type", "prompt"),
    ]


def test_unknown_format_on_first_object():
    report, _ = process(jsonl({"question": "q", "answer": "a"}))
    assert codes(report)[0] == "unknown_format" and report.errors[0].line == 1


@pytest.mark.parametrize("data", [b'[{"text": "a"}, {"text": "b"}]', b'  [\n  {"text": "a"}\n]\n'])
def test_json_array_is_named_as_such(data):
    report, _ = process(data)
    assert codes(report) == ["json_array_not_jsonl"]
    assert report.fatal.code == "json_array_not_jsonl"


def test_json_array_in_one_over_long_line_is_still_named():
    data = b"[" + b'{"text": "aaaa"},' * 1000 + b'{"text": "a"}]'
    report, _ = process(data, max_line_bytes=1024)
    assert codes(report) == ["json_array_not_jsonl"]


def test_ten_megabyte_single_line_is_line_too_long_and_processing_continues():
    huge = b'{"text": "' + b"a" * (10 * 1000 * 1000) + b'"}'
    report, out = process(jsonl({"text": "first"}, huge, {"text": "after"}))
    assert [(e.line, e.code, e.param) for e in report.errors] == [
        (2, "line_too_long", "max_line_bytes")
    ]
    assert report.examples == 2 and report.lines == 3
    assert out.splitlines()[1] == b'{"text": "after"}'


class _LazyHugeLine(io.RawIOBase):
    """Yields a 64 MiB line without ever holding it, so tracemalloc sees only our reader."""

    def __init__(self, size: int):
        self.parts = (
            [b'{"text": "first"}\n', b'{"text": "']
            + [b"x" * MIB] * (size // MIB)
            + [b'"}\n{"text": "after"}\n']
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.parts:
            return 0
        part = self.parts[0]
        n = min(len(buffer), len(part))
        buffer[:n] = part[:n]
        self.parts[0] = part[n:]
        if not self.parts[0]:
            self.parts.pop(0)
        return n


def test_over_long_line_is_not_accumulated_in_memory():
    src = io.BufferedReader(_LazyHugeLine(64 * MIB))
    # The name model is loaded once per process (a fixed cost, not per line): load it before
    # measuring, so the peak below is the streaming buffers alone.
    from longtune.datasets.pii_names import installed_name_detector

    installed_name_detector()
    tracemalloc.start()
    try:
        report = validate_and_scrub(src, io.BytesIO(), limits=DatasetLimits(min_examples=1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(report) == ["line_too_long"] and report.examples == 2
    # 8 MiB line cap + 1 MiB read buffers; a 64 MiB line held in memory would blow this.
    assert peak < 24 * MIB, peak


def test_line_of_exactly_max_bytes_is_accepted():
    line = json.dumps({"text": "a" * 90}).encode()
    report, _ = process(line + b"\n", max_line_bytes=len(line))
    assert report.valid
    report, _ = process(line + b"\n", max_line_bytes=len(line) - 1)
    assert codes(report) == ["line_too_long", "too_few_examples"]


def test_too_many_lines_stops_processing():
    report, _ = process(jsonl(*[chat()] * 10), max_lines=5)
    assert codes(report) == ["too_many_lines"] and report.errors[0].line == 6
    assert report.examples == 5


def test_too_few_examples_and_empty_file():
    report, _ = process(jsonl(chat(), chat()), min_examples=10)
    assert codes(report) == ["too_few_examples"]
    report, _ = process(b"\n \n")
    assert codes(report) == ["empty_file"]


def test_file_too_large_counts_uploaded_bytes():
    report, _ = process(jsonl(*[chat()] * 50), max_upload_bytes=1000)
    assert codes(report) == ["file_too_large"]


def test_only_first_n_errors_listed_but_all_counted():
    report, _ = process(jsonl(chat(), *[b"{bad"] * 30), max_errors_listed=20)
    assert len(report.errors) == 20 and report.error_counts == {"invalid_json": 30}
    assert json.loads(json.dumps(report.to_dict()))["error_counts"] == {"invalid_json": 30}


def test_token_stats_are_collected_on_scrubbed_text():
    data = jsonl(
        chat("mail bob@example.com now", "ok"),
        {
            "messages": [
                {"role": "user", "content": "one two three four five"},
                {"role": "assistant", "content": "six"},
            ]
        },
    )
    report = validate_and_scrub(
        io.BytesIO(data),
        io.BytesIO(),
        count_tokens=lambda t: len(t.split()),
        limits=DatasetLimits(min_examples=1),
    )
    stats = report.token_stats
    # "mail [EMAIL_1] now\nok" -> 4 words; "one..five\nsix" -> 6 words
    assert (stats.examples, stats.tokens, stats.max_tokens) == (2, 10, 6)
    assert stats.histogram == {4: 1, 8: 1}
