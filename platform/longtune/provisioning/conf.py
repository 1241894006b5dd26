"""Provisioning knobs as one typed object, read from Django settings (tests override them)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ProvisioningConf:
    driver: str  # "local" | "kubernetes"
    inventory: str  # "pool:type=count[,type=count];pool:..."
    heartbeat_seconds: float  # how often an instance's worker writes its heartbeat row
    heartbeat_stale_seconds: float  # a replica silent this long is not counted as ready
    supervise_seconds: float  # period of the reconcile loop
    k8s_namespace: str
    k8s_image: str
    k8s_env_secret: str  # a Secret with DATABASE_URL, REDIS_URL, S3_* for the workers
    k8s_accelerator_label: str  # node label holding the accelerator type
    k8s_pool_label: str  # node label holding the pool
    k8s_in_cluster: bool  # load the in-cluster config (else ~/.kube/config)
    longest_job_seconds: int  # a draining pod's grace period: its job must finish first


def provisioning_conf() -> ProvisioningConf:
    return ProvisioningConf(
        driver=settings.PROVISIONING_DRIVER,
        inventory=settings.PROVISIONING_INVENTORY,
        heartbeat_seconds=float(settings.PROVISIONING_HEARTBEAT_SECONDS),
        heartbeat_stale_seconds=float(settings.PROVISIONING_HEARTBEAT_STALE_SECONDS),
        supervise_seconds=float(settings.PROVISIONING_SUPERVISE_SECONDS),
        k8s_namespace=settings.PROVISIONING_K8S_NAMESPACE,
        k8s_image=settings.PROVISIONING_K8S_IMAGE,
        k8s_env_secret=settings.PROVISIONING_K8S_ENV_SECRET,
        k8s_accelerator_label=settings.PROVISIONING_K8S_ACCELERATOR_LABEL,
        k8s_pool_label=settings.PROVISIONING_K8S_POOL_LABEL,
        k8s_in_cluster=bool(settings.PROVISIONING_K8S_IN_CLUSTER),
        longest_job_seconds=int(settings.LONGEST_JOB_SECONDS),
    )
