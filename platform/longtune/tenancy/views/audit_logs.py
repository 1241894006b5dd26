"""/v1/audit_logs: the org's append-only audit log, newest first (admins and owners)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import mixins

from longtune.api.viewsets import OrgScopedViewSet
from longtune.tenancy.models import AuditLogEntry
from longtune.tenancy.serializers import AuditLogEntrySerializer


class AuditLogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = AuditLogEntry
    serializer_class = AuditLogEntrySerializer
    required_permissions = {"list": "audit_log.read", "retrieve": "audit_log.read"}

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("actor_user", "actor_api_key")
