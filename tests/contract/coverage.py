"""Per-operation status coverage of a Schemathesis run, read from its HAR report."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse


def operations(schema: dict) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation in an OpenAPI document."""
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    ]


def path_matcher(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def statuses_by_operation(schema: dict, har_path: Path) -> dict[tuple[str, str], dict[int, int]]:
    """{(METHOD, template): {status: count}} for every operation (empty when never called)."""
    ops = operations(schema)
    # Most specific first: /files/{id}/content before /files/{id}.
    matchers = sorted(((op, path_matcher(op[1])) for op in ops), key=lambda item: -len(item[0][1]))
    found: dict[tuple[str, str], dict[int, int]] = {op: defaultdict(int) for op in ops}
    entries = json.loads(har_path.read_text())["log"]["entries"]
    for entry in entries:
        method = entry["request"]["method"].upper()
        path = urlparse(entry["request"]["url"]).path
        for op, pattern in matchers:
            if op[0] == method and pattern.match(path):
                found[op][entry["response"]["status"]] += 1
                break
    return found


def coverage_table(found: dict[tuple[str, str], dict[int, int]]) -> str:
    lines = [f"{'operation':<52} {'2xx':>5} {'4xx':>5} {'5xx':>5}  statuses"]
    for (method, path), counts in sorted(found.items(), key=lambda item: item[0][::-1]):
        by_class = {c: sum(n for s, n in counts.items() if s // 100 == c) for c in (2, 4, 5)}
        detail = " ".join(f"{s}x{n}" for s, n in sorted(counts.items()))
        lines.append(
            f"{method + ' ' + path:<52} {by_class[2]:>5} {by_class[4]:>5} {by_class[5]:>5}  {detail}"
        )
    return "\n".join(lines)
