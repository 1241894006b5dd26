"""/v1/members: list, retrieve, change role (PATCH), remove (DELETE)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.viewsets import OrgScopedViewSet
from longtune.tenancy.models import Membership
from longtune.tenancy.serializers import MemberSerializer, MemberUpdateSerializer
from longtune.tenancy.services.members import change_role, remove_member


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Membership
    serializer_class = MemberSerializer
    required_permissions = {
        "list": "members.read",
        "retrieve": "members.read",
        "partial_update": "members.manage",
        "destroy": "members.manage",
    }

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("user")

    @extend_schema(request=MemberUpdateSerializer, responses=MemberSerializer)
    def partial_update(self, request: Request, id: str) -> Response:
        membership = self.get_object()
        body = MemberUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        updated = change_role(
            membership, body.validated_data["role"], actor_role=request.role, request=request
        )
        return Response(MemberSerializer(updated).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, id: str) -> Response:
        remove_member(self.get_object(), actor_role=request.role, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
