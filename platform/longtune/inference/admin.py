"""Staff: inspect endpoints, shared servers, replicas and the usage ledger (read-mostly)."""

from __future__ import annotations

from django.contrib import admin

from longtune.inference.models import Endpoint, EndpointEvent, Replica, SharedServer, UsageRecord
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(Endpoint)
class EndpointAdmin(CrossOrgModelAdmin):
    list_display = (
        "public_id",
        "org",
        "model",
        "deployment",
        "hosting",
        "status",
        "generation",
        "created_at",
    )
    list_filter = ("status", "deployment", "hosting")
    search_fields = ("public_id", "model", "org__slug")
    readonly_fields = ("public_id", "generation", "ready_at", "stopped_at", "deleted_at")


@admin.register(SharedServer)
class SharedServerAdmin(admin.ModelAdmin):
    """One row per (base, queue); the endpoints riding it are listed on the endpoint page."""

    list_display = (
        "public_id",
        "base_model",
        "queue",
        "status",
        "generation",
        "worker",
        "internal_url",
        "heartbeat_at",
    )
    list_filter = ("status", "queue")
    readonly_fields = ("public_id", "generation", "heartbeat_at", "started_at", "stopped_at")


@admin.register(Replica)
class ReplicaAdmin(CrossOrgModelAdmin):
    list_display = ("public_id", "endpoint", "status", "worker", "internal_url", "heartbeat_at")
    list_filter = ("status",)


@admin.register(EndpointEvent)
class EndpointEventAdmin(CrossOrgModelAdmin):
    list_display = ("endpoint", "level", "message", "created_at")


@admin.register(UsageRecord)
class UsageRecordAdmin(CrossOrgModelAdmin):
    list_display = (
        "created_at",
        "org",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tokens_per_second",
    )
    list_filter = ("kind", "stream")
    search_fields = ("model", "request_id", "org__slug")
