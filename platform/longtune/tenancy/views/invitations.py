"""/v1/invitations: list, create (token returned once), retrieve, revoke (DELETE)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.viewsets import OrgScopedViewSet
from longtune.tenancy.models import Invitation
from longtune.tenancy.serializers import (
    InvitationCreatedSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
)
from longtune.tenancy.services.invitations import create_invitation, revoke_invitation


class InvitationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Invitation
    serializer_class = InvitationSerializer
    required_permissions = {
        "list": "invitations.read",
        "retrieve": "invitations.read",
        "create": "invitations.manage",
        "destroy": "invitations.manage",
    }

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("invited_by")

    @extend_schema(request=InvitationCreateSerializer, responses={201: InvitationCreatedSerializer})
    def create(self, request: Request) -> Response:
        body = InvitationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invitation, token = create_invitation(
            org=request.org,
            email=body.validated_data["email"],
            role=body.validated_data["role"],
            invited_by=request.user,  # the key's creator, or the session user
            actor_role=request.role,
            request=request,
        )
        data = {**InvitationSerializer(invitation).data, "token": token}
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None, responses=InvitationSerializer, description="Revoke the invitation."
    )
    def destroy(self, request: Request, id: str) -> Response:
        return Response(
            InvitationSerializer(revoke_invitation(self.get_object(), request=request)).data
        )
