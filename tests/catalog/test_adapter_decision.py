"""The served-as-adapter decision: ONE function (catalog.resolution.serves_as_adapter), read by
endpoint creation (hosting), the gateway's route and the replica's engine."""

from __future__ import annotations

import pytest
from django.utils import timezone

from longtune.catalog.resolution import ResolvedModel, resolve_model, serves_as_adapter
from longtune.inference.models import Deployment, Endpoint, Hosting, Replica
from longtune.inference.services import hosting_for, route_for
from tests.catalog.helpers import make_fine_tuned
from tests.finetuning.helpers import make_base_model

pytestmark = pytest.mark.django_db


def test_only_a_lora_fine_tune_is_an_adapter(org_a):
    lora, full = (
        make_fine_tuned(org_a.org, method="lora"),
        make_fine_tuned(org_a.org, method="full"),
    )
    assert serves_as_adapter(lora) is True
    assert serves_as_adapter(full) is False
    assert serves_as_adapter(None) is False  # a base model is the served weights itself
    base = lora.base_model
    assert ResolvedModel(lora.name, base, lora).serves_adapter
    assert not ResolvedModel(full.name, base, full).serves_adapter
    assert not ResolvedModel(base.name, base, None).serves_adapter


@pytest.mark.parametrize(
    ("method", "deployment", "hosting"),
    [
        (None, Deployment.SHARED, Hosting.SHARED_SERVER),
        ("lora", Deployment.SHARED, Hosting.SHARED_SERVER),
        ("full", Deployment.SHARED, Hosting.OWN_PROCESS),  # its weights are not the base's
        (None, Deployment.DEDICATED, Hosting.OWN_PROCESS),
        ("lora", Deployment.DEDICATED, Hosting.OWN_PROCESS),
    ],
)
def test_hosting_follows_the_decision(org_a, method, deployment, hosting):
    name = make_fine_tuned(org_a.org, method=method).name if method else make_base_model().name
    assert hosting_for(resolve_model(org_a.org, name), deployment) == hosting


def ready_endpoint(org, name: str) -> Endpoint:
    resolved = resolve_model(org, name)
    endpoint = Endpoint.objects.create(
        org=org,
        model=name,
        base_model=resolved.base,
        fine_tuned_model=resolved.fine_tuned,
        context_length=resolved.context_length,
        status="ready",
    )
    Replica.objects.create(
        org=org,
        endpoint=endpoint,
        generation=endpoint.generation,
        internal_url="http://127.0.0.1:1",
        status="ready",
        heartbeat_at=timezone.now(),
    )
    return endpoint


@pytest.mark.parametrize(("method", "adapter"), [("lora", True), ("full", False), (None, False)])
def test_gateway_route_names_the_adapter_exactly_for_adapters(org_a, method, adapter):
    name = make_fine_tuned(org_a.org, method=method).name if method else make_base_model().name
    ready_endpoint(org_a.org, name)
    assert route_for(org_a.org, name).adapter == (name if adapter else None)
