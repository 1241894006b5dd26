"""GET /v1/organization: the caller's organization, effective quotas and usage."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.tenancy.serializers import OrganizationSerializer


class OrganizationView(APIView):
    """Always the org of the API key: there is no id to address another one."""

    required_permissions = {"GET": "organization.read"}

    @extend_schema(operation_id="retrieve_organization", responses=OrganizationSerializer)
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(request.org).data)
