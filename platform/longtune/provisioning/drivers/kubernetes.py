"""The ``kubernetes`` driver: one Deployment per instance, through the official client.

Thin on purpose: ``render_deployment`` (a pure function, validated against the Kubernetes
OpenAPI schema in the tests) is what matters; the client calls are create-or-patch, scale to
zero for a drain (each pod gets SIGTERM = Celery's warm shutdown, with a grace period as long
as the longest job, so in-flight work finishes), read for health, delete at the end.

No Kubernetes API server runs on the development machines or in CI: the tests record the
HTTP requests the official client makes (README, "Dedicated instances").
"""

from __future__ import annotations

import re
from typing import Any

from longtune.provisioning.conf import ProvisioningConf, provisioning_conf
from longtune.provisioning.drivers import DriverError
from longtune.provisioning.drivers.local import INSTANCE_ENV
from longtune.provisioning.models import DedicatedInstance

GPU_RESOURCE = "nvidia.com/gpu"
CPU_ACCELERATOR = "cpu"  # a pool of plain nodes: no GPU limit, no GPU toleration
MANAGED_BY = "longtune-provisioning"


def deployment_name(instance: DedicatedInstance) -> str:
    """DNS-1123: lowercase letters, digits and '-' (public ids are mixed-case)."""
    return ("lt-" + re.sub(r"[^a-z0-9-]", "-", instance.public_id.lower()))[:63].rstrip("-")


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.") or "x"


def labels(instance: DedicatedInstance) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "longtune-worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "longtune.io/instance": _label(instance.public_id),
        "longtune.io/org": _label(instance.org.public_id),
        "longtune.io/org-slug": _label(instance.org.slug),
        "longtune.io/hosts": instance.hosts,
    }


def render_deployment(
    instance: DedicatedInstance, conf: ProvisioningConf | None = None, replicas: int | None = None
) -> dict[str, Any]:
    conf = conf or provisioning_conf()
    own = labels(instance)
    gpu = instance.accelerator_type != CPU_ACCELERATOR
    resources: dict[str, Any] = {}
    tolerations: list[dict[str, str]] = [
        {
            "key": conf.k8s_accelerator_label,
            "operator": "Equal",
            "value": instance.accelerator_type,
            "effect": "NoSchedule",
        }
    ]
    if gpu:
        count = str(instance.accelerators_per_replica)
        resources = {"limits": {GPU_RESOURCE: count}, "requests": {GPU_RESOURCE: count}}
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    command = [
        "python", "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", instance.capacity.queue, "-P", "solo", "-c", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        "-n", f"{instance.public_id}@%h",
    ]  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(instance),
            "namespace": conf.k8s_namespace,
            "labels": own,
            "annotations": {
                "longtune.io/queue": instance.capacity.queue,
                "longtune.io/size": instance.size,
                "longtune.io/contract-end": instance.contract_end.isoformat(),
            },
        },
        "spec": {
            "replicas": instance.replicas if replicas is None else replicas,
            "selector": {"matchLabels": {"longtune.io/instance": own["longtune.io/instance"]}},
            "strategy": {"type": "Recreate"},  # never two generations on the same GPUs
            "template": {
                "metadata": {"labels": own},
                "spec": {
                    "terminationGracePeriodSeconds": conf.longest_job_seconds,
                    "nodeSelector": {
                        conf.k8s_accelerator_label: instance.accelerator_type,
                        conf.k8s_pool_label: instance.pool,
                    },
                    "tolerations": tolerations,
                    "containers": [
                        {
                            "name": "worker",
                            "image": conf.k8s_image,
                            "command": command,
                            "env": [{"name": INSTANCE_ENV, "value": instance.public_id}],
                            "envFrom": [{"secretRef": {"name": conf.k8s_env_secret}}],
                            "resources": resources,
                        }
                    ],
                },
            },
        },
    }


class KubernetesDriver:
    name = "kubernetes"

    def __init__(self, api_client: Any = None, conf: ProvisioningConf | None = None) -> None:
        self.conf = conf or provisioning_conf()
        self._api_client = api_client

    def _apps(self) -> Any:
        from kubernetes import client, config

        if self._api_client is None:
            try:
                if self.conf.k8s_in_cluster:
                    config.load_incluster_config()
                else:
                    config.load_kube_config()
            except Exception as exc:  # noqa: BLE001 - any config problem is the reason
                raise DriverError(f"no Kubernetes configuration: {exc}") from exc
            self._api_client = client.ApiClient()
        return client.AppsV1Api(self._api_client)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise DriverError(f"Kubernetes refused to {what}: {exc.status} {exc.reason}") from exc
        except DriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection errors and the like
            raise DriverError(f"could not reach Kubernetes to {what}: {exc}") from exc

    def _read(self, instance: DedicatedInstance) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        apps = self._apps()
        try:
            return apps.read_namespaced_deployment(
                deployment_name(instance), self.conf.k8s_namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DriverError(
                f"Kubernetes refused to read the Deployment: {exc.status} {exc.reason}"
            ) from exc
        except Exception as exc:  # noqa: BLE001
            raise DriverError(f"could not reach Kubernetes to read the Deployment: {exc}") from exc

    def apply(self, instance: DedicatedInstance) -> str:
        body = render_deployment(instance, self.conf)
        name, namespace = deployment_name(instance), self.conf.k8s_namespace
        apps = self._apps()
        if self._read(instance) is None:
            self._call("create the Deployment", apps.create_namespaced_deployment, namespace, body)
        else:
            self._call(
                "patch the Deployment", apps.patch_namespaced_deployment, name, namespace, body
            )
        return f"{namespace}/{name}"

    def drain(self, instance: DedicatedInstance) -> None:
        if self._read(instance) is None:
            return
        self._call(
            "scale the Deployment to zero",
            self._apps().patch_namespaced_deployment_scale,
            deployment_name(instance),
            self.conf.k8s_namespace,
            {"spec": {"replicas": 0}},
        )

    def drained(self, instance: DedicatedInstance) -> bool:
        deployment = self._read(instance)
        return deployment is None or not (deployment.status and deployment.status.replicas)

    def destroy(self, instance: DedicatedInstance) -> None:
        if self._read(instance) is None:
            return
        self._call(
            "delete the Deployment",
            self._apps().delete_namespaced_deployment,
            deployment_name(instance),
            self.conf.k8s_namespace,
            propagation_policy="Foreground",
        )

    def running(self, instance: DedicatedInstance) -> int:
        deployment = self._read(instance)
        if deployment is None or deployment.status is None:
            return 0
        return int(deployment.status.ready_replicas or 0)
