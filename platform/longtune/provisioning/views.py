"""``GET /v1/dedicated_instances`` (+ retrieve): the org sees its dedicated instances; only
staff create and size them (the sales console in the admin)."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import mixins

from longtune.api.viewsets import OrgScopedViewSet
from longtune.provisioning.models import DedicatedInstance
from longtune.provisioning.serializers import DedicatedInstanceSerializer


class DedicatedInstanceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = DedicatedInstance
    serializer_class = DedicatedInstanceSerializer

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("capacity").order_by("-pk")
