"""Schemathesis hooks for the contract fuzz (loaded through SCHEMATHESIS_HOOKS).

The fuzzer authenticates with a dedicated API key; it may call every operation, but it may not
revoke that key (it learns ids from list responses, so it would find it): DELETE of the key
named by LONGTUNE_FUZZ_KEY_ID is never generated.
"""

from __future__ import annotations

import os

import schemathesis

PROTECTED_KEY_ID = os.environ.get("LONGTUNE_FUZZ_KEY_ID", "")


@schemathesis.hook
def filter_case(context, case) -> bool:
    if case.method.upper() == "DELETE" and case.path.endswith("/api_keys/{id}"):
        return (case.path_parameters or {}).get("id") != PROTECTED_KEY_ID
    return True
