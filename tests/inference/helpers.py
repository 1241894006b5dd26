"""Builders for the inference tests: endpoint and usage rows, an in-process real replica."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from django.utils import timezone

from longtune.inference import token_meter
from longtune.inference.models import Endpoint, Replica, UsageRecord
from tests.finetuning.helpers import make_base_model


def make_endpoint(org, *, model=None, status: str = "pending", **fields) -> Endpoint:
    """An endpoint row for a base model (no dispatch) for read-side tests."""
    base = model or make_base_model()
    return Endpoint.objects.create(
        org=org,
        model=base.name,
        base_model=base,
        context_length=base.original_context_length,
        status=status,
        **fields,
    )


def make_usage(endpoint: Endpoint, prompt: int = 10, completion: int = 5, **fields) -> UsageRecord:
    defaults = {
        "org": endpoint.org,
        "endpoint": endpoint,
        "endpoint_ref": endpoint.public_id,
        "model": endpoint.model,
        "kind": "chat.completion",
        "request_id": "chatcmpl-test",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "ttft_ms": 12.5,
        "tokens_per_second": 40.0,
    }
    record = UsageRecord.objects.create(**{**defaults, **fields})
    # Metered as the gateway meters (services.record_usage): the org's month counter counts it.
    token_meter.add(endpoint.org, prompt + completion, record.created_at)
    return record


@contextmanager
def local_replica(endpoint: Endpoint, base_dir: Path):
    """A REAL replica (tiny engine + the worker's HTTP server) in this process, registered as
    the endpoint's ready replica: the gateway tests' upstream without a Celery worker."""
    from longtune.inference.conf import inference_conf
    from workers.inference import Generator, ReplicaServer, ServedModel, build_engine

    endpoint = (
        Endpoint.objects.unscoped_across_orgs()
        .select_related("base_model", "fine_tuned_model")
        .get(pk=endpoint.pk)
    )
    assert Path(endpoint.base_model.location) == base_dir
    engine, served = build_engine(endpoint, inference_conf())
    server = ReplicaServer(
        Generator(engine, ServedModel(served.adapter, served.context_length), inference_conf())
    )
    server.start()
    Replica.objects.create(
        org=endpoint.org, endpoint=endpoint, generation=endpoint.generation,
        internal_url=server.url, status="ready", heartbeat_at=timezone.now(),
    )  # fmt: skip
    Endpoint.objects.unscoped_across_orgs().filter(pk=endpoint.pk).update(status="ready")
    try:
        yield server
    finally:
        server.stop()
        engine.shutdown()
