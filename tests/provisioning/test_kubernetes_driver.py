"""The ``kubernetes`` driver. No API server can run here: the rendered Deployment is
validated against the Kubernetes OpenAPI schema (``kubernetes-validate``, strict), and the
official client's HTTP requests are recorded at its connection pool (the client serializes,
builds URLs and parses responses for real; only the wire is fake)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from kubernetes import client

from longtune.provisioning import services
from longtune.provisioning.drivers.kubernetes import (
    KubernetesDriver,
    deployment_name,
    render_deployment,
)
from longtune.provisioning.models import DedicatedInstance
from longtune.provisioning.reconcile import reconcile_instance
from tests.provisioning.helpers import book

pytestmark = pytest.mark.django_db
K8S_VERSION = kubernetes_validate.latest_version()


@pytest.fixture
def instance(org_a, settings):
    settings.PROVISIONING_K8S_NAMESPACE = "tenants"
    row = book(org_a.org, accelerator_type="h100_80gb", pool="us-east",
               accelerators_per_replica=4, min_replicas=1, max_replicas=2, replicas=2)  # fmt: skip
    return (
        DedicatedInstance.objects.unscoped_across_orgs()
        .select_related("org", "capacity")
        .get(pk=row.pk)
    )


def test_rendered_deployment_is_valid_and_carries_gpus_queue_and_ownership(instance):
    manifest = render_deployment(instance)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pod["nodeSelector"] == {"longtune.io/accelerator": "h100_80gb",
                                   "longtune.io/pool": "us-east"}  # fmt: skip
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    command = container["command"]
    assert command[command.index("-Q") + 1] == instance.queue  # the org's own queue, only
    assert manifest["metadata"]["labels"]["longtune.io/org"] == instance.org.public_id
    assert manifest["metadata"]["namespace"] == "tenants" and manifest["spec"]["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] >= 48 * 3600  # a drain lets the job finish


def test_the_validator_rejects_a_broken_manifest(instance):
    """The schema check is real: a GPU limit that is not a quantity, or an unknown field,
    fails it."""
    broken = copy.deepcopy(render_deployment(instance))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = {
        "count": 4
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = copy.deepcopy(render_deployment(instance))
    unknown["spec"]["gpus"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


class RecordingPool:
    """Stands in for urllib3's pool manager under the official client: records each request
    and answers from a tiny in-memory API server of Deployments."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, object]] = []
        self.urls: list[str] = []
        self.deployments: dict[str, dict] = {}
        self.fail_with: int | None = None

    def request(self, method, url, body=None, headers=None, **kwargs):
        payload = json.loads(body) if body else None
        path = url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
        self.requests.append((method, "/" + path, payload))
        self.urls.append(url)
        if self.fail_with:
            return self._answer(self.fail_with, {"kind": "Status", "message": "quota"})
        name = path.rstrip("/").split("/")[-1]
        if path.endswith("/scale"):
            name = path.split("/")[-2]
            self.deployments[name]["spec"]["replicas"] = payload["spec"]["replicas"]
            self.deployments[name]["status"] = {"replicas": 0}
            return self._answer(200, {"kind": "Scale", "spec": payload["spec"]})
        if method == "POST":
            self.deployments[payload["metadata"]["name"]] = payload
            return self._answer(201, payload)
        if method == "GET":
            if name not in self.deployments:
                return self._answer(404, {"kind": "Status", "reason": "NotFound"})
            return self._answer(200, self.deployments[name])
        if method == "PATCH":
            self.deployments[name] = {**self.deployments[name], **payload}
            return self._answer(200, self.deployments[name])
        if method == "DELETE":
            self.deployments.pop(name, None)
            return self._answer(200, {"kind": "Status", "status": "Success"})
        raise AssertionError(f"unexpected {method} {url}")

    @staticmethod
    def _answer(status, payload):
        headers = {"content-type": "application/json"}
        return SimpleNamespace(
            status=status, reason="OK" if status < 300 else "Error",
            data=json.dumps(payload).encode(), getheaders=lambda: headers,
            getheader=lambda name, default=None: headers.get(name.lower(), default),
        )  # fmt: skip


@pytest.fixture
def recorded():
    configuration = client.Configuration(host="https://k8s.example.invalid")
    api_client = client.ApiClient(configuration)
    pool = RecordingPool()
    api_client.rest_client.pool_manager = pool
    return api_client, pool


def test_client_calls_create_patch_scale_delete(instance, recorded):
    api_client, pool = recorded
    driver = KubernetesDriver(api_client=api_client)
    name = deployment_name(instance)
    base = "/apis/apps/v1/namespaces/tenants/deployments"
    assert driver.apply(instance) == f"tenants/{name}"
    driver.apply(instance)  # again: patch, not a second create
    driver.drain(instance)
    assert driver.drained(instance)
    driver.destroy(instance)
    calls = [(method, path) for method, path, _ in pool.requests]
    assert calls == [
        ("GET", f"{base}/{name}"), ("POST", base),
        ("GET", f"{base}/{name}"), ("PATCH", f"{base}/{name}"),
        ("GET", f"{base}/{name}"), ("PATCH", f"{base}/{name}/scale"),
        ("GET", f"{base}/{name}"),
        ("GET", f"{base}/{name}"), ("DELETE", f"{base}/{name}"),
    ]  # fmt: skip
    created = pool.requests[1][2]
    kubernetes_validate.validate(created, K8S_VERSION, strict=True)  # what went on the wire
    limits = created["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "4"}
    assert created["metadata"]["labels"]["longtune.io/instance"] == instance.public_id
    assert pool.requests[5][2] == {"spec": {"replicas": 0}}
    assert pool.urls[8].endswith("?propagationPolicy=Foreground")


def test_an_api_refusal_leaves_the_instance_failed_with_the_reason(instance, recorded):
    api_client, pool = recorded
    services.provision(instance, staff=None)
    instance.refresh_from_db()
    pool.fail_with = 403
    assert reconcile_instance(instance, KubernetesDriver(api_client=api_client)) == "failed"
    instance.refresh_from_db()
    assert instance.state == "failed"
    assert "Kubernetes refused to read the Deployment: 403" in instance.failure_reason
    assert instance.capacity.active is False
