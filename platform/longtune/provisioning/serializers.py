"""The customer's read-only view of a dedicated instance (``GET /v1/dedicated_instances``)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum
from rest_framework import serializers

from longtune.provisioning.health import replica_health
from longtune.provisioning.models import DedicatedInstance


class DedicatedInstanceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    object = serializers.SerializerMethodField(help_text='Always "dedicated_instance".')
    size = serializers.CharField(read_only=True, help_text="Per replica: 1x_h100_80gb.")
    queue = serializers.CharField(read_only=True)
    replicas_ready = serializers.SerializerMethodField(
        help_text="Replicas whose workers heartbeat now."
    )
    hourly_price = serializers.DecimalField(max_digits=10, decimal_places=2, read_only=True)
    instance_hours = serializers.SerializerMethodField(
        help_text="Hours ready so far (the billed instance-hours)."
    )

    class Meta:
        model = DedicatedInstance
        fields = [
            "id", "object", "name", "state", "size", "accelerator_type",
            "accelerators_per_replica", "min_replicas", "max_replicas", "replicas",
            "replicas_ready", "hosts", "pool", "queue", "contract_start", "contract_end",
            "hourly_price", "fallback_to_shared", "instance_hours", "failure_reason",
            "created_at", "ready_at", "decommissioned_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_object(self, instance: DedicatedInstance) -> str:
        return "dedicated_instance"

    def get_replicas_ready(self, instance: DedicatedInstance) -> int:
        return replica_health(instance).ready

    def get_instance_hours(self, instance: DedicatedInstance) -> str:
        total = instance.usage.aggregate(h=Sum("hours"))["h"]
        return str((total or Decimal(0)).quantize(Decimal("0.01")))
