"""The OpenAPI schema tells the truth: Schemathesis (property-based, every default check) runs
against the live server (uvicorn child process, real PostgreSQL, Redis, S3, a real tiny-model
replica for chat, the fake Stripe server for billing) and must find nothing.

Bounded and reproducible: the examples phase, then ``MAX_EXAMPLES`` generated cases per
operation and mode (positive and negative), a fixed seed, no shrinking. The coverage and
stateful phases are longer than the CI budget; ``PHASES`` says how to run them. Every operation must answer a 2xx at
least once; the per-operation status coverage is printed.

Seeding: one object per detail route, made by the same factories the tenant-isolation test
uses (tests/**/org_factories.py), a separate one per operation so a DELETE does not take away
another operation's object; hand-written bodies for the happy paths (upload, job create,
endpoint create, chat, completions, evaluations, invitation accept, upload parts/complete).

Not fuzzed: the two Stripe webhooks. Their caller is Stripe and their authentication is an
HMAC over the exact body bytes, which a fuzzer re-serializing a JSON example cannot keep;
tests/billing/test_webhooks.py drives them with signed events from the fake Stripe server.

Schema-valid but refused by design (a rule JSON Schema cannot state): listed in
``SEMANTIC_400`` with the reason; for those operations alone a 400 on schema-valid data is
accepted by the positive-data check. Everything else, and every other check, is strict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from longtune.tenancy.models import OrgQuota
from longtune.tenancy.services.api_keys import issue_api_key
from tests.billing.conftest import API_KEY, PRICE_IDS, WEBHOOK_SECRET
from tests.conftest import TEST_PASSWORD
from tests.contract.coverage import coverage_table, path_matcher, statuses_by_operation
from tests.finetuning.conftest import TINY_ORIGINAL_CONTEXT
from tests.finetuning.helpers import chat_examples, jsonl, make_base_model, make_file
from tests.fixtures.services import REPO_ROOT, asgi_server
from tests.inference.helpers import local_replica, make_endpoint
from tests.org_factories import load_all_factories
from tests.platform.v1_routes import v1_routes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SEED = 20261201
MAX_EXAMPLES = 5
# The coverage phase (every boundary and negation of every parameter, ~2,000 more requests, 5-8
# min on 2 cores) is off in CI; LONGTUNE_FUZZ_PHASES=examples,coverage,fuzzing runs it.
PHASES = os.environ.get("LONGTUNE_FUZZ_PHASES", "examples,fuzzing")
RUN_TIMEOUT_S = 480
HOOKS = "tests.contract.schemathesis_hooks"
EXCLUDED_PATH_REGEX = r"^/v1/billing/webhooks/"
# operationId -> why a schema-valid request can still be a 400 (a rule no schema states).
SEMANTIC_400: dict[str, str] = {
    "auth_signup_create": "weak_password: Django's common-password list",
    "invitations_accept_create": "weak_password: Django's common-password list",
    "evaluations_create": "depths/lengths rules that depend on the suite",
    "fine_tuning_jobs_create": "conflicting_parameters (lora settings with full: true), a "
    "context_length past the model's maximum or no accelerator layout that fits "
    "(insufficient_accelerator_memory), evaluation-option rules that depend on the suite",
    "uploads_complete_create": "exactly one of part_ids / parts; sizes must add up",
    "uploads_parts_create": "bytes_mismatch: the parts must add up to the declared size",
    "update_pii_policy": "invalid_regex: allow_patterns must compile",
    "chat_completions_create": "context_length_exceeded: prompt + max_tokens must fit the model",
    "completions_create": "context_length_exceeded: prompt + max_tokens must fit the model",
    "files_token_stats_retrieve": "context_length beyond the chosen model's maximum",
    "uploads_create": "file_too_large (400/413): the organization's upload limit (per plan)",
}
FUZZ_MODEL = "tiny-fuzz"


def schemathesis_config(path: Path) -> Path:
    """schemathesis.toml: the per-operation positive-data statuses for SEMANTIC_400 only."""
    lines = []
    for operation_id in SEMANTIC_400:
        lines += [
            "[[operations]]",
            f'include-operation-id = "{operation_id}"',
            "[operations.checks.positive_data_acceptance]",
            'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"'
            + (', "413"]' if operation_id == "uploads_create" else "]"),
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def seed_examples(handle, schema: dict) -> dict[str, dict]:
    """Objects in the fuzz org, and the example values that name them."""
    from longtune.tenancy.services.invitations import create_invitation

    org = handle.org
    factories = load_all_factories()
    training = make_file(org, chat_examples(8))
    templates = [
        (method.upper(), path, path_matcher(path))
        for path, item in schema["paths"].items()
        for method in item
        if "{" in path
    ]
    examples: dict[str, dict] = {}
    for route in v1_routes():
        viewset = route.org_scoped_viewset
        if not route.kwargs or viewset is None or viewset.model not in factories:
            continue
        for method in route.methods:
            instance = factories[viewset.model](org)  # one object per operation
            kwargs = viewset.url_kwargs_for(instance)
            url = reverse(route.name, kwargs=kwargs)
            for template_method, template, pattern in templates:
                if template_method == method.upper() and pattern.match(url):
                    examples[f"{method.upper()} {template}"] = {"path": kwargs}
    # Models are addressed by name: the base model for reads, a fine-tune for the DELETE.
    examples["GET /v1/models/{id}"] = {"path": {"id": FUZZ_MODEL}}
    examples["DELETE /v1/models/{id}"] = {"path": {"id": factories_model_name(org)}}
    examples["PATCH /v1/members/{id}"]["body"] = {"role": "viewer"}
    # Happy-path bodies.
    invitee = "invitee@example.com"
    _, token = create_invitation(
        org=org, email=invitee, role="member", invited_by=handle.owner, actor_role="owner"
    )
    examples["POST /v1/invitations/accept"] = {
        "body": {"token": token, "email": invitee, "password": TEST_PASSWORD, "name": "In"}
    }
    examples["POST /v1/auth/signup"] = {
        "body": {
            "email": "new-owner@example.com",
            "password": TEST_PASSWORD,
            "organization_name": "Fuzz Signup",
        }
    }
    examples["POST /v1/files"] = {
        "body": {"file": jsonl(chat_examples(3)).decode(), "purpose": "fine-tune"}
    }
    examples["POST /v1/fine_tuning/jobs"] = {
        "body": {
            "model": FUZZ_MODEL,
            "training_file": training.public_id,
            "hyperparameters": {"n_epochs": 1},
        }
    }
    examples["POST /v1/endpoints"] = {"body": {"model": FUZZ_MODEL}}
    examples["POST /v1/evaluations"] = {"body": {"model": FUZZ_MODEL, "suite": "perplexity"}}
    message = [{"role": "user", "content": "hello there"}]
    examples["POST /v1/chat/completions"] = {
        "body": {"model": FUZZ_MODEL, "messages": message, "max_tokens": 4}
    }
    examples["POST /v1/completions"] = {
        "body": {"model": FUZZ_MODEL, "prompt": "the model", "max_tokens": 4}
    }
    examples["GET /v1/files/{id}/token_stats"]["query"] = {"model": FUZZ_MODEL}
    examples["POST /v1/billing/checkout"] = {"body": {"plan": "pro"}}
    examples["POST /v1/auth/signup/confirm"] = {"body": {"token": pending_signup_token()}}
    return examples | seed_upload_examples(handle)


def pending_signup_token() -> str:
    """A real signup waiting for its link (the mail lands in Django's test outbox)."""
    from django.core import mail

    from longtune.tenancy.services.signup import request_signup
    from tests.conftest import signup_token

    email = "confirm-me@example.com"
    request_signup(email=email, password=TEST_PASSWORD, org_name="Fuzz Confirmed")
    return signup_token(mail.outbox, email)


def factories_model_name(org) -> str:
    from longtune.catalog.models import FineTunedModel

    model = load_all_factories()[FineTunedModel](org)
    return model.name


def seed_upload_examples(handle) -> dict[str, dict]:
    """A pending upload for POST parts (declared size = the example part), and one with its
    part already sent for POST complete."""
    from tests.conftest import api_client

    client = api_client(handle.key())
    part = b'{"messages": [{"role": "user", "content": "hi"}]}\n'

    def new_upload() -> str:
        created = client.post(
            "/v1/uploads",
            {"filename": "t.jsonl", "purpose": "fine-tune", "bytes": len(part),
             "mime_type": "application/jsonl"},
            format="json",
        )  # fmt: skip
        assert created.status_code == 200, created.content
        return created.json()["id"]

    for_parts, for_complete = new_upload(), new_upload()
    from django.core.files.uploadedfile import SimpleUploadedFile

    sent = client.post(
        f"/v1/uploads/{for_complete}/parts",
        {"data": SimpleUploadedFile("part", part)},
        format="multipart",
    )
    assert sent.status_code == 200, sent.content
    return {
        "POST /v1/uploads/{id}/parts": {"path": {"id": for_parts}, "body": {"data": part.decode()}},
        "POST /v1/uploads/{id}/complete": {
            "path": {"id": for_complete},
            "body": {"part_ids": [sent.json()["id"]]},
        },
    }


def test_the_schema_holds_under_schemathesis(
    make_org, worker_env, shared_storage, tiny_base_dir, fake_stripe, tmp_path, capsys, settings
):
    handle = make_org("Fuzz", plan="pro")
    OrgQuota.objects.create(
        org=handle.org, requests_per_minute=10_000_000, max_concurrent_jobs=1_000,
        max_endpoints=1_000,
    )  # fmt: skip
    fuzz_key, secret = issue_api_key(
        org=handle.org, created_by=handle.owner, role="owner", name="schemathesis"
    )
    # Context = the original 64: a chat answer is at most a few dozen tokens of the tiny model.
    base = make_base_model(
        FUZZ_MODEL, tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=TINY_ORIGINAL_CONTEXT
    )
    schema = SchemaGenerator().get_schema(request=None, public=True)
    examples = seed_examples(handle, schema)
    examples_path = tmp_path / "examples.json"
    examples_path.write_text(json.dumps(examples))
    chat_endpoint = make_endpoint(handle.org, model=base)
    server_env = {
        **worker_env,
        "INFERENCE_STALE_AFTER_SECONDS": "3600",  # the in-test replica heartbeats once
        "SECRET_KEY": settings.SECRET_KEY,  # the signup token seeded here is signed with it
        "PUBLIC_ENDPOINT_REQUESTS_PER_HOUR": "1000000",
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_METER_EVENTS_BASE": fake_stripe.url,
        "STRIPE_PRICE_PRO": PRICE_IDS["pro"],
        "STRIPE_PRICE_ENTERPRISE": PRICE_IDS["enterprise"],
    }
    with local_replica(chat_endpoint, tiny_base_dir), asgi_server(server_env) as base_url:
        live_schema = httpx.get(f"{base_url}/v1/openapi.json", timeout=60).json()
        # LONGTUNE_FUZZ_LOG: keep the run's output (and its HAR next to it) for debugging.
        log_path = Path(os.environ.get("LONGTUNE_FUZZ_LOG", tmp_path / "schemathesis.log"))
        har = log_path.with_suffix(".har.json")
        with log_path.open("w") as log:
            run = subprocess.run(
                [shutil.which("schemathesis") or "schemathesis", "--config-file",
                 str(schemathesis_config(tmp_path / "schemathesis.toml")), "run",
                 f"{base_url}/v1/openapi.json", "-H", f"Authorization: Bearer {secret}",
                 "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--no-shrink",
                 "--phases", PHASES, "--workers", "1",
                 "--exclude-path-regex", EXCLUDED_PATH_REGEX,
                 "--report", "har", "--report-har-path", str(har), "--request-timeout", "60"],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S,
                env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS,
                     "LONGTUNE_FUZZ_KEY_ID": fuzz_key.public_id,
                     "LONGTUNE_FUZZ_EXAMPLES": str(examples_path),
                     "PYTHONPATH": str(REPO_ROOT)},
            )  # fmt: skip
        output = log_path.read_text()

    found = statuses_by_operation(live_schema, har)
    fuzzed = {
        op: counts for op, counts in found.items() if not op[1].startswith("/v1/billing/webhooks/")
    }
    with capsys.disabled():
        print(f"\nSchemathesis seed={SEED} max-examples={MAX_EXAMPLES}: per-operation statuses")
        print(coverage_table(fuzzed))
    assert run.returncode == 0, output[-20_000:]
    without_2xx = sorted(op for op, c in fuzzed.items() if not any(200 <= s < 300 for s in c))
    assert not without_2xx, f"operations that never answered 2xx: {without_2xx}"
    fuzz_key.refresh_from_db()
    assert fuzz_key.revoked_at is None
