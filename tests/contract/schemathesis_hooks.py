"""Schemathesis hooks for the contract fuzz (loaded through SCHEMATHESIS_HOOKS by
tests/contract/test_schemathesis.py; nothing here filters or rewrites a failure).

- The fuzzer authenticates with a dedicated API key. It learns ids from list responses, so it
  would find that key and revoke it: DELETE of the key named by LONGTUNE_FUZZ_KEY_ID is never
  generated (every other key, including one seeded for the DELETE, is fair game).
- Valid examples: LONGTUNE_FUZZ_EXAMPLES names a JSON file written by the test after seeding,
  ``{"METHOD /v1/path/{id}": {"path": {...}, "query": {...}, "header": {...}, "body": {...}}}``.
  They are added to the loaded schema as OpenAPI ``example`` values (real ids of seeded
  objects, a valid job or chat body), so the examples phase reaches each operation's 2xx.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import schemathesis

PROTECTED_KEY_ID = os.environ.get("LONGTUNE_FUZZ_KEY_ID", "")
EXAMPLES_PATH = os.environ.get("LONGTUNE_FUZZ_EXAMPLES", "")


@schemathesis.hook
def filter_case(context, case) -> bool:
    if case.method.upper() == "DELETE" and case.path.endswith("/api_keys/{id}"):
        return (case.path_parameters or {}).get("id") != PROTECTED_KEY_ID
    return True


@schemathesis.hook
def before_load_schema(context, raw_schema) -> None:
    if not EXAMPLES_PATH:
        return
    examples = json.loads(Path(EXAMPLES_PATH).read_text())
    for name, example in examples.items():
        method, path = name.split(" ", 1)
        operation = raw_schema["paths"][path][method.lower()]
        for parameter in operation.get("parameters", []):
            value = example.get(parameter["in"], {}).get(parameter["name"])
            if value is not None:
                parameter["example"] = value
        if "body" in example:
            for media in operation["requestBody"]["content"].values():
                media["example"] = example["body"]
