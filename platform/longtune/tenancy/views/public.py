"""Unauthenticated endpoints, throttled per client IP: signup and accepting an invitation."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.tenancy.serializers import (
    InvitationAcceptedSerializer,
    InvitationAcceptSerializer,
    SignupResponseSerializer,
    SignupSerializer,
)
from longtune.tenancy.services.invitations import accept_invitation
from longtune.tenancy.services.organizations import create_organization_with_owner
from longtune.tenancy.throttling import PublicEndpointThrottle


class PublicView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [PublicEndpointThrottle]


class SignupView(PublicView):
    """Create a user, an organization owned by them and its first API key (returned once)."""

    @extend_schema(auth=[], request=SignupSerializer, responses={201: SignupResponseSerializer})
    def post(self, request: Request) -> Response:
        body = SignupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        created = create_organization_with_owner(
            email=body.validated_data["email"],
            password=body.validated_data["password"],
            org_name=body.validated_data["organization_name"],
            request=request,
        )
        return Response(SignupResponseSerializer(created).data, status=status.HTTP_201_CREATED)


class AcceptInvitationView(PublicView):
    """Accept with the token from the invitation; creates the user if needed and returns a key."""

    @extend_schema(
        auth=[], request=InvitationAcceptSerializer, responses={201: InvitationAcceptedSerializer}
    )
    def post(self, request: Request) -> Response:
        body = InvitationAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        accepted = accept_invitation(**body.validated_data, request=request)
        return Response(InvitationAcceptedSerializer(accepted).data, status=status.HTTP_201_CREATED)
