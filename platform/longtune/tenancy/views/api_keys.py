"""/v1/api_keys: list, create (secret returned once), retrieve, revoke (DELETE)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.viewsets import OrgScopedViewSet
from longtune.tenancy.models import ApiKey
from longtune.tenancy.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    api_key_with_secret,
)
from longtune.tenancy.services.api_keys import check_grant, issue_api_key, revoke_api_key


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = ApiKey
    serializer_class = ApiKeySerializer
    required_permissions = {
        "list": "api_keys.read",
        "retrieve": "api_keys.read",
        "create": "api_keys.manage",
        "destroy": "api_keys.manage",
    }

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("created_by")

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request) -> Response:
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        role = body.validated_data.get("role") or request.role
        scopes = body.validated_data.get("scopes") or list(request.scopes)
        check_grant(
            granted_role=role,
            granted_scopes=scopes,
            by_role=request.role,
            by_scopes=request.scopes,
        )
        days = body.validated_data.get("expires_in_days")
        key, secret = issue_api_key(
            org=request.org,
            created_by=request.user,  # the key's creator, or the session user
            role=role,
            scopes=scopes,
            name=body.validated_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            request=request,
        )
        return Response(api_key_with_secret(key, secret), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None, responses=ApiKeySerializer, description="Revoke the key (idempotent)."
    )
    def destroy(self, request: Request, id: str) -> Response:
        key = revoke_api_key(self.get_object(), request=request)
        return Response(ApiKeySerializer(key).data)
